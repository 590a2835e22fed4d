"""A Supabase backup's parts, fetched from its store by its manifest (restore/supabase.py restores them).

A backup made with the ``supabase`` profile is three stored objects of one snapshot: the application schemas
(the manifest's ``artifact``), the platform tables' user data (``supabase.platform_data``) and the application's
roles (``roles``). Each is read from the store, its sha256 compared with the manifest's while it streams,
decrypted and decompressed, into a private directory (0700, files 0600, written exclusively) as
``app.dump``, ``platform.dump`` and ``roles.sql``: pg_restore reads an archive's table of contents and entries
several times, so the archives are files, never held in memory. A damaged part stops the fetch naming it, before
anything touches the project. ``Parts`` also carries what the manifest says the restore needs: the schemas, the
platform tables, the row counts, the publications and the database's settings.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from typing import Any

from ansible.module_utils.lifeboat import tmpfiles
from ansible.module_utils.lifeboat.crypto import DecryptionSpec
from ansible.module_utils.lifeboat.errors import ConfigError, IntegrityError
from ansible.module_utils.lifeboat.manifest_model import SupabaseParts
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore.decoding import decode
from ansible.module_utils.lifeboat.restore.selection import Source, choose_backup, source_for
from ansible.module_utils.lifeboat.restore.supabase_plan import Scope, publications_of
from ansible.module_utils.lifeboat.storage import Storage

FILES = {"app": "app.dump", "platform": "platform.dump", "roles": "roles.sql"}


@dataclass
class Parts:
    """What a Supabase restore needs of one backup: its decoded files and the manifest's facts."""

    backup_id: str
    archives: list[str]
    roles_script: str
    app_schemas: list[str]
    platform_tables: list[tuple[str, str]]
    expected_counts: dict[str, int]
    publications: list[tuple[str, str, str]] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)


def supabase_section(src: Source) -> SupabaseParts:
    """The manifest's ``supabase`` section; a backup made otherwise is refused naming the way to restore it."""
    doc = src.manifest.supabase if src.manifest else None
    if doc is None or doc.platform_data is None:
        raise ConfigError(f"backup {src.backup_id} was not made with the supabase backup profile (its manifest has no "
                          "supabase section): restore it with playbooks/restore.yml, or choose a backup made with "
                          "db_profile: supabase (or auto, on a Supabase project)", "backup_id")
    return doc


def describe(src: Source) -> Parts:
    """The manifest's facts, without fetching anything (``archives`` empty)."""
    doc = supabase_section(src)
    man = src.manifest
    assert man is not None and doc.platform_data is not None
    counts = {t.qualified: t.rows for t in man.tables + doc.platform_data.tables}
    return Parts(src.backup_id, [], "", list(doc.app_schemas), list(doc.platform_tables), counts,
                 publications_of(doc.doc), [str(s) for s in (man.database_properties or {}).get("settings") or []])


def part_source(src: Source, key: str, sha256: str | None, size: int | None) -> Source:
    """``src`` pointing at another stored object of the same backup (same compression and encryption)."""
    return replace(src, ref=replace(src.ref, artifact_key=key), sha256=sha256, size=size, dump_sha256=None,
                   dump_size=None)


def stored_parts(src: Source) -> dict[str, Source]:
    """name (app, platform, roles) -> the Source decoding that stored object."""
    data = supabase_section(src).platform_data
    assert data is not None
    out = {"app": src, "platform": part_source(src, data.key, data.sha256, data.size)}
    roles = src.manifest.roles if src.manifest else None
    if roles is not None and roles.key:
        out["roles"] = part_source(src, roles.key, roles.sha256, roles.size)
    for name, part in out.items():
        if not part.sha256:
            raise IntegrityError(f"backup {src.backup_id}: the manifest records no sha256 for its {name} part "
                                 f"({part.ref.artifact_key}); it cannot be checked - do not restore it")
    return out


def fetch(storage: Storage, src: Source, keys: DecryptionSpec, directory: str) -> Parts:
    """Decode every stored part of ``src`` into ``directory`` (which must exist, private to this run)."""
    parts = describe(src)
    files = {}
    for name, part in stored_parts(src).items():
        path = os.path.join(directory, FILES[name])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            try:
                decode(storage, part, keys, fh.write)
            except IntegrityError as exc:
                raise IntegrityError(f"backup {src.backup_id}, part {name}: {exc}", exc.option) from None
        files[name] = path
    parts.archives = [files["app"], files["platform"]]
    if "roles" in files:
        with open(files["roles"], encoding="utf-8") as fh:
            parts.roles_script = fh.read()
    return parts


@dataclass
class StoreRestore:
    """A restore from the store: which backup, why it was chosen, the warnings, the restore's result."""

    backup_id: str
    reason: str
    warnings: list[str]
    result: Any


def restore_from_store(storage: Storage, target: PgTarget, keys: DecryptionSpec, *, source_database: str,
                       backup_id: str | None = None, before: str | None = None, prefix: str = "",
                       require_verified: bool = False, work_dir: str | None = None,
                       app_schemas: list[str] | None = None, platform_tables: list[tuple[str, str]] | None = None,
                       expected_counts: dict[str, int] | None = None,
                       **kwargs: Any) -> StoreRestore:
    """Choose the backup (as restore.yml does: latest verified, ``backup_id`` or ``before``), fetch its parts into a
    private directory of ``work_dir`` (removed at the end, also after a failure), and restore them with
    restore/supabase.py (``kwargs``: mode, confirm, snapshot_dir, bin_dirs...). ``app_schemas``,
    ``platform_tables``, ``expected_counts``: the manifest's unless given."""
    from ansible.module_utils.lifeboat.restore import supabase

    choice = choose_backup(storage, source_database, backup_id=backup_id, before=before, prefix=prefix,
                           require_verified=require_verified, include_legacy=False)
    src = source_for(storage, choice.ref)
    supabase_section(src)  # refused before anything is fetched
    directory = tmpfiles.private_dir("lifeboat-sb-restore-", dir=work_dir)
    try:
        parts = fetch(storage, src, keys, directory)
        scope = Scope(app_schemas or parts.app_schemas, platform_tables or parts.platform_tables)
        result = supabase.restore(target, parts.archives, scope, roles_script=parts.roles_script,
                                  expected_counts=expected_counts or parts.expected_counts,
                                  publications=parts.publications, settings=parts.settings, **kwargs)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return StoreRestore(src.backup_id, choice.reason, choice.warnings, result)
