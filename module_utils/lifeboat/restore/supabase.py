"""Restore a Supabase project's backup into a Supabase project, as its non-superuser ``postgres`` login.

A Supabase backup (the ``supabase`` profile) is pg_dump archives taken in one exported snapshot: the schema and
data of the application's schemas (``public`` and any other schema the user made) and the platform tables that hold
user data (``auth.users``, ``auth.identities``, ``storage.buckets``, ``storage.objects``, ...), plus a roles
script without passwords. The platform itself (its schemas, tables, functions, roles) is never restored: a
Supabase project already has it, empty in a new project.

Two targets, the same archives, ONE transaction each (``psql --single-transaction``, ON_ERROR_STOP): nothing is
changed unless everything succeeded and was checked.

* ``new``: a new project (platform schemas present, platform tables empty: refused otherwise). The roles the
  backup needs and the target lacks are created (no passwords); then, in one transaction: the application
  schemas' definitions, the platform tables' rows, the application rows, indexes/constraints/triggers/policies,
  the user's own triggers and policies on platform tables, grants and comments; foreign keys checked; row
  counts checked against the manifest; commit.
* ``in_place``: the same project after an incident. Confirmation by the database's name; a safety snapshot
  (archives of the same shape, one snapshot, restorable by this same code) first; then, in one transaction:
  each live application schema keeps its identity (owner, grants, the platform's default privileges) while its
  tables, views, sequences, functions and types are moved aside into ``<schema>_lifeboat_old_<token>`` (kept);
  the backup's objects are created in it; the platform tables' rows are replaced; the user's triggers and
  policies on them recreated where the login may drop them (functions they call are replaced in place, same
  OID, so the ones kept call the backup's code); foreign keys checked; counts checked; commit. Other sessions
  see the old objects until the commit and the restored ones from it.

Rows are loaded with ``session_replication_role = replica`` (as Supabase's own restore instructions do; the
platform grants ``SET`` on it to ``postgres``): the user's triggers on ``auth.users`` do not fire twice, and
foreign keys are instead checked, every one from or to a restored table, by one query each before the commit.
"""
from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from ansible.module_utils.lifeboat import roles as rolesmod
from ansible.module_utils.lifeboat.errors import ConfigError, RestoreError, SafetyError
from ansible.module_utils.lifeboat.pgconn import PgTarget, find_client, server_major

# The platform's roles: a new project has them; a roles script's statements about them are never run.
PLATFORM_ROLES = frozenset({
    "postgres", "supabase_admin", "anon", "authenticated", "service_role", "authenticator",
    "supabase_auth_admin", "supabase_storage_admin", "dashboard_user", "supabase_functions_admin",
    "supabase_realtime_admin", "supabase_replication_admin", "supabase_read_only_user", "pgbouncer",
    "pgsodium_keyholder", "pgsodium_keyiduser", "pgsodium_keymaker", "supabase_etl_admin",
})
# The platform tables that hold the users' data (supabase/auth and supabase/storage migrations).
PLATFORM_TABLES = (
    ("auth", "users"), ("auth", "identities"), ("auth", "mfa_factors"), ("auth", "one_time_tokens"),
    ("storage", "buckets"), ("storage", "objects"),
)

_DATA = {"TABLE DATA", "SEQUENCE SET", "BLOBS", "BLOB DATA", "LARGE OBJECT DATA"}
_POST = {"INDEX", "CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "RULE", "POLICY", "ROW SECURITY",
         "INDEX ATTACH", "MATERIALIZED VIEW DATA", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
         "STATISTICS", "EVENT TRIGGER", "DEFAULT"}
_LAST = {"ACL", "COMMENT", "SECURITY LABEL", "DEFAULT ACL"}
# Longest first: "TABLE DATA" before "TABLE", "FK CONSTRAINT" before "CONSTRAINT".
_TYPES = sorted(_DATA | _POST | _LAST | {
    "TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "SEQUENCE OWNED BY", "FUNCTION", "PROCEDURE",
    "AGGREGATE", "TYPE", "DOMAIN", "SCHEMA", "EXTENSION", "COLLATION", "CONVERSION", "OPERATOR",
    "OPERATOR CLASS", "OPERATOR FAMILY", "CAST", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
    "FOREIGN TABLE", "SERVER", "USER MAPPING", "PUBLICATION", "SUBSCRIPTION", "SHELL TYPE", "PROCEDURAL LANGUAGE",
    "FOREIGN DATA WRAPPER", "TRANSFORM", "ACCESS METHOD", "DATABASE", "DATABASE PROPERTIES", "ENCODING",
    "STDSTRINGS", "SEARCHPATH", "ROW SECURITY", "LARGE OBJECT",
}, key=len, reverse=True)
_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


