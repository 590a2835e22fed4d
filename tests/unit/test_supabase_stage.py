"""The staged in-place Supabase restore: pg_restore's SQL pointed at the staged schemas, and the entries sorted
into staging and swap (restore/sqlrewrite.py, restore/supabase_stage.py)."""
from __future__ import annotations

from ansible.module_utils.lifeboat.restore import sqlrewrite as rw
from ansible.module_utils.lifeboat.restore import supabase as sb
from ansible.module_utils.lifeboat.restore import supabase_stage as stage

MAP = {"public": "public_lifeboat_new_ab12", "app private": "app private_lifeboat_new_ab12"}


def test_qualified_names_are_rewritten_and_bodies_literals_and_kept_names_are_not():
    r = rw.Rewriter(MAP, {"public": {"handle_new_user", "citext"}})
    text = (
        "CREATE TABLE public.videos (id bigint DEFAULT nextval('public.videos_id_seq'::regclass),"
        " s public.video_status, e public.citext, c text DEFAULT 'public.x');\n"
        "CREATE FUNCTION public.f() RETURNS bigint LANGUAGE sql AS $_$ SELECT count(*) FROM public.videos $_$;\n"
        "CREATE TRIGGER t AFTER INSERT ON public.videos FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();\n"
        "SELECT pg_catalog.setval('public.videos_id_seq', 120, true);\n"
        'CREATE TABLE "app private"."generated videos" (v bigint REFERENCES public.videos(id));\n'
        'GRANT USAGE ON SCHEMA "app private" TO anon; -- public.x in a comment\n'
        "COMMENT ON COLUMN public.videos.public IS 'it''s public.videos';\n"
        "CREATE VIEW public.v AS SELECT videos.public FROM public.videos WHERE x OPERATOR(public.=) 1;\n"
        "/* public.a /* nested public.b */ */ SELECT E'\\\\' || 'public.c';\n"
    )
    assert rw.Rewriter(MAP).sql("") == ""
    out = r.sql(text)
    assert out == (
        "CREATE TABLE public_lifeboat_new_ab12.videos (id bigint DEFAULT "
        "nextval('public_lifeboat_new_ab12.videos_id_seq'::regclass),"
        " s public_lifeboat_new_ab12.video_status, e public.citext, c text DEFAULT 'public.x');\n"
        "CREATE FUNCTION public_lifeboat_new_ab12.f() RETURNS bigint LANGUAGE sql AS "
        "$_$ SELECT count(*) FROM public.videos $_$;\n"
        "CREATE TRIGGER t AFTER INSERT ON public_lifeboat_new_ab12.videos FOR EACH ROW EXECUTE FUNCTION "
        "public.handle_new_user();\n"
        "SELECT pg_catalog.setval('public_lifeboat_new_ab12.videos_id_seq', 120, true);\n"
        'CREATE TABLE "app private_lifeboat_new_ab12"."generated videos" (v bigint REFERENCES '
        "public_lifeboat_new_ab12.videos(id));\n"
        'GRANT USAGE ON SCHEMA "app private_lifeboat_new_ab12" TO anon; -- public.x in a comment\n'
        "COMMENT ON COLUMN public_lifeboat_new_ab12.videos.public IS 'it''s public.videos';\n"
        "CREATE VIEW public_lifeboat_new_ab12.v AS SELECT videos.public FROM public_lifeboat_new_ab12.videos "
        "WHERE x OPERATOR(public.=) 1;\n"
        "/* public.a /* nested public.b */ */ SELECT E'\\\\' || 'public.c';\n"
    )


def test_a_long_schema_name_is_cut_to_63_bytes_and_quoted_when_needed():
    name = stage.new_name("é" * 40, "ab12")
    assert len(name.encode()) <= 63 and name.endswith("_lifeboat_new_ab12")
    assert rw.quote_ident("Odd") == '"Odd"' and rw.quote_ident("plain_1") == "plain_1"
    assert rw.Rewriter({"Odd": "Odd_new"}).sql('ALTER TABLE "Odd".t OWNER TO x;') \
        == 'ALTER TABLE "Odd_new".t OWNER TO x;'


def test_statements_split_at_top_level_semicolons_and_foreign_keys_name_their_target():
    text = ("SET a = 1;\nALTER TABLE ONLY public.p ADD CONSTRAINT \"x;y\" FOREIGN KEY (id) REFERENCES auth.users(id);"
            "\nCREATE FUNCTION f() AS $$ a; b $$;\n")
    parts = rw.statements(text)
    assert len(parts) == 3
    assert rw.references_schema(parts[1]) == "auth"
    assert rw.references_schema('ALTER TABLE x ADD CONSTRAINT c FOREIGN KEY (a) REFERENCES "app private".t(a);') \
        == "app private"
    assert rw.copy_columns('COPY auth.users (id, "Email") FROM stdin;\n') == 'id, "Email"'


APP = """5; 2615 2200 SCHEMA - public pg_database_owner
9; 2615 36749 SCHEMA - app private postgres
3436; 0 0 COMMENT - SCHEMA public pg_database_owner
3437; 0 0 ACL - SCHEMA app private postgres
266; 1255 36766 FUNCTION public handle_new_user() postgres
267; 1255 36767 FUNCTION public my_count() postgres
3438; 0 0 ACL public FUNCTION handle_new_user() postgres
3439; 0 0 ACL public FUNCTION my_count() postgres
224; 1259 36721 TABLE public profiles postgres
228; 1259 36751 TABLE app private generated videos postgres
3425; 0 36721 TABLE DATA public profiles postgres
3440; 0 0 SEQUENCE SET app private generated videos_id_seq postgres
3275; 2606 36730 FK CONSTRAINT public profiles profiles_id_fkey postgres
3276; 2606 36731 CONSTRAINT public profiles profiles_pkey postgres
3423; 3256 36764 POLICY public profiles Profiles are visible postgres
4001; 0 0 DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES postgres
"""
PLATFORM = """3428; 0 36127 TABLE DATA auth users supabase_auth_admin
3441; 0 0 SEQUENCE SET auth refresh_tokens_id_seq supabase_auth_admin
3283; 2620 36318 TRIGGER auth users on_auth_user_created supabase_auth_admin
"""


