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

import datetime as _dt
import errno
import fnmatch
import hashlib
import heapq
import json
import mimetypes
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
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
    bucket_versioning,
    check_bucket,
    make_client,
    parse_s3_url,
    translate,
)

MIB = 1024 * 1024
SOURCE_ETAG_META = "lifeboat-source-etag"
_PLAN_SAMPLE = 20

try:  # botocore is present whenever an S3 side is used (make_client requires it)
    import botocore.exceptions as _bce
    from botocore.utils import parse_timestamp as _default_timestamp
except ImportError:  # pragma: no cover
    _bce = None  # type: ignore[assignment]
    _default_timestamp = None  # type: ignore[assignment]


class SyncError(StorageError):
    """Some objects could not be synced; ``result`` holds what was done."""

    def __init__(self, message: str, result: "SyncResult"):
        super().__init__(message)
        self.result = result


def external_sort(items: Iterable[Any], key: Callable[[Any], Any], dump: Callable[[Any], list],
                  load: Callable[[list], Any], tmp: str, name: str, chunk: int) -> Iterator[Any]:
    """``items`` sorted by ``key``, holding at most ``chunk`` of them in memory.

    Beyond ``chunk`` items, sorted runs are spilled to 0600 JSON-lines files in
    ``tmp`` and merged with heapq.merge.
    """
    runs = sorted_runs(items, key, dump, tmp, name, chunk)
    return merge_runs(runs, key, load)


def sorted_runs(items: Iterable[Any], key: Callable[[Any], Any], dump: Callable[[Any], list], tmp: str,
                name: str, chunk: int) -> tuple[list[str], list[Any]]:
    """Phase 1 of the external sort: (spilled run files, the last run sorted in memory)."""
    buf: list[Any] = []
    files: list[str] = []
    for item in items:
        buf.append(item)
        if len(buf) >= chunk:
            files.append(_spill(buf, key, dump, tmp, f"{name}-{len(files)}"))
            buf = []
    buf.sort(key=key)
    return files, buf


def merge_runs(runs: tuple[list[str], list[Any]], key: Callable[[Any], Any],
               load: Callable[[list], Any]) -> Iterator[Any]:
    """Phase 2 of the external sort: merge the runs lazily."""
    files, buf = runs
    if not files:
        yield from buf
        return
    handles = [open(f, encoding="utf-8") for f in files]  # noqa: SIM115 - closed below
    try:
        streams = [(load(json.loads(line)) for line in h) for h in handles]
        yield from heapq.merge(*streams, iter(buf), key=key)
    finally:
        for h in handles:
            h.close()


