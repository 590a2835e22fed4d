"""The in-place Supabase restore's short swap (issue 9, deliverable 3(b)), on the Supabase-like lab (port 55434).

The restore runs in a child process. The test waits until the restore's session is loading rows into the staged
copy of a large table (pg_stat_activity), then freezes the restore's whole process group (SIGSTOP) and judges the
state while it is frozen: the restore holds no lock stronger than ACCESS SHARE on any live table, and another
session reads and writes the live tables under a short lock_timeout. Then either the restore goes on (the project
equals the backup: content hashes, catalogs, grants, policies, sequences), or its Lifeboat process is killed (its
psql reads the end of its input without a COMMIT: the project is unchanged, nothing of the restore is left, and
the next run restores).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg import sql
from supabase_helpers import drop_project, new_project, sb_dsn, sb_sql
from testlib import REPO

from ansible.module_utils.lifeboat import backup as backupmod
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.errors import RestoreError
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore import supabase as sbrestore

APP = ["public", "private"]
TABLES = ["public.profiles", "public.videos", "public.generated_videos", "public.events", "private.mux_webhooks",
          "auth.users", "auth.identities", "auth.sessions", "auth.refresh_tokens", "auth.audit_log_entries",
          "storage.buckets", "storage.objects"]
CHILD = """
import json, sys
sys.path.insert(0, sys.argv[2])
import testlib  # noqa: F401 - makes ansible.module_utils.lifeboat importable
from ansible.module_utils.lifeboat.errors import RestoreError
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore import supabase as sbrestore
from ansible.module_utils.lifeboat.restore import supabase as sb
with open(sys.argv[1]) as fh:
    a = json.load(fh)
r = sb.restore(PgTarget(**a["target"]), a["archives"], sb.Scope(a["app"], [tuple(t) for t in a["platform"]]),
               mode="in_place", confirm=a["target"]["database"], snapshot_dir=a["snap"], bin_dirs=[a["bin"]],
               token=a["token"], expected_counts=a["counts"])
