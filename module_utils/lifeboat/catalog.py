"""The catalog: every backup set of every target, read from the stores themselves (one listing per target).

A target is one place Lifeboat writes to:

- ``database``: a backup root (``s3://bucket/prefix`` or a directory) holding
  ``<database>/<backup_id>/manifest.json`` sets (manifest.py), their verification records
  (``verify-<stamp>.json``) and, flat at the root, the older procedure's dumps
  (``db-backup-*.sql.gz`` / ``backup_*.sql.gz``, listed with ``legacy`` set). A set whose
  manifest is missing is listed apart, in ``incomplete``; one whose manifest is damaged or torn
  (manifest.read, the typed reader verify and restore use: its checksum, JSON, a field of the wrong
  type, or not a Lifeboat manifest) in ``damaged``, by id with the reason, never silently skipped;
  multipart uploads left open under the root are listed in ``open_uploads``. The listing's grouping
  into sets is backupsets.list_sets, the one retention and the sweep read.
- ``archive``: an archive root (archive.py: ``<name>/<archive_id>/manifest.json``) and the run
  record of the archive job (runrecord.py).
- ``sync``: a bucket mirror: the run record of the sync job (a mirror has no sets of its own).

``scan(target, now)`` never raises for a store it cannot read: the target comes back with
``reachable: false`` and ``error`` naming the cause, so one bad target never hides the others.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat import backupsets, runrecord
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.errors import ConfigError, LifeboatError
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import S3Storage, Storage, open_storage

KINDS = ("database", "archive", "sync")
OUTCOMES = ("passed", "failed", "inconclusive")
ARCHIVE_SCHEMA = mf.ARCHIVE_SCHEMA


@dataclass
class Target:
    """One place to catalog. ``s3.secret_key`` is a secret."""

    name: str
    kind: str = "database"
    destination: str = ""
    database: str | None = None        # database: only this database's sets (None: every database)
    archive: str | None = None         # archive: the archive name (default: the target name)
    run_record: str = ""               # archive, sync: the job's run_record location
    include_legacy: bool = True
    s3: S3Settings = field(default_factory=S3Settings)

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("targets: every target needs a name", "targets")
        if self.kind not in KINDS:
            raise ConfigError(f"targets: target '{self.name}' has kind '{self.kind}', not one of {', '.join(KINDS)}",
                              "targets")
        if self.kind in ("database", "archive") and not self.destination:
            raise ConfigError(f"targets: target '{self.name}' ({self.kind}) needs a destination "
                              "(s3://bucket/prefix or an absolute directory)", "targets")
        if self.kind == "sync" and not self.run_record:
            raise ConfigError(f"targets: target '{self.name}' (sync) needs run_record, the location the sync job's "
                              "run_record option writes to", "targets")


def _time(value: Any) -> _dt.datetime | None:
    if not value:
        return None
    try:
        return mf.parse_time(str(value))
    except ValueError:
        return None


def _age(when: _dt.datetime | None, now: _dt.datetime) -> float | None:
    return None if when is None else round((now - when).total_seconds(), 1)


def _verification(rec: dict[str, Any]) -> dict[str, Any]:
    outcome = str(rec.get("outcome") or "")
    return {
        "outcome": outcome if outcome in OUTCOMES else f"unknown ({outcome or 'none'})",
        "at": rec.get("finished_at") or rec.get("started_at"),
        "level": rec.get("level"),
        "restore_duration_s": rec.get("restore_duration_s"),
        "restored_bytes": rec.get("restored_bytes"),
        "rto_s_per_gib": rec.get("rto_s_per_gib"),
        "failures": [f"{c.get('name')}: {c.get('detail')}" for c in rec.get("checks") or []
                     if c.get("outcome") == "failed"][:5],
    }


def _entry_from_manifest(man: mf.BackupManifest, manifest_key: str, now: _dt.datetime) -> dict[str, Any]:
    return {
        "id": man.backup_id, "database": man.database, "legacy": None, "complete": True,
        "started_at": man.doc.get("started_at"), "finished_at": man.doc.get("finished_at"),
        "age_s": _age(man.finished_at or man.started_at, now), "size": man.artifact.size,
        "duration_s": man.duration_s, "format": man.format, "compression": man.compression.algorithm,
        "encryption": {"method": man.encryption.method, "recipients": list(man.encryption.recipients)},
        "tables": len(man.tables), "rows": sum(t.rows for t in man.tables), "table_rows": man.row_counts,
        "artifact_key": man.artifact.key, "manifest_key": manifest_key,
        "verification": None, "verifications": [],
    }


def _entry_legacy(key: str, size: int | None, now: _dt.datetime) -> dict[str, Any]:
    when = mf.legacy_time(key)
    name = key.rsplit("/", 1)[-1]
    return {
        "id": name[: -len(".sql.gz")], "database": None,
        "legacy": "db-backup" if name.startswith("db-backup-") else "backup_", "complete": False,
        "started_at": mf.iso(when) if when else None, "finished_at": None, "age_s": _age(when, now),
        "size": size, "duration_s": None, "format": "plain", "compression": "gzip",
        "encryption": {"method": "none", "recipients": []}, "tables": None, "rows": None, "table_rows": {},
        "artifact_key": key, "manifest_key": None, "verification": None, "verifications": [],
    }


def _entry_archive(man: mf.ArchiveManifest, manifest_key: str, now: _dt.datetime) -> dict[str, Any]:
    return {
        "id": man.archive_id, "database": None, "legacy": None, "complete": True,
        "started_at": man.doc.get("created_at"), "finished_at": man.doc.get("created_at"),
        "age_s": _age(man.created_at, now), "size": man.artifact.size, "duration_s": man.duration_s,
        "format": "tar", "compression": man.compression.algorithm,
        "encryption": {"method": man.encryption.method, "recipients": list(man.encryption.recipients)},
        "tables": None, "rows": None, "table_rows": {}, "files": man.files, "bytes": man.bytes,
        "artifact_key": man.artifact.key, "manifest_key": manifest_key, "verification": None, "verifications": [],
    }


def _sort_key(entry: dict[str, Any]) -> tuple[str, str]:
    return (str(entry.get("finished_at") or entry.get("started_at") or ""), str(entry.get("id") or ""))


def _open_uploads(storage: Storage) -> list[dict[str, Any]]:
    """Multipart uploads left open under the root (S3 only: a directory's partial files are not listed here)."""
    if not isinstance(storage, S3Storage):
        return []
    return [{"key": storage.full_key(u.key), "initiated": mf.iso(u.initiated) if u.initiated else None}
            for u in storage.open_uploads() if u.upload_id]


def _scan_sets(storage: Storage, target: Target, now: _dt.datetime) -> dict[str, Any]:
    """One listing of the root (backupsets.list_sets): complete sets, verification records, incomplete sets,
    damaged ones, older dumps."""
    folder = mf.safe_name(target.database) if target.database else None
    if target.kind == "archive":
        folder = target.archive or target.name
    listing = backupsets.list_sets(storage, folder, older=target.kind == "database")
    schema = mf.ARCHIVE_SCHEMA if target.kind == "archive" else mf.SCHEMA
    backups: list[dict[str, Any]] = []
    incomplete: list[dict[str, Any]] = []
    damaged: list[dict[str, Any]] = []
    for found in listing.ordered_sets():
        artifacts = [o.key for o in found.artifacts]
        if found.manifest_key is None:
            if artifacts:
                lm = max((o.last_modified for o in found.artifacts if o.last_modified), default=None)
                incomplete.append({"id": found.backup_id, "folder": found.set_dir, "objects": artifacts,
                                   "last_modified": mf.iso(lm) if lm else None,
                                   "age_s": _age(lm, now) if lm else None})
            continue
        man, problem = _checked_manifest(storage, found.manifest_key, schema)
        if problem is not None:
            damaged.append({"id": found.backup_id, "folder": found.set_dir, "manifest_key": found.manifest_key,
                            "objects": artifacts, "reason": problem})
            continue
        if isinstance(man, mf.ArchiveManifest):
            backups.append(_entry_archive(man, found.manifest_key, now))
        elif isinstance(man, mf.BackupManifest) and not (target.database and man.database != target.database):
            entry = _entry_from_manifest(man, found.manifest_key, now)
            _attach_verifications(storage, entry, found.verify_keys)
            backups.append(entry)
    for dump in listing.ordered_older():
        if dump.dump is None:
            continue  # a record or manifest whose dump is gone
        if dump.manifest_key:
            man, problem = _checked_manifest(storage, dump.manifest_key, mf.SCHEMA)
            if problem is not None:
                damaged.append({"id": dump.backup_id, "folder": "", "manifest_key": dump.manifest_key,
                                "objects": [dump.key], "reason": problem})
                continue
            if not isinstance(man, mf.BackupManifest) or (target.database and man.database != target.database):
                continue
            entry = _entry_from_manifest(man, dump.manifest_key, now)
        elif target.include_legacy:
            entry = _entry_legacy(dump.key, dump.dump.size, now)
        else:
            continue
        _attach_verifications(storage, entry, dump.verify_keys)
        backups.append(entry)
    backups.sort(key=_sort_key, reverse=True)
    return {"backups": backups, "incomplete": incomplete, "damaged": damaged}


def _checked_manifest(storage: Storage, key: str, schema: str) -> tuple[mf.BackupManifest | mf.ArchiveManifest | None,
                                                                        str | None]:
    """(typed manifest, None) for a sound manifest of ``schema``; (None, None) for another kind's (an archive's
    manifest under a database root is not a backup of it); (None, reason) for a damaged or torn one, or one
    with a field of the wrong type (manifest.read: the same rule as verify and restore)."""
    try:
        return mf.read(storage, key, schema), None
    except mf.ForeignManifest as exc:
        if exc.schema in mf.model.SCHEMAS:
            return None, None
        return None, f"manifest {storage.uri(key)}: {exc.reason}"
    except mf.DamagedManifest as exc:
        return None, f"manifest {storage.uri(key)} is damaged: {exc.reason}"
    except LifeboatError as exc:
        return None, f"manifest {storage.uri(key)} could not be read: {exc}"


def _attach_verifications(storage: Storage, entry: dict[str, Any], keys: list[str]) -> None:
    recs = mf.read_verification_records(storage, keys)
    entry["verifications"] = [_verification(r) for r in recs]
    entry["verification"] = entry["verifications"][-1] if recs else None


def _run_records(target: Target) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    if not target.run_record:
        return None, None
    return runrecord.read(open_storage(target.run_record, target.s3))


def scan(target: Target, now: _dt.datetime | None = None, storage: Storage | None = None) -> dict[str, Any]:
    """The catalog of one target (see the module docstring); never raises LifeboatError. ``storage``: the target's
    store, already open (any Storage: the unit tests give a directory or memory); by default opened from
    ``target.destination``."""
    now = now or mf.utcnow()
    out: dict[str, Any] = {"name": target.name, "kind": target.kind, "destination": target.destination,
                           "database": target.database, "reachable": True, "error": None, "backups": [],
                           "incomplete": [], "damaged": [], "open_uploads": [], "last_run": None,
                           "last_success": None}
    try:
        target.validate()
        if target.kind in ("database", "archive"):
            if storage is None:
                storage = open_storage(target.destination, target.s3)
            storage.check()
            out.update(_scan_sets(storage, target, now))
            out["open_uploads"] = _open_uploads(storage)
        if target.kind in ("archive", "sync"):
            out["last_run"], out["last_success"] = _run_records(target)
    except LifeboatError as exc:
        out.update(reachable=False, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a catalog never crashes on one target
        out.update(reachable=False, error=f"{target.name}: unexpected {exc.__class__.__name__}: {exc}")
    return out


def scan_all(targets: list[Target], now: _dt.datetime | None = None) -> list[dict[str, Any]]:
    now = now or mf.utcnow()
    names = [t.name for t in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"targets: names must be unique; repeated: {', '.join(dupes)}", "targets")
    return [scan(t, now) for t in targets]


# ----------------------------------------------------------------------------------------------- table

def human_size(size: Any) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def human_age(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 0:
        return "future"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _enc_text(enc: dict[str, Any]) -> str:
    method = enc.get("method") or "none"
    recips = [str(r)[-16:] for r in enc.get("recipients") or []]
    return method + (f"({','.join(recips)})" if recips else "")


def _verify_text(v: dict[str, Any] | None) -> str:
    if not v:
        return "never"
    rto = f" rto {v['rto_s_per_gib']}s/GiB" if v.get("rto_s_per_gib") is not None else ""
    return f"{v['outcome']} {str(v.get('at') or '')[:16]}{rto}"


COLUMNS = ("ID", "STARTED", "AGE", "SIZE", "DURATION", "FORMAT", "COMPR", "ENCRYPTION", "TABLES", "ROWS",
           "MANIFEST", "VERIFIED")


def table_rows(target: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for b in target["backups"]:
        manifest = "older dump" if b.get("legacy") and not b.get("manifest_key") else (
            "yes" if b.get("manifest_key") else "no")
        dur = b.get("duration_s")
        rows.append((str(b.get("id")), str(b.get("started_at") or "-")[:19], human_age(b.get("age_s")),
                     human_size(b.get("size")), "-" if dur is None else f"{float(dur):.1f}s",
                     str(b.get("format") or "-"), str(b.get("compression") or "-"), _enc_text(b["encryption"]),
                     "-" if b.get("tables") is None else str(b["tables"]),
                     "-" if b.get("rows") is None else str(b["rows"]), manifest, _verify_text(b.get("verification"))))
    for inc in target["incomplete"]:
        rows.append((str(inc["id"]), "-", human_age(inc.get("age_s")), "-", "-", "-", "-", "-", "-", "-",
                     "MISSING (incomplete)", "-"))
    return rows


def render_table(targets: list[dict[str, Any]]) -> list[str]:
    """One block per target, one line per backup, newest first (like ``restic snapshots``)."""
    lines: list[str] = []
    for t in targets:
        head = f"== {t['name']} ({t['kind']}) {t['destination'] or ''}".rstrip()
        lines.append(head)
        if not t["reachable"]:
            lines += [f"   CANNOT CHECK: {t['error']}", ""]
            continue
        rows = table_rows(t)
        if t["kind"] != "sync":
            if rows:
                widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
                lines.append("   " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(COLUMNS)).rstrip())
                for r in rows:
                    lines.append("   " + "  ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip())
            else:
                lines.append("   no backup found")
        for label in ("last_run", "last_success"):
            rec = t.get(label)
            if rec is not None:
                counts = ", ".join(f"{k} {v}" for k, v in sorted((rec.get("counts") or {}).items())
                                   if k != "duration_s")
                lines.append(f"   {label.replace('_', ' ')}: {rec.get('outcome')} at {rec.get('finished_at')} "
                             f"({rec.get('duration_s')}s){': ' + counts if counts else ''}"
                             + (f" - {rec['error']}" if rec.get("error") else ""))
            elif t["kind"] in ("archive", "sync") and label == "last_run":
                lines.append("   last run: none recorded")
        for bad in t.get("damaged") or []:
            lines.append(f"   DAMAGED {bad['id']}: {bad['reason']} (not counted as a backup; verify and restore "
                         "name it too)")
        if t["open_uploads"]:
            lines.append(f"   open multipart uploads: {len(t['open_uploads'])} "
                         f"(oldest {min(str(u['initiated']) for u in t['open_uploads'])})")
        lines.append("")
    return lines


# ------------------------------------------------------------------------------------- module options

def target_options() -> dict[str, dict[str, Any]]:
    """Suboptions of a module's ``targets`` list, besides the S3 options (the modules add options.s3_spec(""))."""
    opts: dict[str, dict[str, Any]] = dict(
        name=dict(type="str", required=True),
        kind=dict(type="str", default="database", choices=list(KINDS)),
        destination=dict(type="str", default=""),
        database=dict(type="str"),
        archive=dict(type="str"),
        run_record=dict(type="str", default=""),
        include_legacy=dict(type="bool", default=True),
        max_age_hours=dict(type="float"),
    )
    return opts


def targets_from(items: list[dict[str, Any]], settings_of: Any) -> list[Target]:
    """Targets from a module's ``targets``; ``settings_of(item)`` gives each one's S3Settings (timeouts are
    made short here: one dead endpoint must not stall the rest)."""
    out = []
    for item in items:
        settings = settings_of(item)
        settings.connect_timeout, settings.read_timeout, settings.max_attempts = 5.0, 30.0, 2
        out.append(Target(name=item["name"], kind=item.get("kind") or "database",
                          destination=item.get("destination") or "", database=item.get("database") or None,
                          archive=item.get("archive") or None, run_record=item.get("run_record") or "",
                          include_legacy=item.get("include_legacy", True) is not False, s3=settings))
    return out


def public(target: dict[str, Any], with_table_rows: bool = False) -> dict[str, Any]:
    """A cataloged target as a module returns it (per-table rows only on request: they can be many)."""
    out = dict(target)
    out["backups"] = [{k: v for k, v in b.items() if with_table_rows or k != "table_rows"} for b in target["backups"]]
    return out
