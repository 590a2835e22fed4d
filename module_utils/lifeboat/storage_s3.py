"""An S3 prefix as a store (``S3Storage``).

A writer streams: a multipart upload whose memory is bounded by ``part_size * min(concurrency + 1,
48 MiB / part_size)``; ``abort()`` leaves nothing that looks like a complete object. An ``exclusive`` writer never
replaces an object that exists: the final PUT / CompleteMultipartUpload carries ``If-None-Match: *`` (SeaweedFS
and AWS honour it; a store that answers 501 NotImplemented is retried without it, the backup lock then being the
only guard); a lost race raises ``AlreadyExists``. ``check()`` is a one-key listing of the prefix (a
least-privilege policy allows it, HeadBucket it may not). ``open_uploads()`` lists the multipart uploads begun
under the root and never completed.

Also the S3 pieces a transfer needs beside the store (sides.S3Side, s3sync, s3restore): the content headers a
copy carries, the first part's size of a multipart object, and whether an error is a failed precondition.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, BinaryIO
from collections.abc import Iterator

from ansible.module_utils.lifeboat.errors import AlreadyExists, ConfigError, DeadlineExceeded, StorageError
from ansible.module_utils.lifeboat.s3 import (
    S3Settings,
    S3Url,
    bucket_versioning,
    check_bucket,
    make_client,
    parse_s3_url,
    translate,
)
from ansible.module_utils.lifeboat.storage_api import MIB, MIN_PART_SIZE, Entry, OpenUpload, Storage, Writer

MAX_PARTS = 10000
IN_FLIGHT_BYTES = 48 * MIB


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""


def is_precondition_failed(exc: BaseException) -> bool:
    """A conditional request (If-Match, If-None-Match, CopySourceIfMatch) whose condition did not hold."""
    if not hasattr(exc, "response"):
        return False
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409") or status == 412


def content_args(resp: dict[str, Any]) -> dict[str, str]:
    """The content headers of a GET/HEAD response, as arguments of a PUT or CreateMultipartUpload."""
    out = {}
    for name in ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl"):
        if resp.get(name):
            out[name] = resp[name]
    return out


def first_part_size(client: Any, bucket: str, key: str, etag: str | None, **kw: Any) -> int:
    """The size of part 1 of a multipart object (HEAD with PartNumber=1, conditional on ``etag``)."""
    h = client.head_object(Bucket=bucket, Key=key, PartNumber=1, IfMatch=f'"{etag}"', **kw)
    return int(h["ContentLength"])


def _not_implemented(exc: BaseException) -> bool:
    return error_code(exc) in ("NotImplemented", "501")


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
                if is_precondition_failed(exc):
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

    def metadata(self, key: str) -> dict[str, str]:
        """The object's user metadata (one HEAD)."""
        try:
            resp = self.bounded(f"stat {self.uri(key)}", self.client.head_object, Bucket=self.bucket,
                                Key=self.full_key(key))
        except DeadlineExceeded:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"stat {self.uri(key)}") from None
        return dict(resp.get("Metadata") or {})

    def first_part_size(self, entry: Entry) -> int:
        return first_part_size(self.client, self.bucket, self.full_key(entry.key), entry.etag)

    def error(self, exc: BaseException, what: str) -> Exception:
        """``exc`` translated into the engine's typed error, naming the store."""
        return translate(exc, what, self.settings, self.bucket)

    def abort_upload_quiet(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload, best effort (the bucket's lifecycle rule aborts what is left)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.full_key(key), UploadId=upload_id)
        except Exception:  # noqa: BLE001 - best effort
            pass

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
