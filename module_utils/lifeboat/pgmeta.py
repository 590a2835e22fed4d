"""What is in a PostgreSQL database: tables in scope, exact row counts, a schema hash.

All functions take an open psycopg connection and run read-only queries, so they
can share the REPEATABLE READ transaction whose snapshot pg_dump uses
(``pg_export_snapshot()`` + ``pg_dump --snapshot``): counts and hash then
describe exactly the dumped state. Identifiers always go through
``psycopg.sql.Identifier``.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from ansible.module_utils.lifeboat.errors import ConfigError

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def server_version(conn: Any) -> tuple[int, str]:
    """(server_version_num, server_version) e.g. (150018, '15.18')."""
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version')").fetchone()
    return int(row[0]), str(row[1]).split()[0]


def split_pattern(pattern: str) -> tuple[str | None, str]:
    """psql-style 'schema.table' pattern -> (schema glob or None, name glob).

    Unquoted parts are folded to lower case, double-quoted parts are kept
    as written (``"Audit Log"``, ``app."MixedCase"``); ``*`` and ``?`` are wildcards,
    except inside double quotes where, as in psql, they are literal characters
    (``"Tab*le?"`` matches only that table). The globs are for :func:`match_pattern`.
    """
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == '"':
            if quoted and i + 1 < len(pattern) and pattern[i + 1] == '"':
                buf.append('"')
                i += 2
                continue
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append("".join(buf))
            buf = []
        elif ch == "[" or (quoted and ch in "*?"):
            buf.append(f"[{ch}]")  # a literal character in the fnmatch glob
        else:
            buf.append(ch if quoted else ch.lower())
        i += 1
    parts.append("".join(buf))
    if len(parts) == 1:
        return None, parts[0]
    return parts[-2], parts[-1]


def match_pattern(value: str, glob: str) -> bool:
    """``glob`` from :func:`split_pattern` (``[`` and quoted wildcards already escaped)."""
    return fnmatch.fnmatchcase(value, glob)


def list_tables(conn: Any, include_schemas: list[str] | None = None, exclude_schemas: list[str] | None = None,
                include_tables: list[str] | None = None, exclude_tables: list[str] | None = None,
                exclude_table_data: list[str] | None = None) -> list[tuple[str, str]]:
    """(schema, table) of every ordinary table whose data a pg_dump with these filters contains.

    Tables that belong to an extension are left out (pg_dump does not dump their
    data). Unqualified table patterns match in any schema.
    """
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r'
           AND n.nspname <> ALL(%s)
           AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast%%'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                            WHERE d.classid = 'pg_catalog.pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY 1, 2
        """,
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()

    def table_matches(schema: str, name: str, patterns: list[str]) -> bool:
        for pat in patterns:
            sch, tab = split_pattern(pat)
            if (sch is None or match_pattern(schema, sch)) and match_pattern(name, tab):
                return True
        return False

    def schema_matches(schema: str, patterns: list[str]) -> bool:
        return any(match_pattern(schema, split_pattern(p)[1]) for p in patterns)

    result = []
    for schema, name in rows:
        if include_tables:
            if not table_matches(schema, name, include_tables):
                continue
        elif include_schemas and not schema_matches(schema, include_schemas):
            continue
        if exclude_schemas and schema_matches(schema, exclude_schemas):
            continue
        if exclude_tables and table_matches(schema, name, exclude_tables):
            continue
        if exclude_table_data and table_matches(schema, name, exclude_table_data):
            continue
        result.append((schema, name))
    return result


def row_counts(conn: Any, tables: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Exact ``count(*)`` of each table's own rows, in the connection's current transaction.

    ``FROM ONLY``: the rows of inheritance children are theirs, not the parent's
    (pg_dump dumps each table's own rows; a parent counted with its children
    would count those rows twice).
    """
    counts = []
    for schema, name in tables:
        query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        counts.append({"schema": schema, "name": name, "rows": int(conn.execute(query).fetchone()[0])})
    return counts


def describe_schema(conn: Any, schemas: list[str] | None = None,
                    tables: list[tuple[str, str]] | None = None, portable: bool = True,
                    view_text: bool = True) -> dict[str, Any]:
    """A normalized, owner- and grant-free description of the user schemas.

    ``schemas`` limits it to those schemas; ``tables`` (when the dump was limited
    to tables) limits relations, columns, constraints and indexes to those tables.
    ``portable`` leaves out what one server major records and another does not for the same schema:
    PostgreSQL 18 records each NOT NULL as a constraint (``contype 'n'``) as well as in
    ``attnotnull``, which the columns already describe; a PostgreSQL 15 backup restored on 18 is the same schema.
    ``view_text=False`` leaves out the text of view definitions (their columns and types stay): each major
    deparses the same view its own way (16+ drops the table qualification of single-table views), so the
    hash compared across majors (:func:`cross_major_hash`) describes views by their columns.
    """
    if schemas is None:
        schemas = [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname <> ALL(%s) "
            "AND nspname NOT LIKE 'pg\\_temp\\_%%' AND nspname NOT LIKE 'pg\\_toast%%' "
            "ORDER BY 1", (list(SYSTEM_SCHEMAS),)).fetchall()]
    not_ext = ("NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass "
               "AND d.objid = c.oid AND d.deptype = 'e')")
    rels = conn.execute(
        f"""SELECT n.nspname, c.relname, c.relkind::text FROM pg_catalog.pg_class c
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = ANY(%s) AND c.relkind IN ('r','p','v','m','S','f') AND {not_ext}
             ORDER BY 1, 2""", (schemas,)).fetchall()  # noqa: S608 - constant text, no input
    keep = set(tables) if tables is not None else None

    def kept(schema: str, name: str) -> bool:
        return keep is None or (schema, name) in keep

    columns = conn.execute(
        f"""SELECT n.nspname, c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                   a.attnotnull, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), a.attidentity::text,
                   a.attgenerated::text
              FROM pg_catalog.pg_attribute a
              JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
             WHERE n.nspname = ANY(%s) AND c.relkind IN ('r','p','v','m','f') AND a.attnum > 0
               AND NOT a.attisdropped AND {not_ext}
             ORDER BY 1, 2, a.attnum""", (schemas,)).fetchall()  # noqa: S608 - constant text, no input
    constraints = conn.execute(
        """SELECT n.nspname, c.relname, k.conname, k.contype::text, pg_catalog.pg_get_constraintdef(k.oid, true)
             FROM pg_catalog.pg_constraint k
             JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY(%s) ORDER BY 1, 2, 3""", (schemas,)).fetchall()
    indexes = conn.execute(
        """SELECT n.nspname, t.relname, i.relname, pg_catalog.pg_get_indexdef(i.oid)
             FROM pg_catalog.pg_index x
             JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
             JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = ANY(%s) ORDER BY 1, 2, 3""", (schemas,)).fetchall()
    views = conn.execute(
        """SELECT n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid, true)
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY(%s) AND c.relkind IN ('v','m') ORDER BY 1, 2""", (schemas,)).fetchall()
    sequences = conn.execute(
        """SELECT n.nspname, c.relname, pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                  s.seqmin, s.seqmax, s.seqcycle
             FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY(%s) ORDER BY 1, 2""", (schemas,)).fetchall()
    functions = conn.execute(
        """SELECT n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
                  pg_catalog.md5(p.prosrc)
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')
            ORDER BY 1, 2, 3""", (schemas,)).fetchall()
    triggers = conn.execute(
        """SELECT n.nspname, c.relname, t.tgname, pg_catalog.pg_get_triggerdef(t.oid)
             FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY(%s) AND NOT t.tgisinternal ORDER BY 1, 2, 3""", (schemas,)).fetchall()
    extensions = conn.execute("SELECT extname FROM pg_catalog.pg_extension ORDER BY 1").fetchall()
    full_scope = keep is None
    return {
        "schemas": sorted(schemas),
        "extensions": [r[0] for r in extensions] if full_scope else [],
        "relations": [list(r) for r in rels if r[2] not in ("r", "p") or kept(r[0], r[1])],
        "columns": [list(r) for r in columns if kept(r[0], r[1])],
        "constraints": [list(r) for r in constraints if kept(r[0], r[1]) and not (portable and r[3] == "n")],
        "indexes": [list(r) for r in indexes if kept(r[0], r[1])],
        "views": ([list(r) if view_text else list(r[:2]) for r in views]) if full_scope else [],
        "sequences": [[r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), int(r[6]), bool(r[7])]
                      for r in sequences] if full_scope else [],
        "functions": [list(r) for r in functions] if full_scope else [],
        "triggers": [list(r) for r in triggers if kept(r[0], r[1])],
    }


# format_type, pg_get_expr, pg_get_viewdef... leave out the schema of what the session's search_path finds: the
# description is taken with this one, whatever the database's or the role's setting (ALTER DATABASE ... SET
# search_path on the source but not on a drill's scratch database changed the hash). "public" is what a default
# "$user", public session resolves when there is no schema named after the user: earlier hashes still compare.
HASH_SEARCH_PATH = "public"


def schema_hash(conn: Any, schemas: list[str] | None = None, tables: list[tuple[str, str]] | None = None,
                portable: bool = True, view_text: bool = True) -> str:
    """sha256 of :func:`describe_schema` under :data:`HASH_SEARCH_PATH`, stable across a dump and restore, also
    onto a newer server major (``portable``; ``portable=False`` is the hash manifests written on PostgreSQL 18
    before issue 10 recorded). The session's search_path is put back afterwards."""
    previous = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
    conn.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (HASH_SEARCH_PATH,))
    try:
        desc = describe_schema(conn, schemas, tables, portable, view_text)
    finally:
        with contextlib.suppress(Exception):  # an aborted transaction rolls the setting back by itself
            conn.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (previous,))
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def cross_major_hash(conn: Any, schemas: list[str] | None = None,
                     tables: list[tuple[str, str]] | None = None) -> str:
    """The schema hash that holds across server majors (manifest ``schema_hash_cross_major``): a restore onto a
    newer major compares this one, since each major prints some definitions its own way."""
    return schema_hash(conn, schemas, tables, portable=True, view_text=False)


