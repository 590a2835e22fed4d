"""The roles a backup needs: captured beside the dump, created on a server that lacks them.

A dump names roles (owners, GRANTs, policies, ``ALTER ROLE ... IN DATABASE``); PostgreSQL keeps roles per
server, not per database, so a plain ``pg_dump`` cannot recreate them and the old server (the usual source of
``pg_dumpall --globals-only``) may be gone on the day it matters. Every backup therefore stores the server's
roles as ``pg_dumpall --roles-only --no-role-passwords`` writes them (no password hash: a non-superuser backup
role may run it, and no secret is stored), compressed and encrypted like the dump, and lists in the manifest the
roles the database itself uses (``required``). When pg_dumpall cannot run, the same statements are written from
the catalog (``pg_roles``, ``pg_auth_members``), which any role may read.

Restore compares ``required`` with the target server's roles before any data moves: it names ALL the missing
ones, or with ``create_roles`` creates them (and only them) from the stored statements, without passwords.
"""
from __future__ import annotations

import re
import subprocess
from typing import Any

from psycopg import sql

from ansible.module_utils.lifeboat.errors import DumpError, RestoreError

# every role the database refers to: owners of its objects, grantees of their ACLs and of default privileges,
# policy roles, roles with settings in it, the database owner and grantees of the database ACL
REQUIRED_ROLES_SQL = """
WITH refs(oid) AS (
    SELECT relowner FROM pg_catalog.pg_class
    UNION SELECT nspowner FROM pg_catalog.pg_namespace
    UNION SELECT proowner FROM pg_catalog.pg_proc
    UNION SELECT typowner FROM pg_catalog.pg_type
    UNION SELECT oprowner FROM pg_catalog.pg_operator
    UNION SELECT collowner FROM pg_catalog.pg_collation
    UNION SELECT extowner FROM pg_catalog.pg_extension
    UNION SELECT evtowner FROM pg_catalog.pg_event_trigger
    UNION SELECT pubowner FROM pg_catalog.pg_publication
    UNION SELECT lomowner FROM pg_catalog.pg_largeobject_metadata
    UNION SELECT defaclrole FROM pg_catalog.pg_default_acl
    UNION SELECT (pg_catalog.aclexplode(relacl)).grantee FROM pg_catalog.pg_class WHERE relacl IS NOT NULL
    UNION SELECT (pg_catalog.aclexplode(nspacl)).grantee FROM pg_catalog.pg_namespace WHERE nspacl IS NOT NULL
    UNION SELECT (pg_catalog.aclexplode(proacl)).grantee FROM pg_catalog.pg_proc WHERE proacl IS NOT NULL
    UNION SELECT (pg_catalog.aclexplode(typacl)).grantee FROM pg_catalog.pg_type WHERE typacl IS NOT NULL
    UNION SELECT (pg_catalog.aclexplode(defaclacl)).grantee FROM pg_catalog.pg_default_acl
    UNION SELECT (pg_catalog.aclexplode(attacl)).grantee FROM pg_catalog.pg_attribute WHERE attacl IS NOT NULL
    UNION SELECT unnest(polroles) FROM pg_catalog.pg_policy
    UNION SELECT datdba FROM pg_catalog.pg_database WHERE datname = current_database()
    UNION SELECT (pg_catalog.aclexplode(datacl)).grantee FROM pg_catalog.pg_database
       WHERE datname = current_database() AND datacl IS NOT NULL
    UNION SELECT s.setrole FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d
       ON d.oid = s.setdatabase WHERE d.datname = current_database()
)
SELECT r.rolname FROM refs JOIN pg_catalog.pg_roles r ON r.oid = refs.oid
 WHERE r.rolname !~ '^pg_' ORDER BY 1
"""


def required_roles(conn: Any) -> list[str]:
    """Roles the connected database refers to (built-in ``pg_*`` roles left out: every server has them)."""
    return [r[0] for r in conn.execute(REQUIRED_ROLES_SQL).fetchall()]


def dumpall_roles(pg_dumpall: str, env: dict[str, str], database: str) -> bytes:
    """``pg_dumpall --roles-only --no-role-passwords`` output (connection from ``env``: PGPASSFILE, no argv
    secret). Raises DumpError when it fails (then :func:`catalog_roles_sql` is used)."""
    argv = [pg_dumpall, "--roles-only", "--no-role-passwords", "--no-password", "-l", database]
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=300)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0 or "error:" in err:
        raise DumpError(f"pg_dumpall --roles-only failed (exit {proc.returncode}): {err.strip()[-300:]}")
    return proc.stdout


_ATTRS = (("rolsuper", "SUPERUSER"), ("rolinherit", "INHERIT"), ("rolcreaterole", "CREATEROLE"),
          ("rolcreatedb", "CREATEDB"), ("rolcanlogin", "LOGIN"), ("rolreplication", "REPLICATION"),
          ("rolbypassrls", "BYPASSRLS"))


