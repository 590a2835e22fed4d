"""The ``supabase`` backup profile (issue 9): what a Supabase project's own login can back up, and how.

On Supabase the application logs in as ``postgres``, which is not a superuser; the platform (roles,
schemas ``auth``, ``storage``, ``realtime``, ... and their bookkeeping) is recreated by every new project.
So the profile splits one exported snapshot into three parts, restored into a new project in this order:

1. the roles the application made (no passwords; the platform's roles left out: a new project has them);
2. the data (only) of the platform tables that hold user data (``auth.*``, ``storage.*``), without the
   platform's own migration records;
3. the schema and data of the user's schemas (every schema that is not the platform's).

What the login cannot read and the platform recreates (``supabase_functions.hooks``,
``auth.schema_migrations``, ...), the platform's schemas, and the objects a new project already has or only
a superuser may create (event triggers, the ``supabase_realtime`` publication, extensions and default
privileges owned by platform roles) are left out and listed in the manifest (``supabase.left_out``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from ansible.module_utils.lifeboat import pgmeta, privileges
from ansible.module_utils.lifeboat.errors import ConfigError

PROFILES = ("auto", "default", "supabase")

#: Supabase's connection pooler (Supavisor): port 5432 is its session mode, 6543 its transaction mode
POOLER_HOST_SUFFIX = ".pooler.supabase.com"
TRANSACTION_POOLER_PORT = 6543


def refuse_transaction_pooler(target: Any, why: str = "where pg_dump cannot import the backup's snapshot nor keep "
                              "its session settings") -> None:
    """A Supabase transaction-pooler address is refused before connecting, naming the connection strings that
    work: pg_dump runs in its own session that imports the snapshot Lifeboat's session exported, and keeps session
    settings; transaction pooling gives each transaction whichever server session is free."""
    host = str(getattr(target, "host", None) or "").lower().rstrip(".")
    if host.endswith(POOLER_HOST_SUFFIX) and int(getattr(target, "port", None) or 5432) == TRANSACTION_POOLER_PORT:
        raise ConfigError(
            f"PostgreSQL at {target.describe()} is Supabase's transaction pooler (port {TRANSACTION_POOLER_PORT}), "
            f"{why}; use the session pooler (the same host, port 5432) or the direct connection "
            "(db.<project-ref>.supabase.co:5432)", "port")


#: schemas the platform creates and owns (Supabase's init scripts and services); never in the user's part
PLATFORM_SCHEMAS = ("auth", "storage", "extensions", "realtime", "_realtime", "graphql", "graphql_public", "vault",
                    "pgsodium", "pgsodium_masks", "supabase_functions", "supabase_migrations", "net", "cron",
                    "pgbouncer", "pgtle", "_analytics", "_supavisor")
#: platform schemas whose tables hold the user's data (Supabase Auth's users, Storage's buckets and objects)
USER_DATA_SCHEMAS = ("auth", "storage")
#: the services' own migration records: a new project has its own, restoring them would clash
BOOKKEEPING = {("auth", "schema_migrations"), ("storage", "migrations"), ("realtime", "schema_migrations"),
               ("supabase_functions", "migrations")}
#: roles every Supabase project has (plus every ``supabase_*`` and ``pg_*`` role)
PLATFORM_ROLES = ("postgres", "anon", "authenticated", "service_role", "authenticator", "dashboard_user",
                  "pgbouncer", "pgsodium_keyholder", "pgsodium_keyiduser", "pgsodium_keymaker", "cli_login_postgres")
#: pg_roles columns and the CREATE ROLE words for them, in the order roles_sql reads them
ROLE_ATTRS = (("rolsuper", "SUPERUSER"), ("rolinherit", "INHERIT"), ("rolcreaterole", "CREATEROLE"),
              ("rolcreatedb", "CREATEDB"), ("rolcanlogin", "LOGIN"), ("rolreplication", "REPLICATION"),
              ("rolbypassrls", "BYPASSRLS"))
#: publications every project has
PLATFORM_PUBLICATIONS = ("supabase_realtime",)


def is_platform_role(name: str) -> bool:
    return name in PLATFORM_ROLES or name.startswith("supabase_") or name.startswith("pg_")


def detect(conn: Any) -> bool:
    """A Supabase(-like) database: role supabase_admin, schemas auth and storage."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'supabase_admin'), "
        "(SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname IN ('auth', 'storage'))").fetchone()
    return bool(row[0]) and int(row[1]) == 2


@dataclass
class Scope:
    """What the profile dumps and leaves out, decided in the snapshot's transaction (catalog queries only)."""

    platform_schemas: list[str] = field(default_factory=list)
    app_schemas: list[str] = field(default_factory=list)
    data_tables: list[tuple[str, str]] = field(default_factory=list)
    left_out: list[dict[str, str]] = field(default_factory=list)
    user_roles: list[str] = field(default_factory=list)

    def data_patterns(self) -> list[str]:
        return [privileges.dump_pattern(s, t) for s, t in self.data_tables]


