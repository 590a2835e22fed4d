"""The Supabase-like lab project (lab.json key ``supabase``; roles/lab/tasks/supabase.yml).

``new_project`` makes a fresh, empty project in a NEW database of the Supabase-like cluster: the platform
(roles/lab/files/supabase_platform.sql: roles, schemas auth/storage/extensions/realtime/graphql_public/vault/
supabase_functions, their tables with no user data, grants, default privileges, the supabase_realtime
publication, the event trigger, database settings), no application. ``drop_project`` removes it. The roles
are cluster-wide: a new project shares them with the lab's project (database ``postgres``).
"""
from __future__ import annotations

import os
import subprocess

import psycopg
from psycopg import sql
from testlib import REPO, Conninfo, unique

PLATFORM_SQL = REPO / "roles/lab/files/supabase_platform.sql"
APP_SQL = REPO / "roles/lab/files/supabase_app.sql"


def sb_dsn(sb: dict, database: str | None = None, admin: bool = False) -> str:
    """conninfo for the project's postgres login (or supabase_admin with admin=True)."""
    user, password = (sb["admin_user"], sb["admin_password"]) if admin else (sb["app_user"], sb["app_password"])
    return Conninfo(f"host={sb['host']} port={sb['port']} user={user} password={password} "
                    f"dbname={database or sb['database']}")


def sb_sql(sb: dict, query: str, database: str | None = None, admin: bool = False,
           params: tuple | None = None) -> list[tuple]:
    with psycopg.connect(sb_dsn(sb, database, admin), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def run_sql_file(sb: dict, database: str, path) -> None:
    """Run a lab SQL file (psql meta-commands included) as supabase_admin, in one transaction."""
    env = dict(os.environ, PGPASSWORD=sb["admin_password"])  # env, not argv
    proc = subprocess.run(
        [f"{sb['bin_dir']}/psql", "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1",
         "-h", sb["host"], "-p", str(sb["port"]), "-U", sb["admin_user"], "-d", database, "-f", str(path)],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{path.name} into {database} failed: {proc.stderr.strip()}")


def new_project(sb: dict, name: str | None = None, with_app: bool = False) -> str:
    """Create database NAME (default: a unique one) owned by supabase_admin and set up the platform in it;
    with_app=True also loads the lab's application and its data (no storage objects are uploaded)."""
    name = name or unique("sbproj").replace("-", "_")
    with psycopg.connect(sb_dsn(sb, "postgres", admin=True), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        run_sql_file(sb, name, PLATFORM_SQL)
        if with_app:
            run_sql_file(sb, name, APP_SQL)
    except BaseException:
        drop_project(sb, name)
        raise
    return name


def drop_project(sb: dict, name: str) -> None:
    if name == sb["database"]:
        raise ValueError(f"refusing to drop the lab's own project database {name}")
    with psycopg.connect(sb_dsn(sb, "postgres", admin=True), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
