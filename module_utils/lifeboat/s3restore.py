"""Getting files back from a versioned backup bucket.

* ``restore_point_in_time``: make a target (bucket prefix or directory) hold a
  prefix of the backup bucket as it was at time T, chosen per key from
  ListObjectVersions (the newest version whose LastModified <= T; a delete
  marker there means "did not exist at T"). Target files that did not exist at
  T are left alone unless ``delete_newer``; a target file that would be
  overwritten or deleted is only touched when its current content is itself a
  version in the backup (so the restore never loses data), unless ``force``.
* ``restore_missing``: given the keys the database references, list those
  missing from the target and restore exactly those from the newest
  non-deleted version in the backup; report the ones found nowhere.

Listings are streamed and externally sorted (see extsort.external_sort), so
memory stays bounded by the sort chunk, not by the object count.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from ansible.module_utils.lifeboat.errors import ConfigError, LifeboatError, NotFound, RestoreError
from ansible.module_utils.lifeboat.extsort import external_sort
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.sides import S3Side, open_side
from ansible.module_utils.lifeboat.storage_api import (
    MIB,
    MIN_PART_SIZE,
    SOURCE_ETAG_META,
    Entry,
    etag_like,
    is_marker,
    sorted_entries,
)
from ansible.module_utils.lifeboat.storage_local import LocalStorage
from ansible.module_utils.lifeboat.storage_s3 import content_args, first_part_size

_SAMPLE = 50


@dataclass(frozen=True)
class Version:
    key: str                  # relative to the backup prefix
    version_id: str
    last_modified: float      # epoch seconds
    is_latest: bool
    delete_marker: bool
    size: int = 0
    etag: str | None = None
    rank: int = 0             # position in the server's listing (newest first within a key): breaks LastModified ties


def _dump_version(v: Version) -> list:
    return [v.key, v.version_id, v.last_modified, v.is_latest, v.delete_marker, v.size, v.etag, v.rank]


def _load_version(x: list) -> Version:
    return Version(*x)


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


def list_versions(side: S3Side) -> Iterator[Version]:
    prefix = side.prefix + "/" if side.prefix else ""
    paginator = side.client.get_paginator("list_object_versions")
    events = side.client.meta.events
    events.register("after-call.s3.ListObjectVersions", _keep_raw_page, unique_id="lifeboat-raw-versions")
    base = 0
    try:
        for page in _pages_with_raw(paginator.paginate(Bucket=side.bucket, Prefix=prefix)):
            page, raw = page
            order = _listing_order(raw)
            for v in page.get("Versions", []) or []:
                vid = v.get("VersionId") or "null"
                yield Version(v["Key"][len(prefix):], vid, v["LastModified"].timestamp(),
                              bool(v.get("IsLatest")), False, int(v.get("Size", 0)),
                              (v.get("ETag") or "").strip('"') or None, base + order.get(vid, 0))
            for m in page.get("DeleteMarkers", []) or []:
                vid = m.get("VersionId") or "null"
                yield Version(m["Key"][len(prefix):], vid, m["LastModified"].timestamp(),
                              bool(m.get("IsLatest")), True, rank=base + order.get(vid, 0))
            base += 1_000_000  # past any page's element count: later pages rank after earlier ones
    except Exception as exc:  # noqa: BLE001
        raise side.error(exc, f"list versions of s3://{side.bucket}/{prefix}") from None


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


def grouped_versions(side: S3Side, tmp: str, chunk: int) -> Iterator[tuple[str, list[Version]]]:
    """(key, versions newest first) for every key under the side's prefix, keys in sorted order."""
    items = external_sort(list_versions(side), lambda v: (v.key, -v.last_modified, not v.is_latest, v.rank),
                          _dump_version, _load_version, tmp, "versions", chunk)
    key = None
    group: list[Version] = []
    for v in items:
        if v.key != key:
            if key is not None:
                yield key, group
            key, group = v.key, []
        group.append(v)
    if key is not None:
        yield key, group


def version_at(versions: list[Version], at: float) -> Version | None:
    """The version current at ``at`` (None if the key did not exist or was deleted then)."""
    for v in versions:  # newest first
        if v.last_modified <= at:
            return None if v.delete_marker else v
    return None