_TABLES_SQL = """
SELECT n.nspname, c.relname,
       pg_catalog.has_schema_privilege(n.oid, 'USAGE') AS usage,
       pg_catalog.has_table_privilege(c.oid, 'SELECT') AS can_select,
       c.relrowsecurity AND NOT (r.rolbypassrls OR pg_catalog.pg_has_role(c.relowner, 'USAGE')) AS rls_hides,
       pg_catalog.pg_get_userbyid(c.relowner)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_roles r ON r.rolname = current_user
 WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                   AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 1, 2
"""


_POLICIES_SQL = """
SELECT p.schemaname, p.tablename, p.policyname,
       pg_catalog.format('CREATE POLICY %%I ON %%I.%%I AS %%s FOR %%s TO %%s%%s%%s;', p.policyname, p.schemaname,
                         p.tablename, p.permissive, p.cmd,
                         (SELECT pg_catalog.string_agg(CASE WHEN r = 'public' THEN 'PUBLIC'
                                                            ELSE pg_catalog.quote_ident(r) END, ', ')
                            FROM pg_catalog.unnest(p.roles) AS r),
                         ' USING (' || p.qual || ')', ' WITH CHECK (' || p.with_check || ')')
  FROM pg_catalog.pg_policies p
 WHERE p.schemaname = ANY(%s)
 ORDER BY 1, 2, 3
"""


def scope(conn: Any) -> Scope:
    """The platform schemas present, the user-data tables to dump (data only), what is left out and why."""
    present = {r[0] for r in conn.execute("SELECT nspname FROM pg_catalog.pg_namespace").fetchall()}
    out = Scope(platform_schemas=[s for s in PLATFORM_SCHEMAS if s in present])
    out.app_schemas = sorted(s for s in present if s not in PLATFORM_SCHEMAS and s not in pgmeta.SYSTEM_SCHEMAS
                             and not s.startswith("pg_temp_") and not s.startswith("pg_toast"))
    login = conn.execute("SELECT current_user").fetchone()[0]
    for schema, table, usage, can_select, rls_hides, owner in conn.execute(
            _TABLES_SQL, (out.platform_schemas,)).fetchall():
        name = f"{schema}.{table}"
        readable = usage and can_select and not rls_hides
        if schema in USER_DATA_SCHEMAS and (schema, table) not in BOOKKEEPING:
            # user data: dumped; when the login cannot read it the privilege pre-flight names it (never dropped)
            out.data_tables.append((schema, table))
            continue
        if (schema, table) in BOOKKEEPING:
            why = "the platform's own migration records (a new project has its own)"
        elif schema == "vault":
            why = "secrets encrypted with this project's own key: create them again in the new project"
        else:
            why = "platform table: the new project recreates it"
        if not readable:
            why += f"; {login} cannot read it (owner {owner})"
        out.left_out.append({"object": name, "kind": "table", "reason": why})
    for schema in out.platform_schemas:
        out.left_out.append({"object": schema, "kind": "schema",
                             "reason": "platform schema: only its user data (auth, storage tables) is dumped"
                             if schema in USER_DATA_SCHEMAS else "platform schema: the new project has it"})
    for (name, owner) in conn.execute(
            "SELECT evtname, pg_catalog.pg_get_userbyid(evtowner) FROM pg_catalog.pg_event_trigger "
            "ORDER BY 1").fetchall():
        out.left_out.append({"object": name, "kind": "event trigger",
                             "reason": f"owned by {owner}; creating event triggers needs a superuser, the platform "
                                       "makes its own"})
    for (name,) in conn.execute("SELECT pubname FROM pg_catalog.pg_publication WHERE pubname = ANY(%s) ORDER BY 1",
                                (list(PLATFORM_PUBLICATIONS),)).fetchall():
        out.left_out.append({"object": name, "kind": "publication",
                             "reason": "the new project has it; the user's tables in it are restored"})
    for schema, table, policy, statement in conn.execute(_POLICIES_SQL, (out.platform_schemas,)).fetchall():
        out.left_out.append({"object": f"{schema}.{table}: {policy}", "kind": "policy",
                             "reason": "the application's policy on a platform table (its owner is the platform's "
                                       "role): create it again in the new project with this statement",
                             "sql": statement})
    roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_catalog.pg_roles ORDER BY 1").fetchall()]
    out.user_roles = [r for r in roles if not is_platform_role(r)]
    for r in roles:
        if is_platform_role(r) and not r.startswith("pg_"):
            out.left_out.append({"object": r, "kind": "role", "reason": "platform role: the new project has it"})
    return out