@dataclass
class Entry:
    """One line of ``pg_restore -l``: ``<id>; <tableoid> <oid> <TYPE> <namespace> <tag> <owner>``."""

    line: str
    type: str
    rest: str          # "<namespace> <tag> <owner>" as printed (names are not quoted there)
    archive: str = ""  # the archive file it is in
    replace: bool = False  # a FUNCTION created with CREATE OR REPLACE (the live one is kept, same OID)

    def in_schema(self, schema: str) -> bool:
        return self.rest.startswith(schema + " ")

    def tag_after(self, schema: str) -> str:
        return self.rest[len(schema) + 1:]


def parse_toc(text: str, archive: str = "") -> list[Entry]:
    out = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue  # comments and headers
        body = m.group(4)
        kind = next((t for t in _TYPES if body.startswith(t + " ")), None)
        if kind is None:
            raise RestoreError(f"supabase restore: pg_restore listed an entry of a kind Lifeboat does not know: "
                               f"{raw!r}; report it", "backup")
        out.append(Entry(raw, kind, body[len(kind) + 1:], archive))
    return out


@dataclass
class Scope:
    """What the backup holds: the application schemas (schema and data) and the platform tables (data)."""

    app_schemas: list[str]
    platform_tables: list[tuple[str, str]] = field(default_factory=lambda: list(PLATFORM_TABLES))

    def platform_schemas(self) -> list[str]:
        return sorted({s for s, _ in self.platform_tables})

    def check(self) -> None:
        if not self.app_schemas:
            raise ConfigError("supabase restore: the backup names no application schema", "app_schemas")
        clash = sorted(set(self.app_schemas) & set(self.platform_schemas()))
        if clash:
            raise ConfigError(f"supabase restore: {', '.join(clash)} is both an application schema and a "
                              "platform schema", "app_schemas")


@dataclass
class Plan:
    """The archive's entries in the order the one transaction runs them."""

    app_pre: list[Entry]
    platform_data: list[Entry]
    app_data: list[Entry]
    app_post: list[Entry]
    platform_extras: list[Entry]   # the user's triggers/policies on platform tables (and their comments)
    app_last: list[Entry]          # grants, comments, default privileges of the application schemas
    created_schemas: list[str]     # application schemas the archive creates itself (CREATE SCHEMA)
    left_out: list[str]            # entries neither part (platform objects the project already has)
    skipped: list[str] = field(default_factory=list)  # application entries the target keeps its own of

    def phases(self) -> list[list[Entry]]:
        return [self.app_pre, self.platform_data, self.app_data, self.app_post, self.platform_extras,
                self.app_last]


def _app_schema_of(entry: Entry, schemas: list[str]) -> str | None:
    for s in sorted(schemas, key=len, reverse=True):
        if entry.in_schema(s):
            return s
        if entry.type == "SCHEMA" and entry.rest.startswith(f"- {s} "):
            return s
        if entry.type in _LAST and entry.rest.startswith(f"- SCHEMA {s} "):
            return s
    return None


def _platform_table_of(entry: Entry, tables: list[tuple[str, str]]) -> tuple[str, str] | None:
    for schema, table in sorted(tables, key=lambda t: (len(t[0]), len(t[1])), reverse=True):
        if entry.in_schema(schema):
            tag = entry.tag_after(schema)
            if tag.startswith(table + " "):
                return schema, table
    return None


