"""Which backup to restore: its manifest (``Source``), its verification records, the choice rule.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import zlib
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    LifeboatError,
    NotFound,
)
from ansible.module_utils.lifeboat.storage import Storage


@dataclass
class Source:
    """A backup ready to be decoded: where it is and how it was written."""

    ref: mf.BackupRef
    manifest: mf.BackupManifest | None   # the typed manifest (manifest_model); None for an older dump
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
    man = mf.read_backup(storage, ref.manifest_key)
    art = man.artifact
    return Source(ref, man, man.format, man.compression.algorithm, man.encryption.method, art.sha256, art.size,
                  art.dump_sha256, art.dump_size)


def verification_records(storage: Storage, ref: mf.BackupRef) -> list[dict[str, Any]]:
    """The verification records written next to a backup, oldest first."""
    return mf.read_verification_records(
        storage, [obj.key for obj in storage.list(ref.layout().verification_prefix) if obj.key.endswith(".json")])


#: a backup's state from its records: manifest.py's rule, the same for retention and the catalog
is_verified = mf.is_verified
newest_outcome = mf.newest_outcome


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
        damaged = {d.backup_id: d for d in mf.damaged_manifests(storage, database, prefix)}
        if backup_id in damaged:
            d = damaged[backup_id]
            raise mf.DamagedManifest(f"backup_id: backup {backup_id}'s manifest {storage.uri(d.manifest_key)} is "
                                     f"damaged ({d.reason}); it cannot be restored as described. Choose another "
                                     "backup, or restore an intact version of the manifest", "backup_id")
        ref = mf.select_backup(storage, database, backup_id=backup_id, prefix=prefix, include_legacy=True)
        if ref.legacy is False and ref.manifest_key and not storage.exists(ref.manifest_key):
            raise NotFound(f"backup_id: backup '{backup_id}' has no manifest", "backup_id")
        return Choice(ref, f"backup id {backup_id}", [])
    when = parse_before(before) if isinstance(before, str) else before
    refs = [r for r in mf.iter_backups(storage, database, prefix, include_legacy)
            if when is None or r.created_at < when]
    empty = [r for r in refs if empty_legacy_dump(storage, r)]
    refs = [r for r in refs if r not in empty]
    empty_notes = [f"older dump {r.backup_id} ({storage.uri(r.artifact_key)}) is an EMPTY gzip (what the older "
                   "procedure wrote when its pg_dump failed): skipped, it holds no data" for r in empty]
    damaged_notes = [f"backup {d.backup_id}: its manifest {storage.uri(d.manifest_key)} is DAMAGED ({d.reason}); "
                     "it was not considered" for d in mf.damaged_manifests(storage, database, prefix)]
    damaged_notes = empty_notes + damaged_notes
    if not refs:
        if damaged_notes:
            raise NotFound("no intact backup under " + storage.url + ": " + "; ".join(damaged_notes))
        # the shared selector words the error consistently
        mf.select_backup(storage, database, before=when, prefix=prefix, include_legacy=include_legacy)
    refs.sort(key=lambda r: (r.created_at, r.backup_id), reverse=True)
    when_txt = f" before {mf.iso(when)}" if when else ""
    states = {r.backup_id: newest_outcome(verification_records(storage, r)) for r in refs}
    for i, ref in enumerate(refs):
        if states[ref.backup_id] == "passed":
            return _choice(storage, refs[:i], ref, states, f"latest verified backup{when_txt}", damaged_notes)
    if require_verified:
        raise NotFound(f"require_verified: no backup{when_txt} under {storage.url} has a passed verification "
                       f"record (unverified: {', '.join(r.backup_id for r in refs)}); run verify.yml or pass "
                       "backup_id", "require_verified")
    # none passed: never silently the one whose newest drill failed
    for i, ref in enumerate(refs):
        if states[ref.backup_id] != "failed":
            return _choice(storage, refs[:i], ref, states,
                           f"latest complete backup{when_txt}",
                           damaged_notes + [f"no backup{when_txt} has a passed verification record; using "
                                            f"{ref.backup_id} (run verify.yml to verify backups)"])
    return _choice(storage, [], refs[0], states,
                   f"latest complete backup{when_txt}; its newest drill FAILED, like every other backup's",
                   damaged_notes + [f"every backup{when_txt}'s newest drill failed; {refs[0].backup_id}, the "
                                    "latest, was chosen anyway: check what the drill found (its verification "
                                    "record) before trusting it, or pass backup_id"])


def parse_before(text: str) -> _dt.datetime:
    """``before`` as a UTC time; anything else is refused naming the accepted forms (never a raw ValueError)."""
    try:
        return mf.parse_time(text)
    except ValueError:
        noon = (mf.utcnow() - _dt.timedelta(days=1)).strftime("%Y-%m-%d 12:00")
        raise ConfigError(f"before: '{text}' is not a time; give a date and time in UTC such as '{noon}' (yesterday "
                          f"at noon), or with an offset ('{noon.replace(' ', 'T')}+01:00')", "before") from None


#: an older-procedure dump this small may be an empty gzip (a 20-byte header and trailer); bigger ones hold SQL
EMPTY_DUMP_MAX = 512


def empty_legacy_dump(storage: Storage, ref: mf.BackupRef) -> bool:
    """True for an older-procedure dump that holds no SQL at all: 0 bytes, or a gzip of nothing (what the old
    cron job wrote when pg_dump failed). Only small objects are read; a damaged one is left for the drill."""
    if not ref.legacy or ref.size is None or ref.size > EMPTY_DUMP_MAX:
        return False
    if ref.size == 0:
        return True
    try:
        return gzip.decompress(storage.get_bytes(ref.artifact_key)).strip() == b""
    except (OSError, EOFError, zlib.error, LifeboatError):
        return False



def _held(storage: Storage, skipped: mf.BackupRef, chosen: mf.BackupRef) -> str:
    """What newer data a skipped backup held: its time, how much newer, its rows (from its manifest)."""
    delta = skipped.created_at - chosen.created_at
    hours, rest = divmod(int(delta.total_seconds()), 3600)
    text = f"{skipped.backup_id} taken {mf.iso(skipped.created_at)}, {hours}h{rest // 60:02d}m newer"
    if skipped.manifest_key:
        try:
            tables = mf.read_backup(storage, skipped.manifest_key).tables
            text += f", {sum(t.rows for t in tables)} rows in {len(tables)} tables"
        except LifeboatError:
            pass
    return text


def _choice(storage: Storage, skipped: list[mf.BackupRef], ref: mf.BackupRef, states: dict[str, str | None],
            reason: str, notes: list[str]) -> Choice:
    warnings = list(notes)
    failed = [s for s in skipped if states[s.backup_id] == "failed"]
    other = [s for s in skipped if states[s.backup_id] != "failed"]
    if failed:
        reason += f"; skipped {len(failed)} newer backup(s) whose newest drill FAILED"
        warnings.append("newer backups were skipped because their newest drill FAILED; the data they held is NOT "
                        "in this restore: " + "; ".join(_held(storage, s, ref) for s in failed)
                        + ". Pass backup_id to use one of them anyway")
    if other:
        warnings.append(f"newer backups exist that are not verified ({', '.join(s.backup_id for s in other)}); "
                        f"{ref.backup_id} was chosen; the data they held is not in this restore: "
                        + "; ".join(_held(storage, s, ref) for s in other) + ". Pass backup_id to use a newer one")
    return Choice(ref, reason, warnings)


def partial_scope_of(src: Source) -> str:
    """'' for a whole-database backup, else what limits it (include/exclude filters, schema-only, data-only)."""
    if src.manifest is None:
        return ""
    scope = src.manifest.scope
    parts = [f"{key}: {', '.join(getattr(scope, key))}" for key in ("include_tables", "exclude_tables",
                                                                    "include_schemas", "exclude_schemas")
             if getattr(scope, key)]
    parts += [key.replace("_", "-") for key in ("schema_only", "data_only") if getattr(scope, key)]
    return "; ".join(parts)


def recorded_properties(src: Source) -> dict[str, Any] | None:
    """The source database's encoding, locale, owner, ACL, settings and comment as the manifest recorded them
    (``database_properties``; None for manifests written before they were recorded, and for older dumps)."""
    props = src.manifest.database_properties if src.manifest else None
    return dict(props) if props else None


def recorded_locale(src: Source) -> dict[str, Any] | None:
    props = recorded_properties(src)
    if not props:
        return None
    return {k: props[k] for k in pgmeta.LOCALE_KEYS if props.get(k) is not None} or None