def database_facts(conn: Any, name: str | None = None) -> dict[str, Any]:
    """The database's own state that pg_dump leaves out without ``--create``: encoding and locale (provider,
    collation, ctype, ICU locale), owner, ACL, settings (``pg_db_role_setting``: the database's and its roles'
    in it) and comment. ``name`` defaults to the connected database.

    The locale decides what ``lower()``, ``ORDER BY`` and stored generated columns compute: a restore creates the
    new database with the same one (restore.pgadmin.create_database).
    """
    major = int(conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0])
    # PG 15/16: daticulocale; PG 17+: datlocale (also the builtin provider's locale); PG 16+: daticurules
    locale_col = "d.datlocale" if major >= 17 else "d.daticulocale" if major >= 15 else "NULL::text"
    provider_col = "d.datlocprovider::text" if major >= 15 else "'c'"
    rules_col = "d.daticurules" if major >= 16 else "NULL::text"
    row = conn.execute(
        f"""SELECT d.datname, pg_catalog.pg_encoding_to_char(d.encoding), {provider_col}, d.datcollate, d.datctype,
                   {locale_col}, {rules_col}, pg_catalog.pg_get_userbyid(d.datdba), d.datacl IS NULL,
                   pg_catalog.shobj_description(d.oid, 'pg_database')
              FROM pg_catalog.pg_database d
             WHERE d.datname = coalesce(%s, current_database())""",  # noqa: S608 - constant text
        (name,)).fetchone()
    if row is None:
        return {}
    acl = conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, "
        "a.privilege_type, a.is_grantable FROM pg_catalog.pg_database d, "
        "LATERAL pg_catalog.aclexplode(d.datacl) a WHERE d.datname = %s ORDER BY 1, 2", (row[0],)).fetchall()
    settings = conn.execute(
        "SELECT unnest(s.setconfig) FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d "
        "ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0", (row[0],)).fetchall()
    role_settings = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(s.setrole), unnest(s.setconfig) FROM pg_catalog.pg_db_role_setting s "
        "JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole <> 0 "
        "ORDER BY 1, 2", (row[0],)).fetchall()
    provider = {"c": "libc", "i": "icu", "b": "builtin"}.get(row[2], row[2])
    return {"encoding": row[1], "locale_provider": provider, "collate": row[3], "ctype": row[4],
            "icu_locale" if provider == "icu" else "locale": row[5], "icu_rules": row[6],
            "owner": row[7], "default_acl": bool(row[8]), "acl": [list(r) for r in acl],
            "settings": [r[0] for r in settings], "role_settings": [list(r) for r in role_settings],
            "comment": row[9]}


