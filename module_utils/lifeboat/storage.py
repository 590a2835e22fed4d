"""One interface over the places a backup can live: an S3 prefix or a local directory.

Keys are relative to the storage root (``s3://bucket/prefix`` or a directory)
and always use '/'. Writers stream: an S3 writer is a multipart upload whose
memory is bounded by ``part_size * min(concurrency + 1, 48 MiB / part_size)``; a local writer writes
``<name>.partial`` (0600) and renames it on success. ``abort()`` leaves nothing
that looks like a complete object.

An ``exclusive`` writer never replaces an object that exists: on S3 the final
PUT / CompleteMultipartUpload carries ``If-None-Match: *`` (SeaweedFS and AWS
honour it; a store that answers 501 NotImplemented is retried without it, the
backup lock then being the only guard); locally the ``.partial`` file is
hard-linked to its name, which fails when the name exists. Either way a lost
race raises ``AlreadyExists``.

``open_uploads()`` lists what writers began and never committed (S3 multipart uploads under the root, or a
directory's ``.partial`` files) and ``abort_upload()`` removes one: retention and the catalog read them here.
``get_json()`` reads a small JSON document (manifests, records), None when it is missing or unreadable.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shlex
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, BinaryIO
from collections.abc import Iterator

from ansible.module_utils.lifeboat.errors import (AlreadyExists, ConfigError, DeadlineExceeded, LifeboatError, NotFound,
                                                 StorageError)
from ansible.module_utils.lifeboat.s3 import (
    S3Settings,
    S3Url,
    bucket_versioning,
    check_bucket,
    make_client,
    parse_s3_url,
    translate,
)

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
MAX_PARTS = 10000
IN_FLIGHT_BYTES = 48 * MIB


@dataclass(frozen=True)
class Entry:
    """One stored object of any store, and one file of either side of a transfer (sides.py, s3sync): the one
    listing type of the engine."""

    key: str                  # relative to the store's root, '/' separated
    size: int
    etag: str | None = None   # S3 ETag without quotes; None for local files
    last_modified: _dt.datetime | None = None


#: the older name of Entry (storage listings)
ObjectInfo = Entry


@dataclass(frozen=True)
class OpenUpload:
    """An upload a writer began and never committed: an S3 multipart upload (``upload_id``) or a local
    ``.partial`` file (``upload_id`` None)."""

    key: str            # relative to the storage root (for a local one, the .partial file itself)
    upload_id: str | None = None
    initiated: _dt.datetime | None = None


class Writer:
    """A streaming sink. ``close()`` commits, ``abort()`` discards."""

    bytes_written: int = 0

    def write(self, data: bytes) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Storage:
    """Common interface; see S3Storage and LocalStorage."""

    url: str

    def uri(self, key: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, write: bool = False) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def versioning(self) -> str:
        """'Enabled', 'Suspended' or '' (a store without versions)."""
        return ""

    def open_writer(self, key: str, content_type: str = "application/octet-stream",
                    metadata: dict[str, str] | None = None,
                    exclusive: bool = False) -> Writer:  # pragma: no cover
        raise NotImplementedError

    def open_reader(self, key: str) -> BinaryIO:  # pragma: no cover - interface
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[Entry]:  # pragma: no cover
        raise NotImplementedError

    def stat(self, key: str) -> Entry:  # pragma: no cover - interface
        raise NotImplementedError

    def delete(self, key: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def open_uploads(self) -> list[OpenUpload]:  # pragma: no cover - interface
        raise NotImplementedError

    def abort_upload(self, upload: OpenUpload) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    # helpers built on the primitives
    def get_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object stored at ``key``; None when it is missing, unreadable or not an object."""
        try:
            data = json.loads(self.get_bytes(key))
        except (ValueError, LifeboatError):
            return None
        return data if isinstance(data, dict) else None

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
            return True
        except NotFound:
            return False

    def get_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as fh:
            return fh.read()

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream",
                  exclusive: bool = False) -> None:
        writer = self.open_writer(key, content_type=content_type, exclusive=exclusive)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.close()


# --------------------------------------------------------------------------- S3

def _precondition_failed(exc: BaseException) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _not_implemented(exc: BaseException) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""
    return code in ("NotImplemented", "501")


