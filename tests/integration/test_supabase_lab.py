"""The Supabase-like lab target (issue 9, deliverable 1): the platform's shape as the postgres login meets it,
the unversioned storage buckets holding what storage.objects lists, and new_project (a fresh empty project)."""
from __future__ import annotations

import psycopg
import pytest
from supabase_helpers import drop_project, new_project, sb_dsn, sb_sql
from testlib import s3_client


@pytest.fixture(scope="module")
def sb(lab) -> dict:
    return lab["supabase"]


def test_postgres_login_has_the_platform_attributes_and_supabase_admin_is_the_superuser(sb):
    rows = dict((r[0], r[1:]) for r in sb_sql(sb, (
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname IN ('postgres', 'supabase_admin')")))
    assert rows["postgres"] == (False, True, True, True, True, True)
    assert rows["supabase_admin"][0] is True
    assert sb_sql(sb, "SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()") == [
        ("supabase_admin",)]
    assert sb_sql(sb, "SELECT current_setting('search_path')") == [('"$user", public, extensions',)]
    assert sb_sql(sb, "SELECT current_setting('app.settings.mux_environment')") == [("lab",)]


@pytest.mark.parametrize("table", ["supabase_functions.hooks", "auth.schema_migrations", "storage.migrations",
                                   "realtime.schema_migrations"])
def test_platform_bookkeeping_is_unreadable_for_postgres(sb, table):
    with psycopg.connect(sb_dsn(sb), autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"SELECT 1 FROM {table} LIMIT 1")


def test_platform_and_application_objects(sb):
    counts = sb_sql(sb, "SELECT (SELECT count(*) FROM auth.users), (SELECT count(*) FROM auth.identities),"
                        " (SELECT count(*) FROM public.profiles), (SELECT count(*) FROM public.videos),"
                        " (SELECT count(*) FROM public.generated_videos), (SELECT count(*) FROM storage.buckets)")
    assert counts == [(300, 300, 300, 900, 300, 2)]
    assert sb_sql(sb, "SELECT evtname, evtowner::regrole::text FROM pg_event_trigger") == [
        ("pgrst_ddl_watch", "supabase_admin")]
    assert sb_sql(sb, "SELECT schemaname || '.' || tablename FROM pg_publication_tables"
                      " WHERE pubname = 'supabase_realtime'") == [("public.videos",)]
    roles = {r[0] for r in sb_sql(sb, "SELECT DISTINCT unnest(roles)::text FROM pg_policies")}
    assert {"authenticated", "anon"} <= roles
    schemas = {r[0] for r in sb_sql(sb, "SELECT nspname FROM pg_namespace")}
    assert {"auth", "storage", "extensions", "realtime", "graphql_public", "vault", "supabase_functions",
            "private"} <= schemas


def test_rls_decides_what_the_api_roles_see(sb):
    with psycopg.connect(sb_dsn(sb)) as conn:
        conn.execute("SET ROLE anon")
        assert conn.execute("SELECT count(*) FROM public.videos").fetchone() == (300,)
        conn.execute("RESET ROLE")
        user = conn.execute("SELECT id FROM auth.users WHERE email = 'member7@example.com'").fetchone()[0]
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (f'{{"sub": "{user}"}}',))
        conn.execute("SET ROLE authenticated")
        # own three videos (one public) + the 299 other public ones
        assert conn.execute("SELECT count(*) FROM public.videos").fetchone() == (302,)
        conn.rollback()


def test_storage_buckets_are_unversioned_and_hold_what_storage_objects_lists(lab, sb):
    s3 = s3_client(lab["s3"][sb["storage"]["s3"]])
    listed = {(b, n) for b, n in sb_sql(sb, "SELECT bucket_id, name FROM storage.objects")}
    assert sorted({b for b, _ in listed}) == sb["storage"]["buckets"]
    present = set()
    for bucket in sb["storage"]["buckets"]:
        assert s3.get_bucket_versioning(Bucket=bucket).get("Status") is None
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            present.update((bucket, o["Key"]) for o in page.get("Contents", []))
    assert listed <= present


def test_new_project_is_the_platform_without_user_data(sb):
    name = new_project(sb)
    try:
        got = sb_sql(sb, "SELECT (SELECT count(*) FROM auth.users), (SELECT count(*) FROM storage.objects),"
                         " (SELECT count(*) FROM pg_tables WHERE schemaname = 'public'),"
                         " (SELECT count(*) FROM pg_publication WHERE pubname = 'supabase_realtime'),"
                         " current_setting('search_path')", database=name)
        assert got == [(0, 0, 0, 1, '"$user", public, extensions')]
        with psycopg.connect(sb_dsn(sb, name), autocommit=True) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM supabase_functions.hooks")
    finally:
        drop_project(sb, name)
    assert not sb_sql(sb, f"SELECT 1 FROM pg_database WHERE datname = '{name}'", database="postgres", admin=True)