def plan(entries: list[Entry], scope: Scope, existing_schemas: set[str] | frozenset[str] = frozenset(),
         actors: set[str] | None = None) -> Plan:
    """``existing_schemas``: the target's schemas (their CREATE SCHEMA is skipped); ``actors``: the roles the
    login may act as (default privileges of other roles are the platform's and are skipped)."""
    scope.check()
    p = Plan([], [], [], [], [], [], [], [], [])
    for e in entries:
        schema = _app_schema_of(e, scope.app_schemas)
        if schema is not None:
            if e.type == "SCHEMA":
                p.created_schemas.append(schema)
                if schema in existing_schemas:
                    p.skipped.append(f"schema {schema}: the project's own is kept (owner, grants, default "
                                     "privileges); its objects are restored into it")
                    continue
            if e.type == "DEFAULT ACL" and actors is not None and e.rest.rsplit(" ", 1)[-1] not in actors:
                p.skipped.append(f"default privileges of role {e.rest.rsplit(' ', 1)[-1]} in schema {schema}: "
                                 "the platform's (the login cannot set them); the project keeps its own")
                continue
            if e.type in _DATA:
                p.app_data.append(e)
            elif e.type in _POST:
                p.app_post.append(e)
            elif e.type in _LAST:
                p.app_last.append(e)
            else:
                p.app_pre.append(e)
            continue
        table = _platform_table_of(e, scope.platform_tables)
        if table is not None and e.type in ("TABLE DATA",):
            p.platform_data.append(e)
        elif table is not None and e.type in ("TRIGGER", "POLICY", "ROW SECURITY"):
            p.platform_extras.append(e)
        elif e.type == "SEQUENCE SET" and any(e.in_schema(s) for s in scope.platform_schemas()):
            p.platform_data.append(e)
        else:
            p.left_out.append(e.line)
    return p


def lit(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on in every supported server)."""
    return "'" + value.replace("'", "''") + "'"


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fk_check_sql(schemas: list[str], tables: list[tuple[str, str]]) -> str:
    """A DO block: every foreign key from or to a table of ``schemas`` or one of ``tables`` is checked by an
    anti-join; any violation aborts the transaction naming the constraint, the tables and how many rows."""
    schema_arr = "ARRAY[" + ", ".join(lit(s) for s in schemas) + "]::text[]" if schemas else "ARRAY[]::text[]"
    pairs = ", ".join(f"({lit(s)}, {lit(t)})" for s, t in tables) or "(NULL, NULL)"
    # every name below is a literal made by lit(); the block builds its queries with format('%I')
    return f"""DO $lifeboat_fk$
DECLARE r record; n bigint; bad text := '';
BEGIN
  FOR r IN
    SELECT k.conname, format('%I.%I', cn.nspname, c.relname) AS child, format('%I.%I', pn.nspname, p.relname) AS parent,
           (SELECT string_agg(format('c.%I IS NOT NULL', a.attname), ' AND ' ORDER BY u.o)
              FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
              JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n) AS notnull,
           (SELECT string_agg(format('p.%I = c.%I', pa.attname, ca.attname), ' AND ' ORDER BY u.o)
              FROM unnest(k.conkey, k.confkey) WITH ORDINALITY u(cn, pn, o)
              JOIN pg_catalog.pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = u.cn
              JOIN pg_catalog.pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = u.pn) AS joins
      FROM pg_catalog.pg_constraint k
      JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
      JOIN pg_catalog.pg_class p ON p.oid = k.confrelid JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
     WHERE k.contype = 'f' AND k.conparentid = 0
       AND (cn.nspname = ANY({schema_arr}) OR pn.nspname = ANY({schema_arr})
            OR (cn.nspname, c.relname) IN (VALUES {pairs}) OR (pn.nspname, p.relname) IN (VALUES {pairs}))
       AND cn.nspname NOT LIKE '%\\_lifeboat\\_old\\_%' AND pn.nspname NOT LIKE '%\\_lifeboat\\_old\\_%'
     ORDER BY 2, 1
  LOOP
    EXECUTE format('SELECT count(*) FROM %s c WHERE %s AND NOT EXISTS (SELECT 1 FROM %s p WHERE %s)',
                   r.child, r.notnull, r.parent, r.joins) INTO n;
    IF n > 0 THEN
      bad := bad || format('%s row(s) of %s have no match in %s (foreign key %I); ', n, r.child, r.parent, r.conname);
    END IF;
  END LOOP;
  IF bad <> '' THEN
    RAISE EXCEPTION 'lifeboat: foreign keys broken after the restore, nothing was changed: %', bad;
  END IF;