print(json.dumps(r.as_dict()))
"""


def state(s: dict, db: str) -> dict:
    """What must equal the backup's, read as the platform's superuser."""
    out: dict = {}
    with psycopg.connect(sb_dsn(s, db, admin=True), autocommit=True) as conn:
        for t in TABLES:
            if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is None:
                out[t] = None  # dropped by the incident
                continue
            out[t] = conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                  f"FROM {t} x").fetchone()  # noqa: S608 - the test's own table names
        out["schema"] = pgmeta.schema_hash(conn, schemas=APP)
        out["privileges"] = pgmeta.privileges_hashes(conn, schemas=APP)
        out["owners"] = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relacl::text, c.relrowsecurity, "
            "obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'private') ORDER BY 1, 2").fetchall()
        out["functions"] = conn.execute(
            "SELECT p.proname, pg_get_userbyid(p.proowner), p.prosecdef, p.proconfig::text, p.proacl::text "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname IN ('public', 'private') ORDER BY 1").fetchall()
        out["policies"] = conn.execute(
            "SELECT schemaname, tablename, policyname, roles::text, cmd, qual, with_check FROM pg_policies "
            "WHERE schemaname IN ('public', 'private', 'storage') ORDER BY 1, 2, 3").fetchall()
        out["sequences"] = conn.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences "
            "WHERE schemaname IN ('public', 'private') ORDER BY 1, 2").fetchall()
        out["publication"] = conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime' "
            "ORDER BY 1, 2").fetchall()
        out["triggers"] = conn.execute(
            "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c "
            "ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('auth', 'storage', 'public', 'private') AND NOT t.tgisinternal ORDER BY 1, 2"
        ).fetchall()
        out["schemas"] = conn.execute(
            "SELECT nspname, pg_get_userbyid(nspowner), nspacl::text FROM pg_namespace "
            "WHERE nspname IN ('public', 'private') ORDER BY 1").fetchall()
    return out


def diff(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def leftovers(s: dict, db: str, token: str) -> list[str]:
    return [r[0] for r in sb_sql(s, "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s OR nspname = %s",
                                 database=db, admin=True,
                                 params=(f"%lifeboat\\_%\\_{token}", f"lifeboat_stage_{token}"))]


@pytest.fixture
def project(lab, tmp_path, request):
    """The lab's Supabase-like project with a larger table (the slow part of a restore), backed up by the
    engine as its postgres login, the parts decoded by the manifest's own commands; then an incident.
    ``request.param``: (SQL run before the backup, SQL of the incident) added to those."""
    s = lab["supabase"]
    before, during = getattr(request, "param", ("", ""))
    db = new_project(s, with_app=True)
    try:
        sb_sql(s, """CREATE TABLE public.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                                  video_id bigint REFERENCES public.videos(id), kind text,
                                                  payload jsonb);
                     COMMENT ON TABLE public.events IS 'playback events';
                     GRANT SELECT ON public.events TO authenticated;
                     CREATE INDEX events_kind_idx ON public.events (kind, video_id);
                     INSERT INTO public.events (video_id, kind, payload)
                       SELECT 1 + i % 900, 'play' || (i % 7), jsonb_build_object('n', i, 'pad', repeat('x', 60))
                         FROM generate_series(1, 250000) i;""", database=db)
        if before:
            sb_sql(s, before, database=db)
        store = tmp_path / "store"
        store.mkdir(mode=0o700)
        target = PgTarget(host=s["host"], port=s["port"], user=s["app_user"], password=s["app_password"], database=db)
        doc = backupmod.run(backupmod.BackupRequest(target=target, destination=str(store)))["manifest"]
        work = tmp_path / "work"
        work.mkdir(mode=0o700)
        env = dict(os.environ, PATH=f"{s['bin_dir']}:{os.environ['PATH']}")
        for step in doc["restore"]["supabase"]["steps"]:
            if step.rstrip().endswith(("> app.dump", "> platform.dump")):
                subprocess.run(["bash", "-c", "set -o pipefail; " + step], cwd=work, env=env, check=True,
                               capture_output=True, timeout=300)
        backed_up = state(s, db)
        sb_sql(s, """DELETE FROM public.events WHERE id % 5 = 0;
                     UPDATE public.videos SET title = 'defaced' WHERE id % 2 = 0;
                     DROP TABLE private.mux_webhooks;
                     DELETE FROM storage.objects WHERE bucket_id = 'avatars';""" + during, database=db)
        yield {"s": s, "db": db, "doc": doc, "work": work, "backed_up": backed_up, "target": target}
    finally:
        drop_project(s, db)


def start(p: dict, tmp_path, token: str) -> subprocess.Popen:
    s, doc = p["s"], p["doc"]
    args = tmp_path / f"args-{token}.json"
    fd = os.open(args, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the password: never in argv
    with os.fdopen(fd, "w") as fh:
        json.dump({"target": {"host": s["host"], "port": s["port"], "user": s["app_user"],
                              "password": s["app_password"], "database": p["db"]},
                   "archives": [str(p["work"] / "app.dump"), str(p["work"] / "platform.dump")],
                   "app": doc["supabase"]["app_schemas"], "platform": doc["supabase"]["platform_tables"],
                   "snap": str(tmp_path / "safety"), "bin": s["bin_dir"], "token": token,
                   "counts": {t: v[0] for t, v in p["backed_up"].items() if t in TABLES}}, fh)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(args), str(REPO / "tests")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def restore_sessions(s: dict, db: str, token: str) -> list[tuple]:
    """(pid, query) of the restore's sessions (its safety snapshot's pg_dump, then its one transaction)."""
    return sb_sql(s, "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s", database=db, admin=True,
                  params=(f"lifeboat-supabase-restore-{token}",))


def freeze_in_the_load(p: dict, proc: subprocess.Popen, token: str, into: str = "_lifeboat_new_") -> int:
    """SIGSTOP the restore's process group once its session copies rows into the events table (staged: a schema
    named with ``into``); return the session's pid. Fails if the restore ended first."""
    s, db = p["s"], p["db"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the restore ended before its load was seen: {proc.communicate()}"
        for pid, query in restore_sessions(s, db, token):
            if query.startswith("COPY ") and into in query and ".events " in query and "TO stdout" not in query:
                os.killpg(proc.pid, signal.SIGSTOP)
                return pid
        time.sleep(0.02)
    raise AssertionError("the restore's load was never seen")


def strong_locks(s: dict, db: str, pid: int) -> list[tuple]:
    """Locks the frozen restore holds on the project's live tables (application and platform) stronger than
    ACCESS SHARE: none while it stages."""
    return sb_sql(s, """SELECT n.nspname, c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                          JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE l.pid = %s AND l.granted AND l.mode <> 'AccessShareLock'
                           AND n.nspname IN ('public', 'private', 'auth', 'storage')""",
                  database=db, admin=True, params=(pid,))


# objects outside tables that the swap moves too, and that the restored tables' definitions name
TEXT_SEARCH = ("CREATE TEXT SEARCH CONFIGURATION public.titles (COPY = pg_catalog.english); "
               "CREATE INDEX videos_title_fts ON public.videos "
               "USING gin (to_tsvector('public.titles'::regconfig, title)); "
               "CREATE STATISTICS public.videos_owner_status ON owner_id, status FROM public.videos; "
               "CREATE COLLATION public.nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false); "
               "ALTER TABLE public.profiles ADD COLUMN nickname text COLLATE public.nocase; "
               "CREATE RULE keep_pinned AS ON DELETE TO public.events WHERE old.kind = 'pinned' DO INSTEAD NOTHING;",
               "")


@pytest.mark.parametrize("project", [TEXT_SEARCH], indirect=True)
def test_the_application_reads_and_writes_while_the_restore_loads_then_gets_the_backup(project, tmp_path):
    p = project
    s, db = p["s"], p["db"]
    token = os.urandom(4).hex()
    proc = start(p, tmp_path, token)
    try:
        pid = freeze_in_the_load(p, proc, token)
        assert [q for p_, q in restore_sessions(s, db, token) if p_ == pid][0].startswith("COPY ")  # frozen there
        assert strong_locks(s, db, pid) == []
        with psycopg.connect(sb_dsn(s, db), autocommit=True) as app:  # the application, as the postgres login
            app.execute("SET lock_timeout = '3s'")
            assert app.execute("SELECT count(*) FROM public.videos WHERE title = 'defaced'").fetchone()[0] == 450
            app.execute("UPDATE public.videos SET title = 'written during the restore' WHERE id = 1")
            app.execute("INSERT INTO public.events (video_id, kind) VALUES (1, 'during')")
            app.execute("UPDATE auth.users SET raw_user_meta_data = '{\"during\": true}' WHERE id = "
                        "(SELECT id FROM auth.users ORDER BY id LIMIT 1)")
            assert app.execute("SELECT count(*) FROM storage.objects").fetchone()[0] > 0
        # a second in-place restore of the same project meanwhile is refused, naming the first
        doc = p["doc"]
        with pytest.raises(RestoreError, match=rf"another restore is running in database '{db}' \(session {pid},"):
            sbrestore.restore(p["target"], [str(p["work"] / "app.dump"), str(p["work"] / "platform.dump")],
                              sbrestore.Scope(doc["supabase"]["app_schemas"],
                                              [tuple(t) for t in doc["supabase"]["platform_tables"]]),
                              mode="in_place", confirm=db, snapshot_dir=str(tmp_path / "safety2"),
                              bin_dirs=[s["bin_dir"]])
        assert not (tmp_path / "safety2").exists()
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["swap"] == "staged"
    assert not (d := diff(state(s, db), p["backed_up"])), repr(d)[:3000]
    assert sorted(leftovers(s, db, token)) == [f"private_lifeboat_old_{token}", f"public_lifeboat_old_{token}"]
    old, aside = result["moved_aside"]["public"], result["platform_rows_aside"]
    # nothing lost: what the application wrote during the load is kept aside with what it replaced
    with psycopg.connect(sb_dsn(s, db), autocommit=True) as conn:
        assert conn.execute(sql.SQL("SELECT title FROM {}.videos WHERE id = 1").format(
            sql.Identifier(old))).fetchone()[0] == "written during the restore"
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}.{} WHERE raw_user_meta_data = '{{\"during\": true}}'")
                            .format(sql.Identifier(aside), sql.Identifier("auth.users"))).fetchone()[0] == 1
    assert [oct(os.stat(f).st_mode & 0o777) for f in result["safety_snapshot"]] == ["0o600", "0o600"]
    with psycopg.connect(sb_dsn(s, db), autocommit=True) as conn:  # the index names the restored configuration
        conn.execute("SET search_path = ''")  # so that every name prints qualified
        assert conn.execute("SELECT pg_get_indexdef('public.videos_title_fts'::regclass)").fetchone()[0].endswith(
            "USING gin (to_tsvector('public.titles'::regconfig, title))")
        assert conn.execute("SELECT stxnamespace::regnamespace::text FROM pg_statistic_ext "
                            "WHERE stxname = 'videos_owner_status' ORDER BY 1").fetchall() == [
            ("public",), (old,)]
        assert conn.execute("SELECT c.collnamespace::regnamespace::text FROM pg_attribute a JOIN pg_collation c "
                            "ON c.oid = a.attcollation WHERE a.attrelid = 'public.profiles'::regclass "
                            "AND a.attname = 'nickname'").fetchone() == ("public",)
        assert conn.execute("SELECT definition FROM pg_rules WHERE schemaname = 'public' "
                            "AND rulename = 'keep_pinned'").fetchone()[0].startswith(
            "CREATE RULE keep_pinned AS\n    ON DELETE TO public.events")


