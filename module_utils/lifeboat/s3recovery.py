"""One recovery point for a database and its files: the files a restored database lists, as of its backup.

A database backup records when its snapshot was taken (the manifest's ``started_at``, read just after the
snapshot's first statement). The files the database references at that moment are the keys it lists (for a
Supabase project, ``storage.objects``: ``name`` per ``bucket_id``). ``restore_recovery_point`` makes a target
hold, for each listed key, the backup bucket's version current at that time:

* the version current at the time (the usual case);
* none yet at the time: the sync copies a file some time after the application wrote it, so a file the
  database already listed may have reached the backup only after the time: the first version copied after
  it (reported in ``later_copies``);
* deleted in the backup before the time while the database still listed it (the file was lost first): the
  newest version before the deletion (reported in ``earlier_copies``);
* in no version at all: reported in ``not_found``.

A key may come with the ETag the database recorded for its content (Supabase Storage keeps it in
``storage.objects.metadata->>'eTag'`` at every upload): then the version holding that content is the one restored,
wherever the sync's lag put it (a file overwritten just before the snapshot reaches the backup just after), and a
recorded ETag that no version has (a change no sync saw, or a copy made in parts of another size) falls back to
the time and is reported in ``etag_unmatched``.

Target objects the database does not list are left alone, or with ``delete_unlisted`` deleted, each only
when its current content is itself kept in the backup (unless ``force``): the restore never loses data.
The three listings (keys, versions, target) are streamed, externally sorted and merged.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.errors import ConfigError, ConnectionFailed, NotFound, RestoreError, StorageError
from ansible.module_utils.lifeboat.extsort import external_sort
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.s3restore import (
    Restorer,
    RestoreResult,
    Version,
    grouped_versions,
    open_versioned,
)
from ansible.module_utils.lifeboat.storage import open_storage
from ansible.module_utils.lifeboat.storage_api import Storage, sorted_entries

_SAMPLE = 50


@dataclass
class RecoveryResult(RestoreResult):
    listed: int = 0                                            # distinct keys the database lists
    later_copies: int = 0
    later_copies_keys: list[str] = field(default_factory=list)
    earlier_copies: int = 0
    earlier_copies_keys: list[str] = field(default_factory=list)
    etag_unmatched: int = 0
    etag_unmatched_keys: list[str] = field(default_factory=list)
    recovery_time: str = ""
    backup_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "listed": self.listed, "unlisted_left": self.left_newer,
                "later_copies": self.later_copies, "later_copies_keys": self.later_copies_keys,
                "earlier_copies": self.earlier_copies, "earlier_copies_keys": self.earlier_copies_keys,
                "etag_unmatched": self.etag_unmatched, "etag_unmatched_keys": self.etag_unmatched_keys,
                "recovery_time": self.recovery_time, "backup_id": self.backup_id}


def normal_etag(value: Any) -> str | None:
    text = str(value or "").strip().strip('"').strip().lower()
    return text or None


def version_for_point(versions: list[Version], at: float, etag: str | None = None) -> tuple[Version | None, str | None]:
    """(version, how) for a key the database listed at ``at``; ``versions`` newest first. ``how`` is None for
    the version current at ``at``, 'later' for a copy made after it, 'earlier' for a version older than the one
    current at it; 'unmatched' when ``etag`` (the content the database recorded) is in no version."""
    before = [v for v in versions if v.last_modified <= at]
    current = before[0] if before and not before[0].delete_marker else None
    if etag:
        same = [v for v in versions if not v.delete_marker and normal_etag(v.etag) == etag]
        if same:
            pick = next((v for v in same if v.last_modified <= at), same[-1])
            return pick, None if pick is current else ("later" if pick.last_modified > at else "earlier")
        pick, how = version_for_point(versions, at)
        return pick, "unmatched" if pick is not None else how
    if before and not before[0].delete_marker:
        return before[0], None
    older = next((v for v in before if not v.delete_marker), None)
    if older is not None:
        return older, "earlier"
    later = [v for v in versions if v.last_modified > at and not v.delete_marker]
    if later:
        return later[-1], "later"
    return None, None


def backup_time(location: str, settings: S3Settings | None = None) -> tuple[_dt.datetime, str]:
    """(snapshot time, backup id) of the database backup whose manifest is at ``location`` (the manifest's
    URL or path, or its directory), read and checked like every manifest."""
    loc = location.strip().rstrip("/")
    if not loc:
        raise ConfigError("as_of_backup: give the database backup's manifest (s3://bucket/prefix/<db>/<id>/"
                          "manifest.json, as backup.yml prints it)", "as_of_backup")
    base, key = loc.rsplit("/", 1) if loc.endswith(".json") else (loc, mf.MANIFEST_NAME)
    try:
        man = mf.read_backup(open_storage(base, settings), key)   # started_at and backup_id checked by the model
    except (ConnectionFailed, NotFound, StorageError) as exc:
        if not loc.startswith("s3://"):
            raise
        # the manifest is read with the FILE backup's S3 settings (backup_*): database backups kept in another
        # bucket or store, under other credentials, are out of their reach
        raise type(exc)(f"{exc} (as_of_backup is read with the file backup's S3 settings, backup_endpoint and its "
                        "credentials: when the database backups live elsewhere, copy the manifest first, e.g. "
                        "`aws --endpoint-url <db backup endpoint> --region <region> s3 cp "
                        f"{loc if loc.endswith('.json') else loc + '/' + mf.MANIFEST_NAME} manifest.json`, and "
                        "give its local path as as_of_backup)", "as_of_backup") from exc
    return man.started_at, man.backup_id


def keys_from_query(target: Any, query: str | list[str], batch: int = 5000) -> Iterator[tuple[str, str | None]]:
    """(key, ETag or None) from each row of ``query`` (or of each of a list): the key in the first column, the
    content's ETag the database recorded, if any, in the second (``select name, metadata->>'eTag' from
    storage.objects where bucket_id = 'videos'``). Read-only transaction, server-side cursor."""
    queries = [query] if isinstance(query, str) else list(query or [])
    if not queries or not all(isinstance(q, str) and q.strip() for q in queries):
        raise ConfigError("keys_query: give an SQL statement returning keys in its first column (and optionally "
                          f"their ETag in the second), or a list of them (got {query!r})", "keys_query")
    for i, one in enumerate(queries):
        for row in pgmeta.query_rows(target, one, "keys_query" if len(queries) == 1 else f"keys_query[{i}]", batch):
            yield str(row[0]), normal_etag(row[1]) if len(row) > 1 else None


def restore_recovery_point(backup: str | Storage, target: str | Storage, keys: Iterable[str | tuple[str, str | None]],
                           at: _dt.datetime,
                           backup_settings: S3Settings | None = None, target_settings: S3Settings | None = None,
                           delete_unlisted: bool = False, force: bool = False, concurrency: int = 8,
                           check_mode: bool = False, file_mode: int = 0o600, dir_mode: int = 0o700,
                           sort_chunk: int = 100_000) -> RecoveryResult:
    """Make ``target`` hold each of ``keys`` (a key, or (key, ETag)) as the versioned ``backup`` prefix (or any
    versioned store) held it at ``at``."""
    t0 = time.monotonic()
    b, t = open_versioned(backup, target, at, backup_settings, target_settings, file_mode, dir_mode)
    r = Restorer(b, t, concurrency, check_mode, force=force)
    r.result = res = RecoveryResult(recovery_time=mf.iso(at))
    r.preflight()
    at_ts = at.timestamp()

    def sample(lst: list[str], key: str) -> None:
        if len(lst) < _SAMPLE:
            lst.append(key)

    def unique(items: Iterator[list]) -> Iterator[list]:
        last = None
        for k in items:
            if k[0] != last:
                last = k[0]
                yield k

    def pairs() -> Iterator[list]:
        for k in keys:
            key, etag = (k, None) if isinstance(k, str) else (k[0], k[1] if len(k) > 1 else None)
            if key:
                yield [str(key).lstrip("/"), normal_etag(etag)]

    def plan() -> Iterator[tuple]:
        with tempfile.TemporaryDirectory(prefix="lifeboat-recovery-") as tmp:
            os.chmod(tmp, 0o700)
            wanted = unique(external_sort(pairs(), lambda k: (k[0], k[1] is None, k[1] or ""), list, list, tmp,
                                          "wanted", sort_chunk))
            groups = grouped_versions(b, tmp, sort_chunk)
            have_it = sorted_entries(t.entries(markers=True), tmp, "target", sort_chunk)
            w, g, h = next(wanted, None), next(groups, None), next(have_it, None)
            while w is not None or h is not None:
                w_key = w[0] if w is not None else None
                key = min(k for k in (w_key, h.key if h is not None else None) if k is not None)
                while g is not None and g[0] < key:
                    g = next(groups, None)
                versions = g[1] if g is not None and g[0] == key else []
                have = h if h is not None and h.key == key else None
                if w_key == key:
                    res.listed += 1
                    want, how = version_for_point(versions, at_ts, w[1])  # type: ignore[index]
                    if how == "unmatched":
                        res.etag_unmatched += 1
                        sample(res.etag_unmatched_keys, key)
                    if want is None:
                        res.not_found.append(key)
                    else:
                        if how == "later":
                            res.later_copies += 1
                            sample(res.later_copies_keys, key)
                        elif how == "earlier":
                            res.earlier_copies += 1
                            sample(res.earlier_copies_keys, key)
                        if have is None:
                            yield "copy", want, None
                        elif r.same(want, have):
                            res.unchanged += 1
                        elif force or r.backed_up(have, versions):
                            yield "copy", want, have
                        else:
                            sample(res.skipped_unbacked, key)
                    w = next(wanted, None)
                elif have is not None:   # in the target, not listed by the database
                    if not delete_unlisted:
                        res.left_newer += 1
                    elif force or (versions and r.backed_up(have, versions)):
                        yield "delete", have
                    else:
                        sample(res.skipped_unbacked, key)
                if have is not None:
                    h = next(have_it, None)

    r.run_jobs(plan())
    res.duration_s = time.monotonic() - t0
    if res.failed:
        first = res.failed[0]
        raise RestoreError(f"recovery-point restore: {len(res.failed)} object(s) could not be restored; first: "
                           f"'{first['key']}': {first['error']} ({res.restored} restored; rerun to finish)"
                           ).with_partial({"changed": res.changed, **res.as_dict()})
    return res
