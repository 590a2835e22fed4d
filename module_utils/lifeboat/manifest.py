"""Backup manifests and the key layout of a backup store.

Layout under the destination root (an S3 prefix or a local directory)::

    <database>/<backup_id>/manifest.json          written LAST: no manifest = incomplete
    <database>/<backup_id>/<database>.<ext>       the artifact, e.g. appdb.dump.zst.gpg
    <database>/<backup_id>/verify-<stamp>-<rand>.json  verification records (one per drill, never replaced)

A backup id is ``<database>-<stamp>``; when that id is taken (two runs in the
same second) the next free ``<database>-<stamp>-<n>`` (n = 2, 3, ...) is used.
Artifact and manifest are written exclusively (``If-None-Match: *`` / a hard
link), so a run that loses a race never replaces another run's backup.

The manifest carries its own checksum, ``manifest_sha256``: the sha256 of the
canonical JSON of the document without that field. A torn or damaged manifest
(invalid JSON, wrong checksum, a field of the wrong type) is *damaged*, never silently skipped:
``read`` raises DamagedManifest naming why, ``damaged_manifests`` lists them by backup id. The typed
model every reader gets (BackupManifest, ArchiveManifest) is manifest_model.py's.

The older procedure's naming (``naming: legacy``) keeps its flat names::

    db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz                  the artifact (plain SQL, gzip)
    db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz.manifest.json    Lifeboat's manifest, when Lifeboat wrote it
    db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz.verify-<stamp>.json

Dumps written by the older procedure itself have no manifest; they are still
listed (``legacy: true``) so they can be verified and restored. Both of its names
are recognised (``legacy_time``): ``db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz`` and
``backup_YYYYmmdd_HHMMSS.sql.gz``.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator

from ansible.module_utils.lifeboat import manifest_model as model
from ansible.module_utils.lifeboat.errors import IntegrityError, NotFound
from ansible.module_utils.lifeboat.manifest_model import (  # noqa: F401 - the names readers know
    ArchiveManifest,
    BackupManifest,
    DamagedManifest,
    ForeignManifest,
    parse_time,
)
from ansible.module_utils.lifeboat.storage import Storage

SCHEMA = model.SCHEMA
ARCHIVE_SCHEMA = model.ARCHIVE_SCHEMA   # directory and configuration archives (archive.py)
VERIFY_SCHEMA = "lifeboat/verification/v1"
MANIFEST_NAME = "manifest.json"
LEGACY_RE = re.compile(r"(?:^|/)db-backup-(\d{4})-(\d{2})-(\d{2})_(\d{2})-(\d{2})-(\d{2})\.sql\.gz$")
#: the older procedure's other name: backup_YYYYmmdd_HHMMSS.sql.gz
LEGACY_RE2 = re.compile(r"(?:^|/)backup_(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})\.sql\.gz$")
LEGACY_PATTERNS = (LEGACY_RE, LEGACY_RE2)
#: how many ids a "no such backup" message names (the newest)
SUGGEST_IDS = 5
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"

FORMAT_EXT = {"custom": "dump", "plain": "sql", "directory": "tar"}
COMPRESSION_EXT = {"zstd": ".zst", "gzip": ".gz", "none": ""}
ENCRYPTION_EXT = {"gpg": ".gpg", "age": ".age", "none": ""}


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


def stamp(when: _dt.datetime) -> str:
    return when.astimezone(_dt.UTC).strftime(STAMP_FORMAT)


def iso(when: _dt.datetime) -> str:
    return when.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def safe_name(name: str) -> str:
    """A database name made safe for one path segment (unusual names are legal in PostgreSQL)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    return cleaned or "db"


def backup_id_for(database: str, when: _dt.datetime, seq: int = 1) -> str:
    """``<db>-<stamp>``; ``<db>-<stamp>-<seq>`` for the second and later backups of the same second."""
    return f"{safe_name(database)}-{stamp(when)}" + (f"-{seq}" if seq > 1 else "")


def artifact_name(database: str, fmt: str, compression: str, encryption: str) -> str:
    return f"{safe_name(database)}.{FORMAT_EXT[fmt]}{COMPRESSION_EXT[compression]}{ENCRYPTION_EXT[encryption]}"