def publication_tables(conn: Any, app_schemas: list[str]) -> list[list[str]]:
    """[publication, schema, table] of the user's tables in the platform's publications (Realtime)."""
    return [list(r) for r in conn.execute(
        "SELECT pubname, schemaname, tablename FROM pg_catalog.pg_publication_tables "
        "WHERE pubname = ANY(%s) AND schemaname = ANY(%s) ORDER BY 1, 2, 3",
        (list(PLATFORM_PUBLICATIONS), list(app_schemas))).fetchall()]


def publication_sql(conn: Any, app_schemas: list[str]) -> str:
    """The statements that put the user's tables back into the platform's publications (pg_dump --schema does
    not dump a publication's membership): '' when there are none."""
    rows = publication_tables(conn, app_schemas)
    return " ".join(sql.SQL("ALTER PUBLICATION {} ADD TABLE ONLY {}.{};").format(
        sql.Identifier(p), sql.Identifier(sc), sql.Identifier(t)).as_string(conn) for p, sc, t in rows)


def extensions_sql(conn: Any) -> str:
    """CREATE EXTENSION IF NOT EXISTS for every extension of the database (pg_dump --schema leaves out those of
    the platform's ``extensions`` schema, where Supabase puts them, and an index or a column of the user's
    schemas may need one): a no-op for those the new project has, '' when there are none."""
    rows = conn.execute("SELECT e.extname, n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n "
                        "ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY 1").fetchall()
    return " ".join(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {};").format(
        sql.Identifier(e), sql.Identifier(n)).as_string(conn) for e, n in rows)


def fk_order(conn: Any, tables: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``tables`` ordered so that a table comes after the tables its foreign keys reference (auth.users before
    auth.identities); a cycle keeps the remaining tables in name order."""
    wanted = set(tables)
    refs: dict[tuple[str, str], set[tuple[str, str]]] = {t: set() for t in tables}
    for a_s, a_t, b_s, b_t in conn.execute(
            "SELECT cn.nspname, c.relname, fn.nspname, f.relname FROM pg_catalog.pg_constraint k "
            "JOIN pg_catalog.pg_class c ON c.oid = k.conrelid "
            "JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace "
            "JOIN pg_catalog.pg_class f ON f.oid = k.confrelid "
            "JOIN pg_catalog.pg_namespace fn ON fn.oid = f.relnamespace "
            "WHERE k.contype = 'f'").fetchall():
        if (a_s, a_t) in wanted and (b_s, b_t) in wanted and (a_s, a_t) != (b_s, b_t):
            refs[(a_s, a_t)].add((b_s, b_t))
    out: list[tuple[str, str]] = []
    left = sorted(tables)
    while left:
        ready = [t for t in left if refs[t] <= set(out)] or left[:1]
        out.append(ready[0])
        left.remove(ready[0])
    return out


def data_list_command(archive: str, tables: list[tuple[str, str]], list_file: str) -> str:
    """The ``pg_restore -L`` list of ``archive``'s rows in foreign-key order (pg_restore --data-only from a
    schema-and-data archive would otherwise load auth.identities before auth.users)."""
    toc = list_file + ".toc"
    greps = [f"grep -F {_shq(' TABLE DATA ' + s + ' ' + t + ' ')} {toc}" for s, t in tables]
    greps.append(f"{{ grep -F ' SEQUENCE SET ' {toc} || true; }}")
    return f"pg_restore -l {archive} > {toc} && {{ " + "; ".join(greps) + f"; }} > {list_file}"


def roles_sql(conn: Any, user_roles: list[str]) -> bytes:
    """The application's roles, from the catalog in the snapshot, one statement a line as pg_dumpall writes them
    (roles.statements_for reads them): CREATE ROLE, then ALTER ROLE with the non-default attributes only (the
    non-superuser ``postgres`` may not even restate NOREPLICATION or NOBYPASSRLS on PostgreSQL 15), no password,
    comments, settings and the memberships that involve them (GRANTED BY left out). Run by psql as the project's
    postgres login, a role the project already has is reported ('already exists') and kept."""
    wanted = set(user_roles)
    out = ["-- Lifeboat, supabase profile: the application's roles (platform roles left out, no passwords).",
           "-- psql reports 'already exists' for a role the project has, and goes on.", ""]
    rows = conn.execute(
        "SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, "
        "r.rolreplication, r.rolbypassrls, r.rolconnlimit, pg_catalog.shobj_description(r.oid, 'pg_authid') "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = ANY(%s) ORDER BY 1", (sorted(wanted),)).fetchall()
    defaults = {"rolsuper": False, "rolinherit": True, "rolcreaterole": False, "rolcreatedb": False,
                "rolcanlogin": False, "rolreplication": False, "rolbypassrls": False}
    for row in rows:
        name = sql.Identifier(row[0]).as_string(conn)
        attrs = [word if row[1 + i] else "NO" + word for i, (a, word) in enumerate(ROLE_ATTRS)
                 if bool(row[1 + i]) != defaults[a]]
        if row[8] != -1:
            attrs.append(f"CONNECTION LIMIT {int(row[8])}")
        out.append(f"CREATE ROLE {name};")
        if attrs:
            out.append(f"ALTER ROLE {name} WITH {' '.join(attrs)};")
        if row[9]:
            out.append(f"COMMENT ON ROLE {name} IS {sql.Literal(row[9]).as_string(conn)};")
    for role, item in conn.execute(
            "SELECT r.rolname, unnest(s.setconfig) FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_roles r "
            "ON r.oid = s.setrole WHERE s.setdatabase = 0 AND r.rolname = ANY(%s) ORDER BY 1, 2",
            (sorted(wanted),)).fetchall():
        key, _, value = item.partition("=")
        out.append(sql.SQL("ALTER ROLE {} SET {} TO {};").format(sql.Identifier(role), sql.Identifier(key),
                                                                 sql.Literal(value)).as_string(conn))
    for granted, member, admin in conn.execute(
            "SELECT g.rolname, m.rolname, a.admin_option FROM pg_catalog.pg_auth_members a "
            "JOIN pg_catalog.pg_roles g ON g.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member "
            "WHERE (g.rolname = ANY(%s) OR m.rolname = ANY(%s)) ORDER BY 1, 2",
            (sorted(wanted), sorted(wanted))).fetchall():
        out.append(sql.SQL("GRANT {} TO {}").format(sql.Identifier(granted), sql.Identifier(member))
                   .as_string(conn) + (" WITH ADMIN OPTION" if admin else "") + ";")
    out += ["", CLEAR_DEFAULT_PRIVILEGES]
    return ("\n".join(out) + "\n").encode()


#: run by the restoring login before the user's schemas are restored: its default privileges in the new project
#: would add grants to every restored object (anon gets EXECUTE on a function the source revoked from it), and
#: pg_dump writes each object's grants relative to the built-in defaults; the dump's own DEFAULT ACL entries
#: (restored last) then set the source's default privileges again
CLEAR_DEFAULT_PRIVILEGES = r"""-- The restoring login's default privileges, cleared until the dump restores the source's
-- (its DEFAULT ACL entries come last): restored objects get exactly their recorded privileges.
DO $lifeboat$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT n.nspname, d.defaclobjtype AS t, a.grantee, a.privilege_type
               FROM pg_catalog.pg_default_acl d
               LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace
              CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) a
              WHERE d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
                AND NOT (d.defaclnamespace = 0 AND a.grantee IN (d.defaclrole, 0))
    LOOP
        EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I %s REVOKE %s ON %s FROM %s', current_user,
            CASE WHEN r.nspname IS NULL THEN '' ELSE pg_catalog.format('IN SCHEMA %I', r.nspname) END,
            r.privilege_type,
            CASE r.t WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS'
                     WHEN 'T' THEN 'TYPES' WHEN 'n' THEN 'SCHEMAS' END,
            CASE WHEN r.grantee = 0 THEN 'PUBLIC'
                 ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r.grantee)) END);
    END LOOP;