LOCALE_KEYS = ("encoding", "locale_provider", "collate", "ctype", "icu_locale", "locale", "icu_rules")


def locale_of(facts: dict[str, Any]) -> dict[str, Any]:
    """The encoding/locale part of :func:`database_facts` (what CREATE DATABASE must be given)."""
    return {k: facts.get(k) for k in LOCALE_KEYS if facts.get(k) is not None}


def first_column(target: Any, query: str, option: str, batch: int = 5000) -> Iterator[Any]:
    """The non-null values of the first column of ``query``, streamed (a read-only transaction, a server-side
    cursor) from ``target`` (a pgconn.PgTarget); a failing query is a ConfigError naming ``option``."""
    for row in query_rows(target, query, option, batch):
        yield row[0]


def query_rows(target: Any, query: str, option: str, batch: int = 5000) -> Iterator[tuple]:
    """``first_column``'s rows whole: every row of ``query`` whose first column is not null."""
    conn = target.connect(autocommit=False)
    try:
        conn.execute("SET TRANSACTION READ ONLY")
        with conn.cursor(name="lifeboat_first_column") as cur:
            try:
                cur.execute(query)
                while True:
                    rows = cur.fetchmany(batch)
                    if not rows:
                        break
                    for row in rows:
                        if row and row[0] is not None:
                            yield tuple(row)
            except psycopg.Error as exc:
                raise ConfigError(f"{option}: failed on {target.describe()}: {' '.join(str(exc).split())}",
                                  option) from None
    finally:
        conn.rollback()
        conn.close()