def legacy_time(key: str) -> _dt.datetime | None:
    """The time in an older-procedure dump's name (either of its two names), else None."""
    for pattern in LEGACY_PATTERNS:
        m = pattern.search(key)
        if m is not None:
            try:
                return _dt.datetime(*(int(g) for g in m.groups()), tzinfo=_dt.UTC)
            except ValueError:  # 2026-13-45: not a time, not a dump name
                return None
    return None


def legacy_name(when: _dt.datetime) -> str:
    return when.astimezone(_dt.UTC).strftime("db-backup-%Y-%m-%d_%H-%M-%S.sql.gz")


@dataclass(frozen=True)
class Layout:
    """Where the pieces of one backup live, relative to the storage root."""

    backup_id: str
    artifact_key: str
    manifest_key: str

    def verification_key(self, when: _dt.datetime, token: str | None = None) -> str:
        """``verify-<stamp>-<rand>.json``: two drills finishing in the same second never share a name."""
        name = f"verify-{stamp(when)}-{token or secrets.token_hex(4)}.json"
        if self.manifest_key.endswith("/" + MANIFEST_NAME):
            return self.manifest_key[: -len(MANIFEST_NAME)] + name
        return f"{self.artifact_key}.{name}"

    @property
    def verification_prefix(self) -> str:
        if self.manifest_key.endswith("/" + MANIFEST_NAME):
            return self.manifest_key[: -len(MANIFEST_NAME)] + "verify-"
        return f"{self.artifact_key}.verify-"


def layout_for(database: str, when: _dt.datetime, fmt: str, compression: str, encryption: str,
               naming: str = "lifeboat", prefix: str = "", seq: int = 1) -> Layout:
    pre = prefix.strip("/") + "/" if prefix.strip("/") else ""
    if naming == "legacy":
        if seq > 1:  # the older procedure's names have no room for a suffix: the next free second
            when = when + _dt.timedelta(seconds=seq - 1)
        name = legacy_name(when)
        return Layout(backup_id=name[: -len(".sql.gz")], artifact_key=pre + name,
                      manifest_key=pre + name + ".manifest.json")
    bid = backup_id_for(database, when, seq)
    base = f"{pre}{safe_name(database)}/{bid}/"
    return Layout(backup_id=bid, artifact_key=base + artifact_name(database, fmt, compression, encryption),
                  manifest_key=base + MANIFEST_NAME)


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()


CHECKSUM_FIELD = model.CHECKSUM_FIELD
manifest_checksum = model.manifest_checksum


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its ``manifest_sha256`` set."""
    out = {k: v for k, v in manifest.items() if k != CHECKSUM_FIELD}
    out[CHECKSUM_FIELD] = manifest_checksum(out)
    return out


def write_manifest(storage: Storage, key: str, manifest: dict[str, Any], exclusive: bool = True) -> None:
    """Sealed (own checksum) and, by default, exclusive: an existing manifest is never replaced."""
    storage.put_bytes(key, dumps(seal(manifest)), content_type="application/json", exclusive=exclusive)


def manifest_problem(raw: bytes, schema: str = SCHEMA) -> tuple[dict[str, Any] | None, str | None]:
    """(document, None) for a sound manifest, (None or the document, reason) for a damaged one: JSON, schema,
    checksum (manifest_model.check). A manifest written before checksums existed has no ``manifest_sha256`` and
    is accepted as it is. The typed reader (:func:`read`) also checks each field's type."""
    return model.check(raw, schema)


def read(storage: Storage, key: str, schema: str | None = SCHEMA) -> BackupManifest | ArchiveManifest:
    """The typed manifest at ``key`` (manifest_model.parse: a backup's by default, ARCHIVE_SCHEMA for an
    archive's, None for either): the one manifest reader of the engine. Raises DamagedManifest / ForeignManifest
    naming the key and the fix, NotFound when it is gone."""
    return model.parse(storage.get_bytes(key), f"{storage.uri(key)} of backup {backup_id_of_key(key)}", schema)