@dataclass
class RestoreResult:
    restored: int = 0
    restored_bytes: int = 0
    deleted: int = 0
    unchanged: int = 0
    left_newer: int = 0                 # target files newer than T, left alone
    missing: int = 0                    # for restore_missing: referenced keys missing from the target
    restored_keys: list[str] = field(default_factory=list)
    deleted_keys: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    skipped_unbacked: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.restored or self.deleted)

    def as_dict(self) -> dict[str, Any]:
        return {
            "restored": self.restored, "restored_bytes": self.restored_bytes, "deleted": self.deleted,
            "unchanged": self.unchanged, "left_newer": self.left_newer, "missing": self.missing,
            "restored_keys": self.restored_keys[:_SAMPLE], "deleted_keys": self.deleted_keys[:_SAMPLE],
            "not_found": list(self.not_found), "skipped_unbacked": self.skipped_unbacked[:_SAMPLE],
            "failed": list(self.failed), "duration_s": round(self.duration_s, 3),
        }


def _sample(lst: list[str], key: str) -> None:
    if len(lst) < _SAMPLE:
        lst.append(key)


class _Restorer:
    def __init__(self, backup: S3Side, target: S3Side | LocalStorage, concurrency: int, check_mode: bool,
                 part_size: int = 16 * MIB):
        self.backup = backup
        self.target = target
        self.check_mode = check_mode
        self.concurrency = max(1, concurrency)
        self.part_size = max(part_size, MIN_PART_SIZE)
        self.server_side = isinstance(target, S3Side) and backup.identity() == target.identity()
        self.result = RestoreResult()

    def preflight(self) -> None:
        self.backup.check()
        status = self.backup.versioning()
        if status != "Enabled":
            raise ConfigError(f"backup: s3://{self.backup.bucket} has no versioning "
                              f"({(status or 'never enabled').lower()}): it holds no history to restore from",
                              "backup")
        self.target.check(write=not self.check_mode)   # a directory is created (unless in check mode)

    def same(self, want: Version, have: Entry) -> bool:
        if want.size != have.size:
            return False
        if isinstance(self.target, LocalStorage):
            return bool(want.etag) and self._local_is(have, want)
        if want.etag and want.etag == have.etag:
            return True
        meta = self.target.head(have.key).get("Metadata", {}) or {}
        return bool(want.etag) and meta.get(SOURCE_ETAG_META) == want.etag

    def backed_up(self, have: Entry, versions: list[Version]) -> bool:
        """Is the target's current content one of the key's versions in the backup?"""
        candidates = {v.etag: v for v in versions if not v.delete_marker and v.size == have.size and v.etag}
        if isinstance(self.target, LocalStorage):
            return any(self._local_is(have, v) for v in candidates.values())
        return have.etag in candidates

    def _local_is(self, have: Entry, v: Version) -> bool:
        """Is the local file ``have`` the content of backup version ``v``? (ETag computed like v's)"""
        b, t = self.backup, self.target
        return etag_like(lambda: t.open_reader(have.key), have.size, v.etag, part_size_of=lambda: first_part_size(
            b.client, b.bucket, b.full(v.key), v.etag, VersionId=v.version_id)) == v.etag

    def copy_version(self, v: Version) -> None:
        b, t = self.backup, self.target
        src = {"Bucket": b.bucket, "Key": b.full(v.key), "VersionId": v.version_id}
        what = f"restore {b.uri(v.key)}?versionId={v.version_id} -> {t.uri(v.key)}"
        try:
            if isinstance(t, S3Side):
                if self.server_side and v.size <= 5 * 1024 * MIB:
                    t.client.copy_object(Bucket=t.bucket, Key=t.full(v.key), CopySource=src,
                                         MetadataDirective="COPY")
                    return
                self._stream_to_s3(v, t)
                return
            self._download(v, t)
        except LifeboatError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise t.error(exc, what) if isinstance(t, S3Side) else RestoreError(f"{what}: {exc}") from None

    def _stream_to_s3(self, v: Version, t: S3Side) -> None:
        b = self.backup
        obj = b.client.get_object(Bucket=b.bucket, Key=b.full(v.key), VersionId=v.version_id)
        meta = dict(obj.get("Metadata") or {})
        meta.pop(SOURCE_ETAG_META, None)
        if v.size <= 64 * MIB:
            t.client.put_object(Bucket=t.bucket, Key=t.full(v.key), Body=obj["Body"].read(), Metadata=meta,
                                **content_args(obj))
            return
        meta[SOURCE_ETAG_META] = v.etag or ""
        up = t.client.create_multipart_upload(Bucket=t.bucket, Key=t.full(v.key), Metadata=meta,
                                              **content_args(obj))
        try:
            parts = []
            n = 0
            while True:
                data = obj["Body"].read(self.part_size)
                if not data:
                    break
                n += 1
                r = t.client.upload_part(Bucket=t.bucket, Key=t.full(v.key), UploadId=up["UploadId"],
                                         PartNumber=n, Body=data)
                parts.append({"PartNumber": n, "ETag": r["ETag"]})
            t.client.complete_multipart_upload(Bucket=t.bucket, Key=t.full(v.key), UploadId=up["UploadId"],
                                               MultipartUpload={"Parts": parts})
        except BaseException:
            t.abort_upload_quiet(v.key, up["UploadId"])   # best effort; the lifecycle rule aborts the rest
            raise

    def _download(self, v: Version, t: LocalStorage) -> None:
        b = self.backup
        if is_marker(v.key, v.size):
            t.make_marker(v.key)
            return
        obj = b.client.get_object(Bucket=b.bucket, Key=b.full(v.key), VersionId=v.version_id)
        with t.open_writer(v.key) as w:
            for chunk in obj["Body"].iter_chunks(MIB):
                w.write(chunk)
            w.keep_mtime(v.last_modified)

    def run_jobs(self, jobs: Iterable[tuple[str, Any]]) -> None:
        """Execute ('copy', Version) / ('delete', Entry) jobs in parallel, recording results."""
        res = self.result

        def do(job: tuple[str, Any]) -> tuple[str, Any, str | None, int]:
            action, item = job
            try:
                if action == "copy":
                    self.copy_version(item)
                    return action, item, None, item.size
                self.target.delete(item.key)
                return action, item, None, item.size
            except LifeboatError as exc:
                return action, item, str(exc), 0

        def record(out: tuple[str, Any, str | None, int]) -> None:
            action, item, err, size = out
            if err:
                res.failed.append({"key": item.key, "error": err})
            elif action == "copy":
                res.restored += 1
                res.restored_bytes += size
                res.restored_keys.append(item.key)
            else:
                res.deleted += 1
                res.deleted_keys.append(item.key)

        if self.check_mode:
            for action, item in jobs:
                record((action, item, None, getattr(item, "size", 0)))
            return
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="lifeboat-restore") as pool:
            batch = []
            for job in jobs:
                batch.append(pool.submit(do, job))
                if len(batch) >= self.concurrency * 4:
                    for f in batch:
                        record(f.result())
                    batch = []
            for f in batch:
                record(f.result())