END
$lifeboat_fk$;
"""  # noqa: S608


def count_check_sql(expected: dict[str, int] | None, tables: Iterable[tuple[str, str]]) -> str:
    """A DO block comparing each table's rows with the manifest's count; a difference aborts the transaction."""
    if not expected:
        return ""
    lines = []
    for schema, table in tables:
        want = expected.get(f"{schema}.{table}")
        if want is None:
            continue
        lines.append(f"  SELECT count(*) INTO n FROM {qi(schema)}.{qi(table)};\n"  # noqa: S608 - quoted (qi)
                     f"  IF n <> {int(want)} THEN bad := bad || format('%s has %s rows, the manifest says %s; ', "
                     f"{lit(schema + '.' + table)}, n, {int(want)}); END IF;")
    if not lines:
        return ""
    body = "\n".join(lines)
    return f"""DO $lifeboat_counts$
DECLARE n bigint; bad text := '';
BEGIN
{body}
  IF bad <> '' THEN
    RAISE EXCEPTION 'lifeboat: restored rows differ from the backup''s manifest, nothing was changed: %', bad;
  END IF;
END
$lifeboat_counts$;
"""


def _client(target: PgTarget, name: str, bin_dirs: list[str] | None) -> str:
    with target.connect() as conn:
        num = int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0])
    return find_client(name, server_major(num), bin_dirs)[0]


def list_archive(pg_restore: str, archive: str) -> list[Entry]:
    proc = subprocess.run([pg_restore, "-l", archive], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RestoreError(f"supabase restore: pg_restore could not read {archive}: "
                           f"{proc.stderr.decode('utf-8', 'replace').strip()[-500:]}", "archive")
    return parse_toc(proc.stdout.decode("utf-8", "replace"), archive)


@dataclass
class Facts:
    """What the target project has, read before anything changes."""

    user: str
    superuser: bool
    can_replica: bool
    schemas: set[str]
    missing_tables: list[str]
    nonempty_platform: dict[str, int]
    roles: set[str]
    actors: set[str] = field(default_factory=set)


def read_facts(conn: Any, scope: Scope) -> Facts:
    user, superuser = conn.execute(
        "SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()
    try:
        can = superuser or conn.execute(
            "SELECT has_parameter_privilege('session_replication_role', 'SET')").fetchone()[0]
    except Exception:  # noqa: BLE001 - before PostgreSQL 15 only a superuser may set it
        can = bool(superuser)
    schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_catalog.pg_namespace").fetchall()}
    missing, nonempty = [], {}
    for schema, table in scope.platform_tables:
        reg = conn.execute("SELECT to_regclass(%s)", (f"{qi(schema)}.{qi(table)}",)).fetchone()[0]
        if reg is None:
            missing.append(f"{schema}.{table}")
            continue
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]
        if n:
            nonempty[f"{schema}.{table}"] = n
    roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_catalog.pg_roles").fetchall()}
    actors = roles if superuser else {r[0] for r in conn.execute(
        "SELECT rolname FROM pg_catalog.pg_roles WHERE pg_catalog.pg_has_role(current_user, oid, 'USAGE')").fetchall()}
    return Facts(user, bool(superuser), bool(can), schemas, missing, nonempty, roles, actors)


def _existing_extras(conn: Any, scope: Scope) -> dict[tuple[str, str, str], str]:
    """(schema, table, name) -> table owner, of the triggers and policies the platform tables have now."""
    out = {}
    for schema, table in scope.platform_tables:
        owner = conn.execute("SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class "
                             "WHERE oid = to_regclass(%s)", (f"{qi(schema)}.{qi(table)}",)).fetchone()
        for (name,) in conn.execute(
                """SELECT t.tgname FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    WHERE NOT t.tgisinternal AND n.nspname = %s AND c.relname = %s
                   UNION ALL
                   SELECT p.policyname FROM pg_catalog.pg_policies p WHERE p.schemaname = %s AND p.tablename = %s""",
                (schema, table, schema, table)).fetchall():
            out[(schema, table, name)] = owner[0] if owner else ""
    return out


def functions_used_by_platform(conn: Any, scope: Scope) -> dict[str, int]:
    """The application's functions that triggers or policies on other schemas' tables (``auth.users``,
    ``storage.objects``) call: ``schema.name(argtypes)`` (pg_restore's tag) -> OID. An in-place restore keeps
    them (same OID, CREATE OR REPLACE from the backup), so those triggers and policies, which the login may be
    unable to drop (they belong to the platform's table), call the backup's code."""
    rows = conn.execute(
        """SELECT DISTINCT n.nspname, p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')', p.oid
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_proc'::regclass AND d.refobjid = p.oid
             LEFT JOIN pg_catalog.pg_trigger t ON d.classid = 'pg_catalog.pg_trigger'::regclass AND t.oid = d.objid
             LEFT JOIN pg_catalog.pg_policy y ON d.classid = 'pg_catalog.pg_policy'::regclass AND y.oid = d.objid
             JOIN pg_catalog.pg_class c ON c.oid = coalesce(t.tgrelid, y.polrelid)
             JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
            WHERE n.nspname = ANY(%s) AND NOT (cn.nspname = ANY(%s))""",
        (scope.app_schemas, scope.app_schemas)).fetchall()
    return {f"{schema}.{tag}": oid for schema, tag, oid in rows}


def _extra_key(e: Entry, scope: Scope) -> tuple[str, str, str] | None:
    table = _platform_table_of(e, scope.platform_tables)
    if table is None or e.type not in ("TRIGGER", "POLICY"):
        return None
    tag = e.tag_after(table[0])[len(table[1]) + 1:]
    return table[0], table[1], tag.rsplit(" ", 1)[0]


def roles_to_create(roles_script: str, facts: Facts) -> list[str]:
    return sorted(r for r in rolesmod.role_names(roles_script) if r not in PLATFORM_ROLES and r not in facts.roles)


def old_name(schema: str, token: str) -> str:
    suffix = f"_lifeboat_old_{token}"
    base = schema.encode("utf-8")[:63 - len(suffix)].decode("utf-8", "ignore")
    return base + suffix


MOVE_SQL = """DO $lifeboat_move$
DECLARE s text := %(schema)s; old text := %(old)s; keep oid[] := %(keep)s; r record;
BEGIN
  EXECUTE format('CREATE SCHEMA %%I', old);
  FOR r IN SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                                 AND d.objid = c.oid AND d.deptype IN ('a', 'i', 'e'))
  LOOP
    EXECUTE format('ALTER %%s %%I.%%I SET SCHEMA %%I',
                   CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                                  WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, s, r.relname, old);
  END LOOP;
  FOR r IN SELECT p.oid::pg_catalog.regprocedure::text AS sig, p.prokind FROM pg_catalog.pg_proc p
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = s AND p.oid <> ALL(keep) AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER %%s %%s SET SCHEMA %%I', CASE r.prokind WHEN 'a' THEN 'AGGREGATE' ELSE 'ROUTINE' END,
                   r.sig, old);
  END LOOP;
  FOR r IN SELECT t.typname, t.typtype FROM pg_catalog.pg_type t
             JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = s AND t.typtype IN ('c', 'd', 'e', 'r')
              AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_type'::regclass
                                 AND d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER %%s %%I.%%I SET SCHEMA %%I', CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                   s, r.typname, old);
  END LOOP;
