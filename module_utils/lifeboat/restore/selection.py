"""Which backup to restore: its manifest (``Source``), its verification records, the choice rule.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.errors import (
    LifeboatError,
    NotFound,
)
from ansible.module_utils.lifeboat.storage import Storage


@dataclass
class Source:
    """A backup ready to be decoded: where it is and how it was written."""

    ref: mf.BackupRef
    manifest: dict[str, Any] | None
    fmt: str               # custom | plain | directory
    compression: str       # zstd | gzip | none
    encryption: str        # gpg | age | none
    sha256: str | None
    size: int | None
    dump_sha256: str | None
    dump_size: int | None

    @property
    def legacy(self) -> bool:
        return self.manifest is None

    @property
    def backup_id(self) -> str:
        return self.ref.backup_id

    @property
    def database(self) -> str | None:
        return self.ref.database


def source_for(storage: Storage, ref: mf.BackupRef) -> Source:
    """Read the manifest (a Lifeboat backup) or describe an older-procedure dump."""
    if ref.legacy or ref.manifest_key is None:
        return Source(ref, None, "plain", "gzip", "none", None, None, None, None)
    man = mf.read_manifest(storage, ref.manifest_key)
    art = man.get("artifact", {})
    return Source(ref, man, man.get("format", "custom"), (man.get("compression") or {}).get("algorithm", "none"),
                  (man.get("encryption") or {}).get("method", "none"), art.get("sha256"), art.get("size"),
                  art.get("dump_sha256"), art.get("dump_size"))


def verification_records(storage: Storage, ref: mf.BackupRef) -> list[dict[str, Any]]:
    """The verification records written next to a backup, oldest first."""
    prefix = ref.layout().verification_prefix
    records = []
    for obj in storage.list(prefix):
        if not obj.key.endswith(".json"):
            continue
        try:
            rec = json.loads(storage.get_bytes(obj.key))
        except (ValueError, LifeboatError):
            continue
        if rec.get("schema") == mf.VERIFY_SCHEMA:
            records.append(rec)
    return sorted(records, key=lambda r: r.get("finished_at", ""))


def is_verified(records: list[dict[str, Any]]) -> bool:
    """Verified = the most recent conclusive record passed. An ``inconclusive`` record (the drill could not
    run: key, permissions, server) says nothing about the backup: it neither verifies nor condemns it."""
    conclusive = [r for r in records if r.get("outcome") != "inconclusive"]
    return bool(conclusive) and conclusive[-1].get("outcome") == "passed"


@dataclass
class Choice:
    ref: mf.BackupRef
    reason: str
    warnings: list[str]


def choose_backup(storage: Storage, database: str | None, backup_id: str | None = None,
                  before: str | _dt.datetime | None = None, prefix: str = "",
                  require_verified: bool = False, include_legacy: bool = True) -> Choice:
    """Pick the backup to restore (see the module docstring for the rule)."""
    if backup_id:
        ref = mf.select_backup(storage, database, backup_id=backup_id, prefix=prefix, include_legacy=True)
        if ref.legacy is False and ref.manifest_key and not storage.exists(ref.manifest_key):
            raise NotFound(f"backup_id: backup '{backup_id}' has no manifest", "backup_id")
        return Choice(ref, f"backup id {backup_id}", [])
    when = mf.parse_time(before) if isinstance(before, str) else before
    refs = [r for r in mf.iter_backups(storage, database, prefix, include_legacy)
            if when is None or r.created_at < when]
    if not refs:
        # the shared selector words the error consistently
        mf.select_backup(storage, database, before=when, prefix=prefix, include_legacy=include_legacy)
    refs.sort(key=lambda r: (r.created_at, r.backup_id), reverse=True)
    when_txt = f" before {mf.iso(when)}" if when else ""
    skipped: list[str] = []
    for ref in refs:
        if is_verified(verification_records(storage, ref)):
            warnings = []
            if skipped:
                warnings.append(f"newer backups exist that are not verified ({', '.join(skipped)}); the latest "
                                f"verified one, {ref.backup_id}, was chosen. Pass backup_id to use a newer one")
            return Choice(ref, f"latest verified backup{when_txt}", warnings)
        skipped.append(ref.backup_id)
    if require_verified:
        raise NotFound(f"require_verified: no backup{when_txt} under {storage.url} has a passed verification "
                       f"record (unverified: {', '.join(skipped)}); run verify.yml or pass backup_id",
                       "require_verified")
    return Choice(refs[0], f"latest complete backup{when_txt}",
                  [f"no backup{when_txt} has a passed verification record; using the latest complete backup "
                   f"{refs[0].backup_id} (run verify.yml to verify backups)"])


def partial_scope_of(src: Source) -> str:
    """'' for a whole-database backup, else what limits it (include/exclude filters, schema-only, data-only)."""
    scope = (src.manifest or {}).get("scope") or {}
    parts = [f"{key}: {', '.join(scope[key])}" for key in ("include_tables", "exclude_tables", "include_schemas",
                                                           "exclude_schemas") if scope.get(key)]
    parts += [key.replace("_", "-") for key in ("schema_only", "data_only") if scope.get(key)]
    return "; ".join(parts)


def recorded_properties(src: Source) -> dict[str, Any] | None:
    """The source database's encoding, locale, owner, ACL, settings and comment as the manifest recorded them
    (``database_properties``; None for manifests written before they were recorded, and for older dumps)."""
    props = (src.manifest or {}).get("database_properties")
    return dict(props) if isinstance(props, dict) and props else None


def recorded_locale(src: Source) -> dict[str, Any] | None:
    props = recorded_properties(src)
    if not props:
        return None
    return {k: props[k] for k in pgmeta.LOCALE_KEYS if props.get(k) is not None} or None
