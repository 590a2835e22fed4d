"""PostgreSQL administration for restores: databases (create, drop, properties, swap, sessions),
scratch databases, the administrative connection (``Admin``) and client binaries.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.errors import (
    NotFound,
    RestoreError,
    SafetyError,
)
from ansible.module_utils.lifeboat import runlock
from ansible.module_utils.lifeboat.pgconn import find_client, server_major
from ansible.module_utils.lifeboat.pgmeta import split_guc_list  # noqa: F401 - re-exported (restore.split_guc_list)
from ansible.module_utils.lifeboat.restore.names import scratch_age, scratch_name


def ident(name: str):
    return sql.Identifier(name)


def database_exists(conn: Any, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)).fetchone() is not None


def other_sessions(conn: Any, name: str) -> list[dict[str, Any]]:
    """Other sessions on ``name`` that would block a restore into it.

    Autovacuum workers are left out: the server cancels them itself for DROP and
    RENAME, and one often starts right after an incident deleted rows.
    """
    rows = conn.execute(
        "SELECT pid, usename, application_name, client_addr::text FROM pg_catalog.pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid() "
        "AND backend_type IS DISTINCT FROM 'autovacuum worker'", (name,)).fetchall()
    return [{"pid": r[0], "user": r[1], "application": r[2], "client": r[3]} for r in rows]


def create_database(conn: Any, name: str, owner: str | None = None, locale: dict[str, Any] | None = None) -> None:
    """CREATE DATABASE from template0, with the encoding and locale of the backup's database when known.

    A target server that cannot provide that locale fails here, before any data moves, naming it: a database
    created with another locale would silently compute other values (``lower()``, stored generated columns,
    ``ORDER BY``) than the source did.
    """
    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident(name))
    if owner:
        query += sql.SQL(" OWNER {}").format(ident(owner))
    loc = locale or {}
    if loc.get("encoding"):
        query += sql.SQL(" ENCODING {}").format(sql.Literal(loc["encoding"]))
    provider = loc.get("locale_provider")
    if provider:
        query += sql.SQL(" LOCALE_PROVIDER {}").format(sql.SQL(provider))
    if loc.get("collate"):
        query += sql.SQL(" LC_COLLATE {}").format(sql.Literal(loc["collate"]))
    if loc.get("ctype"):
        query += sql.SQL(" LC_CTYPE {}").format(sql.Literal(loc["ctype"]))
    if provider == "icu" and loc.get("icu_locale"):
        query += sql.SQL(" ICU_LOCALE {}").format(sql.Literal(loc["icu_locale"]))
    if provider == "icu" and loc.get("icu_rules"):
        query += sql.SQL(" ICU_RULES {}").format(sql.Literal(loc["icu_rules"]))
    if provider == "builtin" and loc.get("locale"):
        query += sql.SQL(" BUILTIN_LOCALE {}").format(sql.Literal(loc["locale"]))
    try:
        conn.execute(query)
    except psycopg.Error as exc:
        if not loc:
            raise
        wanted = ", ".join(f"{k} {v}" for k, v in loc.items())
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise RestoreError(
            f"the target server cannot create database '{name}' with the backup's encoding and locale ({wanted}): "
            f"{first}. Nothing was restored. Install or generate that locale on the target server (e.g. "
            "locale-gen, or a server built with ICU), or restore onto a server that has it: a database with "
            "another locale would compute other values for lower(), ORDER BY and stored generated columns",
            "database") from None


def drop_database(conn: Any, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(name)))


def database_properties(conn: Any, name: str) -> dict[str, Any]:
    """Owner, ACL, settings, comment, encoding and locale of database ``name`` (pgmeta.database_facts)."""
    facts = pgmeta.database_facts(conn, name)
    if not facts:
        raise NotFound(f"database '{name}' does not exist", "database")
    return facts


def _setting(item: str):
    """``name=value`` from pg_db_role_setting -> ``name = 'value'`` (a list setting: one literal per element)."""
    key, _, value = item.partition("=")
    if key.lower() in pgmeta.GUC_LIST_QUOTE:
        return sql.SQL("{} = {}").format(ident(key), sql.SQL(", ").join(sql.Literal(v)
                                                                          for v in pgmeta.split_guc_list(value)))
    return sql.SQL("{} = {}").format(ident(key), sql.Literal(value))


def apply_database_properties(conn: Any, name: str, props: dict[str, Any]) -> None:
    """Give database ``name`` the owner, ACL, settings and comment captured from another database (or recorded in
    a manifest's ``database`` section)."""
    db = ident(name)
    if props.get("owner"):
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, ident(props["owner"])))
    if not props.get("default_acl", True):
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        for grantee, priv, grantable in props["acl"]:
            who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else ident(grantee)
            conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(priv), db, who, sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    for item in props.get("settings", []):
        conn.execute(sql.SQL("ALTER DATABASE {} SET {}").format(db, _setting(item)))
    for role, item in props.get("role_settings", []):
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET {}").format(ident(role), db, _setting(item)))
    if props.get("comment"):
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(props["comment"])))