# settings whose value is a list of names, each double-quoted when needed (pg_dump's variable_is_guc_list_quote):
# their stored text is a list, to be set back as one literal per element
GUC_LIST_QUOTE = frozenset(("local_preload_libraries", "search_path", "session_preload_libraries",
                             "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"))


def split_guc_list(value: str) -> list[str]:
    """``"UPPER", public`` -> ['UPPER', 'public'] (the server's SplitGUCList: "" inside quotes is one ")."""
    items: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            buf: list[str] = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(value[i])
                i += 1
            items.append("".join(buf))
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            items.append(value[start:i].rstrip())
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == ",":
            i += 1
            continue
        return items


def describe_privileges(conn: Any, schemas: list[str] | None = None) -> dict[str, Any]:
    """What a restore must give back beyond the schema and the rows, per category: ``owners`` (schemas,
    relations, sequences, functions), ``acl`` (their grants, grantor left out: a restore grants as the owner),
    ``functions`` (``SECURITY DEFINER`` and ``SET`` options: proconfig/prosecdef) and ``policies``
    (row-level security on/forced and each policy). Objects of extensions are left out."""
    if schemas is None:
        schemas = [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname <> ALL(%s) "
            "AND nspname NOT LIKE 'pg\\_temp\\_%%' AND nspname NOT LIKE 'pg\\_toast%%' "
            "ORDER BY 1", (list(SYSTEM_SCHEMAS),)).fetchall()]
    not_ext_rel = ("NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = "
                   "'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')")
    not_ext_proc = ("NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = "
                    "'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')")
    acl_text = ("(SELECT coalesce(array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE "
                "pg_catalog.pg_get_userbyid(a.grantee) END || ':' || a.privilege_type || "
                "CASE WHEN a.is_grantable THEN '*' ELSE '' END ORDER BY 1), '{{}}') "
                "FROM pg_catalog.aclexplode(coalesce({acl}, pg_catalog.acldefault({kind}, {owner}))) a "
                # MAINTAIN exists from PostgreSQL 17 on (in the owner's default privileges too): left out, so
                # that a backup of an older major compares on a newer one
                "WHERE a.privilege_type <> 'MAINTAIN')")
    schema_rows = conn.execute(
        "SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), "  # noqa: S608 - constant text, no input
        + acl_text.format(acl="n.nspacl", kind="'n'", owner="n.nspowner")
        + " FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY(%s) ORDER BY 1", (schemas,)).fetchall()
    rel_rows = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind::text, pg_catalog.pg_get_userbyid(c.relowner), "  # noqa: S608 - constant text, no input
        + acl_text.format(acl="c.relacl", kind="CASE WHEN c.relkind = 'S' THEN 's'::\"char\" ELSE 'r' END",
                          owner="c.relowner")
        + ", c.relrowsecurity, c.relforcerowsecurity FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s) AND c.relkind IN ('r','p','v','m','S','f') AND "
        + not_ext_rel + " ORDER BY 1, 2", (schemas,)).fetchall()
    fn_rows = conn.execute(
        "SELECT n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid), "  # noqa: S608 - constant text, no input
        "pg_catalog.pg_get_userbyid(p.proowner), "
        + acl_text.format(acl="p.proacl", kind="'f'", owner="p.proowner")
        + ", p.prosecdef, coalesce(p.proconfig, '{}') FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = ANY(%s) AND " + not_ext_proc + " ORDER BY 1, 2, 3",
        (schemas,)).fetchall()
    policy_rows = conn.execute(
        "SELECT schemaname, tablename, policyname, permissive, roles::text[], cmd, qual, with_check "
        "FROM pg_catalog.pg_policies WHERE schemaname = ANY(%s) ORDER BY 1, 2, 3", (schemas,)).fetchall()
    return {
        "owners": sorted([["schema", r[0], r[1]] for r in schema_rows]
                         + [["relation", f"{r[0]}.{r[1]}", r[3]] for r in rel_rows]
                         + [["function", f"{r[0]}.{r[1]}({r[2]})", r[3]] for r in fn_rows]),
        "acl": sorted([["schema", r[0], sorted(r[2])] for r in schema_rows]
                      + [["relation", f"{r[0]}.{r[1]}", sorted(r[4])] for r in rel_rows]
                      + [["function", f"{r[0]}.{r[1]}({r[2]})", sorted(r[4])] for r in fn_rows]),
        "functions": [[f"{r[0]}.{r[1]}({r[2]})", bool(r[5]), sorted(r[6])] for r in fn_rows],
        "policies": [[f"{r[0]}.{r[1]}", bool(r[5]), bool(r[6])] for r in rel_rows if r[5] or r[6]]
                    + [[f"{r[0]}.{r[1]}", r[2], r[3], sorted(r[4] or []), r[5], r[6], r[7]] for r in policy_rows],
    }