END
$lifeboat_move$;
"""


def preamble(mode: str, scope: Scope, facts: Facts, plan_: Plan, token: str,
             dropped: list[tuple[str, str, str]], keep: dict[str, int]) -> tuple[str, dict]:
    """The statements that run first in the one transaction, and where they put the live objects.

    In place, each live application schema keeps its identity (owner, grants, the platform's default privileges
    on it): its tables, views, sequences, functions and types are moved into ``<schema>_lifeboat_old_<token>``
    (kept), and the backup's objects are then created in the emptied schema."""
    out = ["SET lock_timeout = '30s';", "SET session_replication_role = replica;", "SET search_path = '';"]
    moved = {}
    if mode == "in_place":
        tables = ", ".join(f"{qi(s)}.{qi(t)}" for s, t in scope.platform_tables)
        out.append(f"LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE;")
        for schema in scope.app_schemas:
            if schema in facts.schemas:
                moved[schema] = old_name(schema, token)
                oids = ", ".join(str(int(v)) for k, v in keep.items() if k.startswith(schema + "."))
                out.append(MOVE_SQL % {"schema": lit(schema), "old": lit(moved[schema]),
                                       "keep": f"ARRAY[{oids}]::oid[]"})
        for s, t in scope.platform_tables:
            out.append(f"DELETE FROM {qi(s)}.{qi(t)};")  # noqa: S608 - identifiers quoted (qi)
        for s, t, name in dropped:
            kind = "TRIGGER" if _is_trigger(plan_, s, t, name) else "POLICY"
            out.append(f"DROP {kind} {qi(name)} ON {qi(s)}.{qi(t)};")
    return "\n".join(out) + "\n", moved


