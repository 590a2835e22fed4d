"""Partial restores: rows of some tables replaced from a staging database, or tables copied into a
side schema.
"""
from __future__ import annotations

import os
import subprocess
from typing import Any

from psycopg import sql

from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.errors import (
    NotFound,
    RestoreError,
    SafetyError,
)
from ansible.module_utils.lifeboat.restore.load import APP_NAME
from ansible.module_utils.lifeboat.restore.pgadmin import Admin, dbname_arg, ident


def _fk_checks(conn: Any, tables: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """(constraint label, query counting violating rows) for every FK from or to the tables.

    A foreign key from or to a partitioned table is checked once, on the partitioned tables (its copies on
    each partition, ``conparentid <> 0``, would each see only one partition's rows); a partition counts as
    its partitioned ancestors.
    """
    rows = conn.execute(
        """SELECT k.conname, cn.nspname, c.relname, pn.nspname, p.relname,
                  ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o),
                  ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, o)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o)
             FROM pg_catalog.pg_constraint k
             JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
             JOIN pg_catalog.pg_class p ON p.oid = k.confrelid
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
            WHERE k.contype = 'f' AND k.conparentid = 0""").fetchall()
    wanted = set(tables) | set(_partition_ancestors(conn, tables))
    checks = []
    for conname, cs, cr, ps, pr, ccols, pcols in rows:
        if (cs, cr) not in wanted and (ps, pr) not in wanted:
            continue
        not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(ident(col)) for col in ccols)
        join = sql.SQL(" AND ").join(sql.SQL("p.{} = c.{}").format(ident(pc), ident(cc))
                                     for cc, pc in zip(ccols, pcols, strict=True))
        query = sql.SQL("SELECT count(*) FROM {}.{} c WHERE {} AND NOT EXISTS "
                        "(SELECT 1 FROM {}.{} p WHERE {})").format(
            ident(cs), ident(cr), not_null, ident(ps), ident(pr), join)
        checks.append((f"{cs}.{cr}.{conname} -> {ps}.{pr}", query))
    return checks


def _copy_columns(conn: Any, schema: str, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        """SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
              AND a.attgenerated = '' ORDER BY a.attnum""", (schema, table)).fetchall()]


def _owned_sequences(conn: Any, schema: str, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        """SELECT sn.nspname, s.relname FROM pg_catalog.pg_depend d
             JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
             JOIN pg_catalog.pg_class t ON t.oid = d.refobjid JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
            WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
              AND d.deptype IN ('a', 'i') AND tn.nspname = %s AND t.relname = %s""", (schema, table)).fetchall()]