Restorer = _Restorer   # s3recovery.py plans with the same copy, compare and delete steps


def open_versioned(backup: str, target: str, at: _dt.datetime, backup_settings: S3Settings | None,
                   target_settings: S3Settings | None, file_mode: int, dir_mode: int) -> tuple[S3Side, Any]:
    """The versioned ``backup`` side and the ``target`` side of a restore as of ``at`` (which needs a zone)."""
    if at.tzinfo is None:
        raise ConfigError("restore_time: give a timezone (for example 2026-11-22T02:00:00Z)", "restore_time")
    b = open_side(backup, backup_settings, "backup")
    if not isinstance(b, S3Side):
        raise ConfigError("backup: must be an s3:// URL of a versioned bucket", "backup")
    return b, open_side(target, target_settings, "destination", file_mode=file_mode, dir_mode=dir_mode)


def restore_point_in_time(backup: str, target: str, at: _dt.datetime, backup_settings: S3Settings | None = None,
                          target_settings: S3Settings | None = None, delete_newer: bool = False,
                          force: bool = False, concurrency: int = 8, check_mode: bool = False,
                          file_mode: int = 0o600, dir_mode: int = 0o700,
                          sort_chunk: int = 100_000) -> RestoreResult:
    """Bring ``target`` back to the state of ``backup`` (a versioned s3:// prefix) at time ``at``."""
    t0 = time.monotonic()
    b, t = open_versioned(backup, target, at, backup_settings, target_settings, file_mode, dir_mode)
    r = _Restorer(b, t, concurrency, check_mode)
    r.preflight()
    at_ts = at.timestamp()
    res = r.result

    def plan() -> Iterator[tuple[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="lifeboat-pitr-") as tmp:
            os.chmod(tmp, 0o700)
            groups = grouped_versions(b, tmp, sort_chunk)
            have_it = sorted_entries(t.entries(markers=True), tmp, "target", sort_chunk)
            g = next(groups, None)
            h = next(have_it, None)
            while g is not None or h is not None:
                if h is None or (g is not None and g[0] < h.key):
                    key, versions = g  # type: ignore[misc]
                    want = version_at(versions, at_ts)
                    if want is not None and t.directories and is_marker(want.key, want.size) \
                            and t.has_marker(want.key):
                        res.unchanged += 1  # a folder marker: its directory is there
                    elif want is not None:
                        yield "copy", want
                    g = next(groups, None)
                elif g is None or h.key < g[0]:
                    # in the target, never in the backup: newer and unrelated
                    if delete_newer:
                        if force:
                            yield "delete", h
                        else:
                            _sample(res.skipped_unbacked, h.key)
                    else:
                        res.left_newer += 1
                    h = next(have_it, None)
                else:
                    key, versions = g
                    want = version_at(versions, at_ts)
                    if want is None:
                        if not delete_newer:
                            res.left_newer += 1
                        elif force or r.backed_up(h, versions):
                            yield "delete", h
                        else:
                            _sample(res.skipped_unbacked, h.key)
                    elif r.same(want, h):
                        res.unchanged += 1
                    elif force or r.backed_up(h, versions):
                        yield "copy", want
                    else:
                        _sample(res.skipped_unbacked, h.key)
                    g = next(groups, None)
                    h = next(have_it, None)

    r.run_jobs(plan())
    res.duration_s = time.monotonic() - t0
    _raise_failed(res, "point-in-time restore")
    return res


def restore_missing(backup: str, target: str, keys: Iterable[str], backup_settings: S3Settings | None = None,
                    target_settings: S3Settings | None = None, concurrency: int = 8, check_mode: bool = False,
                    file_mode: int = 0o600, dir_mode: int = 0o700, sort_chunk: int = 100_000) -> RestoreResult:
    """Restore the referenced ``keys`` that are missing from ``target``, from the newest backup version."""
    t0 = time.monotonic()
    b = open_side(backup, backup_settings, "backup")
    if not isinstance(b, S3Side):
        raise ConfigError("backup: must be an s3:// URL", "backup")
    t = open_side(target, target_settings, "destination", file_mode=file_mode, dir_mode=dir_mode)
    r = _Restorer(b, t, concurrency, check_mode)
    b.check()
    t.check(write=not check_mode)
    res = r.result

    def missing() -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="lifeboat-missing-") as tmp:
            os.chmod(tmp, 0o700)
            wanted = external_sort((k.lstrip("/") for k in keys if k), lambda k: k,
                                   lambda k: [k], lambda x: x[0], tmp, "wanted", sort_chunk)
            have_it = sorted_entries(t.entries(), tmp, "target", sort_chunk)
            h = next(have_it, None)
            last = None
            for k in wanted:
                if k == last:
                    continue
                last = k
                while h is not None and h.key < k:
                    h = next(have_it, None)
                if h is not None and h.key == k:
                    continue
                yield k

    bucket_style = f"{t.bucket}/" if isinstance(t, S3Side) else None
    resolved: set[str] = set()

    def alternatives(key: str) -> list[str]:
        """Other spellings of a reference found nowhere as written: without a leading "bucket/" (a URL path
        style some applications store), and the other Unicode normalization form (NFC from a web form,
        NFD from a macOS upload: different keys, the same name to a human)."""
        forms = [key]
        if bucket_style and key.startswith(bucket_style) and len(key) > len(bucket_style):
            forms.append(key[len(bucket_style):])
        out: list[str] = []
        for f in forms:
            for alt in (f, unicodedata.normalize("NFC", f), unicodedata.normalize("NFD", f)):
                if alt != key and alt not in out:
                    out.append(alt)
        return out

    def jobs() -> Iterator[tuple[str, Any]]:
        for key in missing():
            if key in resolved:
                continue  # already restored for another spelling of the same reference
            v = _newest_version(b, key)
            if v is None:
                alts = alternatives(key)
                if any(a in resolved or _target_has(t, a) for a in alts):
                    continue  # present (or being restored) under another spelling: not missing
                for alt in alts:
                    v = _newest_version(b, alt)
                    if v is not None:
                        resolved.add(alt)
                        key = alt
                        break
            res.missing += 1
            if v is None:
                res.not_found.append(key)
                continue
            resolved.add(key)
            yield "copy", v

    r.run_jobs(jobs())
    res.duration_s = time.monotonic() - t0
    _raise_failed(res, "missing-files restore")
    return res