def kinds(st, kind):
    return [e.line.split(" ", 3)[3] for k, item in st.steps if k == kind for e in item[1]]


def test_entries_are_staged_or_wait_for_the_swap():
    scope = sb.Scope(["public", "app private"], [("auth", "users")])
    p = sb.plan(sb.parse_toc(APP, "app.dump") + sb.parse_toc(PLATFORM, "platform.dump"), scope,
                existing_schemas={"public", "auth"}, actors={"postgres"}, foreign_schemas={"public"})
    assert stage.fallback_reason(p) is None
    st = stage.build(p, scope.app_schemas, {"public", "auth"}, scope.platform_tables, "ab12",
                     {"public": {"handle_new_user"}}, {"public.handle_new_user"})
    assert st.live == ["public"] and st.created == ["app private"]
    assert st.moved == {"public": "public_lifeboat_old_ab12"} and st.rows_aside == "public_lifeboat_old_ab12"
    # the function a platform trigger calls is replaced in place, in the swap, with its grants
    assert kinds(st, "defer_replace") == ["FUNCTION public handle_new_user() postgres"]
    assert "ACL public FUNCTION handle_new_user() postgres" in kinds(st, "defer")
    # the live public keeps its own default privileges' statement for the swap; the new schema is staged whole
    assert "DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES postgres" in kinds(st, "defer")
    assert "SCHEMA - app private postgres" in kinds(st, "stage")
    assert "ACL - SCHEMA app private postgres" in kinds(st, "stage")
    assert "FUNCTION public my_count() postgres" in kinds(st, "stage")
    assert "SEQUENCE SET auth refresh_tokens_id_seq supabase_auth_admin" in kinds(st, "defer")
    assert kinds(st, "defer_extra") == ["TRIGGER auth users on_auth_user_created supabase_auth_admin"]
    assert kinds(st, "fk") == ["FK CONSTRAINT public profiles profiles_id_fkey postgres"]
    assert [item[1][0].type for k, item in st.steps if k == "data"] == ["TABLE DATA", "TABLE DATA"]
    # the grants of the staged objects are reset (then set from the backup) before the ACL entries
    order = [k if k != "sql" else item.split("\n", 1)[0] for k, item in st.steps]
    assert order.index("DO $lifeboat_acl$") < max(i for i, (k, item) in enumerate(st.steps)
                                                  if k == "stage" and item[1][-1].type == "ACL")


def test_the_swap_moves_both_ways_keeps_platform_rows_aside_and_checks_foreign_keys():
    scope = sb.Scope(["public", "app private"], [("auth", "users")])
    p = sb.plan(sb.parse_toc(APP, "app.dump") + sb.parse_toc(PLATFORM, "platform.dump"), scope,
                existing_schemas={"public", "auth"}, actors={"postgres"}, foreign_schemas={"public"})
    st = stage.build(p, scope.app_schemas, {"public", "auth"}, scope.platform_tables, "ab12", {}, set())
    head = stage.head_sql(st, "ab12", st.live)
    assert 'CREATE SCHEMA public_lifeboat_new_ab12;' in head.replace('"', "")
    assert 'CREATE TABLE "lifeboat_stage_ab12"."t0" (LIKE "auth"."users");' in head
    swap = stage.swap_sql(st, "ab12", [42], ["-- deferred"], ["CREATE TRIGGER x"], ["ALTER TABLE fk"],
                          {("auth", "users"): "id, email"}, [("TRIGGER", "auth", "users", "x")])
    order = [swap.index(x) for x in (
        "LOCK TABLE \"auth\".\"users\" IN SHARE ROW EXCLUSIVE MODE", "old text := 'public_lifeboat_old_ab12'",
        "s text := 'public_lifeboat_new_ab12'; old text := 'public'", 'DROP SCHEMA "public_lifeboat_new_ab12";',
        'ALTER SCHEMA "app private_lifeboat_new_ab12" RENAME TO "app private";', "-- deferred",
        'CREATE TABLE "public_lifeboat_old_ab12"."auth.users" AS SELECT * FROM "auth"."users";',
        'DELETE FROM "auth"."users";',
        'INSERT INTO "auth"."users" (id, email) OVERRIDING SYSTEM VALUE SELECT id, email FROM '
        '"lifeboat_stage_ab12"."t0";', 'DROP TRIGGER "x" ON "auth"."users";', "CREATE TRIGGER x",
        "ALTER TABLE fk", 'DROP SCHEMA "lifeboat_stage_ab12" CASCADE;')]
    assert order == sorted(order)
    assert "ARRAY[42]::oid[]" in swap


def test_object_kinds_the_swap_cannot_move_take_the_one_transaction_path():
    toc = APP + "300; 2617 40000 OPERATOR public === (text, text) postgres\n"
    p = sb.plan(sb.parse_toc(toc, "app.dump"), sb.Scope(["public"], []), existing_schemas={"public"},
                actors={"postgres"})
    assert "operator" in stage.fallback_reason(p)
