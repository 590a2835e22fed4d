"""Apply a retention policy to a backup store (S3 prefix or local directory).

1. ``scan`` lists every backup set under the storage root, whatever wrote it:

   - database backups ``<db>/<db>-<YYYYmmddTHHMMSSZ>/`` (manifest ``lifeboat/backup-manifest/v1``),
     one series per database and scope (a schema-only or partial backup never stands in for a
     full one);
   - directory and configuration archives ``<name>/<name>-<stamp>/`` (manifest ``lifeboat.archive/1``);
   - a set without ``manifest.json`` is incomplete (running, or crashed); its open multipart
     uploads (S3) or partial files (``*.lifeboat-partial``, directory) belong to it;
   - the older procedure's flat dumps ``db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz`` and
     ``backup_YYYYmmdd_HHMMSS.sql.gz`` (time from the name): left alone unless
     ``include_legacy``; then they form their own series ``older-procedure``.
     A flat dump with Lifeboat's ``.manifest.json`` (``naming: legacy``) belongs to its database.

   The newest conclusive verification record of a set (``verify-*.json``; an inconclusive drill is no
   verdict) says whether it is verified, by the rule restore and the catalog use (manifest.is_verified).

2. ``plan`` runs the pure policy (retention.apply_policy) on each series.

3. ``execute`` deletes: open multipart uploads aborted first, then the manifest (so that an
   interrupted delete leaves an *incomplete* set, never a manifest pointing at nothing), then
   the other objects; empty directories of a local store are removed.

Nothing is deleted before the whole store was listed: an unreachable bucket or a listing that
fails half way deletes nothing.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat import backupsets
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.errors import LifeboatError, StorageError
from ansible.module_utils.lifeboat.retention import BackupSet, Decision, Policy, apply_policy
from ansible.module_utils.lifeboat.s3 import bucket_versioning
from ansible.module_utils.lifeboat.storage import LocalStorage, OpenUpload, S3Storage, Storage

ARCHIVE_SCHEMA = mf.ARCHIVE_SCHEMA
LEGACY_SERIES = "older-procedure"


@dataclass
class StoredSet:
    """One backup set in a store: what it is, and every object that belongs to it."""

    series: str
    kind: str                                   # database | archive | older-procedure | incomplete
    backup_id: str
    time: _dt.datetime
    complete: bool
    verified: bool | None = None
    manifest_key: str | None = None
    keys: list[str] = field(default_factory=list)
    uploads: list[tuple[str, str]] = field(default_factory=list)   # (key, UploadId)
    partials: list[str] = field(default_factory=list)              # local partial files
    size: int = 0
    left_alone: str | None = None               # why it is outside retention (e.g. older procedure)
    set_dir: str | None = None                  # '<series>/<id>' for directory layouts

    def as_backup_set(self) -> BackupSet:
        return BackupSet(self.backup_id, self.time, self.complete, self.verified, self.series)


def _verified(storage: Storage, keys: list[str]) -> bool | None:
    """Whether the set's newest CONCLUSIVE drill passed (manifest.is_verified: an inconclusive drill neither
    verifies nor condemns); None without any record."""
    records = mf.read_verification_records(storage, keys)
    return mf.is_verified(records) if records else None


def _read(storage: Storage, key: str) -> tuple[mf.BackupManifest | mf.ArchiveManifest | None, str]:
    """(typed manifest, '') or (None, why it cannot be read: damaged, foreign, gone)."""
    try:
        return mf.read(storage, key, None), ""
    except mf.DamagedManifest as exc:
        return None, exc.reason or str(exc)
    except LifeboatError as exc:
        return None, str(exc)


def scan(storage: Storage, include_legacy: bool = False, names: list[str] | None = None) -> list[StoredSet]:
    """Every backup set under the storage root (see the module docstring): backupsets.list_sets' grouping."""
    listing = backupsets.list_sets(storage, uploads=True)   # S3 multipart uploads, or a directory's partial files
    sets: list[StoredSet] = []
    for found in listing.ordered_sets():
        folder, backup_id = found.folder, found.backup_id
        if names and folder not in names:
            continue
        base = dict(backup_id=backup_id, keys=found.keys, size=found.size, set_dir=found.set_dir,
                    uploads=[(u.key, u.upload_id) for u in found.uploads if u.upload_id],
                    partials=[u.key for u in found.uploads if not u.upload_id])
        if found.manifest_key is None:
            sets.append(StoredSet(series=folder, kind="incomplete", time=found.time, complete=False, **base))
            continue
        man, why = _read(storage, found.manifest_key)
        if man is None:
            sets.append(StoredSet(series=folder, kind="unknown", time=found.time, complete=True,
                                  manifest_key=found.manifest_key,
                                  left_alone=f"its manifest.json is not a readable Lifeboat manifest ({why}): "
                                             "check it by hand", **base))
            continue
        if isinstance(man, mf.BackupManifest):
            series, kind, when = f"database:{man.database or folder}{man.scope.label}", "database", man.started_at
        else:
            series, kind, when = f"archive:{man.name or folder}", "archive", man.created_at or found.time
        sets.append(StoredSet(series=series, kind=kind, time=when, complete=True,
                              verified=_verified(storage, found.verify_keys), manifest_key=found.manifest_key,
                              **base))

    for dump in listing.ordered_older():
        if dump.dump is None:
            continue   # a stray record without its dump
        size = dump.dump.size or 0
        if dump.manifest_key:
            man, why = _read(storage, dump.manifest_key)
            if not isinstance(man, mf.BackupManifest):
                sets.append(StoredSet(series=LEGACY_SERIES, kind="unknown", backup_id=dump.backup_id, time=dump.when,
                                      complete=True, manifest_key=dump.manifest_key, keys=dump.keys, size=size,
                                      left_alone=f"its {dump.manifest_key} is not a readable Lifeboat manifest "
                                                 f"({why or 'an archive manifest'}): check it by hand"))
                continue
            db = man.database or "unknown"
            if names and db not in names:
                continue
            sets.append(StoredSet(series=f"database:{db}{man.scope.label}", kind="database",
                                  backup_id=dump.backup_id, time=dump.when, complete=True,
                                  verified=_verified(storage, dump.verify_keys), manifest_key=dump.manifest_key,
                                  keys=dump.keys, size=size))
            continue
        if names and LEGACY_SERIES not in names:
            continue
        sets.append(StoredSet(series=LEGACY_SERIES, kind="older-procedure", backup_id=dump.backup_id,
                              time=dump.when, complete=True, verified=_verified(storage, dump.verify_keys),
                              keys=dump.keys, size=size,
                              left_alone=None if include_legacy else
                              "older procedure's dump: left alone (include_legacy: true to apply the policy)"))
    return sets