def _target_has(t: S3Side | LocalStorage, key: str) -> bool:
    if isinstance(t, LocalStorage):
        try:
            return os.path.isfile(t.path(key))
        except ConfigError:
            return False
    try:
        t.head(key)
        return True
    except NotFound:
        return False


def _newest_version(b: S3Side, key: str) -> Version | None:
    """The newest non-deleted version of exactly ``key`` (also works on unversioned buckets)."""
    full = b.full(key)
    best: Version | None = None
    try:
        for page in b.client.get_paginator("list_object_versions").paginate(Bucket=b.bucket, Prefix=full):
            for v in page.get("Versions", []) or []:
                if v["Key"] != full:
                    continue
                cand = Version(key, v.get("VersionId") or "null", v["LastModified"].timestamp(),
                               bool(v.get("IsLatest")), False, int(v.get("Size", 0)),
                               (v.get("ETag") or "").strip('"') or None)
                if best is None or (cand.last_modified, cand.is_latest) > (best.last_modified, best.is_latest):
                    best = cand
    except Exception as exc:  # noqa: BLE001
        raise b.error(exc, f"list versions of {b.uri(key)}") from None
    return best


def _raise_failed(res: RestoreResult, what: str) -> None:
    if res.failed:
        first = res.failed[0]
        raise RestoreError(f"{what}: {len(res.failed)} object(s) could not be restored; first: '{first['key']}': "
                           f"{first['error']} ({res.restored} restored; rerun to finish)").with_partial(
            {"changed": res.changed, **res.as_dict()})