def _is_trigger(p: Plan, schema: str, table: str, name: str) -> bool:
    return any(e.type == "TRIGGER" and e.rest.startswith(f"{schema} {table} {name} ") for e in p.platform_extras)


@dataclass
class Result:
    mode: str
    archives: list[str]
    moved_aside: dict[str, str]
    roles_created: list[str]
    safety_snapshot: list[str] | None
    left_out: int
    extras: list[str]
    skipped: list[str]
    changed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def restore(target: PgTarget, archives: str | list[str], scope: Scope, *, mode: str, roles_script: str = "",
            expected_counts: dict[str, int] | None = None, confirm: str | None = None,
            snapshot_dir: str | None = None, bin_dirs: list[str] | None = None,
            token: str | None = None) -> Result:
    """Restore ``archives`` (a Supabase profile backup: pg_dump custom-format archives of one snapshot, e.g. one
    of the application schemas and one of the platform tables) into ``target`` (the project's ``postgres``
    database as its ``postgres`` login). ``mode``: ``new`` or ``in_place``."""
    archives = [archives] if isinstance(archives, str) else list(archives)
    if mode not in ("new", "in_place"):
        raise ConfigError(f"supabase restore: mode must be 'new' or 'in_place', not {mode!r}", "mode")
    scope.check()
    for archive in archives:
        if not os.path.isfile(archive):
            raise ConfigError(f"supabase restore: {archive} does not exist", "archive")
    database = target.database or ""
    if mode == "in_place" and confirm != database:
        raise SafetyError(f"supabase restore: an in-place restore replaces the application schemas "
                          f"({', '.join(scope.app_schemas)}) and the platform's user data of database '{database}' "
                          f"on {target.host}:{target.port}; confirm by passing confirm={database!r}", "confirm")
    pg_restore = _client(target, "pg_restore", bin_dirs)
    psql = _client(target, "psql", bin_dirs)
    entries = [e for archive in archives for e in list_archive(pg_restore, archive)]
    token = token or secrets.token_hex(4)
    with target.connect() as conn:
        facts = read_facts(conn, scope)
        existing_extras = _existing_extras(conn, scope)
        keep = functions_used_by_platform(conn, scope) if mode == "in_place" else {}
    p = plan(entries, scope, facts.schemas, facts.actors)
    for e in p.app_pre:
        if e.type == "FUNCTION" and any(e.in_schema(k.split(".", 1)[0]) and e.rest.startswith(
                k.split(".", 1)[0] + " " + k.split(".", 1)[1] + " ") for k in keep):
            e.replace = True
    if facts.missing_tables:
        raise RestoreError(f"supabase restore: the target has no {', '.join(facts.missing_tables)}: it is not a "
                           "Supabase project (or not its 'postgres' database); create the project first", "target")
    if not facts.can_replica:
        raise RestoreError(f"supabase restore: {facts.user} may not SET session_replication_role (needed to load "
                           "rows without firing the user's triggers twice); as a superuser run: GRANT SET ON "
                           f"PARAMETER session_replication_role TO {qi(facts.user)}", "target")
    if mode == "new" and facts.nonempty_platform:
        held = ", ".join(f"{k} ({v} rows)" for k, v in sorted(facts.nonempty_platform.items()))
        raise SafetyError(f"supabase restore: mode new needs a new project, but {held} already hold data; use "
                          "mode in_place (with its safety snapshot) to replace them, or a new project", "mode")
    if mode == "new":
        busy = _schemas_with_objects(target, [s for s in scope.app_schemas if s in facts.schemas])
        if busy:
            raise SafetyError(f"supabase restore: mode new, but schema {', '.join(busy)} of '{database}' already "
                              "holds tables or functions; use mode in_place (which keeps them aside), or a new "
                              "project", "mode")
    archive_extras = [k for e in p.platform_extras if (k := _extra_key(e, scope))]
    extras_note = [f"{s}.{t}: {n}" for s, t, n in archive_extras]
    dropped = []
    kept_extras = []
    for e in p.platform_extras:
        key = _extra_key(e, scope)
        if key is None or key not in existing_extras:
            continue
        if mode == "in_place" and existing_extras[key] in facts.actors:
            dropped.append(key)
        else:
            kept_extras.append(e)
            p.skipped.append(f"{e.type.lower()} {key[2]} on {key[0]}.{key[1]}: the project's is kept (the login "
                             "cannot drop it on the platform's table; the functions it calls are restored in place)")
    p.platform_extras = [e for e in p.platform_extras if e not in kept_extras]
    snapshot = None
    if mode == "in_place":
        snapshot = safety_snapshot(target, scope, snapshot_dir, bin_dirs, token)
    created = []
    if roles_script:
        wanted = roles_to_create(roles_script, facts)
        if wanted:
            with target.connect() as conn:
                created = rolesmod.create_roles(conn, roles_script, wanted, existing=facts.roles)
                if not facts.superuser:
                    for role in created:  # so that objects can be given to it (ALTER ... OWNER TO)
                        conn.execute(f"GRANT {qi(role)} TO {qi(facts.user)}")
    head, moved_aside = preamble(mode, scope, facts, p, token, dropped, keep)
    tail = fk_check_sql(scope.app_schemas, scope.platform_tables) + count_check_sql(
        expected_counts, _tables_in(p, scope))
    _run_one_transaction(target, pg_restore, psql, p, head, tail, token)
    return Result(mode, archives, moved_aside, created, snapshot, len(p.left_out), extras_note, p.skipped)