def _table_exists(conn: Any, schema: str, table: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", (schema, table)).fetchone() is not None


def _dump_ddl(admin: Admin, database: str, tables: list[tuple[str, str]], schema_only: bool = True) -> str:
    """pg_dump -s of some tables (with their owned sequences) from a staging database, as SQL text."""
    argv = [admin.client("pg_dump"), "--schema-only", "-d", dbname_arg(database)]
    for schema, table in tables:
        argv += ["-t", _quote_pattern(schema) + "." + _quote_pattern(table)]
    with admin.target.child_env(database) as env:
        proc = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise RestoreError(f"pg_dump of the table definitions from staging failed: "
                           f"{proc.stderr.decode(errors='replace').strip()[-400:]}")
    # psql meta-commands (\\restrict / \\unrestrict of recent pg_dump releases) are not SQL: drop them
    return "\n".join(ln for ln in proc.stdout.decode().splitlines() if not ln.startswith("\\"))


def copy_schema(admin: Admin, source: str, dest: str) -> None:
    """``pg_dump --schema-only source | psql dest`` (definitions only, no rows)."""
    dump_argv = [admin.client("pg_dump"), "--schema-only", "-d", dbname_arg(source)]
    load_argv = [admin.client("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname_arg(dest), "-o", os.devnull]
    with admin.target.child_env(source) as env:
        dump = subprocess.run(dump_argv, env=env, capture_output=True, check=False, timeout=3600)
    if dump.returncode != 0:
        raise RestoreError(f"pg_dump --schema-only of '{source}' failed: "
                           f"{dump.stderr.decode(errors='replace').strip()[-400:]}")
    with admin.target.child_env(dest) as env:
        load = subprocess.run(load_argv, env=env, input=dump.stdout, capture_output=True, check=False, timeout=3600)
    if load.returncode != 0:
        raise RestoreError(f"loading the schema of '{source}' into '{dest}' failed: "
                           f"{load.stderr.decode(errors='replace').strip()[-400:]}")


def _quote_pattern(name: str) -> str:
    """A pg_dump -t pattern matching exactly this name (quoted, wildcards escaped)."""
    return '"' + name.replace('"', '""') + '"'


def copy_tables(admin: Admin, staging: str, database: str, tables: list[tuple[str, str]],
                check_foreign_keys: bool = True, app_name: str = APP_NAME) -> dict[str, Any]:
    """Replace the rows of ``tables`` in ``database`` with those of the staging database, atomically.

    In ONE transaction on the target: missing tables are created from the
    staging definition (with their missing partitioned parents), the tables' own rows
    (``ONLY``: never those of inheritance children) are deleted (with
    ``session_replication_role = replica``: no cascades into other tables, no
    user triggers), the staged rows copied (binary COPY), owned sequences set
    to their staged values, and every foreign key from or to these tables
    checked; any violation rolls everything back.
    """
    result: dict[str, Any] = {"tables": [f"{s}.{t}" for s, t in tables], "created": [], "sequences": [],
                              "rows": {}}
    src_conn = admin.connect(staging)
    dst_conn = admin.connect(database)
    try:
        for schema, table in tables:
            if not _table_exists(src_conn, schema, table):
                raise NotFound(f"tables: table {schema}.{table} is not in backup's data", "tables")
        dst_conn.execute("SELECT pg_catalog.set_config('application_name', %s, false)", (app_name,))
        with dst_conn.transaction():
            dst_conn.execute("SET LOCAL session_replication_role = replica")
            missing = [t for t in tables if not _table_exists(dst_conn, *t)]
            if missing:
                parents = [p for p in _partition_ancestors(src_conn, missing)
                           if p not in missing and not _table_exists(dst_conn, *p)]
                ddl = _dump_ddl(admin, staging, parents + missing)
                dst_conn.execute(ddl)
                dst_conn.execute("SELECT pg_catalog.set_config('search_path', 'public', true)")
                result["created"] = [f"{s}.{t}" for s, t in missing]
            for schema, table in tables:
                qual = sql.SQL("{}.{}").format(ident(schema), ident(table))
                dst_conn.execute(sql.SQL("DELETE FROM ONLY {}").format(qual))
                cols = _copy_columns(dst_conn, schema, table)
                src_cols = set(_copy_columns(src_conn, schema, table))
                if set(cols) != src_cols:
                    raise RestoreError(
                        f"tables: {schema}.{table} has columns {sorted(cols)} in '{database}' but "
                        f"{sorted(src_cols)} in the backup; restore it into a side schema (mode side_schema)")
                col_list = sql.SQL(", ").join(ident(c) for c in cols)
                # a table without columns still has rows: COPY it without a column list
                into = sql.SQL("{} ({})").format(qual, col_list) if cols else qual
                with src_conn.cursor().copy(sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT (FORMAT BINARY)").format(
                        col_list, qual)) as out, \
                        dst_conn.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(into)) as inp:
                    for data in out:
                        inp.write(data)
                n = int(dst_conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(qual)).fetchone()[0])
                result["rows"][f"{schema}.{table}"] = n
                for seq_schema, seq in _owned_sequences(src_conn, schema, table):
                    last, called = src_conn.execute(sql.SQL("SELECT last_value, is_called FROM {}.{}").format(
                        ident(seq_schema), ident(seq))).fetchone()
                    seq_name = sql.SQL("{}.{}").format(ident(seq_schema), ident(seq)).as_string(dst_conn)
                    dst_conn.execute("SELECT pg_catalog.setval(%s::regclass, %s, %s)", (seq_name, last, called))
                    result["sequences"].append(f"{seq_schema}.{seq}")
            if check_foreign_keys:
                violations = []
                for label, query in _fk_checks(dst_conn, tables):
                    bad = int(dst_conn.execute(query).fetchone()[0])
                    if bad:
                        violations.append(f"{label}: {bad} rows")
                if violations:
                    raise RestoreError(
                        "tables: the restored rows break foreign keys, nothing was changed (rolled back): "
                        + "; ".join(violations) + ". Restore the related tables too, or set "
                        "check_foreign_keys: false", "tables")
    finally:
        src_conn.close()
        dst_conn.close()
    return result


