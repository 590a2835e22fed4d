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
from xml.etree import ElementTree as ET
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, BinaryIO
from collections.abc import Iterable, Iterator

from ansible.module_utils.lifeboat.errors import (AlreadyExists, ConditionFailed, ConfigError, DeadlineExceeded,
                                                 LifeboatError, StorageError)
from ansible.module_utils.lifeboat.s3 import (
    S3Settings,
    S3Url,
    bucket_versioning,
    check_bucket,
    make_client,
    parse_s3_url,
    translate,
)
from ansible.module_utils.lifeboat.storage_api import (MIB, MIN_PART_SIZE, SOURCE_ETAG_META, Entry, OpenUpload, Storage,
                                                      Version, Writer)

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

_raw_pages = threading.local()


def _keep_raw_page(http_response: Any = None, **_: Any) -> None:
    if getattr(_raw_pages, "active", False) and http_response is not None:
        _raw_pages.content = http_response.content


def _listing_order(raw: bytes | None) -> dict[str, int]:
    """VersionId -> position of its <Version>/<DeleteMarker> element in the raw ListObjectVersions XML.

    S3 lists a key's versions and delete markers interleaved, newest first; botocore parses them into two
    separate lists, which loses that order. LastModified is often kept to the second only (SeaweedFS), so
    without it a delete marker and a version written within the same second could not be ordered.
    Empty (no tie-breaking) when the page cannot be read; ambiguous ids ('null', repeated) are left out.
    """
    if not raw:
        return {}
    try:
        root = ET.fromstring(raw)  # noqa: S314 - the same S3 response botocore just parsed with ElementTree
    except ET.ParseError:
        return {}
    order: dict[str, int] = {}
    seen: set[str] = set()
    for n, el in enumerate(root):
        if not el.tag.endswith(("}Version", "}DeleteMarker")) and el.tag not in ("Version", "DeleteMarker"):
            continue
        vid = next((c.text for c in el if c.tag.endswith("VersionId")), None)
        if not vid or vid == "null":
            continue
        if vid in seen:
            order.pop(vid, None)
            continue
        seen.add(vid)
        order[vid] = n
    return order


