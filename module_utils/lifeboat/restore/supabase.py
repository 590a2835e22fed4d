"""Restore a Supabase project's backup into a Supabase project, as its non-superuser ``postgres`` login.

A Supabase backup (the ``supabase`` profile) is pg_dump archives taken in one exported snapshot: the schema and
data of the application's schemas (``public`` and any other schema the user made) and the platform tables that hold
user data (``auth.users``, ``auth.identities``, ``storage.buckets``, ``storage.objects``, ...), plus a roles
script without passwords. The platform itself (its schemas, tables, functions, roles) is never restored: a
Supabase project already has it, empty in a new project.

Two targets, the same archives, ONE transaction each (BEGIN and COMMIT sent by Lifeboat, ON_ERROR_STOP; psql's
--single-transaction would commit at the end of its input even when Lifeboat died mid-stream): nothing is changed
unless everything succeeded and was checked.

* ``new``: a new project (platform schemas present, platform tables empty: refused otherwise). The roles the
  backup needs and the target lacks are created (no passwords); then, in one transaction: the application
  schemas' definitions, the platform tables' rows, the application rows, indexes/constraints/triggers/policies,
  the user's own triggers and policies on platform tables, grants and comments; foreign keys checked; row
  counts checked against the manifest; commit.
* ``in_place``: the same project after an incident. Confirmation by the database's name; a safety snapshot
  (archives of the same shape, one snapshot, restorable by this same code) first; then one transaction, staged
  (restore/supabase_stage.py): the backup's objects are created and loaded in ``<schema>_lifeboat_new_<token>``
  beside the live ones without locking them, and only at its end the live objects are moved aside into
  ``<schema>_lifeboat_old_<token>`` (kept) and the staged ones in, the platform tables' rows replaced, foreign
  keys and counts checked, commit. Each live schema keeps its identity (owner, grants, the platform's default
  privileges); functions that platform triggers call are replaced in place (same OID). A backup holding object
  kinds the swap cannot move takes the older path: the same, but with the live objects moved aside at the start
  (``preamble``), so the application waits for the whole restore (``Result.swap`` says why).

Rows are loaded with ``session_replication_role = replica`` (as Supabase's own restore instructions do; the
platform grants ``SET`` on it to ``postgres``): the user's triggers on ``auth.users`` do not fire twice, and
foreign keys are instead checked, every one from or to a restored table, by one query each before the commit.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from ansible.module_utils.lifeboat import roles as rolesmod
from ansible.module_utils.lifeboat import tmpfiles
from ansible.module_utils.lifeboat.errors import ConfigError, RestoreError, SafetyError
from ansible.module_utils.lifeboat.pgconn import PgTarget, find_client, server_major
from ansible.module_utils.lifeboat.restore import supabase_stage as stage
from ansible.module_utils.lifeboat.restore.supabase_plan import (  # noqa: F401 - re-exported
    MOVE_SQL,
    PLATFORM_TABLES,
    Entry,
    Plan,
    Scope,
    count_check_sql,
    dump_argv,
    fk_check_sql,
    lit,
    old_name,
    or_replace,
    parse_toc,
    plan,
    held_tables,
    publication_add_sql,
    publications_of,
    setting_sql,
    platform_table_of,
    publications_sql,
    qi,
    reset_grants_sql,
)

# The platform's roles: a new project has them; a roles script's statements about them are never run.
PLATFORM_ROLES = frozenset({
    "postgres", "supabase_admin", "anon", "authenticated", "service_role", "authenticator",
    "supabase_auth_admin", "supabase_storage_admin", "dashboard_user", "supabase_functions_admin",
    "supabase_realtime_admin", "supabase_replication_admin", "supabase_read_only_user", "pgbouncer",
    "pgsodium_keyholder", "pgsodium_keyiduser", "pgsodium_keymaker", "supabase_etl_admin",
})

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
    schema_owners: dict[str, str] = field(default_factory=dict)
    table_rights: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)  # owner, may TRIGGER


def read_facts(conn: Any, scope: Scope) -> Facts:
    user, superuser = conn.execute(
        "SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()
    try:
        can = superuser or conn.execute(
            "SELECT has_parameter_privilege('session_replication_role', 'SET')").fetchone()[0]
    except Exception:  # noqa: BLE001 - before PostgreSQL 15 only a superuser may set it
        can = bool(superuser)
    owners = dict(conn.execute(
        "SELECT nspname, pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace").fetchall())
    schemas = set(owners)
    rights = {}
    for schema, table in scope.platform_tables:
        row = conn.execute("SELECT pg_catalog.pg_get_userbyid(relowner), "
                           "pg_catalog.has_table_privilege(oid, 'TRIGGER') FROM pg_catalog.pg_class "
                           "WHERE oid = to_regclass(%s)", (f"{qi(schema)}.{qi(table)}",)).fetchone()
        if row:
            rights[(schema, table)] = (row[0], bool(row[1]))
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
    return Facts(user, bool(superuser), bool(can), schemas, missing, nonempty, roles, actors, owners, rights)


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
    table = platform_table_of(e, scope.platform_tables)
    if table is None or e.type not in ("TRIGGER", "POLICY"):
        return None
    tag = e.tag_after(table[0])[len(table[1]) + 1:]
    return table[0], table[1], tag.rsplit(" ", 1)[0]


def without_superuser_defaults(stmt: str) -> str:
    """pg_dumpall's ``ALTER ROLE x WITH NOSUPERUSER ... NOREPLICATION NOBYPASSRLS`` without the three defaults a
    non-superuser may not even restate (PostgreSQL 15: "must be superuser to ... change superuser attribute");
    a role that really needs SUPERUSER, REPLICATION or BYPASSRLS still fails, named by the server."""
    if not stmt.upper().startswith("ALTER ROLE "):
        return stmt
    out = re.sub(r"\s+(NOSUPERUSER|NOREPLICATION|NOBYPASSRLS)\b", "", stmt)
    return "" if re.search(r"\bWITH\s*;?\s*$", out) else out


def roles_to_create(roles_script: str, facts: Facts) -> list[str]:
    return sorted(r for r in rolesmod.role_names(roles_script) if r not in PLATFORM_ROLES and r not in facts.roles)


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
                                       "keep": f"ARRAY[{oids}]::oid[]", "create": "true"})
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
    platform_sql: list[str] = field(default_factory=list)
    publications: list[str] = field(default_factory=list)
    settings_applied: list[str] = field(default_factory=list)
    swap: str = ""                 # in place: "staged" (the short swap), or why it took one long transaction
    platform_rows_aside: str = ""  # in place, staged: the schema keeping the platform rows it replaced
    changed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def restore(target: PgTarget, archives: str | list[str], scope: Scope, *, mode: str, roles_script: str = "",
            expected_counts: dict[str, int] | None = None, confirm: str | None = None,
            snapshot_dir: str | None = None, bin_dirs: list[str] | None = None,
            token: str | None = None, publications: list[tuple[str, str, str]] | None = None,
            settings: list[str] | None = None) -> Result:
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
    held = held_tables(entries, scope)
    absent = [f"{s}.{t}" for s, t in scope.platform_tables if (s, t) not in held]
    scope = Scope(list(scope.app_schemas), [t for t in scope.platform_tables if t in held])
    token = token or secrets.token_hex(4)
    with target.connect() as conn:
        facts = read_facts(conn, scope)
        existing_extras = _existing_extras(conn, scope)
        keep = functions_used_by_platform(conn, scope) if mode == "in_place" else {}
        keep_all = stage.kept_overloads(conn, keep) if mode == "in_place" else []
        kept_names = stage.live_names(conn, scope.app_schemas, keep_all) if mode == "in_place" else {}
        if mode == "in_place":
            _no_other_restore(conn, database)
        pub_sql, pub_done, pub_notes, pub_refused = publications_plan(conn, publications or [], scope, facts)
        set_done, set_notes, set_refused = settings_plan(conn, settings or [])
    foreign = {s for s in scope.app_schemas if s in facts.schemas and facts.schema_owners.get(s) not in facts.actors}
    p = plan(entries, scope, facts.schemas, facts.actors, foreign)
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
    # the user's policies and triggers on a platform table the login may not create (a policy needs the table's
    # owner; a trigger, the TRIGGER privilege): left to the platform's own role, their SQL returned
    uncreatable = []
    for e in p.platform_extras:
        key = _extra_key(e, scope)
        owner, may_trigger = facts.table_rights.get(key[:2], ("", False)) if key else ("", False)
        if key and key not in dropped and (owner not in facts.actors and not (e.type == "TRIGGER" and may_trigger)):
            uncreatable.append(e)
    p.platform_extras = [e for e in p.platform_extras if e not in uncreatable]
    platform_sql = [_entry_sql(pg_restore, e) for e in uncreatable]
    for e in uncreatable:
        key = _extra_key(e, scope)
        owner = facts.table_rights.get(key[:2], ("", False))[0] or "unknown"
        need = ("the table's owner" if e.type == "POLICY" else "the table's owner or a role with TRIGGER on it")
        p.skipped.append(f"{e.type.lower()} {key[2]} on {key[0]}.{key[1]}: only {need} ({owner}) may create it, "
                         f"and {facts.user} may not act as {owner}; run its statement (platform_sql) as {owner} or "
                         "the platform's admin (Supabase: the SQL editor)")
    fallback = stage.fallback_reason(p) if mode == "in_place" else None
    snapshot = None
    if mode == "in_place":
        snapshot = safety_snapshot(target, scope, snapshot_dir, bin_dirs, token)
    created = []
    roles_sql = ""
    if roles_script:
        created = roles_to_create(roles_script, facts)
    if created:  # in the same transaction: a failed restore leaves no role behind
        stmts = rolesmod.statements_for(roles_script, set(created), facts.roles)
        if not facts.superuser:
            stmts = [t for t in (without_superuser_defaults(st) for st in stmts) if t]
            # so that objects can be given to them (ALTER ... OWNER TO)
            stmts += [f"GRANT {qi(role)} TO {qi(facts.user)};" for role in created]
        roles_sql = "\n".join(st if st.endswith(";") else st + ";" for st in stmts) + "\n"
    skipped = p.skipped + [f"{t}: not in the backup, left as it is" for t in absent] + pub_notes + set_notes
    if mode == "in_place" and fallback is None:
        st = stage.build(p, list(scope.app_schemas), facts.schemas, list(scope.platform_tables), token, kept_names,
                         {k.split("(", 1)[0] for k in keep})
        st.steps.append(("sql", count_check_sql(expected_counts, [t for t in _tables_in(p, scope)
                                                                  if t[0] in scope.app_schemas], st.mapping)))
        kinds = [("TRIGGER" if _is_trigger(p, s, t, n) else "POLICY", s, t, n) for s, t, n in dropped]

        def swap(deferred: list[str], extras: list[str], fks: list[str], columns: dict) -> str:
            return (stage.swap_sql(st, token, keep_all, deferred, extras, fks, columns, kinds)
                    + publications_sql(st.moved) + pub_sql + "".join(x + "\n" for x in set_done)
                    + stage.platform_fk_sql(list(scope.app_schemas), list(scope.platform_tables))
                    + count_check_sql(expected_counts, [t for t in _tables_in(p, scope)
                                                        if t in scope.platform_tables]))

        head = ("SET session_replication_role = replica;\nSET search_path = '';\n" + roles_sql
                + stage.head_sql(st, token, st.live))
        stage.run(target, pg_restore, psql, st, head, swap, token)
        return Result(mode, archives, st.moved, created, snapshot, len(p.left_out), extras_note, skipped,
                      platform_sql + pub_refused + set_refused, pub_done, set_done, swap="staged",
                      platform_rows_aside=st.rows_aside)
    head, moved_aside = preamble(mode, scope, facts, p, token, dropped, keep)
    head = roles_sql + head
    tail = fk_check_sql(scope.app_schemas, scope.platform_tables) + count_check_sql(
        expected_counts, _tables_in(p, scope))
    tail = (publications_sql(moved_aside) if mode == "in_place" else "") + pub_sql + "".join(
        st + "\n" for st in set_done) + tail
    _run_one_transaction(target, pg_restore, psql, p, head, tail, token,
                         before_grants=reset_grants_sql(scope.app_schemas))
    how = "" if mode == "new" else f"one transaction ({fallback}): the application waited for the whole restore"
    return Result(mode, archives, moved_aside, created, snapshot, len(p.left_out), extras_note, skipped,
                  platform_sql + pub_refused + set_refused, pub_done, set_done, swap=how)


def publications_plan(conn: Any, publications: list[tuple[str, str, str]], scope: Scope,
                      facts: Facts) -> tuple[str, list[str], list[str], list[str]]:
    """(SQL run in the transaction, memberships it restores, notes, statements for the publication's owner) for
    the backup's tables in the platform's publications (Realtime): pg_dump of chosen schemas leaves publications
    out, so a new project's ``supabase_realtime`` would lack them."""
    out, done, notes, refused = [], [], [], []
    for pub, schema, table in publications:
        if schema not in scope.app_schemas:
            continue
        row = conn.execute("SELECT pg_catalog.pg_get_userbyid(pubowner) FROM pg_catalog.pg_publication "
                           "WHERE pubname = %s", (pub,)).fetchone()
        name = f"{schema}.{table} in publication {pub}"
        if row is None:
            notes.append(f"{name}: the project has no publication {pub}; create it (Realtime) and add the table")
        elif facts.superuser or row[0] in facts.actors:
            out.append(publication_add_sql(pub, schema, table))
            done.append(name)
        else:
            refused.append(f"ALTER PUBLICATION {qi(pub)} ADD TABLE ONLY {qi(schema)}.{qi(table)};")
            notes.append(f"{name}: the publication belongs to {row[0]}, which {facts.user} may not act as; run its "
                         "statement (platform_sql) as that role (Supabase: the SQL editor, or Database > "
                         "Publications)")
    return "".join(out), done, notes, refused


def settings_plan(conn: Any, settings: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(ALTER DATABASE ... SET statements run in the transaction, notes, statements the login may not run) for the
    database's recorded settings (``app.settings.*``, ``search_path``...). A setting the project has of its own is
    kept (a new project's platform settings, such as its JWT settings, are its own); a missing one is set when a
    trial in a rolled-back transaction shows that the login may, else returned with the server's reason."""
    if not settings:
        return [], [], []
    database, owner = conn.execute("SELECT current_database(), pg_catalog.pg_get_userbyid(datdba) FROM "
                                   "pg_catalog.pg_database WHERE datname = current_database()").fetchone()
    current = {}
    for (item,) in conn.execute(
            "SELECT unnest(s.setconfig) FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d "
            "ON d.oid = s.setdatabase WHERE d.datname = current_database() AND s.setrole = 0").fetchall():
        key, _, value = item.partition("=")
        current[key.lower()] = value
    done, notes, refused = [], [], []
    for item in settings:
        key, _, value = item.partition("=")
        if key.lower() in current:
            if current[key.lower()] != value:
                notes.append(f"database setting {key}: the project's own value {current[key.lower()]!r} is kept (the "
                             f"backup had {value!r}); change it yourself if the application needs the backup's")
            continue
        stmt = setting_sql(database, item)
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(stmt)
        except Exception as exc:  # noqa: BLE001 - the server's reason is reported with the statement
            reason = str(exc).strip().splitlines()[0]
            refused.append(stmt)
            notes.append(f"database setting {key}: {reason} (the database's owner is {owner}); run its statement "
                         "(platform_sql) as a role that may: a superuser, or the owner after GRANT SET ON PARAMETER "
                         f"{qi(key)}, or keep the value in a table of your own")
            continue
        done.append(stmt)
    return done, notes, refused


def _entry_sql(pg_restore: str, e: Entry) -> str:
    """The SQL statement(s) of one archive entry, without pg_restore's comments and settings."""
    tmp = tmpfiles.private_dir("lifeboat-sb-")
    try:
        listfile = os.path.join(tmp, "entry.list")
        with open(listfile, "w", encoding="utf-8") as fh:
            fh.write(e.line + "\n")
        out = subprocess.run([pg_restore, "-L", listfile, "-f", "-", e.archive], capture_output=True, check=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = out.stdout.decode("utf-8", "replace")
    keep = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("--") and not ln.startswith("SET ")
            and not ln.startswith("SELECT pg_catalog.set_config") and not ln.startswith(("\\restrict", "\\unrestrict"))]
    return "\n".join(keep)


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


def _runs(p: Plan, before_grants: str = "") -> list[tuple[str, Any]]:
    """(archive, entries) in the transaction's order: each phase, and within it each archive's entries; ("",
    sql) for ``before_grants``, run before the grants and comments (the last phase)."""
    out: list[tuple[str, Any]] = []
    phases = p.phases()
    for i, phase in enumerate(phases):
        if i == len(phases) - 1 and before_grants:
            out.append(("", before_grants))
        for e in phase:
            # a new pg_restore run for a replaced function, and between ACLs and other entries (pg_restore
            # applies a run's ACLs after everything else in it; the schemas' grants must come first)
            last = out[-1][1][-1] if out and out[-1][0] else None
            if last is not None and out[-1][0] == e.archive and not e.replace and not last.replace \
                    and (e.type == "ACL") == (last.type == "ACL"):
                out[-1][1].append(e)
            else:
                out.append((e.archive, [e]))
    return out


def _send(pipe: Any, data: bytes) -> None:
    """Write to psql's stdin NOW: pg_restore runs write to the same pipe directly, so nothing may wait in
    Python's buffer (it would reach psql after them, out of order)."""
    pipe.write(data)
    pipe.flush()


def _run_one_transaction(target: PgTarget, pg_restore: str, psql: str, p: Plan, head: str, tail: str,
                         token: str, before_grants: str = "") -> None:
    with target.child_env() as env:
        private = os.path.dirname(env["PGPASSFILE"])
        env["PGAPPNAME"] = f"lifeboat-supabase-restore-{token}"
        with open(os.path.join(private, "psql.err"), "w+b") as err, \
                open(os.path.join(private, "pg_restore.err"), "w+b") as dump_err:
            # BEGIN and COMMIT are sent, not psql's --single-transaction: psql -1 commits at the end of its input,
            # also when this process died mid-stream; without a COMMIT, the server rolls back
            psql_proc = subprocess.Popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env)
            assert psql_proc.stdin is not None
            dump_rc = 0
            try:
                _send(psql_proc.stdin, b"BEGIN;\n" + head.encode("utf-8"))
                for n, (archive, entries) in enumerate(_runs(p, before_grants)):
                    if not archive:
                        _send(psql_proc.stdin, entries.encode("utf-8"))
                        continue
                    listfile = os.path.join(private, f"restore-{n}.list")
                    with open(listfile, "w", encoding="utf-8") as fh:
                        fh.write("\n".join(e.line for e in entries) + "\n")
                    if entries[0].replace:
                        proc = subprocess.run([pg_restore, "-L", listfile, "-f", "-", archive],
                                              stdout=subprocess.PIPE, stderr=dump_err, env=env, check=False)
                        dump_rc = proc.returncode
                        _send(psql_proc.stdin, or_replace(proc.stdout))
                    else:
                        dump_rc = subprocess.run([pg_restore, "-L", listfile, "-f", "-", archive],
                                                 stdout=psql_proc.stdin, stderr=dump_err, env=env,
                                                 check=False).returncode
                    if dump_rc != 0:
                        break
                if dump_rc == 0:
                    _send(psql_proc.stdin, tail.encode("utf-8") + b"COMMIT;\n")
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
            raise stage.rolled_back(text, "pg_restore", dump_text)


def _no_other_restore(conn: Any, database: str) -> None:
    """Two in-place restores of one project at once would swap each other's objects: refuse, naming the other."""
    rows = conn.execute("SELECT pid, application_name, state, now() - xact_start FROM pg_catalog.pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_catalog.pg_backend_pid() "
                        "AND application_name LIKE 'lifeboat-supabase-restore-%'").fetchall()
    if rows:
        pid, name, state, age = rows[0]
        raise RestoreError(f"supabase restore: another restore is running in database '{database}' (session {pid}, "
                           f"{name}, {state}, in its transaction for {age}); wait for it to finish, or if its "
                           f"process is gone, end the session: SELECT pg_terminate_backend({pid});", "target")


def safety_snapshot(target: PgTarget, scope: Scope, directory: str | None, bin_dirs: list[str] | None,
                    token: str) -> list[str]:
    """Archives of the same shape as the backup (application schemas; platform tables) of the project as it is
    now, taken in one snapshot, restorable in place by this same code. Written exclusively, mode 0600."""
    if not directory:
        raise ConfigError("supabase restore: mode in_place takes a safety snapshot first; give snapshot_dir (a "
                          "directory on a disk with room for one backup)", "snapshot_dir")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    prefix = f"{target.database}-before-restore-"
    for name in os.listdir(directory):  # a killed run's unfinished snapshot (no other restore runs: checked)
        if name.startswith(prefix) and name.endswith(".dump.partial"):
            os.unlink(os.path.join(directory, name))
    pg_dump = _client(target, "pg_dump", bin_dirs)
    paths: list[str] = []
    with target.connect(snapshot_reader=True) as holder:
        snap = holder.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0]
        for part in ("app", "platform"):
            path = os.path.join(directory, f"{prefix}{token}-{part}.dump")
            # written as .partial and renamed when whole: a kill never leaves what looks like a snapshot
            fd = os.open(path + ".partial", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            paths.append(path)
            with target.child_env() as env, os.fdopen(fd, "wb") as out:
                env["PGAPPNAME"] = f"lifeboat-supabase-restore-{token}"  # seen by another run's check
                proc = subprocess.run(dump_argv(pg_dump, scope, part, snap), stdout=out, stderr=subprocess.PIPE,
                                      env=env, check=False)
            if proc.returncode != 0:
                for done in paths:
                    os.unlink(done + ".partial")
                raise RestoreError("supabase restore: the safety snapshot failed, nothing was changed: "
                                   + proc.stderr.decode("utf-8", "replace").strip()[-600:], "snapshot_dir")
    for path in paths:
        os.replace(path + ".partial", path)
    return paths