def catalog_roles_sql(conn: Any) -> bytes:
    """The statements pg_dumpall --roles-only --no-role-passwords writes, from ``pg_roles`` (readable by any
    role): CREATE ROLE, ALTER ROLE ... WITH attributes, settings, comments and memberships."""
    out = ["--", "-- Roles (from the catalog: pg_dumpall was not permitted)", "--", ""]
    rows = conn.execute(
        "SELECT r.oid, r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, "
        "r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text, "
        "pg_catalog.shobj_description(r.oid, 'pg_authid') FROM pg_catalog.pg_roles r "
        "WHERE r.rolname !~ '^pg_' ORDER BY r.rolname").fetchall()
    for row in rows:
        name = sql.Identifier(row[1]).as_string(conn)
        attrs = " ".join(word if row[2 + i] else "NO" + word for i, (_a, word) in enumerate(_ATTRS))
        out.append(f"CREATE ROLE {name};")
        extra = ""
        if row[9] != -1:
            extra += f" CONNECTION LIMIT {int(row[9])}"
        if row[10]:
            extra += " VALID UNTIL " + sql.Literal(row[10]).as_string(conn)
        out.append(f"ALTER ROLE {name} WITH {attrs}{extra};")
        if row[11]:
            out.append(f"COMMENT ON ROLE {name} IS " + sql.Literal(row[11]).as_string(conn) + ";")
    for role, item in conn.execute(
            "SELECT r.rolname, unnest(s.setconfig) FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_roles r "
            "ON r.oid = s.setrole WHERE s.setdatabase = 0 AND r.rolname !~ '^pg_' ORDER BY 1, 2").fetchall():
        key, _, value = item.partition("=")
        out.append(f"ALTER ROLE {sql.Identifier(role).as_string(conn)} SET {sql.Identifier(key).as_string(conn)} "
                   f"TO {sql.Literal(value).as_string(conn)};")
    for granted, member, admin in conn.execute(
            "SELECT g.rolname, m.rolname, a.admin_option FROM pg_catalog.pg_auth_members a "
            "JOIN pg_catalog.pg_roles g ON g.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member "
            "WHERE m.rolname !~ '^pg_' ORDER BY 1, 2").fetchall():
        out.append(f"GRANT {sql.Identifier(granted).as_string(conn)} TO {sql.Identifier(member).as_string(conn)}"
                   + (" WITH ADMIN OPTION" if admin else "") + ";")
    return ("\n".join(out) + "\n").encode()


_IDENT = r'("(?:[^"]|"")*"|[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)'
_SUBJECT = re.compile(r"^(?:CREATE ROLE|ALTER ROLE|COMMENT ON ROLE)\s+" + _IDENT)
_GRANT = re.compile(r"^GRANT\s+" + _IDENT + r"\s+TO\s+" + _IDENT)


def _unquote(word: str) -> str:
    return word[1:-1].replace('""', '"') if word.startswith('"') else word.lower()


def role_names(script: str) -> list[str]:
    """The roles a roles script creates (its ``CREATE ROLE`` statements)."""
    return sorted({_unquote(m.group(1)) for line in script.splitlines()
                   if line.startswith("CREATE ROLE") and (m := _SUBJECT.match(line))})


def statements_for(script: str, roles: set[str], existing: set[str] | None = None) -> list[str]:
    """The statements of a roles script (one per line, as pg_dumpall writes them) that create and describe
    ``roles``: their CREATE/ALTER/COMMENT ON ROLE and the memberships granted TO them (``GRANTED BY`` left out:
    the grantor may be one of the roles not created; a membership in a role neither in ``existing`` nor created
    is left out). Settings of other roles, and everything about roles the
    server already has, are left alone."""
    out = []
    for line in script.splitlines():
        stmt = line.strip()
        if not stmt or stmt.startswith("--") or stmt.startswith("\\") or stmt.upper().startswith("SET "):
            continue
        m = _SUBJECT.match(stmt)
        if m:
            if _unquote(m.group(1)) in roles:
                out.append(stmt)
            continue
        g = _GRANT.match(stmt)
        if g and _unquote(g.group(2)) in roles and (existing is None or _unquote(g.group(1)) in roles | existing):
            out.append(re.sub(r"\s+GRANTED BY\s+" + _IDENT, "", stmt))
    return out


def missing_roles(conn: Any, wanted: list[str]) -> list[str]:
    have = {r[0] for r in conn.execute("SELECT rolname FROM pg_catalog.pg_roles").fetchall()}
    return sorted(r for r in wanted if r not in have)


def create_roles(conn: Any, script: str, roles: list[str], existing: set[str] | None = None) -> list[str]:
    """Create ``roles`` (missing on this server) from the stored statements, in ONE transaction, without
    passwords. Returns the roles created."""
    wanted = set(roles)
    unknown = sorted(wanted - set(role_names(script)))
    if unknown:
        raise RestoreError("create_roles: the backup's roles file does not define " + ", ".join(unknown)
                           + "; create them by hand (CREATE ROLE ... NOLOGIN) and rerun", "create_roles")
    stmts = statements_for(script, wanted, existing)
    try:
        with conn.transaction():
            for stmt in stmts:
                conn.execute(stmt)
    except Exception as exc:  # noqa: BLE001 - a psycopg error, reported with the statement that failed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise RestoreError(f"create_roles: creating {', '.join(sorted(wanted))} failed: {first} (a role with "
                           "SUPERUSER, REPLICATION or BYPASSRLS needs a superuser to create it); nothing was "
                           "created", "create_roles") from None
    return sorted(wanted)