END
$lifeboat$;"""


def _ere(text: str) -> str:
    """``text`` as a literal in a POSIX extended regular expression (GNU grep -E)."""
    return re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", text)


def _shq(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def toc_filter(platform_roles: list[str]) -> str:
    """The ``grep -v -E`` that removes from ``pg_restore -l``'s list what a new project already has or only a
    superuser or an owner may run: event triggers, the platform's publications, schema public (every database
    has it; its grants stay) and its comment, comments on extensions (the
    extensions themselves stay: pg_dump writes CREATE EXTENSION IF NOT EXISTS), and entries owned by platform
    roles (default privileges of supabase_admin, ...)."""
    prefix = "^[0-9]+; [0-9]+ [0-9]+ "
    patterns = [prefix + "EVENT TRIGGER ",
                prefix + "PUBLICATION - (" + "|".join(_ere(p) for p in PLATFORM_PUBLICATIONS) + ") ",
                prefix + "COMMENT - EXTENSION ",
                prefix + "(SCHEMA - public|COMMENT - SCHEMA public) "]
    owners = [r for r in sorted(platform_roles) if r != "postgres"]
    if owners:
        patterns.append(" (" + "|".join(_ere(r) for r in owners) + ")$")
    return "grep -v -E " + " ".join("-e " + _shq(p) for p in patterns)


def owners_left_out(conn: Any) -> list[str]:
    """Platform roles (other than postgres) that own something in the database: their entries are filtered."""
    return [r[0] for r in conn.execute("SELECT rolname FROM pg_catalog.pg_roles ORDER BY 1").fetchall()
            if is_platform_role(r[0]) and not r[0].startswith("pg_")]