def read_backup(storage: Storage, key: str) -> BackupManifest:
    """A database backup set's typed manifest (see :func:`read`)."""
    man = read(storage, key, SCHEMA)
    assert isinstance(man, BackupManifest)
    return man


def read_manifest(storage: Storage, key: str, schema: str = SCHEMA) -> dict[str, Any]:
    """The manifest document at ``key``, checked by the typed reader (:func:`read`)."""
    return read(storage, key, schema).doc


def read_verification_records(storage: Storage, keys: list[str]) -> list[dict[str, Any]]:
    """The verification records stored at ``keys``, oldest first; a key that is unreadable, not JSON or not a
    verification record is skipped. The one reader of drills' records (restore's choice, retention, catalog)."""
    records = [r for r in (storage.get_json(k) for k in keys) if r and r.get("schema") == VERIFY_SCHEMA]
    return sorted(records, key=lambda r: str(r.get("finished_at") or ""))


def newest_outcome(records: list[dict[str, Any]]) -> str | None:
    """The outcome of the newest conclusive verification record (passed, failed); ``inconclusive`` when every
    record is (a drill that could not run is no verdict: it neither verifies nor condemns); None without one."""
    conclusive = [r for r in records if r.get("outcome") != "inconclusive"]
    return str((conclusive or records)[-1].get("outcome")) if records else None


def is_verified(records: list[dict[str, Any]]) -> bool:
    """Verified = the most recent conclusive record passed. An ``inconclusive`` record (the drill could not
    run: key, permissions, server) says nothing about the backup: it neither verifies nor condemns it."""
    return newest_outcome(records) == "passed"


def backup_id_of_key(key: str) -> str:
    """The backup id a manifest key names (``<db>/<id>/manifest.json`` or ``<name>.sql.gz.manifest.json``)."""
    if key.endswith("/" + MANIFEST_NAME):
        return key.rsplit("/", 2)[-2]
    name = key.rsplit("/", 1)[-1]
    return name[: -len(".sql.gz.manifest.json")] if name.endswith(".sql.gz.manifest.json") else name


@dataclass(frozen=True)
class Damaged:
    """A backup whose manifest exists but cannot be trusted."""

    backup_id: str
    manifest_key: str
    reason: str


_ID_STAMP_RE = re.compile(r"-(\d{8}T\d{6}Z)(?:-\d+)?$")


def damaged_ref(d: Damaged, database: str | None = None) -> "BackupRef":
    """A BackupRef for a damaged backup, so that verify reports it (its manifest check fails, by name)."""
    m = _ID_STAMP_RE.search(d.backup_id)
    created = (_dt.datetime.strptime(m.group(1), STAMP_FORMAT).replace(tzinfo=_dt.UTC) if m
               else legacy_time(d.manifest_key[: -len(".manifest.json")]) or utcnow())
    return BackupRef(d.backup_id, database, "", d.manifest_key, created, None, False)


def damaged_manifests(storage: Storage, database: str | None = None, prefix: str = "") -> list[Damaged]:
    """Every damaged manifest under the root (or one database's folder), by backup id."""
    pre = prefix.strip("/") + "/" if prefix.strip("/") else ""
    scan = pre + (safe_name(database) + "/" if database else "")
    out = []
    for obj in storage.list(scan):
        if not (obj.key.endswith("/" + MANIFEST_NAME) or obj.key.endswith(".sql.gz.manifest.json")):
            continue
        try:
            read(storage, obj.key)
        except NotFound:
            continue
        except DamagedManifest as exc:  # a foreign document in a backup's place is listed too: nothing reads it
            out.append(Damaged(backup_id_of_key(obj.key), obj.key, exc.reason or str(exc)))
    return out


@dataclass(frozen=True)
class BackupRef:
    """One backup found in a store: a Lifeboat backup (with manifest) or an older dump."""

    backup_id: str
    database: str | None
    artifact_key: str
    manifest_key: str | None
    created_at: _dt.datetime
    size: int | None
    legacy: bool

    def layout(self) -> Layout:
        return Layout(self.backup_id, self.artifact_key, self.manifest_key or self.artifact_key + ".manifest.json")