def _spill(buf: list[Any], key: Callable[[Any], Any], dump: Callable[[Any], list], tmp: str, name: str) -> str:
    buf.sort(key=key)
    path = os.path.join(tmp, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for item in buf:
            fh.write(json.dumps(dump(item)) + "\n")
    return path


def _dump_entry(e: "Entry") -> list:
    return [e.key, e.size, e.etag, e.last_modified.isoformat() if e.last_modified else None]


def _load_entry(v: list) -> "Entry":
    return Entry(v[0], v[1], v[2], _dt.datetime.fromisoformat(v[3]) if v[3] else None)


def _entry_key(e: "Entry") -> str:
    return e.key


def _sorted(entries: Iterable["Entry"], tmp: str, name: str, chunk: int) -> Iterator["Entry"]:
    return external_sort(entries, _entry_key, _dump_entry, _load_entry, tmp, name, chunk)


@dataclass(frozen=True)
class Entry:
    key: str                  # relative to the side's root, '/' separated
    size: int
    etag: str | None = None   # S3 ETag without quotes; None for local files
    last_modified: _dt.datetime | None = None


def is_marker(key: str, size: int) -> bool:
    """A 0-byte "folder" placeholder (key ending in '/'), as consoles and other tools create them."""
    return size == 0 and key.endswith("/")


def etag_is_multipart(etag: str | None) -> bool:
    return bool(etag) and "-" in (etag or "")


def md5_etag_of_file(path: str, size: int, part_size: int | None) -> str:
    """The ETag S3 gives this file's content uploaded in one PUT (part_size None) or in parts."""
    with open(path, "rb") as fh:
        if part_size is None:
            h = hashlib.md5(usedforsecurity=False)
            for chunk in iter(lambda: fh.read(MIB), b""):
                h.update(chunk)
            return h.hexdigest()
        digests = []
        remaining = size
        while remaining > 0:
            n = min(part_size, remaining)
            h = hashlib.md5(usedforsecurity=False)
            left = n
            while left:
                chunk = fh.read(min(MIB, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            digests.append(h.digest())
            remaining -= n
        return hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest() + f"-{len(digests)}"


def first_part_size(client: Any, bucket: str, key: str, etag: str | None, **kw: Any) -> int:
    """The size of part 1 of a multipart object (HEAD with PartNumber=1, conditional on ``etag``)."""
    h = client.head_object(Bucket=bucket, Key=key, PartNumber=1, IfMatch=f'"{etag}"', **kw)
    return int(h["ContentLength"])


def _candidate_part_sizes(size: int, parts: int) -> list[int]:
    """Part sizes (whole MiB) that split ``size`` bytes into exactly ``parts`` parts."""
    out = []
    lo = -(-size // parts)  # ceil
    hi = size // (parts - 1) if parts > 1 else size
    mib = -(-lo // MIB) * MIB
    while mib <= hi and len(out) < 4:
        if -(-size // mib) == parts:
            out.append(mib)
        mib += MIB
    if not out and parts > 1:
        out.append(lo)
    return out


def _match(key: str, include: list[str], exclude: list[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(key, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(key, p) for p in exclude)


def _err_code(exc: BaseException) -> str:
    if _bce is not None and isinstance(exc, _bce.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _is_precondition_failed(exc: BaseException) -> bool:
    if _bce is not None and isinstance(exc, _bce.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return _err_code(exc) in {"PreconditionFailed", "412"} or status == 412
    return False


# ------------------------------------------------------------------------ sides

def _fast_timestamp(value: str) -> Any:
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return _default_timestamp(value)


def fast_timestamps(client: Any) -> Any:
    """Parse listing timestamps (ISO 8601) with datetime.fromisoformat instead of dateutil.

    botocore's default parser costs about half a millisecond per object on a listing page; on a
    two-core host that dominates a nothing-to-do sync. Best effort: a botocore without the hook
    keeps its default parser.
    """
    try:
        client._endpoint._response_parser_factory.set_parser_defaults(timestamp_parser=_fast_timestamp)
    except AttributeError:  # pragma: no cover - internal layout changed
        pass
    return client


class S3Side:
    kind = "s3"

    def __init__(self, url: str, settings: S3Settings, option: str, client: Any = None):
        self.loc = parse_s3_url(url, option)
        self.settings = settings
        self.option = option
        self.client = client if client is not None else fast_timestamps(make_client(settings))

    @property
    def bucket(self) -> str:
        return self.loc.bucket

    @property
    def prefix(self) -> str:
        return self.loc.prefix

    def full(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def uri(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.full(rel)}"

    def describe(self) -> str:
        return f"{self.loc} at {self.settings.describe()}"

    def identity(self) -> tuple[str, str]:
        return (self.settings.endpoint or f"aws:{self.settings.region}", self.settings.access_key or "")

    def error(self, exc: BaseException, what: str) -> LifeboatError:
        err = translate(exc, what, self.settings, self.bucket)
        return type(err)(f"{self.option}: {err}", self.option)

    def check(self) -> None:
        try:
            check_bucket(self.client, self.bucket, self.settings)
        except LifeboatError as exc:
            raise type(exc)(f"{self.option}: {exc}", self.option) from None

    def versioning(self) -> str:
        try:
            return bucket_versioning(self.client, self.bucket, self.settings)
        except LifeboatError as exc:
            raise type(exc)(f"{self.option}: {exc}", self.option) from None

    def list(self, markers: bool = False) -> Iterator[Entry]:
        """The objects under the prefix; 0-byte "folder" placeholders (keys ending in '/') only with
        ``markers``."""
        prefix = self.prefix + "/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []) or []:
                    key = obj["Key"]
                    if is_marker(key, int(obj["Size"])) and (not markers or key == prefix):
                        continue  # a "folder" placeholder, not a file
                    yield Entry(key[len(prefix):], int(obj["Size"]), (obj.get("ETag") or "").strip('"') or None,
                                obj.get("LastModified"))
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"list s3://{self.bucket}/{prefix}") from None

    def head(self, rel: str, **kw: Any) -> dict[str, Any]:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.full(rel), **kw)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"stat {self.uri(rel)}") from None

    def delete(self, rel: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.full(rel))
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"delete {self.uri(rel)}") from None


class LocalSide:
    kind = "local"

    def __init__(self, root: str, option: str, file_mode: int = 0o600, dir_mode: int = 0o700):
        if not os.path.isabs(root):
            raise ConfigError(f"{option}: local directory '{root}' must be an absolute path", option)
        self.root = os.path.normpath(root)
        self.option = option
        self.file_mode = file_mode
        self.dir_mode = dir_mode

    def path(self, rel: str) -> str:
        """The file for key ``rel`` (a folder marker 'a/b/' maps to the directory a/b).

        Keys that name no file of their own are refused: a leading '/', an empty, '.' or '..' segment
        ('a//b', 'a/./b', 'a/../b', '../x' - escaping the directory or aliasing another key), a NUL.
        """
        segments = (rel[:-1] if rel.endswith("/") else rel).split("/")
        if "\x00" in rel or any(seg in ("", ".", "..") for seg in segments):
            why = "escapes" if ".." in segments else "is not a plain path below"
            raise ConfigError(f"{self.option}: key '{rel}' {why} the directory {self.root} (a leading '/' or an "
                              "empty, '.' or '..' segment); not written there", self.option)
        norm = os.path.normpath(os.path.join(self.root, rel))
        if not norm.startswith(os.path.join(self.root, "")):
            raise ConfigError(f"{self.option}: key '{rel}' escapes the directory {self.root}", self.option)
        # a symbolic link inside the directory (planted, or an old layout) must not lead a write elsewhere
        parent, real_root = os.path.realpath(os.path.dirname(norm)), os.path.realpath(self.root)
        if parent != real_root and not parent.startswith(os.path.join(real_root, "")):
            raise ConfigError(f"{self.option}: key '{rel}' leads through a symbolic link out of the directory "
                              f"{self.root} (to {parent}); not written there", self.option)
        return norm

    def uri(self, rel: str) -> str:
        return self.path(rel)

    def describe(self) -> str:
        return self.root

    def identity(self) -> tuple[str, str]:
        return ("local", self.root)

    def check(self, create: bool = False) -> None:
        if os.path.isdir(self.root):
            return
        if create:
            os.makedirs(self.root, mode=self.dir_mode, exist_ok=True)
            return
        raise NotFound(f"{self.option}: directory {self.root} does not exist", self.option)

    def list(self) -> Iterator[Entry]:
        """Files under root, streamed (no full listing held)."""
        if not os.path.isdir(self.root):
            return
        yield from self._walk(self.root, "")

    def _walk(self, path: str, rel: str) -> Iterator[Entry]:
        try:
            entries = list(os.scandir(path))
        except OSError as exc:
            raise StorageError(f"{self.option}: cannot read directory {path}: {exc.strerror}", self.option) from None
        items = []
        for e in entries:
            name = e.name
            if name.endswith(".lifeboat-partial"):
                continue
            r = f"{rel}{name}"
            if e.is_dir(follow_symlinks=False):
                items.append((r + "/", r, e, True))
            elif e.is_file(follow_symlinks=False):
                items.append((r, r, e, False))
        items.sort(key=lambda t: t[0])
        for _, r, e, is_dir in items:
            if is_dir:
                yield from self._walk(e.path, r + "/")
            else:
                st = e.stat(follow_symlinks=False)
                yield Entry(r, st.st_size, None, _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.UTC))

    def delete(self, rel: str) -> None:
        try:
            os.unlink(self.path(rel))
        except FileNotFoundError:
            pass


Side = S3Side | LocalSide


def open_side(location: str, settings: S3Settings | None, option: str, **local_kw: Any) -> Side:
    if location.startswith("s3://"):
        return S3Side(location, settings or S3Settings(), option)
    if "://" in location:
        raise ConfigError(f"{option}: unsupported scheme in '{location}' (use s3://bucket/prefix or an absolute "
                          "directory)", option)
    return LocalSide(location, option, **local_kw)


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
        for side in (self.src, self.dst):
            if isinstance(side, S3Side):
                side.check()
        if isinstance(self.src, LocalSide):
            self.src.check(create=False)
        if isinstance(self.src, S3Side) and isinstance(self.dst, S3Side) and self.server_side \
                and self.src.bucket == self.dst.bucket:
            a, b = self.src.prefix, self.dst.prefix
            if a == b or a.startswith(b + "/") or b.startswith(a + "/") or not a or not b:
                raise ConfigError(f"destination: {self.dst.loc} overlaps the source {self.src.loc}", "destination")
        if self.opt.delete:
            if isinstance(self.dst, LocalSide):
                raise SafetyError("delete: refusing to propagate deletions into a local directory: deleted files "
                                  "would not be recoverable (delete is only allowed into a versioned bucket)",
                                  "delete")
            status = self.dst.versioning()
            if status != "Enabled":
                raise SafetyError(
                    f"delete: refusing to propagate deletions into s3://{self.dst.bucket}: versioning is "
                    f"{(status or 'not enabled').lower()} on that bucket, so deleted files would be lost; enable "
                    "versioning on the destination or set delete=false", "delete")

    # -- planning
    def _list(self, side: Side) -> Iterator[Entry]:
        """Folder markers are mirrored from a bucket (into a directory: as directories), never made up
        from a directory's tree."""
        if isinstance(side, LocalSide):
            return side.list()
        return side.list(markers=isinstance(self.src, S3Side))

    def _pairs(self) -> Iterator[tuple[Entry | None, Entry | None]]:
        with tempfile.TemporaryDirectory(prefix="lifeboat-sync-") as tmp:
            os.chmod(tmp, 0o700)
            # both listings at once: the destination's in a thread, the source's here
            key = _entry_key
            box: dict[str, Any] = {}

            def list_dst() -> None:
                try:
                    box["runs"] = sorted_runs(self._list(self.dst), key, _dump_entry, tmp, "dst",
                                              self.opt.sort_chunk)
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    box["error"] = exc

            worker = threading.Thread(target=list_dst, name="lifeboat-list-dst", daemon=True)
            worker.start()
            try:
                src_runs = sorted_runs(self._list(self.src), key, _dump_entry, tmp, "src", self.opt.sort_chunk)
            finally:
                worker.join()
            if "error" in box:
                raise box["error"]
            src = merge_runs(src_runs, key, _load_entry)
            dst = merge_runs(box["runs"], key, _load_entry)
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
        if s.size != d.size:
            return False
        if isinstance(self.src, S3Side) and isinstance(self.dst, S3Side):
            if s.etag and s.etag == d.etag:
                return True
            # a copy with other part boundaries: one HEAD for our metadata
            meta = self.dst.head(d.key).get("Metadata", {}) or {}
            return bool(s.etag) and meta.get(SOURCE_ETAG_META) == s.etag
        if isinstance(self.src, LocalSide) and isinstance(self.dst, S3Side):
            if not d.etag:
                return False
            dst = self.dst
            return self._local_etag(self.src.path(s.key), s.size, d.etag, lambda: first_part_size(
                dst.client, dst.bucket, dst.full(d.key), d.etag)) == d.etag
        if isinstance(self.src, S3Side) and isinstance(self.dst, LocalSide):
            if not s.etag:
                return False
            src = self.src
            return self._local_etag(self.dst.path(d.key), d.size, s.etag, lambda: first_part_size(
                src.client, src.bucket, src.full(s.key), s.etag)) == s.etag
        # local -> local: compare content
        return self._local_etag(self.src.path(s.key), s.size, None) == \
            self._local_etag(self.dst.path(d.key), d.size, None)

    def _local_etag(self, path: str, size: int, like: str | None,
                    part_size_of: Callable[[], int] | None = None) -> str:
        return local_etag(path, size, like, self.opt.part_size, self.opt.multipart_threshold, part_size_of)

    # -- run
    def run(self) -> SyncResult:
        t0 = time.monotonic()
        self.preflight()
        self._execute(self._pairs())
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
                if s is not None and d is None and isinstance(self.dst, LocalSide) and is_marker(s.key, s.size) \
                        and _marker_dir_exists(self.dst, s.key):
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
        elif isinstance(src, S3Side) and isinstance(dst, LocalSide):
            self._download(src, dst, s)
        elif isinstance(src, LocalSide) and isinstance(dst, S3Side):
            self._upload(src, dst, s)
        else:
            self._local_copy(src, dst, s)  # type: ignore[arg-type]

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
                                                    **_content_args(head))
        except Exception as exc:  # noqa: BLE001
            if _is_precondition_failed(exc):
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
            _abort(dst, s.key, upload_id)
            if _is_precondition_failed(exc):
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
                obj = src.client.get_object(Bucket=src.bucket, Key=src.full(s.key), IfMatch=f'"{s.etag}"')
                body = obj["Body"].read()
                if len(body) != s.size:
                    raise _Changed()
                r = dst.client.put_object(Bucket=dst.bucket, Key=dst.full(s.key), Body=body,
                                          Metadata=obj.get("Metadata") or {}, **_content_args(obj))
                got = (r.get("ETag") or "").strip('"')
                if s.etag and got and got != s.etag:
                    raise StorageError(f"{what}: the destination stored ETag {got}, the source has {s.etag}")
                return
            head = src.client.head_object(Bucket=src.bucket, Key=src.full(s.key), IfMatch=f'"{s.etag}"')
            part = self._source_part_size(src, s)
            meta = dict(head.get("Metadata") or {})
            meta[SOURCE_ETAG_META] = s.etag or ""
            up = dst.client.create_multipart_upload(Bucket=dst.bucket, Key=dst.full(s.key), Metadata=meta,
                                                    **_content_args(head))
        except _Changed:
            raise
        except LifeboatError:
            raise
        except Exception as exc:  # noqa: BLE001
            if _is_precondition_failed(exc):
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
            _abort(dst, s.key, upload_id)
            if _is_precondition_failed(exc):
                raise _Changed() from None
            raise dst.error(exc, what) from None

    # S3 -> local
    def _download(self, src: S3Side, dst: LocalSide, s: Entry) -> None:
        path = dst.path(s.key)
        if is_marker(s.key, s.size):
            make_marker_dir(dst, s.key)
            return
        partial = path + ".lifeboat-partial"
        try:
            obj = src.client.get_object(Bucket=src.bucket, Key=src.full(s.key), IfMatch=f'"{s.etag}"')
        except Exception as exc:  # noqa: BLE001
            if _is_precondition_failed(exc):
                raise _Changed() from None
            raise src.error(exc, f"read {src.uri(s.key)}") from None
        try:
            _makedirs(os.path.dirname(path), dst.dir_mode)
            fd = open_partial(partial, dst.file_mode)
            n = 0
            with os.fdopen(fd, "wb") as fh:
                for chunk in obj["Body"].iter_chunks(MIB):
                    fh.write(chunk)
                    n += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if n != s.size:
                raise _Changed()
            os.chmod(partial, dst.file_mode)
            if s.last_modified is not None:
                ts = s.last_modified.timestamp()
                os.utime(partial, (ts, ts))
            os.replace(partial, path)
        except OSError as exc:
            _unlink(partial)
            raise local_write_error(dst, s.key, path, exc) from None
        except BaseException:
            _unlink(partial)
            raise

    # local -> S3
    def _upload(self, src: LocalSide, dst: S3Side, s: Entry) -> None:
        path = src.path(s.key)
        what = f"upload {path} -> {dst.uri(s.key)}"
        ctype = mimetypes.guess_type(s.key)[0] or "application/octet-stream"
        try:
            size = os.path.getsize(path)
            if size <= self.opt.multipart_threshold:
                with open(path, "rb") as fh:
                    body = fh.read()
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
            _abort(dst, s.key, upload_id)
            raise StorageError(f"{src.option}: read {path}: {exc.strerror or exc}", src.option) from None
        except Exception as exc:  # noqa: BLE001
            _abort(dst, s.key, upload_id)
            raise dst.error(exc, what) from None

    def _local_copy(self, src: LocalSide, dst: LocalSide, s: Entry) -> None:
        import shutil

        path = dst.path(s.key)
        partial = path + ".lifeboat-partial"
        try:
            _makedirs(os.path.dirname(path), dst.dir_mode)
            with open(src.path(s.key), "rb") as fin, os.fdopen(open_partial(partial, dst.file_mode), "wb") as fout:
                shutil.copyfileobj(fin, fout, MIB)
            os.chmod(partial, dst.file_mode)
            os.replace(partial, path)
        except OSError as exc:
            _unlink(partial)
            raise StorageError(f"{dst.option}: write {path}: {exc.strerror or exc}", dst.option) from None


def local_etag(path: str, size: int, like: str | None, part_size: int = 16 * MIB,
               multipart_threshold: int = 64 * MIB, part_size_of: Callable[[], int] | None = None) -> str:
    """This file's ETag computed the way ``like`` was (single PUT or N parts).

    ``like`` None: the ETag this module's own upload would produce. For a multipart ``like``, whole-MiB
    part sizes are tried first; when none gives ``like``, ``part_size_of`` (the object's real first part
    size, one HEAD) covers other tools' part sizes (e.g. 6,000,000 bytes).
    """
    if like and etag_is_multipart(like):
        parts = int(like.rsplit("-", 1)[1])
        tried = _candidate_part_sizes(size, parts)
        for ps in tried:
            got = md5_etag_of_file(path, size, ps)
            if got == like:
                return got
        if part_size_of is not None:
            try:
                ps = part_size_of()
            except Exception:  # noqa: BLE001 - no part information: the file counts as different
                return ""
            if ps > 0 and ps not in tried and -(-size // ps) == parts:
                got = md5_etag_of_file(path, size, ps)
                if got == like:
                    return got
        return ""
    if like is not None:
        return md5_etag_of_file(path, size, None)
    return md5_etag_of_file(path, size, part_size if size > multipart_threshold else None)


class _Changed(Exception):
    """The source object no longer matches the listed ETag."""


def _content_args(resp: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name in ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl"):
        if resp.get(name):
            out[name] = resp[name]
    return out


def _abort(side: S3Side, rel: str, upload_id: str) -> None:
    try:
        side.client.abort_multipart_upload(Bucket=side.bucket, Key=side.full(rel), UploadId=upload_id)
    except Exception:  # noqa: BLE001 - best effort; lifecycle rules abort the rest
        pass


def open_partial(partial: str, mode: int) -> int:
    """A fresh temporary file (never an existing one, never through a link planted at its name)."""
    _unlink(partial)
    return os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)


def _marker_dir_exists(side: LocalSide, key: str) -> bool:
    try:
        return os.path.isdir(side.path(key))
    except ConfigError:
        return False


def make_marker_dir(side: LocalSide, key: str) -> None:
    """A folder marker 'a/b/' in a directory: the (possibly empty) directory a/b."""
    path = side.path(key)
    try:
        _makedirs(path, side.dir_mode)
    except OSError as exc:
        raise local_write_error(side, key, path, exc) from None


def local_write_error(side: LocalSide, key: str, path: str, exc: OSError) -> StorageError:
    """A clear message for a failed write of ``key``, naming the file/folder clash when that is the cause."""
    msg = f"{side.option}: write {path}: {exc.strerror or exc}"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        msg += (f" (key '{key}': a name that is both a file and a folder prefix in the bucket, such as 'a' and "
                "'a/b', cannot be represented in a directory; one of them was not written)")
    return StorageError(msg, side.option)


def _makedirs(path: str, mode: int) -> None:
    """os.makedirs giving ``mode`` to every directory it creates (os.makedirs gives the intermediate
    ones the umask's default, typically 0755)."""
    if not path or os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        _makedirs(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    os.chmod(path, mode)  # not narrowed by the umask


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):  # not there (a file where a parent directory should be)
        pass


def sync(source: str, destination: str, source_settings: S3Settings | None = None,
         destination_settings: S3Settings | None = None, options: SyncOptions | None = None,
         file_mode: int = 0o600, dir_mode: int = 0o700) -> SyncResult:
    """Sync ``source`` into ``destination`` (each ``s3://bucket/prefix`` or an absolute directory)."""
    options = options or SyncOptions()
    src = open_side(source, source_settings, "source", file_mode=file_mode, dir_mode=dir_mode)
    dst = open_side(destination, destination_settings, "destination", file_mode=file_mode, dir_mode=dir_mode)
    if isinstance(src, LocalSide) and isinstance(dst, LocalSide) and src.root == dst.root:
        raise ConfigError("destination: is the same directory as the source", "destination")
    return Syncer(src, dst, options).run()
