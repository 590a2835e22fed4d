"""Checks after a restore: exact row counts against the manifest, the schema hash.
"""
from __future__ import annotations

from typing import Any

from types import SimpleNamespace

from psycopg import sql

from ansible.module_utils.lifeboat import backup, pgmeta
from ansible.module_utils.lifeboat.manifest_model import ContentHashes, Scope
from ansible.module_utils.lifeboat.restore.pgadmin import ident
from ansible.module_utils.lifeboat.restore.selection import Source


def manifest_tables(src: Source) -> list[tuple[str, str]]:
    return [(t.schema, t.name) for t in (src.manifest.tables if src.manifest else ())]


def compare_counts(conn: Any, src: Source, only: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Exact row counts of the restored tables against the manifest."""
    expected = {(t.schema, t.name): t.rows for t in (src.manifest.tables if src.manifest else ())}
    tables = [t for t in expected if only is None or t in only]
    existing = set(pgmeta.list_tables(conn))
    mismatches, missing, counted = [], [], {}
    for schema, name in tables:
        if (schema, name) not in existing:
            missing.append(f"{schema}.{name}")
            continue
        got = pgmeta.row_counts(conn, [(schema, name)])[0]["rows"]
        if got != expected[(schema, name)] and _count_with_children(conn, schema, name) == expected[(schema, name)]:
            got = expected[(schema, name)]  # a manifest written before counts were ONLY (children included)
        counted[f"{schema}.{name}"] = got
        if got != expected[(schema, name)]:
            mismatches.append(f"{schema}.{name}: {got} rows, manifest {expected[(schema, name)]}")
    return {"tables": len(tables), "counts": counted, "mismatches": mismatches, "missing": missing,
            "ok": not mismatches and not missing}


def _count_with_children(conn: Any, schema: str, name: str) -> int | None:
    """count(*) including inheritance children, or None when the table has none."""
    if not conn.execute("SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhparent "
                        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                        "AND c.relname = %s", (schema, name)).fetchone():
        return None
    return int(conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(ident(schema), ident(name))).fetchone()[0])


def report_counts(conn: Any) -> dict[str, int]:
    """Row counts of every table (older-procedure dumps: reported, nothing to compare with)."""
    return {f"{r['schema']}.{r['name']}": r["rows"] for r in pgmeta.row_counts(conn, pgmeta.list_tables(conn))}


def _scope(src: Source) -> Any:
    """The backup's scope as backup.scope_schemas reads a request (lists of patterns)."""
    scope = src.manifest.scope if src.manifest else Scope()
    return SimpleNamespace(include_tables=list(scope.include_tables), include_schemas=list(scope.include_schemas),
                           exclude_schemas=list(scope.exclude_schemas), exclude_tables=list(scope.exclude_tables))


def schema_hash_for(conn: Any, src: Source) -> str:
    """Recompute the schema hash with the scope the backup engine used (backup.scope_schemas), the way that
    compares with the manifest's :func:`expected_schema_hash`.

    On the backup's own server major: the full hash. On another major: the cross-major hash (view text left
    out: each major prints views its own way), when the manifest has one. When the full hash differs, the one
    older manifests recorded on PostgreSQL 18 (NOT NULL constraints included) is tried, so that older backups
    still compare."""
    schemas, tables = backup.scope_schemas(conn, _scope(src), manifest_tables(src))
    if _cross_major(conn, src):
        return pgmeta.cross_major_hash(conn, schemas, tables)
    got = pgmeta.schema_hash(conn, schemas, tables)
    expected = src.manifest.schema_hash if src.manifest else None
    if expected and got != expected:
        older = pgmeta.schema_hash(conn, schemas, tables, portable=False)
        if older == expected:
            return older
    return got


def _cross_major(conn: Any, src: Source) -> bool:
    manifest = src.manifest
    source_num = manifest.server_version_num if manifest else None
    if manifest is None or not manifest.schema_hash_cross_major or not source_num:
        return False
    here = int(conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0])
    return here // 10000 != int(source_num) // 10000


def expected_schema_hash(conn: Any, src: Source) -> str | None:
    """The manifest's hash that :func:`schema_hash_for` computes on this server."""
    if src.manifest is None:
        return None
    if _cross_major(conn, src):
        return src.manifest.schema_hash_cross_major
    return src.manifest.schema_hash


def compare_privileges(conn: Any, src: Source, no_owner: bool = False) -> tuple[bool | None, str]:
    """Owners, grants (tables, sequences, functions, schemas), SECURITY DEFINER/SET of functions and policies of
    the restored database against the manifest's ``privileges`` (None: nothing to compare). ``no_owner``
    restores give back neither owners nor grants: only functions and policies are compared then."""
    recorded = src.manifest.privileges if src.manifest else {}
    if not recorded:
        return None, "the manifest records no privileges (written before issue 10)"
    schemas, _tables = backup.scope_schemas(conn, _scope(src), manifest_tables(src))
    got = pgmeta.privileges_hashes(conn, schemas)
    skipped = {"owners", "acl"} if no_owner else set()
    compared = [k for k in sorted(recorded) if k not in skipped]
    differ = [k for k in compared if got.get(k) != recorded[k]]
    if differ:
        return False, ("differ from the manifest: " + ", ".join(differ)
                       + " (owners: object owners; acl: grants on tables, sequences, functions, schemas; "
                         "functions: SECURITY DEFINER and SET options; policies: row-level security)")
    note = " (owners and grants not compared: restored with no_owner)" if skipped else ""
    return True, ", ".join(compared) + " match the manifest" + note


def compare_content(conn: Any, src: Source) -> tuple[bool | None, str]:
    """Each table's content hash against the manifest's ``content_hashes`` (None: the backup recorded none,
    ``content_hashes: false``). A table whose rows came back with other values (same count) is named."""
    recorded = src.manifest.content_hashes if src.manifest else ContentHashes()
    tables = recorded.tables
    if not tables:
        return None, "the backup recorded no content hashes (lifeboat_pg_backup content_hashes: false)"
    if recorded.method != pgmeta.CONTENT_HASH_METHOD:
        return None, f"content hashes of method {recorded.method!r} are not known to this version"
    existing = set(pgmeta.list_tables(conn))
    present = [(t.schema, t.name) for t in tables if (t.schema, t.name) in existing]
    got = {(t["schema"], t["name"]): t["hash"] for t in pgmeta.content_hashes(conn, present)}
    differ = [f"{t.schema}.{t.name}" for t in tables if (t.schema, t.name) in got and got[(t.schema, t.name)] != t.hash]
    if differ:
        return False, (f"{len(differ)} of {len(tables)} tables hold other values than the backup's snapshot (same "
                       f"row counts, different content): {', '.join(differ[:20])}"
                       + (f" and {len(differ) - 20} more" if len(differ) > 20 else "")
                       + "; compare the database's locale and collation with the manifest's database_properties "
                         "(stored generated columns and expression results depend on them)")
    return True, f"{len(got)} tables match the content hashes of the backup's snapshot"