def _schemas_with_objects(target: PgTarget, schemas: list[str]) -> list[str]:
    if not schemas:
        return []
    with target.connect() as conn:
        return [r[0] for r in conn.execute(
            """SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY(%s)
                 AND (EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND NOT EXISTS
                              (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                                  AND d.objid = c.oid AND d.deptype = 'e'))
                      OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc f WHERE f.pronamespace = n.oid AND NOT EXISTS
                              (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::regclass
                                  AND d.objid = f.oid AND d.deptype = 'e')))
                ORDER BY 1""", (schemas,)).fetchall()]


def _tables_in(p: Plan, scope: Scope) -> list[tuple[str, str]]:
    out = []
    for e in p.app_data + p.platform_data:
        if e.type != "TABLE DATA":
            continue
        for schema in list(scope.app_schemas) + scope.platform_schemas():
            if e.in_schema(schema):
                out.append((schema, e.tag_after(schema).rsplit(" ", 1)[0]))
                break
    return out


def _runs(p: Plan) -> list[tuple[str, list[Entry]]]:
    """(archive, entries) in the transaction's order: each phase, and within it each archive's entries."""
    out: list[tuple[str, list[Entry]]] = []
    for phase in p.phases():
        for e in phase:
            if out and out[-1][0] == e.archive and not e.replace and not out[-1][1][-1].replace:
                out[-1][1].append(e)
            else:
                out.append((e.archive, [e]))
    return out


def or_replace(script: bytes) -> bytes:
    """pg_restore's text of one FUNCTION entry, creating it with CREATE OR REPLACE (the statement starts a line)."""
    return re.sub(rb"(?m)^CREATE FUNCTION ", b"CREATE OR REPLACE FUNCTION ", script, count=1)