def iter_backups(storage: Storage, database: str | None = None, prefix: str = "",
                 include_legacy: bool = True) -> Iterator[BackupRef]:
    """Every complete backup (manifest present) and every older-procedure dump under the root.

    A Lifeboat backup whose manifest is missing is incomplete and is not listed.
    """
    pre = prefix.strip("/") + "/" if prefix.strip("/") else ""
    scan = pre + (safe_name(database) + "/" if database else "")
    legacy_objects: dict[str, Any] = {}
    legacy_manifests: set[str] = set()
    for obj in storage.list(scan if database else pre):
        key = obj.key
        if key.endswith("/" + MANIFEST_NAME):
            parts = key[len(pre):].split("/")
            if len(parts) != 3:
                continue
            try:
                manifest = read_backup(storage, key)
            except (IntegrityError, NotFound):
                continue
            if database and manifest.database != database:
                continue
            yield BackupRef(manifest.backup_id, manifest.database, manifest.artifact.key, key,
                            manifest.started_at, manifest.artifact.size, False)
        elif key.endswith(".sql.gz.manifest.json"):
            legacy_manifests.add(key[: -len(".manifest.json")])
        elif legacy_time(key) is not None:
            legacy_objects[key] = obj
    if database:
        # legacy names live flat at the root, not under the database folder
        for start in ("db-backup-", "backup_"):
            for obj in storage.list(pre + start):
                if legacy_time(obj.key) is not None and "/" not in obj.key[len(pre):]:
                    legacy_objects[obj.key] = obj
                elif obj.key.endswith(".sql.gz.manifest.json"):
                    legacy_manifests.add(obj.key[: -len(".manifest.json")])
    for key, obj in sorted(legacy_objects.items()):
        created = legacy_time(key)
        assert created is not None
        has_manifest = key in legacy_manifests
        bid = key.rsplit("/", 1)[-1][: -len(".sql.gz")]
        if has_manifest:
            try:
                manifest = read_backup(storage, key + ".manifest.json")
            except (IntegrityError, NotFound):
                continue
            if database and manifest.database != database:
                continue
            yield BackupRef(bid, manifest.database, key, key + ".manifest.json", created, obj.size, False)
        elif include_legacy:
            yield BackupRef(bid, None, key, None, created, obj.size, True)


def newest_ids(refs: list[BackupRef], count: int = SUGGEST_IDS) -> list[str]:
    """The ids of the newest ``count`` backups, newest first."""
    ordered = sorted(refs, key=lambda r: (r.created_at, r.backup_id), reverse=True)
    return [r.backup_id for r in ordered[:count]]


def describe_ids(refs: list[BackupRef], count: int = SUGGEST_IDS) -> str:
    """'the newest backups are: a, b, c (of 12)' or 'there is no backup there': for "no such id" messages."""
    if not refs:
        return "there is no complete backup there (check destination/prefix, or run the backup first)"
    ids = newest_ids(refs, count)
    more = f" (newest {len(ids)} of {len(refs)}; playbooks/list.yml lists them all)" if len(refs) > len(ids) else ""
    return "the backups that exist are: " + ", ".join(ids) + more


def select_backup(storage: Storage, database: str | None = None, backup_id: str | None = None,
                  before: _dt.datetime | None = None, prefix: str = "",
                  include_legacy: bool = True) -> BackupRef:
    """The backup to use: by id, else the latest (optionally strictly before a time)."""
    refs = list(iter_backups(storage, database, prefix, include_legacy))
    if backup_id:
        for ref in refs:
            if backup_id in (ref.backup_id, ref.artifact_key, ref.artifact_key.rsplit("/", 1)[-1]):
                return ref
        raise NotFound(f"backup_id: no backup '{backup_id}' under {storage.url}"
                       + (f" for database '{database}'" if database else "") + "; " + describe_ids(refs),
                       "backup_id")
    if before is not None:
        refs = [r for r in refs if r.created_at < before]
    if not refs:
        when = f" before {iso(before)}" if before else ""
        raise NotFound(f"no complete backup{when} under {storage.url}"
                       + (f" for database '{database}'" if database else ""))
    return max(refs, key=lambda r: (r.created_at, r.backup_id))