@dataclass
class Plan:
    sets: list[StoredSet]
    decisions: dict[tuple[str, str], Decision]

    def keep(self, s: StoredSet) -> bool:
        if s.left_alone:
            return True
        return self.decisions[(s.series, s.backup_id)].keep

    def reasons(self, s: StoredSet) -> list[str]:
        if s.left_alone:
            return [s.left_alone]
        return list(self.decisions[(s.series, s.backup_id)].reasons)

    @property
    def to_delete(self) -> list[StoredSet]:
        return [s for s in self.sets if not self.keep(s)]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for s in sorted(self.sets, key=lambda s: (s.series, s.time, s.backup_id), reverse=False):
            out.append({
                "series": s.series, "kind": s.kind, "backup_id": s.backup_id, "time": mf.iso(s.time),
                "complete": s.complete, "verified": s.verified,
                "action": "keep" if self.keep(s) else "delete", "reasons": self.reasons(s),
                "objects": len(s.keys) + len(s.partials), "open_uploads": len(s.uploads), "size": s.size,
            })
        return out

    def text(self, deleted_too: bool = True) -> str:
        lines = []
        for row in self.rows():
            if row["action"] == "delete" and not deleted_too:
                continue
            why = "; ".join(row["reasons"]) if row["reasons"] else "no rule keeps it"
            lines.append(f"{row['action']:6} {row['series']} {row['backup_id']} ({row['time']}): {why}")
        return "\n".join(lines) + ("\n" if lines else "")


def plan(sets: list[StoredSet], policy: Policy, now: _dt.datetime) -> Plan:
    policy.validate()
    groups: dict[str, list[StoredSet]] = {}
    for s in sets:
        if not s.left_alone:
            groups.setdefault(s.series, []).append(s)
    decisions: dict[tuple[str, str], Decision] = {}
    for series, members in groups.items():
        for d in apply_policy([m.as_backup_set() for m in members], policy, now):
            decisions[(series, d.backup.backup_id)] = d
    return Plan(sets, decisions)