def parse_time(value: str) -> _dt.datetime:
    """ISO 8601 with a timezone ('Z' accepted)."""
    try:
        at = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"restore_time: '{value}' is not an ISO 8601 time such as 2026-11-22T02:00:00Z",
                          "restore_time") from None
    if at.tzinfo is None:
        raise ConfigError(f"restore_time: '{value}' has no timezone; add Z or +00:00", "restore_time")
    return at


def keys_from_query(dsn: str | PgTarget, query: str | list[str], batch: int = 5000) -> Iterator[str]:
    """Object keys from the first column of ``query`` (a read-only transaction, server-side cursor), on a
    connection string or a PgTarget. A list of queries: the keys of all of them (the application keeps storage
    keys in several columns), each once."""
    target = dsn if isinstance(dsn, PgTarget) else PgTarget.from_options(dsn=dsn)
    queries = [query] if isinstance(query, str) else list(query or [])
    if not queries or not all(isinstance(q, str) and q.strip() for q in queries):
        raise ConfigError("keys_query: give an SQL statement returning keys in its first column, or a list of "
                          f"them (got {query!r})", "keys_query")
    if len(queries) == 1:
        for value in pgmeta.first_column(target, queries[0], "keys_query", batch):
            yield str(value)
        return
    seen: set[str] = set()
    for i, one in enumerate(queries):
        for value in pgmeta.first_column(target, one, f"keys_query[{i}]", batch):
            key = str(value)
            if key not in seen:
                seen.add(key)
                yield key