class _S3Writer(Writer):
    def __init__(self, storage: "S3Storage", key: str, content_type: str, metadata: dict[str, str] | None,
                 exclusive: bool = False):
        self._s = storage
        self._exclusive = exclusive
        self._key = key
        self._content_type = content_type
        self._metadata = metadata or {}
        self._buf = bytearray()
        self._parts: list[Future] = []
        self._upload_id: str | None = None
        # parts in flight: concurrency + 1, fewer when parts are large (IN_FLIGHT_BYTES): memory stays flat
        self._slots = threading.BoundedSemaphore(max(2, min(storage.concurrency + 1,
                                                            IN_FLIGHT_BYTES // storage.part_size)))
        self._closed = False
        self.bytes_written = 0
        self.parts = 0
        #: a writer of whole parts: a pipeline reads this much at once and each read becomes a part, uncopied
        self.read_size = storage.part_size

    def _what(self) -> str:
        return f"upload {self._s.uri(self._key)}"

    def _start(self) -> None:
        try:
            resp = self._s.bounded(self._what(), self._s.client.create_multipart_upload,
                Bucket=self._s.bucket, Key=self._s.full_key(self._key),
                ContentType=self._content_type, Metadata=self._metadata)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._what(), self._s.settings, self._s.bucket) from None
        self._upload_id = resp["UploadId"]

    def _submit(self, number: int, body: bytes) -> Future:
        """One daemon thread per part in flight (bounded by the slots): a part stuck on an endpoint that
        stopped answering never keeps the process alive after the deadline ended the run."""
        fut: Future = Future()
        fut.set_running_or_notify_cancel()

        def work() -> None:
            try:
                fut.set_result(self._upload_part(number, body))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                fut.set_exception(exc)

        threading.Thread(target=work, name=f"lifeboat-s3-part-{number}", daemon=True).start()
        return fut

    def _wait(self, fut: Future) -> Any:
        while True:
            try:
                return fut.result(timeout=0.5)
            except FutureTimeout:
                self._s.check_deadline(self._what())

    def _upload_part(self, number: int, body: bytes) -> dict[str, Any]:
        try:
            resp = self._s.client.upload_part(
                Bucket=self._s.bucket, Key=self._s.full_key(self._key),
                UploadId=self._upload_id, PartNumber=number, Body=body)
            return {"PartNumber": number, "ETag": resp["ETag"]}
        finally:
            self._slots.release()

    def _flush_part(self, whole: bytes | None = None) -> None:
        if self._upload_id is None:
            self._start()
        if len(self._parts) >= MAX_PARTS:
            raise StorageError(f"{self._what()}: more than {MAX_PARTS} parts; raise part_size")
        if whole is not None:
            body = whole
        else:
            body = bytes(self._buf[: self._s.part_size])
            del self._buf[: self._s.part_size]
        while not self._slots.acquire(timeout=0.5):  # bounds memory: at most concurrency+1 parts in flight
            self._s.check_deadline(self._what())
        for fut in self._parts:
            if fut.done() and fut.exception() is not None:
                self._slots.release()
                raise translate(fut.exception(), self._what(), self._s.settings, self._s.bucket)
        self._parts.append(self._submit(len(self._parts) + 1, body))
        self.parts += 1

    def write(self, data: bytes) -> int:
        if self._closed:
            raise StorageError(f"{self._what()}: write after close")
        self.bytes_written += len(data)
        if not self._buf and len(data) == self._s.part_size and isinstance(data, bytes):
            self._flush_part(data)   # a whole part as read: uploaded as it is, no copy
            return len(data)
        self._buf += data
        while len(self._buf) >= self._s.part_size:
            self._flush_part()
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._upload_id is None:
                # small object: one PUT, no multipart
                self._conditional(self._s.client.put_object,
                                  Bucket=self._s.bucket, Key=self._s.full_key(self._key), Body=bytes(self._buf),
                                  ContentType=self._content_type, Metadata=self._metadata)
            else:
                if self._buf:
                    self._flush_part()
                parts = []
                for fut in self._parts:
                    try:
                        parts.append(self._wait(fut))
                    except DeadlineExceeded:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        raise translate(exc, self._what(), self._s.settings, self._s.bucket) from None
                self._conditional(self._s.client.complete_multipart_upload,
                                  Bucket=self._s.bucket, Key=self._s.full_key(self._key), UploadId=self._upload_id,
                                  MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort()
            raise
        finally:
            self._buf = bytearray()
        self._closed = True

    def _conditional(self, call: Any, **kwargs: Any) -> None:
        """The committing call; with ``If-None-Match: *`` when exclusive (see the module docstring)."""
        if self._exclusive:
            try:
                self._s.bounded(self._what(), call, IfNoneMatch="*", **kwargs)
                return
            except DeadlineExceeded:
                raise
            except Exception as exc:  # noqa: BLE001
                if _precondition_failed(exc):
                    raise AlreadyExists(f"{self._what()}: the object already exists (another run wrote it first); "
                                        "nothing was replaced") from None
                if not _not_implemented(exc):
                    raise translate(exc, self._what(), self._s.settings, self._s.bucket) from None
        try:
            self._s.bounded(self._what(), call, **kwargs)
        except DeadlineExceeded:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self._what(), self._s.settings, self._s.bucket) from None

    def abort(self) -> None:
        self._closed = True
        self._buf = bytearray()
        if self._s.deadline_passed():
            # the endpoint stopped answering: neither wait for the parts in flight nor call it again; the next
            # run's sweep (and the bucket's lifecycle rule) aborts this upload
            self._upload_id = None
            return
        for fut in self._parts:  # a part that lands after the abort would outlive it
            try:
                self._wait(fut)
            except Exception:  # noqa: BLE001 - failed or timed out: nothing more to wait for
                pass
        if self._upload_id is not None:
            try:
                self._s.client.abort_multipart_upload(
                    Bucket=self._s.bucket, Key=self._s.full_key(self._key), UploadId=self._upload_id)
            except Exception:  # noqa: BLE001 - best effort; lifecycle rules clean the rest
                pass
            self._upload_id = None


class S3Storage(Storage):
    def __init__(self, url: S3Url | str, settings: S3Settings, part_size: int = 16 * MIB,
                 client: Any = None):
        self.loc = parse_s3_url(url) if isinstance(url, str) else url
        self.settings = settings
        if part_size < MIN_PART_SIZE:
            raise ConfigError(f"part_size: {part_size} bytes is below S3's minimum of 5 MiB", "part_size")
        self.part_size = part_size
        self.concurrency = max(1, int(settings.concurrency))
        self.client = client if client is not None else make_client(settings)
        self.url = str(self.loc)
        #: time.monotonic() after which every wait on the endpoint gives up (set by a run with a deadline)
        self.deadline: float | None = None
        self.deadline_s: float | None = None

    def set_deadline(self, seconds: float | None) -> None:
        self.deadline_s = seconds
        self.deadline = None if not seconds else time.monotonic() + seconds

    def deadline_passed(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def bounded(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(...)``; with a deadline set, in a daemon thread whose wait gives up at the deadline."""
        if self.deadline is None:
            return fn(*args, **kwargs)
        fut: Future = Future()
        fut.set_running_or_notify_cancel()

        def work() -> None:
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                fut.set_exception(exc)

        threading.Thread(target=work, name="lifeboat-s3-call", daemon=True).start()
        while True:
            try:
                return fut.result(timeout=0.5)
            except FutureTimeout:
                self.check_deadline(what)

    def check_deadline(self, what: str) -> None:
        if self.deadline_passed():
            raise DeadlineExceeded(
                f"deadline_s: {what}: the S3 endpoint {self.settings.describe()} stopped answering (no reply "
                f"within the run's deadline of {self.deadline_s:g}s); the run was ended and its upload abandoned "
                "(the next run's sweep, or the bucket's lifecycle rule, aborts it)", "deadline_s")

    @property
    def bucket(self) -> str:
        return self.loc.bucket

    def full_key(self, key: str) -> str:
        return self.loc.key(key)

    def rel_key(self, full_key: str) -> str:
        prefix = self.loc.prefix + "/" if self.loc.prefix else ""
        return full_key[len(prefix):] if full_key.startswith(prefix) else full_key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def check(self, write: bool = False) -> None:
        """Bucket exists and the credentials may list our prefix (s3.check_bucket: a one-key listing, which a
        least-privilege policy allows), within the run's deadline."""
        prefix = self.loc.prefix + "/" if self.loc.prefix else ""
        check_bucket(self.client, self.bucket, self.settings, prefix, call=self.bounded)

    def versioning(self) -> str:
        """The bucket's versioning: 'Enabled', 'Suspended' or '' (never enabled)."""
        return bucket_versioning(self.client, self.bucket, self.settings)

    def open_writer(self, key: str, content_type: str = "application/octet-stream",
                    metadata: dict[str, str] | None = None, exclusive: bool = False) -> Writer:
        return _S3Writer(self, key, content_type, metadata, exclusive)

    def open_reader(self, key: str) -> BinaryIO:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"read {self.uri(key)}", self.settings, self.bucket) from None
        return resp["Body"]

    def list(self, prefix: str = "") -> Iterator[Entry]:
        full = self.loc.key(prefix) if prefix else (self.loc.prefix + "/" if self.loc.prefix else "")
        if prefix.endswith("/") and not full.endswith("/"):
            full += "/"
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []) or []:
                    yield Entry(self.rel_key(obj["Key"]), int(obj["Size"]),
                                etag=(obj.get("ETag") or "").strip('"') or None, last_modified=obj.get("LastModified"))
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"list s3://{self.bucket}/{full}", self.settings, self.bucket) from None

    def stat(self, key: str) -> Entry:
        try:
            resp = self.bounded(f"stat {self.uri(key)}", self.client.head_object, Bucket=self.bucket,
                                Key=self.full_key(key))
        except DeadlineExceeded:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"stat {self.uri(key)}", self.settings, self.bucket) from None
        return Entry(key, int(resp["ContentLength"]), etag=(resp.get("ETag") or "").strip('"') or None,
                     last_modified=resp.get("LastModified"))

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"delete {self.uri(key)}", self.settings, self.bucket) from None

    def open_uploads(self) -> list[OpenUpload]:
        """The multipart uploads left open under the root (ListMultipartUploads on the prefix)."""
        prefix = self.loc.prefix + "/" if self.loc.prefix else ""
        out: list[OpenUpload] = []
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                     Prefix=prefix):
                for up in page.get("Uploads") or []:
                    out.append(OpenUpload(self.rel_key(up["Key"]), up["UploadId"], up.get("Initiated")))
        except Exception as exc:  # noqa: BLE001 - translated below
            raise translate(exc, f"list multipart uploads of s3://{self.bucket}/{prefix}", self.settings,
                            self.bucket) from None
        return out

    def abort_upload(self, upload: OpenUpload) -> None:
        """Abort a multipart upload; one already gone (NoSuchUpload) is not an error."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.full_key(upload.key),
                                               UploadId=upload.upload_id)
        except Exception as exc:  # noqa: BLE001
            err = translate(exc, f"abort upload {self.uri(upload.key)}", self.settings, self.bucket)
            if "NoSuchUpload" not in str(err):
                raise err from None


# ------------------------------------------------------------------------ local

class _LocalWriter(Writer):
    def __init__(self, path: str, exclusive: bool = False):
        self.path = path
        self._exclusive = exclusive
        self.partial = path + ".partial"
        self.bytes_written = 0
        self._closed = False
        try:
            _makedirs_private(os.path.dirname(path))
            if exclusive:  # a unique .partial name: a concurrent exclusive writer of the same key has its own
                self.partial = f"{path}.{os.getpid()}-{threading.get_ident()}.partial"
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise _local_error(exc, f"write {path}") from None
        self._fh = os.fdopen(fd, "wb", buffering=1024 * 1024)

    def write(self, data: bytes) -> int:
        try:
            self._fh.write(data)
        except OSError as exc:
            self.abort()
            raise _local_error(exc, f"write {self.path}") from None
        self.bytes_written += len(data)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            if self._exclusive:
                try:
                    os.link(self.partial, self.path)  # fails with EEXIST instead of replacing
                except FileExistsError:
                    self.abort()
                    raise AlreadyExists(f"write {self.path}: the file already exists (another run wrote it "
                                        "first); nothing was replaced") from None
                os.unlink(self.partial)
            else:
                os.replace(self.partial, self.path)
        except OSError as exc:
            self.abort()
            raise _local_error(exc, f"write {self.path}") from None
        self._closed = True

    def abort(self) -> None:
        self._closed = True
        try:
            self._fh.close()
        except OSError:
            pass
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass


def _makedirs_private(path: str) -> None:
    """Create missing directories (every level we create, not only the leaf) with mode 0700."""
    if not path or os.path.isdir(path):
        return
    _makedirs_private(os.path.dirname(path))
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)


def _local_error(exc: OSError, what: str) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"{what}: no space left on the local destination's filesystem (ENOSPC)")
    if exc.errno == errno.EDQUOT:
        return StorageError(f"{what}: disk quota exceeded on the local destination (EDQUOT)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"{what}: permission denied")
    if exc.errno == errno.ENOENT:
        return NotFound(f"{what}: no such file or directory")
    return StorageError(f"{what}: {exc.strerror or exc}")


class LocalStorage(Storage):
    def __init__(self, root: str):
        if not os.path.isabs(root):
            raise ConfigError(f"destination: local directory '{root}' must be an absolute path", "destination")
        self.root = os.path.normpath(root)
        self.url = self.root

    def path(self, key: str) -> str:
        norm = os.path.normpath(os.path.join(self.root, key))
        if norm != self.root and not norm.startswith(self.root + os.sep):
            raise ConfigError(f"key '{key}' escapes the destination directory {self.root}")
        return norm

    def uri(self, key: str) -> str:
        return self.path(key)

    def check(self, write: bool = False) -> None:
        if not os.path.isdir(self.root):
            if write:
                try:
                    _makedirs_private(self.root)
                except OSError as exc:
                    raise _local_error(exc, f"destination {self.root}") from None
            else:
                raise NotFound(f"destination: directory {self.root} does not exist")
        if write and not os.access(self.root, os.W_OK):
            raise StorageError(f"destination: directory {self.root} is not writable")

    def open_writer(self, key: str, content_type: str = "application/octet-stream",
                    metadata: dict[str, str] | None = None, exclusive: bool = False) -> Writer:
        return _LocalWriter(self.path(key), exclusive)

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")  # noqa: SIM115 - caller closes
        except OSError as exc:
            raise _local_error(exc, f"read {self.path(key)}") from None

    def list(self, prefix: str = "") -> Iterator[Entry]:
        base = self.path(prefix) if prefix else self.root
        start = base if os.path.isdir(base) else os.path.dirname(base)
        if not os.path.isdir(start):
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(".partial"):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                if prefix and not rel.startswith(prefix):
                    continue
                st = os.stat(full)
                yield Entry(rel, st.st_size, last_modified=_dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.UTC))

    def stat(self, key: str) -> Entry:
        try:
            st = os.stat(self.path(key))
        except OSError as exc:
            raise _local_error(exc, f"stat {self.path(key)}") from None
        return Entry(key, st.st_size, last_modified=_dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.UTC))

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _local_error(exc, f"delete {self.path(key)}") from None

    def open_uploads(self) -> list[OpenUpload]:
        """The ``.partial`` files under the root (a writer that was killed, or is still writing)."""
        out: list[OpenUpload] = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(".partial"):
                    full = os.path.join(dirpath, name)
                    try:
                        when = _dt.datetime.fromtimestamp(os.stat(full).st_mtime, tz=_dt.UTC)
                    except OSError:
                        continue  # committed or removed meanwhile
                    out.append(OpenUpload(os.path.relpath(full, self.root).replace(os.sep, "/"), None, when))
        return sorted(out, key=lambda u: u.key)

    def abort_upload(self, upload: OpenUpload) -> None:
        self.delete(upload.key)


def open_storage(destination: str, settings: S3Settings | None = None, part_size: int = 16 * MIB) -> Storage:
    """``s3://bucket/prefix`` -> S3Storage; an absolute path -> LocalStorage."""
    if destination.startswith("s3://"):
        return S3Storage(parse_s3_url(destination), settings or S3Settings(), part_size=part_size)
    if "://" in destination:
        raise ConfigError(f"destination: unsupported scheme in '{destination}' (use s3://bucket/prefix or an "
                          "absolute directory)", "destination")
    return LocalStorage(destination)


def stock_fetch_command(storage: Storage, key: str) -> str:
    """The stock-tool command that writes a stored object to stdout, runnable as pasted on any S3-compatible
    store: ``aws --endpoint-url ... --region ... s3 cp s3://... -`` (credentials from the environment), or
    ``cat <path>`` for a local store. Every recorded restore command starts with it."""
    if isinstance(storage, S3Storage):
        opts = ""
        if storage.settings.endpoint:
            opts += f" --endpoint-url {shlex.quote(storage.settings.endpoint)}"
        if storage.settings.region:
            opts += f" --region {shlex.quote(storage.settings.region)}"
        return f"aws{opts} s3 cp {shlex.quote(storage.uri(key))} -"
    return f"cat {shlex.quote(storage.uri(key))}"
