"""The Supabase restore plan: which archive entries run, in which order, and which are left to the platform."""
from __future__ import annotations

import pytest

from ansible.module_utils.lifeboat.errors import ConfigError, RestoreError
from ansible.module_utils.lifeboat.restore import supabase as sb

APP = """;
; Archive created at 2026-12-03 07:30:00 UTC
9; 2615 36749 SCHEMA - app private postgres
5; 2615 2200 SCHEMA - public pg_database_owner
3436; 0 0 COMMENT - SCHEMA public pg_database_owner
266; 1255 36766 FUNCTION public handle_new_user() postgres
3437; 0 0 ACL public FUNCTION handle_new_user() postgres
224; 1259 36721 TABLE public profiles postgres
228; 1259 36751 TABLE app private generated videos postgres
3425; 0 36721 TABLE DATA public profiles postgres
3440; 0 0 SEQUENCE SET app private generated videos_id_seq postgres
3275; 2606 36730 FK CONSTRAINT public profiles profiles_id_fkey postgres
3423; 3256 36764 POLICY public profiles Profiles are visible postgres
3420; 0 36721 ROW SECURITY public profiles postgres
4000; 0 0 DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES supabase_admin
4001; 0 0 DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES postgres
"""
PLATFORM = """218; 1259 36127 TABLE auth users supabase_auth_admin
3439; 0 0 ACL auth TABLE users supabase_auth_admin
3428; 0 36127 TABLE DATA auth users supabase_auth_admin
3431; 0 36205 TABLE DATA storage objects supabase_storage_admin
3429; 0 36156 TABLE DATA auth users_archive supabase_auth_admin
3283; 2620 36318 TRIGGER auth users on_auth_user_created supabase_auth_admin
3270; 2606 36145 CONSTRAINT auth users users_pkey supabase_auth_admin
3427; 3256 36319 POLICY storage objects Users read their own files supabase_storage_admin
3426; 0 36205 ROW SECURITY storage objects supabase_storage_admin
"""


def tags(entries):
    return [e.line.split(" ", 3)[3] for e in entries]


def test_entries_are_sorted_into_the_one_transaction_order():
    entries = sb.parse_toc(APP, "app.dump") + sb.parse_toc(PLATFORM, "platform.dump")
    scope = sb.Scope(["public", "app private"], [("auth", "users"), ("storage", "objects")])
    p = sb.plan(entries, scope, existing_schemas={"public", "auth", "storage"}, actors={"postgres"})
    assert tags(p.app_pre) == ["SCHEMA - app private postgres", "FUNCTION public handle_new_user() postgres",
                               "TABLE public profiles postgres", "TABLE app private generated videos postgres"]
    assert tags(p.platform_data) == ["TABLE DATA auth users supabase_auth_admin",
                                     "TABLE DATA storage objects supabase_storage_admin"]
    assert tags(p.app_data) == ["TABLE DATA public profiles postgres",
                                "SEQUENCE SET app private generated videos_id_seq postgres"]
    assert [e.type for e in p.app_post] == ["FK CONSTRAINT", "POLICY", "ROW SECURITY"]
    assert tags(p.platform_extras) == ["TRIGGER auth users on_auth_user_created supabase_auth_admin",
                                       "POLICY storage objects Users read their own files supabase_storage_admin"]
    assert [e.type for e in p.app_last] == ["COMMENT", "ACL", "DEFAULT ACL"]
    # the project's own public schema is kept; the platform's default privileges are not the login's to set
    assert any(s.startswith("schema public") for s in p.skipped)
    assert any("supabase_admin" in s for s in p.skipped)
    # the platform's table definitions, its ACLs, another table whose name starts like a chosen one, row level
    # security on the platform's tables (the project has it; only their owner may change it): left out
    assert len(p.left_out) == 5 and any("users_archive" in line for line in p.left_out)
    assert any("ROW SECURITY storage objects" in line for line in p.left_out)
    assert [e.archive for e in p.platform_data] == ["platform.dump", "platform.dump"]


def test_an_unknown_entry_kind_is_named():
    with pytest.raises(RestoreError, match="WIDGET public w"):
        sb.parse_toc("12; 0 0 WIDGET public w postgres\n")


def test_scope_is_checked():
    with pytest.raises(ConfigError, match="no application schema"):
        sb.Scope([]).check()
    with pytest.raises(ConfigError, match="auth is both"):
        sb.Scope(["public", "auth"]).check()


def test_old_schema_names_fit_63_bytes_and_functions_become_or_replace():
    name = sb.old_name("é" * 40, "0a1b2c3d")
    assert len(name.encode()) <= 63 and name.endswith("_lifeboat_old_0a1b2c3d")
    script = b"SET x = 1;\nCREATE FUNCTION public.f() RETURNS int\n    AS $$ SELECT 1 $$;\n-- CREATE FUNCTION\n"
    assert sb.or_replace(script).count(b"CREATE OR REPLACE FUNCTION public.f()") == 1


def test_check_blocks_quote_names():
    text = sb.fk_check_sql(["we'ird"], [("auth", "users")])
    assert "'we''ird'" in text and "('auth', 'users')" in text
    counts = sb.count_check_sql({'a"b.t': 3}, [('a"b', "t")])
    assert '"a""b"."t"' in counts and "n <> 3" in counts


def test_only_the_platform_tables_the_backup_holds_are_touched():
    entries = sb.parse_toc(PLATFORM, "platform.dump")
    scope = sb.Scope(["public"], [("auth", "users"), ("auth", "mfa_factors"), ("storage", "objects")])
    assert sb.held_tables(entries, scope) == {("auth", "users"), ("storage", "objects")}


def test_role_statements_a_non_superuser_may_run():
    stmt = "ALTER ROLE rep WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;"
    assert sb.without_superuser_defaults(stmt) == "ALTER ROLE rep WITH INHERIT NOCREATEROLE NOCREATEDB NOLOGIN;"
    assert sb.without_superuser_defaults("ALTER ROLE x WITH NOSUPERUSER NOBYPASSRLS;") == ""
    assert "BYPASSRLS" in sb.without_superuser_defaults("ALTER ROLE x WITH BYPASSRLS;")
    assert sb.without_superuser_defaults("GRANT a TO b;") == "GRANT a TO b;"


def test_publications_from_the_manifest_and_from_older_manifests_statements():
    """publication_tables when recorded; a manifest written before it: the quoted statements of publication_sql."""
    from ansible.module_utils.lifeboat.restore.supabase_plan import publications_of

    assert publications_of({"publication_tables": [["supabase_realtime", "public", "videos"]]}) == [
        ("supabase_realtime", "public", "videos")]
    older = {"publication_sql": 'ALTER PUBLICATION "supabase_realtime" ADD TABLE ONLY "public"."videos"; '
                                'ALTER PUBLICATION "supabase_realtime" ADD TABLE ONLY "My ""odd"" schema"."a.b";'}
    assert publications_of(older) == [("supabase_realtime", "public", "videos"),
                                      ("supabase_realtime", 'My "odd" schema', "a.b")]
    assert publications_of({}) == []


def test_database_settings_become_alter_database_statements():
    from ansible.module_utils.lifeboat.restore.supabase_plan import setting_sql

    assert setting_sql("postgres", "app.settings.mux_environment=it's") == \
        'ALTER DATABASE "postgres" SET "app.settings.mux_environment" = \'it\'\'s\';'
    assert setting_sql('my "db"', 'search_path="$user", public, extensions') == \
        'ALTER DATABASE "my ""db""" SET "search_path" = \'$user\', \'public\', \'extensions\';'
