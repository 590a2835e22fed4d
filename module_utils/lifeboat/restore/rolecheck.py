"""The roles a backup needs, checked on the target server before any data moves, created on request.

The manifest's ``roles.required`` lists the roles the database refers to (owners, grantees, policy roles); the
roles file beside the dump (``roles.key``, compressed and encrypted like it) holds their definitions without
passwords. A restore that keeps owners and privileges (``no_owner: false``) needs them all: it names every
missing one at once, or with ``create_roles: true`` creates them (and only them) before restoring.
"""
from __future__ import annotations

from typing import Any

from ansible.module_utils.lifeboat import pipeline, roles
from ansible.module_utils.lifeboat.crypto import DecryptionSpec
from ansible.module_utils.lifeboat.errors import NotFound, RestoreError
from ansible.module_utils.lifeboat.restore.decoding import decryptor
from ansible.module_utils.lifeboat.restore.pgadmin import Admin
from ansible.module_utils.lifeboat.restore.selection import Source
from ansible.module_utils.lifeboat.storage import Storage


def needed_roles(src: Source) -> list[str]:
    """Roles the backup's database refers to (empty for manifests written before roles were recorded)."""
    part = src.manifest.roles if src.manifest else None
    return list(part.required) if part else []


def missing_for(admin: Admin, src: Source) -> list[str]:
    with admin.connect() as conn:
        return roles.missing_roles(conn, needed_roles(src))


def read_roles_script(storage: Storage, src: Source, keys: DecryptionSpec) -> str:
    """Fetch, check (sha256), decrypt and decompress the backup's roles file."""
    part = src.manifest.roles if src.manifest else None
    key = part.key if part else ""
    if not key:
        raise NotFound(f"create_roles: backup {src.backup_id} has no roles file (written before backups stored "
                       "their roles, or with naming: legacy); create the roles by hand", "create_roles")
    if not storage.exists(key):
        raise NotFound(f"create_roles: the roles file {storage.uri(key)} of backup {src.backup_id} is missing",
                       "create_roles")
    chunks: list[bytes] = []
    dec = decryptor(src, keys)
    try:
        pipeline.run_restore_stream(storage, key, chunks.append, compression=src.compression, decryptor=dec,
                                    expected_sha256=part.sha256 if part else None)
    finally:
        if dec is not None:
            dec.cleanup()
    return b"".join(chunks).decode("utf-8", "replace")


def missing_message(src: Source, missing: list[str], database: str) -> str:
    return (f"database: restoring backup {src.backup_id} into '{database}' with owners and privileges needs "
            f"{len(missing)} role(s) this server lacks: {', '.join(missing)}. Nothing was restored. Set "
            "create_roles: true to create them from the backup's roles file (without passwords: set them "
            "afterwards with ALTER ROLE ... PASSWORD), or create them by hand, or restore with no_owner: true "
            "(everything owned by the restoring user, no GRANTs: the application's role may get 'permission "
            "denied')")


def ensure_roles(storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, create: bool,
                 database: str) -> dict[str, Any]:
    """Check (and with ``create``, create) the roles the backup needs. Raises RestoreError naming ALL the
    missing roles when not asked to create them."""
    missing = missing_for(admin, src)
    if not missing:
        return {"missing": [], "created": []}
    if not create:
        raise RestoreError(missing_message(src, missing, database), "create_roles")
    script = read_roles_script(storage, src, keys)
    with admin.connect() as conn:
        have = {r[0] for r in conn.execute("SELECT rolname FROM pg_catalog.pg_roles").fetchall()}
        created = roles.create_roles(conn, script, missing, have)
    return {"missing": missing, "created": created}
