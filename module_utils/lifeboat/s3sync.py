"""Incremental, parallel sync between S3 prefixes and local directories.

``sync(source, destination, ...)`` makes the destination hold what the source
holds (under the optional include/exclude patterns):

* Changes are decided from the two **listings** only (size + ETag). An object
  whose size matches but whose ETag differs (a multipart copy made with other
  part boundaries) is checked with one HEAD of the destination object for the
  ``lifeboat-source-etag`` metadata this module writes; nothing else costs a
  request per unchanged object.
* Listings are streamed, sorted externally (chunks of ``sort_chunk`` entries,
  spilled to private temporary files beyond that) and merge-joined: memory
  stays bounded whatever the object count. Sorting ourselves is needed: S3
  lists in byte order, SeaweedFS in path-component order, and its versioned
  buckets in yet another order.
* Copies are server-side (CopyObject / UploadPartCopy) when both sides are the
  same endpoint and credentials, streamed otherwise (GET -> PUT, multipart for
  large objects, same part boundaries as the source so ETags stay comparable).
  Every read of the source is conditional on the listed ETag; an object that
  changes during the copy is re-read (up to ``retries`` times) and reported.
* Deletions at the source propagate only when ``delete=True`` and only into a
  versioned bucket (so every deleted file stays recoverable).
"""
from __future__ import annotations

import fnmatch
import mimetypes
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    LifeboatError,
    NotFound,
    SafetyError,
    StorageError,
)
from ansible.module_utils.lifeboat.s3 import (
    S3Settings,
)
from ansible.module_utils.lifeboat.extsort import merge_runs, sorted_runs
from ansible.module_utils.lifeboat.s3lean import carried_headers
from ansible.module_utils.lifeboat.sides import S3Side, open_side
from ansible.module_utils.lifeboat.storage_api import (
    MIB,
    SOURCE_ETAG_META,
    Entry,
    Storage,
    dump_entry,
    entry_key,
    etag_is_multipart,
    etag_like,
    is_marker,
    load_entry,
)
from ansible.module_utils.lifeboat.storage_local import LocalStorage
from ansible.module_utils.lifeboat.storage_s3 import content_args, is_precondition_failed

Side = Storage

_PLAN_SAMPLE = 20



class SyncError(StorageError):
    """Some objects could not be synced; ``partial`` (and the typed ``result``) hold what was done."""

    def __init__(self, message: str, result: "SyncResult"):
        super().__init__(message)
        self.result = result
        self.with_partial({"changed": result.changed, **result.as_dict()})