def test_a_kill_during_the_load_changes_nothing_and_the_next_run_restores(project, tmp_path):
    p = project
    s, db = p["s"], p["db"]
    incident = state(s, db)
    token = os.urandom(4).hex()
    proc = start(p, tmp_path, token)
    try:
        pid = freeze_in_the_load(p, proc, token)
        assert strong_locks(s, db, pid) == []
        os.kill(proc.pid, signal.SIGKILL)  # Lifeboat's own process; its pg_restore and psql live on
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 300
    while restore_sessions(s, db, token):  # psql reads the end of its input, without a COMMIT
        assert time.monotonic() < deadline, "the killed restore's session never ended"
        time.sleep(0.2)
    assert not (d := diff(state(s, db), incident)), repr(d)[:3000]
    assert leftovers(s, db, token) == []
    token2 = os.urandom(4).hex()
    proc = start(p, tmp_path, token2)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["swap"] == "staged"
    assert not (d := diff(state(s, db), p["backed_up"])), repr(d)[:3000]


OPERATOR = ("CREATE FUNCTION public.same_title(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE "
            "AS 'SELECT lower($1) = lower($2)'; "
            "CREATE OPERATOR public.=~= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.same_title);",
            "DROP OPERATOR public.=~= (text, text);")


@pytest.mark.parametrize("project", [OPERATOR], indirect=True)
def test_a_kind_the_swap_cannot_move_takes_one_transaction_and_a_kill_commits_nothing(project, tmp_path):
    """An operator in public: the restore takes the single long transaction (the live tables are
    locked from its start, which the result says). Lifeboat killed during its load: psql reads the end of its
    input without a COMMIT (psql --single-transaction would have committed the half-restored project)."""
    p = project
    s, db = p["s"], p["db"]
    incident = state(s, db)
    token = os.urandom(4).hex()
    proc = start(p, tmp_path, token)
    try:
        pid = freeze_in_the_load(p, proc, token, into="public.events")
        assert ("public", "videos", "AccessExclusiveLock") in strong_locks(s, db, pid)  # the application waits
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 300
    while restore_sessions(s, db, token):
        assert time.monotonic() < deadline, "the killed restore's session never ended"
        time.sleep(0.2)
    assert not (d := diff(state(s, db), incident)), repr(d)[:3000]
    assert leftovers(s, db, token) == []
    proc = start(p, tmp_path, os.urandom(4).hex())
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    swap = json.loads(out.strip().splitlines()[-1])["swap"]
    assert swap.startswith("one transaction (the backup's application schemas hold operator")
    assert not (d := diff(state(s, db), p["backed_up"])), repr(d)[:3000]