def terminate_sessions(conn: Any, name: str, timeout: float = 30.0) -> int:
    """Terminate every other session on ``name`` and wait until they are gone."""
    rows = conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()", (name,)).fetchall()
    deadline = time.monotonic() + timeout
    while other_sessions(conn, name):
        if time.monotonic() > deadline:
            raise SafetyError(f"sessions on database '{name}' did not end within {timeout:.0f}s after "
                              "pg_terminate_backend")
        time.sleep(0.1)
    return len(rows)


def swap_databases(conn: Any, database: str, new_name: str, old_name: str, comment: str | None = None) -> int:
    """Put ``new_name`` in place of ``database``; the previous one becomes ``old_name``.

    New connections to the original are refused first (ALLOW_CONNECTIONS false),
    its sessions terminated, then both renames happen in one transaction: either
    both or none. Returns the number of sessions terminated.
    """
    if database_exists(conn, old_name):
        raise SafetyError(f"cannot swap: database '{old_name}' already exists")
    # crash safety: the new database's comment (mark_owned, kind swap) says which database this swap is about;
    # if this process dies between here and the commit below, repair_interrupted (the next restore or drill)
    # allows connections again. The renames, re-allowing the old one and clearing the mark commit together.
    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident(database)))
    try:
        terminated = terminate_sessions(conn, database)
        with conn.transaction():
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(database), ident(old_name)))
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(new_name), ident(database)))
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident(old_name)))
            # the swap's mark goes; the database's own comment (kept from the one it replaces) takes its place
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident(database), sql.Literal(comment or None)))
    finally:
        # whichever name the previous database has now, let the operator in again
        for name in (old_name, database):
            if database_exists(conn, name):
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident(name)))
    return terminated


def reopen_connections(admin: "Admin", *names: str) -> None:
    """Best effort, on a fresh connection: ALLOW_CONNECTIONS true for the databases that exist."""
    with contextlib.suppress(Exception), admin.connect() as conn:
        for name in names:
            if database_exists(conn, name):
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident(name)))


OWNED_MARK = "lifeboat-owned "


def _owner_key(name: str) -> int:
    return runlock.key_for("scratch", name)


@contextlib.contextmanager
def owned_database(admin: "Admin", name: str) -> Iterator[Any]:
    """Hold the owner lock of database ``name`` (see runlock.py) on a maintenance connection of its own.

    While it is held no sweep of any run, on any host, drops or repairs the database; the server
    releases it when this process ends, however it ends.
    """
    conn = admin.connect()
    try:
        conn.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (runlock.CLASS_SCRATCH, _owner_key(name)))
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def mark_owned(conn: Any, name: str, kind: str, **info: str) -> None:
    """Record the owner run in the database's comment: what it is for, which host and PID made it, when."""
    doc = {"kind": kind, "name": name, "owner": runlock.owner_tag(kind), "since": mf.iso(mf.utcnow()), **info}
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident(name), sql.Literal(OWNED_MARK + json.dumps(
        doc, sort_keys=True))))


def _owned(conn: Any) -> list[tuple[str, bool, dict[str, Any]]]:
    rows = conn.execute(
        "SELECT d.datname, d.datallowconn, pg_catalog.shobj_description(d.oid, 'pg_database') "
        "FROM pg_catalog.pg_database d WHERE pg_catalog.shobj_description(d.oid, 'pg_database') LIKE %s",
        (OWNED_MARK + "%",)).fetchall()
    out = []
    for name, allow, comment in rows:
        try:
            out.append((name, bool(allow), json.loads(comment[len(OWNED_MARK):])))
        except ValueError:
            continue
    return out


def _allow(conn: Any, name: str) -> bool:
    row = conn.execute("SELECT datallowconn FROM pg_catalog.pg_database WHERE datname = %s", (name,)).fetchone()
    if row is None or row[0]:
        return False
    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident(name)))
    return True