def _pages_with_raw(pages: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """Each page with the raw XML it was parsed from (captured by the after-call hook, this thread only)."""
    it = iter(pages)
    while True:
        _raw_pages.active, _raw_pages.content = True, None
        try:
            page = next(it)
        except StopIteration:
            return
        finally:
            raw, _raw_pages.active = _raw_pages.content, False
        yield page, raw


class _S3Writer(Writer):
    def __init__(self, storage: "S3Storage", key: str, content_type: str, metadata: dict[str, str] | None,
                 exclusive: bool = False, unchanged: Entry | None = None):
        self._s = storage
        self._exclusive = exclusive
        self._unchanged = unchanged
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
        """The committing call; with ``If-None-Match: *`` when exclusive, ``If-Match`` when it must find the object
        unchanged (see the module docstring)."""
        self._s.conditional(self._what(), call, kwargs, self._exclusive, self._unchanged)

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

    def identity(self) -> tuple[str, str]:
        """The endpoint and access key: two prefixes with the same identity copy server-side."""
        return (self.settings.endpoint or f"aws:{self.settings.region}", self.settings.access_key or "")

    def check(self, write: bool = False) -> None:
        """Bucket exists and the credentials may list our prefix (s3.check_bucket: a one-key listing, which a
        least-privilege policy allows), within the run's deadline."""
        prefix = self.loc.prefix + "/" if self.loc.prefix else ""
        check_bucket(self.client, self.bucket, self.settings, prefix, call=self.bounded)

    def versioning(self) -> str:
        """The bucket's versioning: 'Enabled', 'Suspended' or '' (never enabled)."""
        return bucket_versioning(self.client, self.bucket, self.settings)

    def open_writer(self, key: str, content_type: str = "application/octet-stream",
                    metadata: dict[str, str] | None = None, exclusive: bool = False,
                    unchanged: Entry | None = None) -> Writer:
        return _S3Writer(self, key, content_type, metadata, exclusive, unchanged)

    def conditional(self, what: str, call: Any, kwargs: dict[str, Any], absent: bool = False,
                    unchanged: Entry | None = None) -> Any:
        """``call(**kwargs)`` (a PUT, CompleteMultipartUpload or CopyObject) with ``If-None-Match: *`` (``absent``)
        or ``If-Match`` (``unchanged``'s ETag). A store that answers 501 NotImplemented is called again without the
        condition (the caller's own checks then being the only guard)."""
        cond: dict[str, str] = {}
        if absent:
            cond = {"IfNoneMatch": "*"}
        elif unchanged is not None and unchanged.etag:
            cond = {"IfMatch": f'"{unchanged.etag}"'}
        if cond:
            try:
                return self.bounded(what, call, **cond, **kwargs)
            except DeadlineExceeded:
                raise
            except Exception as exc:  # noqa: BLE001
                if is_precondition_failed(exc):
                    if absent:
                        raise AlreadyExists(f"{self.option}: {what}: the object already exists (another run or "
                                            "writer put it there first); nothing was replaced", self.option) from None
                    raise ConditionFailed(f"{self.option}: {what}: the object changed since it was compared "
                                          "(another writer); nothing was replaced; rerun to compare again",
                                          self.option) from None
                if not _not_implemented(exc):
                    raise self.error(exc, what) from None
        try:
            return self.bounded(what, call, **kwargs)
        except DeadlineExceeded:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, what) from None

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

    def _head(self, key: str) -> dict[str, Any]:
        """One bounded HEAD of ``key``; a failure names the stat and the store."""
        try:
            return self.bounded(f"stat {self.uri(key)}", self.client.head_object, Bucket=self.bucket,
                                Key=self.full_key(key))
        except DeadlineExceeded:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"stat {self.uri(key)}", self.settings, self.bucket) from None

    def stat(self, key: str) -> Entry:
        resp = self._head(key)
        return Entry(key, int(resp["ContentLength"]), etag=(resp.get("ETag") or "").strip('"') or None,
                     last_modified=resp.get("LastModified"))

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"delete {self.uri(key)}", self.settings, self.bucket) from None

    def metadata(self, key: str) -> dict[str, str]:
        """The object's user metadata (one HEAD)."""
        return dict(self._head(key).get("Metadata") or {})

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

    # -- versions (a versioned bucket)
    def list_versions(self, prefix: str = "") -> Iterator[Version]:
        """Every version and delete marker under the root (and ``prefix``), each with its rank in the server's
        listing (a key's versions newest first: it orders two written within LastModified's resolution)."""
        full = self.loc.key(prefix) if prefix else (self.loc.prefix + "/" if self.loc.prefix else "")
        paginator = self.client.get_paginator("list_object_versions")
        self.client.meta.events.register("after-call.s3.ListObjectVersions", _keep_raw_page,
                                         unique_id="lifeboat-raw-versions")
        base = 0
        try:
            for page, raw in _pages_with_raw(paginator.paginate(Bucket=self.bucket, Prefix=full)):
                order = _listing_order(raw)
                for v in page.get("Versions", []) or []:
                    vid = v.get("VersionId") or "null"
                    yield Version(self.rel_key(v["Key"]), vid, v["LastModified"].timestamp(),
                                  bool(v.get("IsLatest")), False, int(v.get("Size", 0)),
                                  (v.get("ETag") or "").strip('"') or None, base + order.get(vid, 0))
                for m in page.get("DeleteMarkers", []) or []:
                    vid = m.get("VersionId") or "null"
                    yield Version(self.rel_key(m["Key"]), vid, m["LastModified"].timestamp(),
                                  bool(m.get("IsLatest")), True, rank=base + order.get(vid, 0))
                base += 1_000_000  # past any page's element count: later pages rank after earlier ones
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"list versions of s3://{self.bucket}/{full}") from None

    def newest_version(self, key: str) -> Version | None:
        """The newest non-deleted version of exactly ``key`` (an unversioned bucket: the object itself)."""
        full = self.full_key(key)
        best: Version | None = None
        try:
            for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full):
                for v in page.get("Versions", []) or []:
                    if v["Key"] != full:
                        continue
                    cand = Version(key, v.get("VersionId") or "null", v["LastModified"].timestamp(),
                                   bool(v.get("IsLatest")), False, int(v.get("Size", 0)),
                                   (v.get("ETag") or "").strip('"') or None)
                    if best is None or (cand.last_modified, cand.is_latest) > (best.last_modified, best.is_latest):
                        best = cand
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"list versions of {self.uri(key)}") from None
        return best

    def get_version(self, v: Version) -> dict[str, Any]:
        """GetObject of one version: the response (Body, Metadata, content headers)."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.full_key(v.key), VersionId=v.version_id)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"read {self.uri(v.key)}?versionId={v.version_id}") from None

    def open_version(self, v: Version) -> BinaryIO:
        return self.get_version(v)["Body"]

    def version_part_size(self, v: Version) -> int:
        """The size of part 1 of a multipart version."""
        return first_part_size(self.client, self.bucket, self.full_key(v.key), v.etag, VersionId=v.version_id)

    def copy_version(self, source: Storage, v: Version, unchanged: Entry | None = None,
                     conditional: bool = True) -> None:
        """The conditional copy (Storage.copy_version): CopyObject of the version when ``source`` is on the same
        endpoint with the same credentials, streamed otherwise (one PUT up to 64 MiB, parts beyond, tagged with
        the version's ETag); the condition rides on the committing call (If-Match / If-None-Match)."""
        what = f"restore {source.uri(v.key)}?versionId={v.version_id} -> {self.uri(v.key)}"
        absent = conditional and unchanged is None
        guard = unchanged if conditional else None
        if isinstance(source, S3Storage) and source.identity() == self.identity() and v.size <= 5 * 1024 * MIB:
            self.conditional(what, self.client.copy_object, dict(
                Bucket=self.bucket, Key=self.full_key(v.key), MetadataDirective="COPY",
                CopySource={"Bucket": source.bucket, "Key": source.full_key(v.key), "VersionId": v.version_id}),
                absent, guard)
            return
        if not isinstance(source, S3Storage):
            super().copy_version(source, v, unchanged, conditional)
            return
        obj = source.get_version(v)
        meta = dict(obj.get("Metadata") or {})
        meta.pop(SOURCE_ETAG_META, None)
        key = self.full_key(v.key)
        if v.size <= 64 * MIB:
            self.conditional(what, self.client.put_object, dict(
                Bucket=self.bucket, Key=key, Body=obj["Body"].read(), Metadata=meta, **content_args(obj)),
                absent, guard)
            return
        meta[SOURCE_ETAG_META] = v.etag or ""
        try:
            up = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=meta, **content_args(obj))
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, what) from None
        try:
            parts = []
            for n, data in enumerate(iter(lambda: obj["Body"].read(self.part_size), b""), start=1):
                r = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=up["UploadId"], PartNumber=n,
                                            Body=data)
                parts.append({"PartNumber": n, "ETag": r["ETag"]})
            self.conditional(what, self.client.complete_multipart_upload, dict(
                Bucket=self.bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}),
                absent, guard)
        except BaseException as exc:
            self.abort_upload_quiet(v.key, up["UploadId"])   # best effort; the lifecycle rule aborts the rest
            if isinstance(exc, Exception) and not isinstance(exc, LifeboatError):
                raise self.error(exc, what) from None
            raise

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