def copy_to_side_schema(admin: Admin, staging: str, database: str, tables: list[tuple[str, str]],
                        side_schema: str) -> dict[str, Any]:
    """Copy tables (definition, rows, owned sequences; no foreign keys) into a new schema of ``database``."""
    with admin.connect(database) as conn:
        if conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (side_schema,)).fetchone():
            raise SafetyError(f"side_schema: schema '{side_schema}' already exists in '{database}'; choose a new "
                              "name (nothing is overwritten in side_schema mode)", "side_schema")
    with admin.connect(staging) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(side_schema)))
        for schema, table in tables:
            if not _table_exists(conn, schema, table):
                raise NotFound(f"tables: table {schema}.{table} is not in the backup", "tables")
            # a partition's foreign keys are copies of its partitioned ancestors' (they cannot be dropped alone):
            # drop the ancestors' (staging is scratch)
            for fs, ft in [(schema, table)] + _partition_ancestors(conn, [(schema, table)]):
                fks = conn.execute(
                    "SELECT k.conname FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c "
                    "ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE k.contype = 'f' AND k.conparentid = 0 AND n.nspname = %s AND c.relname = %s",
                    (fs, ft)).fetchall()
                for (fk,) in fks:
                    conn.execute(sql.SQL("ALTER TABLE {}.{} DROP CONSTRAINT {}").format(
                        ident(fs), ident(ft), ident(fk)))
        # foreign keys from other tables would stop the move; they stay behind in staging
        for schema, table in tables:
            refs = [r for ps_, pt_ in [(schema, table)] + _partition_ancestors(conn, [(schema, table)])
                    for r in conn.execute(
                "SELECT cn.nspname, c.relname, k.conname FROM pg_catalog.pg_constraint k "
                "JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace cn "
                "ON cn.oid = c.relnamespace JOIN pg_catalog.pg_class p ON p.oid = k.confrelid "
                "JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace WHERE k.contype = 'f' "
                "AND k.conparentid = 0 AND pn.nspname = %s AND p.relname = %s", (ps_, pt_)).fetchall()]
            for cs, cr, conname in refs:
                conn.execute(sql.SQL("ALTER TABLE {}.{} DROP CONSTRAINT {}").format(
                    ident(cs), ident(cr), ident(conname)))
            # a partition or an inheritance child copied alone becomes a plain table: still attached, its
            # definition would name the live parent (overlapping partitions; its rows in the parent's queries)
            for ps, pt, is_partition in conn.execute(
                    "SELECT pn.nspname, p.relname, c.relispartition FROM pg_catalog.pg_inherits i "
                    "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_namespace cn "
                    "ON cn.oid = c.relnamespace JOIN pg_catalog.pg_class p ON p.oid = i.inhparent "
                    "JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace "
                    "WHERE cn.nspname = %s AND c.relname = %s", (schema, table)).fetchall():
                if is_partition:
                    conn.execute(sql.SQL("ALTER TABLE {}.{} DETACH PARTITION {}.{}").format(
                        ident(ps), ident(pt), ident(schema), ident(table)))
                elif (ps, pt) not in tables:
                    conn.execute(sql.SQL("ALTER TABLE {}.{} NO INHERIT {}.{}").format(
                        ident(schema), ident(table), ident(ps), ident(pt)))
            conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(
                ident(schema), ident(table), ident(side_schema)))
    argv = [admin.client("pg_dump"), "--no-owner", "--no-privileges", "-n", _quote_pattern(side_schema),
            "-d", dbname_arg(staging)]
    psql = [admin.client("psql"), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", dbname_arg(database), "-o",
            os.devnull]
    with admin.target.child_env(staging) as env:
        dump = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=3600)
    if dump.returncode != 0:
        raise RestoreError(f"pg_dump of side schema from staging failed: {dump.stderr.decode(errors='replace')}")
    with admin.target.child_env(database) as env:
        env["PGAPPNAME"] = APP_NAME
        load = subprocess.run(psql, env=env, input=dump.stdout, capture_output=True, check=False, timeout=3600)
    if load.returncode != 0:
        raise RestoreError(f"loading side schema '{side_schema}' into '{database}' failed: "
                           f"{load.stderr.decode(errors='replace').strip()[-400:]}")
    with admin.connect(database) as conn:
        rows = {f"{side_schema}.{t}": pgmeta_count(conn, side_schema, t) for _s, t in tables}
    return {"side_schema": side_schema, "tables": [f"{s}.{t}" for s, t in tables], "rows": rows}


