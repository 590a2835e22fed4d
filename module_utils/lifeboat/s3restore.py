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
import time
import unicodedata
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat.errors import ConfigError, LifeboatError, RestoreError
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
    Storage,
    Version,
    dump_version,
    etag_like,
    is_marker,
    load_version,
    sorted_entries,
)
from ansible.module_utils.lifeboat.storage_local import LocalStorage

_SAMPLE = 50


def grouped_versions(store: Storage, tmp: str, chunk: int) -> Iterator[tuple[str, list[Version]]]:
    """(key, versions newest first) for every key of a versioned store, keys in sorted order."""
    items = external_sort(store.list_versions(), lambda v: (v.key, -v.last_modified, not v.is_latest, v.rank),
                          dump_version, load_version, tmp, "versions", chunk)
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
    """The steps a restore from a versioned store plans with (compare, is-it-backed-up) and runs (the conditional
    copy of a version, a delete), on any target store."""

    def __init__(self, backup: Storage, target: Storage, concurrency: int, check_mode: bool,
                 part_size: int = 16 * MIB, force: bool = False):
        self.backup = backup
        self.target = target
        self.check_mode = check_mode
        self.concurrency = max(1, concurrency)
        self.part_size = max(part_size, MIN_PART_SIZE)
        #: force: overwrite whatever the target holds (no condition on the copy either)
        self.force = force
        self.result = RestoreResult()

    def preflight(self) -> None:
        self.backup.check()
        status = self.backup.versioning()
        if status != "Enabled":
            where = f"s3://{self.backup.bucket}" if isinstance(self.backup, S3Side) else self.backup.url
            raise ConfigError(f"backup: {where} has no versioning "
                              f"({(status or 'never enabled').lower()}): it holds no history to restore from",
                              "backup")
        self.target.check(write=not self.check_mode)   # a directory is created (unless in check mode)

    def same(self, want: Version, have: Entry) -> bool:
        if want.size != have.size:
            return False
        if not self.target.lists_etags:
            return bool(want.etag) and self._content_is(have, want)
        if want.etag and want.etag == have.etag:
            return True
        return bool(want.etag) and self.target.metadata(have.key).get(SOURCE_ETAG_META) == want.etag

    def backed_up(self, have: Entry, versions: list[Version]) -> bool:
        """Is the target's current content one of the key's versions in the backup?"""
        candidates = {v.etag: v for v in versions if not v.delete_marker and v.size == have.size and v.etag}
        if not self.target.lists_etags:
            return any(self._content_is(have, v) for v in candidates.values())
        return have.etag in candidates

    def _content_is(self, have: Entry, v: Version) -> bool:
        """Is the target's ``have`` (a store listing no ETags) the content of backup version ``v``? (its ETag
        computed like v's)"""
        b, t = self.backup, self.target
        return etag_like(lambda: t.open_reader(have.key), have.size, v.etag,
                         part_size_of=lambda: b.version_part_size(v)) == v.etag

    def copy_version(self, v: Version, have: Entry | None = None) -> None:
        """The conditional copy: only while the target still holds ``have`` (what was compared; None: nothing)."""
        try:
            self.target.copy_version(self.backup, v, have, conditional=not self.force)
        except LifeboatError:
            raise
        except Exception as exc:  # noqa: BLE001 - a stream that broke mid-copy: named with the object
            raise RestoreError(f"restore {self.backup.uri(v.key)}?versionId={v.version_id} -> "
                               f"{self.target.uri(v.key)}: {exc}") from None

    def run_jobs(self, jobs: Iterable[tuple]) -> None:
        """Execute ('copy', Version, target Entry or None) / ('delete', Entry) jobs in parallel, recording
        results."""
        res = self.result

        def do(job: tuple) -> tuple[str, Any, str | None, int]:
            action, item = job[0], job[1]
            try:
                if action == "copy":
                    self.copy_version(item, job[2] if len(job) > 2 else None)
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
            for job in jobs:
                record((job[0], job[1], None, getattr(job[1], "size", 0)))
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
        if self.target.directories:
            self.target.remove_stale_partials()   # what writers killed in earlier runs left (storage_local)