def _run_one_transaction(target: PgTarget, pg_restore: str, psql: str, p: Plan, head: str, tail: str,
                         token: str) -> None:
    with target.child_env() as env:
        private = os.path.dirname(env["PGPASSFILE"])
        env["PGAPPNAME"] = f"lifeboat-supabase-restore-{token}"
        with open(os.path.join(private, "psql.err"), "w+b") as err, \
                open(os.path.join(private, "pg_restore.err"), "w+b") as dump_err:
            psql_proc = subprocess.Popen([psql, "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                                          "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=err, env=env)
            assert psql_proc.stdin is not None
            dump_rc = 0
            try:
                psql_proc.stdin.write(head.encode("utf-8"))
                psql_proc.stdin.flush()
                for n, (archive, entries) in enumerate(_runs(p)):
                    listfile = os.path.join(private, f"restore-{n}.list")
                    with open(listfile, "w", encoding="utf-8") as fh:
                        fh.write("\n".join(e.line for e in entries) + "\n")
                    if entries[0].replace:
                        proc = subprocess.run([pg_restore, "-L", listfile, "-f", "-", archive],
                                              stdout=subprocess.PIPE, stderr=dump_err, env=env, check=False)
                        dump_rc = proc.returncode
                        psql_proc.stdin.write(or_replace(proc.stdout))
                    else:
                        dump_rc = subprocess.run([pg_restore, "-L", listfile, "-f", "-", archive],
                                                 stdout=psql_proc.stdin, stderr=dump_err, env=env,
                                                 check=False).returncode
                    if dump_rc != 0:
                        break
                if dump_rc == 0:
                    psql_proc.stdin.write(tail.encode("utf-8"))
                psql_proc.stdin.close()
            except BrokenPipeError:
                pass
            finally:
                if dump_rc != 0 and psql_proc.poll() is None:
                    psql_proc.kill()  # never let a partial script reach COMMIT
                psql_proc.wait()
            err.seek(0)
            text = err.read().decode("utf-8", "replace").strip()
            dump_err.seek(0)
            dump_text = dump_err.read().decode("utf-8", "replace").strip()
        if psql_proc.returncode != 0 or dump_rc != 0:
            lines = [ln for ln in text.splitlines() if "ERROR" in ln or "FATAL" in ln or "DETAIL" in ln]
            cause = " | ".join(lines[-4:]) or text[-600:] or ("pg_restore: " + dump_text[-600:])
            raise RestoreError("supabase restore: the transaction was rolled back, nothing was changed: " + cause,
                               "archive")


def dump_argv(pg_dump: str, scope: Scope, part: str, snapshot: str | None = None) -> list[str]:
    """pg_dump's arguments for one part of a Supabase-shaped backup: ``app`` (the application schemas, schema and
    data) or ``platform`` (the platform tables: their rows and the user's triggers and policies on them).
    pg_dump ignores ``--schema`` once ``--table`` is given, hence two runs (of one exported snapshot)."""
    argv = [pg_dump, "-Fc", "--no-password"] + ([f"--snapshot={snapshot}"] if snapshot else [])
    if part == "app":
        return argv + [f"--schema={_pattern(s)}" for s in scope.app_schemas]
    return argv + [f"--table={_pattern(s)}.{_pattern(t)}" for s, t in scope.platform_tables]


def safety_snapshot(target: PgTarget, scope: Scope, directory: str | None, bin_dirs: list[str] | None,
                    token: str) -> list[str]:
    """Archives of the same shape as the backup (application schemas; platform tables) of the project as it is
    now, taken in one snapshot, restorable in place by this same code. Written exclusively, mode 0600."""
    if not directory:
        raise ConfigError("supabase restore: mode in_place takes a safety snapshot first; give snapshot_dir (a "
                          "directory on a disk with room for one backup)", "snapshot_dir")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    pg_dump = _client(target, "pg_dump", bin_dirs)
    paths: list[str] = []
    with target.connect(snapshot_reader=True) as holder:
        snap = holder.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0]
        for part in ("app", "platform"):
            path = os.path.join(directory, f"{target.database}-before-restore-{token}-{part}.dump")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            paths.append(path)
            with target.child_env() as env, os.fdopen(fd, "wb") as out:
                proc = subprocess.run(dump_argv(pg_dump, scope, part, snap), stdout=out, stderr=subprocess.PIPE,
                                      env=env, check=False)
            if proc.returncode != 0:
                for done in paths:
                    os.unlink(done)
                raise RestoreError("supabase restore: the safety snapshot failed, nothing was changed: "
                                   + proc.stderr.decode("utf-8", "replace").strip()[-600:], "snapshot_dir")
    return paths


def _pattern(name: str) -> str:
    """A pg_dump pattern matching exactly ``name`` (quoted, so case and wildcards are literal)."""
    return '"' + name.replace('"', '""') + '"'