def _match(key: str, include: list[str], exclude: list[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(key, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(key, p) for p in exclude)


# ----------------------------------------------------------------------- result

@dataclass
class SyncResult:
    copied: int = 0
    copied_bytes: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    unchanged: int = 0
    excluded: int = 0
    changed_during_copy: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    to_copy: list[str] = field(default_factory=list)     # sample of planned copies
    to_delete: list[str] = field(default_factory=list)   # sample of planned deletions
    method: str = "stream"
    duration_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def changed(self) -> bool:
        return bool(self.copied or self.deleted)

    def as_dict(self) -> dict[str, Any]:
        return {
            "copied": self.copied, "copied_bytes": self.copied_bytes,
            "deleted": self.deleted, "deleted_bytes": self.deleted_bytes,
            "unchanged": self.unchanged, "excluded": self.excluded,
            "changed_during_copy": list(self.changed_during_copy), "failed": list(self.failed),
            "to_copy_sample": list(self.to_copy), "to_delete_sample": list(self.to_delete),
            "method": self.method,
            "duration_s": round(self.duration_s, 3),
        }


# ----------------------------------------------------------------------- engine

@dataclass
class SyncOptions:
    delete: bool = False
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    concurrency: int = 8
    part_size: int = 16 * MIB
    multipart_threshold: int = 64 * MIB
    check_mode: bool = False
    sort_chunk: int = 100_000            # listing entries sorted in memory before spilling to disk
    retries: int = 3                     # re-reads of an object that changes during copy
    #: test hook (fault injection, not a mock): called with the key just before each copy
    before_copy: Callable[[str], None] | None = None


class Syncer:
    def __init__(self, source: Side, destination: Side, options: SyncOptions):
        self.src = source
        self.dst = destination
        self.opt = options
        if options.concurrency < 1:
            raise ConfigError("concurrency: must be at least 1", "concurrency")
        if options.part_size < 5 * MIB:
            raise ConfigError("part_size: must be at least 5 MiB (S3 minimum)", "part_size")
        if options.sort_chunk < 1000:
            raise ConfigError("sort_chunk: must be at least 1000", "sort_chunk")
        self.server_side = (isinstance(source, S3Side) and isinstance(destination, S3Side)
                            and source.identity() == destination.identity())
        self.result = SyncResult(method="server-side copy" if self.server_side else "stream")

    # -- preflight
    def preflight(self) -> None:
        """Both stores reachable (a directory destination is created by its first write); no overlap; deletions
        only into a store that keeps what is deleted."""
        self.src.check()
        if not self.dst.directories:
            self.dst.check()
        if isinstance(self.src, S3Side) and isinstance(self.dst, S3Side) and self.server_side \
                and self.src.bucket == self.dst.bucket:
            a, b = self.src.prefix, self.dst.prefix
            if a == b or a.startswith(b + "/") or b.startswith(a + "/") or not a or not b:
                raise ConfigError(f"destination: {self.dst.loc} overlaps the source {self.src.loc}", "destination")
        if self.opt.delete:
            if self.dst.directories:
                raise SafetyError("delete: refusing to propagate deletions into a local directory: deleted files "
                                  "would not be recoverable (delete is only allowed into a versioned bucket)",
                                  "delete")
            status = self.dst.versioning()
            if status != "Enabled":
                where = f"s3://{self.dst.bucket}" if isinstance(self.dst, S3Side) else self.dst.url
                raise SafetyError(
                    f"delete: refusing to propagate deletions into {where}: versioning is "
                    f"{(status or 'not enabled').lower()} on that bucket, so deleted files would be lost; enable "
                    "versioning on the destination or set delete=false", "delete")

    # -- planning
    def _list(self, side: Side) -> Iterator[Entry]:
        """Folder markers are mirrored from a bucket (into a directory: as directories), never made up
        from a directory's tree."""
        return side.entries(markers=not self.src.directories)

    def _pairs(self) -> Iterator[tuple[Entry | None, Entry | None]]:
        with tempfile.TemporaryDirectory(prefix="lifeboat-sync-") as tmp:
            os.chmod(tmp, 0o700)
            # both listings at once: the destination's in a thread, the source's here
            key = entry_key
            box: dict[str, Any] = {}

            def list_dst() -> None:
                try:
                    box["runs"] = sorted_runs(self._list(self.dst), key, dump_entry, tmp, "dst",
                                              self.opt.sort_chunk)
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    box["error"] = exc

            worker = threading.Thread(target=list_dst, name="lifeboat-list-dst", daemon=True)
            worker.start()
            try:
                src_runs = sorted_runs(self._list(self.src), key, dump_entry, tmp, "src", self.opt.sort_chunk)
            finally:
                worker.join()
            if "error" in box:
                raise box["error"]
            src = merge_runs(src_runs, key, load_entry)
            dst = merge_runs(box["runs"], key, load_entry)
            s = next(src, None)
            d = next(dst, None)
            while s is not None or d is not None:
                if d is None or (s is not None and s.key < d.key):
                    yield s, None
                    s = next(src, None)
                elif s is None or d.key < s.key:
                    yield None, d
                    d = next(dst, None)
                else:
                    yield s, d
                    s = next(src, None)
                    d = next(dst, None)

    def _same(self, s: Entry, d: Entry) -> bool:
        """Same content: the listed ETags, or (a store that lists none: a directory) the ETag of its content
        computed the way the other side's was; a copy with other part boundaries by our metadata (one HEAD)."""
        if s.size != d.size:
            return False
        if s.etag and d.etag:
            return s.etag == d.etag or self.dst.metadata(d.key).get(SOURCE_ETAG_META) == s.etag
        if not self.src.lists_etags and d.etag:
            return self._etag_like(self.src, s, d.etag, self.dst, d) == d.etag
        if not self.dst.lists_etags and s.etag:
            return self._etag_like(self.dst, d, s.etag, self.src, s) == s.etag
        if not self.src.lists_etags and not self.dst.lists_etags:
            return self._etag_like(self.src, s, None) == self._etag_like(self.dst, d, None)
        return False

    def _etag_like(self, store: Side, e: Entry, like: str | None, other: Side | None = None,
                   other_e: Entry | None = None) -> str:
        """The ETag of ``e``'s content in ``store``, computed like ``like`` (an object of ``other``)."""
        part_size_of = (lambda: other.first_part_size(other_e)) if other is not None and other_e else None  # type: ignore[union-attr,arg-type]
        return etag_like(lambda: store.open_reader(e.key), e.size, like, self.opt.part_size,
                         self.opt.multipart_threshold, part_size_of)

    # -- run
    def run(self) -> SyncResult:
        t0 = time.monotonic()
        self.preflight()
        self._execute(self._pairs())
        if self.dst.directories and not self.opt.check_mode:
            self.dst.remove_stale_partials()   # what writers killed in earlier runs left (storage_local)
        self.result.duration_s = time.monotonic() - t0
        if self.result.failed:
            first = self.result.failed[0]
            raise SyncError(
                f"{len(self.result.failed)} object(s) could not be synced from {self.src.describe()} to "
                f"{self.dst.describe()}; first: '{first['key']}': {first['error']} "
                f"({self.result.copied} copied, {self.result.deleted} deleted; rerun the sync to finish)",
                self.result)
        return self.result

    def _execute(self, pairs: Iterator[tuple[Entry | None, Entry | None]]) -> None:
        opt = self.opt
        res = self.result
        pending: set[Future] = set()
        limit = opt.concurrency * 4
        pool = None if opt.check_mode else ThreadPoolExecutor(max_workers=opt.concurrency,
                                                              thread_name_prefix="lifeboat-sync")
        try:
            for s, d in pairs:
                key = (s or d).key  # type: ignore[union-attr]
                if not _match(key, opt.include, opt.exclude):
                    res.excluded += 1
                    continue
                if s is not None and d is not None and self._same(s, d):
                    res.unchanged += 1
                    continue
                if s is not None and d is None and self.dst.directories and is_marker(s.key, s.size) \
                        and self.dst.has_marker(s.key):
                    res.unchanged += 1
                    continue
                if s is None:
                    if not opt.delete:
                        res.unchanged += 1  # extra object in the destination, left alone
                        continue
                    action, size = "delete", d.size  # type: ignore[union-attr]
                    if len(res.to_delete) < _PLAN_SAMPLE:
                        res.to_delete.append(key)
                else:
                    action, size = "copy", s.size
                    if len(res.to_copy) < _PLAN_SAMPLE:
                        res.to_copy.append(key)
                if opt.check_mode:
                    if action == "copy":
                        res.copied += 1
                        res.copied_bytes += size
                    else:
                        res.deleted += 1
                        res.deleted_bytes += size
                    continue
                assert pool is not None
                while len(pending) >= limit:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()
                fn = self._copy_one if action == "copy" else self._delete_one
                pending.add(pool.submit(fn, s if action == "copy" else d))
            for f in list(pending):
                f.result()
            pending.clear()
        finally:
            if pool is not None:
                for f in pending:
                    f.cancel()
                pool.shutdown(wait=True)

    # -- actions (run in worker threads)
    def _delete_one(self, d: Entry) -> None:
        try:
            self.dst.delete(d.key)
        except LifeboatError as exc:
            with self.result._lock:
                self.result.failed.append({"key": d.key, "error": str(exc)})
            return
        with self.result._lock:
            self.result.deleted += 1
            self.result.deleted_bytes += d.size

    def _copy_one(self, s: Entry) -> None:
        entry = s
        changed = False
        for attempt in range(self.opt.retries + 1):
            if self.opt.before_copy is not None:
                self.opt.before_copy(entry.key)
            try:
                self._copy(entry)
                break
            except _Changed:
                changed = True
                if attempt == self.opt.retries or not isinstance(self.src, S3Side):
                    with self.result._lock:
                        self.result.failed.append({
                            "key": s.key,
                            "error": f"source object changed during copy {attempt + 1} times; not copied"})
                    return
                try:
                    h = self.src.head(s.key)
                except NotFound:
                    with self.result._lock:
                        self.result.failed.append({"key": s.key, "error": "source object was deleted during copy"})
                    return
                entry = Entry(s.key, int(h["ContentLength"]), (h.get("ETag") or "").strip('"'), h.get("LastModified"))
            except LifeboatError as exc:
                with self.result._lock:
                    self.result.failed.append({"key": s.key, "error": str(exc)})
                return
        with self.result._lock:
            self.result.copied += 1
            self.result.copied_bytes += entry.size
            if changed:
                self.result.changed_during_copy.append(s.key)

    def _copy(self, s: Entry) -> None:
        src, dst = self.src, self.dst
        if isinstance(src, S3Side) and isinstance(dst, S3Side):
            if self.server_side:
                self._copy_server_side(src, dst, s)
            else:
                self._copy_stream(src, dst, s)
        elif isinstance(src, S3Side) and isinstance(dst, LocalStorage):
            self._download(src, dst, s)
        elif isinstance(src, LocalStorage) and isinstance(dst, S3Side):
            self._upload(src, dst, s)
        else:
            self._stream(src, dst, s)

    # server-side
    def _copy_server_side(self, src: S3Side, dst: S3Side, s: Entry) -> None:
        copy_source = {"Bucket": src.bucket, "Key": src.full(s.key)}
        try:
            if not etag_is_multipart(s.etag) and s.size <= 5 * 1024 * MIB:
                dst.client.copy_object(Bucket=dst.bucket, Key=dst.full(s.key), CopySource=copy_source,
                                       CopySourceIfMatch=f'"{s.etag}"', MetadataDirective="COPY")
                return
            head = src.client.head_object(Bucket=src.bucket, Key=src.full(s.key), IfMatch=f'"{s.etag}"')
            part = self._source_part_size(src, s)
            meta = dict(head.get("Metadata") or {})
            meta[SOURCE_ETAG_META] = s.etag or ""
            up = dst.client.create_multipart_upload(Bucket=dst.bucket, Key=dst.full(s.key), Metadata=meta,
                                                    **content_args(head))
        except Exception as exc:  # noqa: BLE001
            if is_precondition_failed(exc):
                raise _Changed() from None
            raise dst.error(exc, f"copy {src.uri(s.key)} -> {dst.uri(s.key)}") from None
        upload_id = up["UploadId"]
        try:
            parts = []
            for n, start in enumerate(range(0, max(s.size, 1), part), start=1):
                end = min(start + part, s.size) - 1
                r = dst.client.upload_part_copy(Bucket=dst.bucket, Key=dst.full(s.key), UploadId=upload_id,
                                                PartNumber=n, CopySource=copy_source,
                                                CopySourceRange=f"bytes={start}-{end}",
                                                CopySourceIfMatch=f'"{s.etag}"')
                parts.append({"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]})
            dst.client.complete_multipart_upload(Bucket=dst.bucket, Key=dst.full(s.key), UploadId=upload_id,
                                                 MultipartUpload={"Parts": parts})
        except Exception as exc:  # noqa: BLE001
            dst.abort_upload_quiet(s.key, upload_id)
            if is_precondition_failed(exc):
                raise _Changed() from None
            raise dst.error(exc, f"copy {src.uri(s.key)} -> {dst.uri(s.key)}") from None

    def _source_part_size(self, src: S3Side, s: Entry) -> int:
        if etag_is_multipart(s.etag):
            h = src.client.head_object(Bucket=src.bucket, Key=src.full(s.key), PartNumber=1,
                                       IfMatch=f'"{s.etag}"')
            return max(int(h["ContentLength"]), 5 * MIB)
        return self.opt.part_size

    # streaming S3 -> S3
    def _copy_stream(self, src: S3Side, dst: S3Side, s: Entry) -> None:
        what = f"copy {src.uri(s.key)} -> {dst.uri(s.key)}"
        try:
            if not etag_is_multipart(s.etag) and s.size <= self.opt.multipart_threshold:
                lean_src, lean_dst = src.lean_for(s.key), dst.lean_for(s.key)
                if lean_src is not None and lean_dst is not None:  # the per-object hot path (s3lean)
                    body, headers = lean_src.get(src.bucket, src.full(s.key), if_match=s.etag)
                    if len(body) != s.size:
                        raise _Changed()
                    got = (lean_dst.put(dst.bucket, dst.full(s.key), body, carried_headers(headers)).get("ETag")
                           or "").strip('"')
                else:
                    obj = src.client.get_object(Bucket=src.bucket, Key=src.full(s.key), IfMatch=f'"{s.etag}"')
                    body = obj["Body"].read()
                    if len(body) != s.size:
                        raise _Changed()
                    r = dst.client.put_object(Bucket=dst.bucket, Key=dst.full(s.key), Body=body,
                                              Metadata=obj.get("Metadata") or {}, **content_args(obj))
                    got = (r.get("ETag") or "").strip('"')
                if s.etag and got and got != s.etag:
                    raise StorageError(f"{what}: the destination stored ETag {got}, the source has {s.etag}")
                return
            head = src.client.head_object(Bucket=src.bucket, Key=src.full(s.key), IfMatch=f'"{s.etag}"')
            part = self._source_part_size(src, s)
            meta = dict(head.get("Metadata") or {})
            meta[SOURCE_ETAG_META] = s.etag or ""
            up = dst.client.create_multipart_upload(Bucket=dst.bucket, Key=dst.full(s.key), Metadata=meta,
                                                    **content_args(head))
        except _Changed:
            raise
        except LifeboatError:
            raise
        except Exception as exc:  # noqa: BLE001
            if is_precondition_failed(exc):
                raise _Changed() from None
            raise dst.error(exc, what) from None
        upload_id = up["UploadId"]
        try:
            parts = []
            for n, start in enumerate(range(0, max(s.size, 1), part), start=1):
                end = min(start + part, s.size) - 1
                obj = src.client.get_object(Bucket=src.bucket, Key=src.full(s.key), Range=f"bytes={start}-{end}",
                                            IfMatch=f'"{s.etag}"')
                data = obj["Body"].read()
                r = dst.client.upload_part(Bucket=dst.bucket, Key=dst.full(s.key), UploadId=upload_id,
                                           PartNumber=n, Body=data)
                parts.append({"PartNumber": n, "ETag": r["ETag"]})
            dst.client.complete_multipart_upload(Bucket=dst.bucket, Key=dst.full(s.key), UploadId=upload_id,
                                                 MultipartUpload={"Parts": parts})
        except Exception as exc:  # noqa: BLE001
            dst.abort_upload_quiet(s.key, upload_id)
            if is_precondition_failed(exc):
                raise _Changed() from None
            raise dst.error(exc, what) from None

    # S3 -> local
    def _download(self, src: S3Side, dst: LocalStorage, s: Entry) -> None:
        if is_marker(s.key, s.size):
            dst.make_marker(s.key)
            return
        try:
            obj = src.client.get_object(Bucket=src.bucket, Key=src.full(s.key), IfMatch=f'"{s.etag}"')
        except Exception as exc:  # noqa: BLE001
            if is_precondition_failed(exc):
                raise _Changed() from None
            raise src.error(exc, f"read {src.uri(s.key)}") from None
        with dst.open_writer(s.key) as w:
            for chunk in obj["Body"].iter_chunks(MIB):
                w.write(chunk)
            if w.bytes_written != s.size:
                raise _Changed()
            if s.last_modified is not None:
                w.keep_mtime(s.last_modified.timestamp())

    # local -> S3
    def _upload(self, src: LocalStorage, dst: S3Side, s: Entry) -> None:
        path = src.path(s.key)
        what = f"upload {path} -> {dst.uri(s.key)}"
        ctype = mimetypes.guess_type(s.key)[0] or "application/octet-stream"
        try:
            size = os.path.getsize(path)
            if size <= self.opt.multipart_threshold:
                with open(path, "rb") as fh:
                    body = fh.read()
                lean = dst.lean_for(s.key)
                if lean is not None:
                    lean.put(dst.bucket, dst.full(s.key), body, {"Content-Type": ctype})
                else:
                    dst.client.put_object(Bucket=dst.bucket, Key=dst.full(s.key), Body=body, ContentType=ctype)
                return
        except OSError as exc:
            raise StorageError(f"{src.option}: read {path}: {exc.strerror or exc}", src.option) from None
        except Exception as exc:  # noqa: BLE001
            raise dst.error(exc, what) from None
        try:
            up = dst.client.create_multipart_upload(Bucket=dst.bucket, Key=dst.full(s.key), ContentType=ctype)
        except Exception as exc:  # noqa: BLE001
            raise dst.error(exc, what) from None
        upload_id = up["UploadId"]
        try:
            parts = []
            with open(path, "rb") as fh:
                n = 0
                while True:
                    data = fh.read(self.opt.part_size)
                    if not data:
                        break
                    n += 1
                    r = dst.client.upload_part(Bucket=dst.bucket, Key=dst.full(s.key), UploadId=upload_id,
                                               PartNumber=n, Body=data)
                    parts.append({"PartNumber": n, "ETag": r["ETag"]})
            dst.client.complete_multipart_upload(Bucket=dst.bucket, Key=dst.full(s.key), UploadId=upload_id,
                                                 MultipartUpload={"Parts": parts})
        except OSError as exc:
            dst.abort_upload_quiet(s.key, upload_id)
            raise StorageError(f"{src.option}: read {path}: {exc.strerror or exc}", src.option) from None
        except Exception as exc:  # noqa: BLE001
            dst.abort_upload_quiet(s.key, upload_id)
            raise dst.error(exc, what) from None

    def _stream(self, src: Side, dst: Side, s: Entry) -> None:
        """Any store to any store: read, write (a folder marker into a directory: its directory)."""
        if dst.directories and is_marker(s.key, s.size):
            dst.make_marker(s.key)
            return
        ctype = mimetypes.guess_type(s.key)[0] or "application/octet-stream"
        with src.open_reader(s.key) as fin, dst.open_writer(s.key, content_type=ctype) as w:
            for chunk in iter(lambda: fin.read(MIB), b""):
                w.write(chunk)
            if w.bytes_written != s.size:
                raise _Changed()


class _Changed(Exception):
    """The source object no longer matches the listed ETag."""


def sync(source: str | Storage, destination: str | Storage, source_settings: S3Settings | None = None,
         destination_settings: S3Settings | None = None, options: SyncOptions | None = None,
         file_mode: int = 0o600, dir_mode: int = 0o700) -> SyncResult:
    """Sync ``source`` into ``destination``: each ``s3://bucket/prefix``, an absolute directory, or a store."""
    options = options or SyncOptions()
    src = source if isinstance(source, Storage) else open_side(source, source_settings, "source",
                                                                 file_mode=file_mode, dir_mode=dir_mode)
    dst = destination if isinstance(destination, Storage) else open_side(
        destination, destination_settings, "destination", file_mode=file_mode, dir_mode=dir_mode)
    if src.directories and src.identity() == dst.identity():
        raise ConfigError("destination: is the same directory as the source", "destination")
    return Syncer(src, dst, options).run()