Restorer = _Restorer   # s3recovery.py plans with the same copy, compare and delete steps


def open_versioned(backup: str | Storage, target: str | Storage, at: _dt.datetime,
                   backup_settings: S3Settings | None, target_settings: S3Settings | None, file_mode: int,
                   dir_mode: int) -> tuple[Storage, Storage]:
    """The versioned ``backup`` store and the ``target`` store of a restore as of ``at`` (which needs a zone):
    locations (``s3://...``, a directory for the target) or stores already open."""
    if at.tzinfo is None:
        raise ConfigError("restore_time: give a timezone (for example 2026-11-22T02:00:00Z)", "restore_time")
    return _open_backup(backup, backup_settings, "backup: must be an s3:// URL of a versioned bucket"), \
        _open_target(target, target_settings, file_mode, dir_mode)


def _open_backup(backup: str | Storage, settings: S3Settings | None, refusal: str) -> Storage:
    if isinstance(backup, Storage):
        return backup
    b = open_side(backup, settings, "backup")
    if not isinstance(b, S3Side):
        raise ConfigError(refusal, "backup")
    return b


def _open_target(target: str | Storage, settings: S3Settings | None, file_mode: int, dir_mode: int) -> Storage:
    if isinstance(target, Storage):
        return target
    return open_side(target, settings, "destination", file_mode=file_mode, dir_mode=dir_mode)


def restore_point_in_time(backup: str | Storage, target: str | Storage, at: _dt.datetime,
                          backup_settings: S3Settings | None = None, target_settings: S3Settings | None = None,
                          delete_newer: bool = False, force: bool = False, concurrency: int = 8,
                          check_mode: bool = False, file_mode: int = 0o600, dir_mode: int = 0o700,
                          sort_chunk: int = 100_000) -> RestoreResult:
    """Bring ``target`` back to the state of ``backup`` (a versioned s3:// prefix, or any versioned store) at time
    ``at``."""
    t0 = time.monotonic()
    b, t = open_versioned(backup, target, at, backup_settings, target_settings, file_mode, dir_mode)
    r = _Restorer(b, t, concurrency, check_mode, force=force)
    r.preflight()
    at_ts = at.timestamp()
    res = r.result

    def plan() -> Iterator[tuple]:
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
                        yield "copy", want, None
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
                        yield "copy", want, h
                    else:
                        _sample(res.skipped_unbacked, h.key)
                    g = next(groups, None)
                    h = next(have_it, None)

    r.run_jobs(plan())
    res.duration_s = time.monotonic() - t0
    _raise_failed(res, "point-in-time restore")
    return res


def restore_missing(backup: str | Storage, target: str | Storage, keys: Iterable[str],
                    backup_settings: S3Settings | None = None, target_settings: S3Settings | None = None,
                    concurrency: int = 8, check_mode: bool = False, file_mode: int = 0o600, dir_mode: int = 0o700,
                    sort_chunk: int = 100_000) -> RestoreResult:
    """Restore the referenced ``keys`` that are missing from ``target``, from the newest backup version."""
    t0 = time.monotonic()
    b = _open_backup(backup, backup_settings, "backup: must be an s3:// URL")
    t = _open_target(target, target_settings, file_mode, dir_mode)
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

    def jobs() -> Iterator[tuple]:
        for key in missing():
            if key in resolved:
                continue  # already restored for another spelling of the same reference
            v = b.newest_version(key)
            if v is None:
                alts = alternatives(key)
                if any(a in resolved or _target_has(t, a) for a in alts):
                    continue  # present (or being restored) under another spelling: not missing
                for alt in alts:
                    v = b.newest_version(alt)
                    if v is not None:
                        resolved.add(alt)
                        key = alt
                        break
            res.missing += 1
            if v is None:
                res.not_found.append(key)
                continue
            resolved.add(key)
            yield "copy", v, None

    r.run_jobs(jobs())
    res.duration_s = time.monotonic() - t0
    _raise_failed(res, "missing-files restore")
    return res


def _target_has(t: Storage, key: str) -> bool:
    if isinstance(t, LocalStorage):
        try:
            return os.path.isfile(t.path(key))
        except ConfigError:
            return False
    return t.exists(key)


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