def privileges_hashes(conn: Any, schemas: list[str] | None = None) -> dict[str, str]:
    """sha256 of each category of :func:`describe_privileges` (manifest ``privileges``)."""
    desc = describe_privileges(conn, schemas)
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()
            for k, v in desc.items()}


#: how each row becomes text for :func:`content_hashes`: set in the hashing transaction on both sides, so the
#: text of timestamps, intervals, floats, bytea and money does not depend on a session's or database's settings
CONTENT_HASH_SETTINGS = (("DateStyle", "ISO, YMD"), ("IntervalStyle", "postgres"), ("TimeZone", "UTC"),
                         ("extra_float_digits", "1"), ("bytea_output", "hex"), ("lc_monetary", "C"))
CONTENT_HASH_METHOD = "sum64-md5-row-text/v1"


def content_hashes(conn: Any, tables: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per-table content hash of each table's own rows (``FROM ONLY``), order-independent: the sum modulo
    2**64 of the first 64 bits of ``md5`` of each row's text (``ROW(r.*)::text``, stored generated columns
    included). One sequential scan per table, no sort; in the connection's transaction when one is open (the
    backup's snapshot), in a transaction of its own otherwise (the settings are ``SET LOCAL``).

    A value that comes back different (a stored generated column recomputed under another locale, a
    changed byte) changes the table's hash while its row count stays the same."""
    out = []
    with conn.transaction():
        for name, value in CONTENT_HASH_SETTINGS:
            conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))
        for schema, name in tables:
            query = sql.SQL(
                "SELECT coalesce(pg_catalog.sum(('x' || pg_catalog.substr(pg_catalog.md5(ROW(r.*)::text), 1, 16))"
                "::bit(64)::bigint::numeric), 0)::text FROM ONLY {}.{} AS r").format(
                    sql.Identifier(schema), sql.Identifier(name))
            total = int(conn.execute(query).fetchone()[0])
            out.append({"schema": schema, "name": name, "hash": f"{total % 2 ** 64:016x}"})
    return out