def pgmeta_count(conn: Any, schema: str, table: str) -> int:
    return pgmeta.row_counts(conn, [(schema, table)])[0]["rows"]


def resolve_tables(conn: Any, tables: list[str] | None, schemas: list[str] | None) -> list[tuple[str, str]]:
    """Table patterns / schema names -> (schema, table) present in the (staging) database."""
    found = pgmeta.list_tables(conn, include_schemas=schemas or None, include_tables=tables or None)
    if tables:
        for pat in tables:
            leaves = partition_leaves(conn, pat)
            if not pgmeta.list_tables(conn, include_tables=[pat]) and not leaves:
                raise NotFound(f"tables: '{pat}' matches no table in the backup", "tables")
            found += [t for t in leaves if t not in found]
    if not found:
        raise NotFound(f"schemas: {schemas} match no table in the backup", "schemas")
    return sorted(found)


def partition_leaves(conn: Any, pattern: str) -> list[tuple[str, str]]:
    """The leaf partitions (ordinary tables: they hold the rows) of the partitioned tables ``pattern`` matches.

    A partitioned table has no rows of its own: restoring it means restoring all its partitions.
    """
    sch, tab = pgmeta.split_pattern(pattern)
    parents = conn.execute(
        "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.relkind = 'p'").fetchall()
    leaves: list[tuple[str, str]] = []
    for oid, schema, name in parents:
        if (sch is None or pgmeta.match_pattern(schema, sch)) and pgmeta.match_pattern(name, tab):
            leaves += [(r[0], r[1]) for r in conn.execute(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_tree(%s::oid::regclass) t "
                "JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE t.isleaf AND c.relkind = 'r' ORDER BY 1, 2", (oid,)).fetchall()
                       if (r[0], r[1]) not in leaves]
    return leaves


def _partition_ancestors(conn: Any, tables: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The partitioned tables above ``tables`` (outermost first): a dropped partition needs them to exist."""
    result: list[tuple[str, str]] = []
    for schema, table in tables:
        qual = sql.SQL("{}.{}").format(ident(schema), ident(table)).as_string(conn)
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_ancestors(%s::regclass) WITH ORDINALITY "
            "a(relid, depth) JOIN pg_catalog.pg_class c ON c.oid = a.relid JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE a.relid <> %s::regclass ORDER BY a.depth DESC", (qual, qual)).fetchall()
        result += [(r[0], r[1]) for r in rows if (r[0], r[1]) not in result]
    return result