def versioning_note(storage: Storage) -> tuple[str, str | None]:
    """The bucket's versioning status and what a delete leaves there (None for a directory)."""
    if not isinstance(storage, S3Storage):
        return "", None
    try:
        status = bucket_versioning(storage.client, storage.bucket, storage.settings)
    except LifeboatError as exc:
        # e.g. a least-privilege policy without s3:GetBucketVersioning: say so, do not fail the pruning
        return "unknown", (f"versioning of bucket s3://{storage.bucket} could not be read ({exc}); if it is "
                           "enabled, each delete leaves a delete marker and a noncurrent version until a lifecycle "
                           "rule expires it")
    if status in ("Enabled", "Suspended"):
        return status, (
            f"bucket s3://{storage.bucket} has versioning {status}: each delete adds a delete marker and keeps "
            "the data as a noncurrent version, which still takes space (and can be restored) until a lifecycle "
            "rule expires noncurrent versions (the s3_replication role sets one: "
            "s3_replication_noncurrent_expire_days)")
    return status, None


@dataclass
class Outcome:
    deleted: list[str]
    deleted_objects: int
    aborted_uploads: int


def execute(storage: Storage, the_plan: Plan) -> Outcome:
    """Delete what the plan does not keep (see the module docstring for the order)."""
    deleted: list[str] = []
    objects = 0
    aborted = 0
    for s in the_plan.to_delete:
        try:
            for key, upload_id in s.uploads:
                storage.abort_upload(OpenUpload(key, upload_id))
                aborted += 1
            order = ([s.manifest_key] if s.manifest_key and s.manifest_key in s.keys else []) + \
                [k for k in s.keys if k != s.manifest_key] + s.partials
            for key in order:
                storage.delete(key)
                objects += 1
        except LifeboatError as exc:
            raise StorageError(f"retention: deleting {s.backup_id} ({s.series}) failed after {len(deleted)} "
                               f"backup(s) were deleted ({', '.join(deleted) or 'none'}): {exc}") from None
        if isinstance(storage, LocalStorage) and s.set_dir:
            _remove_empty_dirs(storage, s.set_dir)
        deleted.append(s.backup_id)
    return Outcome(deleted, objects, aborted)


def _remove_empty_dirs(storage: LocalStorage, rel: str) -> None:
    path = storage.path(rel)
    while path != storage.root and path.startswith(storage.root + os.sep):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)


@dataclass
class RetentionResult:
    changed: bool
    backups: list[dict[str, Any]]
    deleted: list[str]
    deleted_objects: int
    aborted_uploads: int
    versioning: str
    warnings: list[str]
    before: str
    after: str
    policy: dict[str, Any]


def run_retention(storage: Storage, policy: Policy, include_legacy: bool = False, names: list[str] | None = None,
                  check_mode: bool = False, now: _dt.datetime | None = None) -> RetentionResult:
    """List, decide, and (unless check_mode) delete. The store is checked before anything else."""
    policy.validate()
    storage.check(write=False)
    versioning, note = versioning_note(storage)
    sets = scan(storage, include_legacy=include_legacy, names=names)
    the_plan = plan(sets, policy, now or mf.utcnow())
    warnings = [note] if note and the_plan.to_delete else []
    series_seen = sorted({s.series for s in sets if s.complete and not s.left_alone})
    for series in series_seen:
        members = [s for s in sets if s.series == series and s.complete]
        if policy.min_verified and not any(s.verified is True for s in members):
            warnings.append(f"{series}: no backup has a passed verification, so min_verified protects none "
                            "(only the newest complete backup is guaranteed); run verify.yml")
    for s in sets:
        if s.kind == "unknown":
            warnings.append(f"{s.set_dir}: {s.left_alone}")
    before = the_plan.text()
    after = the_plan.text(deleted_too=False)
    if check_mode or not the_plan.to_delete:
        return RetentionResult(bool(the_plan.to_delete), the_plan.rows(), [], 0, 0, versioning, warnings,
                               before, after, policy.describe())
    outcome = execute(storage, the_plan)
    return RetentionResult(True, the_plan.rows(), outcome.deleted, outcome.deleted_objects, outcome.aborted_uploads,
                           versioning, warnings, before, after, policy.describe())