def repair_interrupted(conn: Any) -> list[str]:
    """Undo what killed runs left: an interrupted swap, scratch and new databases of dead runs.

    Only databases whose comment names a Lifeboat owner run and whose owner lock is free (the
    run is gone, on whatever host it ran). Returns one line per repair, for the result.
    """
    done = []
    for name, _allow_now, info in _owned(conn):
        key = _owner_key(str(info.get("name", name)))
        if not runlock.try_lock(conn, runlock.CLASS_SCRATCH, key):
            continue  # its run is alive
        try:
            who = f"left by {info.get('owner', 'a Lifeboat run')} at {info.get('since', '?')}"
            if info.get("kind") == "swap":
                target, old = str(info.get("database", "")), str(info.get("old", ""))
                for db in (target, old):
                    if db and _allow(conn, db):
                        done.append(f"database '{db}' accepted no connections (a swap was killed after "
                                    f"ALLOW_CONNECTIONS false, {who}): connections allowed again")
                if name == info.get("name"):  # the renames never happened: the new database is a leftover
                    drop_database(conn, name)
                    done.append(f"dropped '{name}', the new database of an interrupted swap of '{target}' ({who}); "
                                f"'{target}' was never replaced")
                else:  # renamed into place: the swap itself completed
                    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(ident(name)))
                    done.append(f"'{name}' is the restored database of a swap that completed ({who}); its "
                                "Lifeboat mark was removed")
            else:
                drop_database(conn, name)
                done.append(f"dropped {info.get('kind', 'scratch')} database '{name}' ({who})")
        finally:
            conn.execute("SELECT pg_catalog.pg_advisory_unlock(%s, %s)", (runlock.CLASS_SCRATCH, key))
    return done


def sweep_scratch(conn: Any, older_than_hours: float, now: _dt.datetime | None = None) -> list[str]:
    """Drop scratch databases (drill/staging) of dead runs, and those older than the given age and not in use.

    A scratch database whose owner lock is held belongs to a live run (on any host) and is never dropped,
    whatever its age. Returns the names dropped.
    """
    now = now or mf.utcnow()
    dropped = []
    for line in repair_interrupted(conn):
        dropped.append(line)
    names = [r[0] for r in conn.execute(
        "SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE 'lifeboat\\_drill\\_%' "
        "OR datname LIKE 'lifeboat\\_stage\\_%'").fetchall()]
    for name in names:
        age = scratch_age(name, now)
        # a scratch database still in use (a long drill or partial restore) is left alone
        if age is None or age < _dt.timedelta(hours=older_than_hours) or other_sessions(conn, name):
            continue
        key = _owner_key(name)
        if not runlock.try_lock(conn, runlock.CLASS_SCRATCH, key):
            continue  # its run is alive
        try:
            drop_database(conn, name)
            dropped.append(name)
        finally:
            conn.execute("SELECT pg_catalog.pg_advisory_unlock(%s, %s)", (runlock.CLASS_SCRATCH, key))
    return dropped


@contextlib.contextmanager
def scratch_database(admin, kind: str = "drill", owner: str | None = None,
                     locale: dict[str, Any] | None = None) -> Iterator[str]:
    """A database with a unique scratch name (and the backup's encoding and locale, when given), ALWAYS dropped
    on exit (also on failure).

    Its owner lock is held from before it exists until it is dropped, and its comment names this run,
    so that a concurrent sweep never drops it and a later one drops it if this run is killed.
    """
    name = scratch_name(kind, mf.utcnow())
    with owned_database(admin, name):
        with admin.connect("postgres" if not admin.maintenance_db else admin.maintenance_db) as conn:
            create_database(conn, name, owner, locale)
            mark_owned(conn, name, kind)
        try:
            yield name
        finally:
            with admin.connect(admin.maintenance_db or "postgres") as conn:
                drop_database(conn, name)


@dataclass
class Admin:
    """An administrative connection target (PgTarget) plus the maintenance database and client binaries."""

    target: Any                     # pgconn.PgTarget
    maintenance_db: str = "postgres"
    bin_dirs: list[str] | None = None
    _major: int | None = None

    def connect(self, database: str | None = None):
        return self.target.connect(database or self.maintenance_db)

    def server_major(self) -> int:
        if self._major is None:
            with self.connect() as conn:
                num = int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0])
            self._major = server_major(num)
        return self._major

    def client(self, name: str) -> str:
        return find_client(name, self.server_major(), self.bin_dirs)[0]


def dbname_arg(database: str) -> str:
    """``-d`` value naming exactly this database: a conninfo string, so that a name holding ``=`` or
    starting with ``postgresql://`` is never parsed as connection options by pg_restore/psql/pg_dump."""
    return "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"
