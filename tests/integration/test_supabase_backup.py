"""The supabase backup profile (issue 9, deliverable 2) on the Supabase-like lab project, as its non-superuser
``postgres`` login: one snapshot, three parts (the application's roles, the platform's user data, the user's
schemas), what was left out listed in the manifest, and the manifest's stock-tool steps alone putting it all
into a NEW project (supabase_helpers.new_project) where the catalogs and the per-table content hashes equal the
source's and ``anon`` / ``authenticated`` see the same rows through RLS. A backup role that cannot read one table
is told which one, with the fix, before anything is dumped (also in check mode)."""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import psycopg
import pytest
from supabase_helpers import drop_project, new_project, sb_sql
from testlib import run_playbook

from ansible.module_utils.lifeboat import backup, verify
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.crypto import DecryptionSpec
from ansible.module_utils.lifeboat.errors import PermissionDenied
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore.pgadmin import Admin
from ansible.module_utils.lifeboat.storage import open_storage

USER_TABLES = ["public.profiles", "public.videos", "public.generated_videos", "private.mux_webhooks"]
PLATFORM_DATA = ["auth.users", "auth.identities", "storage.buckets", "storage.objects"]


@pytest.fixture(scope="module")
def sb(lab) -> dict:
    return lab["supabase"]


@pytest.fixture(scope="module")
def source(sb):
    """A project of its own with the lab's application and data (other tests may change the lab's)."""
    name = new_project(sb, with_app=True)
    try:
        # an extension in the platform's schema (where Supabase puts them) that an index of the user's needs
        sb_sql(sb, "SET ROLE postgres; CREATE EXTENSION pg_trgm WITH SCHEMA extensions;"
                   " CREATE INDEX videos_title_trgm_idx ON public.videos USING gin (title extensions.gin_trgm_ops)",
               database=name, admin=True)
        yield name
    finally:
        drop_project(sb, name)


def request(sb: dict, database: str, destination: str, user: str | None = None, password: str | None = None,
            **options) -> backup.BackupRequest:
    return backup.BackupRequest(
        target=PgTarget(host=sb["host"], port=sb["port"], user=user or sb["app_user"],
                        password=password or sb["app_password"], database=database),
        destination=destination, **options)


@pytest.fixture(scope="module")
def backed_up(sb, source, tmp_path_factory):
    dest = tmp_path_factory.mktemp("sbbackup")
    os.chmod(dest, 0o700)
    return backup.run(request(sb, source, str(dest)))["manifest"]


def content(sb: dict, database: str, table: str) -> tuple[int, str]:
    return sb_sql(sb, f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t",
                  database=database, admin=True)[0]


CATALOG = {
    "policies": "SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, qual, with_check"
                " FROM pg_policies WHERE schemaname IN ('public', 'private') ORDER BY 1, 2, 3",
    "relations": "SELECT n.nspname, c.relname, c.relkind, c.relowner::regrole::text, c.relacl::text,"
                 " c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                 " WHERE n.nspname IN ('public', 'private') ORDER BY 1, 2",
    "functions": "SELECT p.oid::regprocedure::text, p.proowner::regrole::text, p.proacl::text, p.prosecdef,"
                 " p.proconfig::text FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1",
    "indexes": "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes"
               " WHERE schemaname IN ('public', 'private') ORDER BY 1, 2, 3",
    "triggers": "SELECT tgrelid::regclass::text, tgname, tgfoid::regproc::text FROM pg_trigger"
                " WHERE NOT tgisinternal ORDER BY 1, 2",
    "publication": "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime'"
                   " ORDER BY 1, 2",
    "schemas": "SELECT nspname, nspowner::regrole::text, nspacl::text FROM pg_namespace"
               " WHERE nspname IN ('public', 'private') ORDER BY 1",
}


def visible(sb: dict, database: str) -> tuple:
    """What anon and one signed-in user see through RLS."""
    with psycopg.connect(f"host={sb['host']} port={sb['port']} user={sb['app_user']} password={sb['app_password']}"
                         f" dbname={database}") as conn:
        conn.execute("SET ROLE anon")
        anon = conn.execute("SELECT count(*), md5(string_agg(id::text, ',' ORDER BY id)) FROM public.videos").fetchone()
        conn.execute("RESET ROLE")
        user = conn.execute("SELECT id FROM auth.users WHERE email = 'member7@example.com'").fetchone()[0]
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (f'{{"sub": "{user}"}}',))
        conn.execute("SET ROLE authenticated")
        mine = conn.execute("SELECT (SELECT count(*) FROM public.videos),"
                            " (SELECT count(*) FROM public.generated_videos), public.my_video_count()").fetchone()
        conn.rollback()
    return anon, mine


def test_backup_as_postgres_lists_what_was_left_out(backed_up):
    m = backed_up
    sbm = m["supabase"]
    assert sbm["profile"] == "supabase"
    dumped = {f"{t['schema']}.{t['name']}": t["rows"] for t in m["tables"]}
    assert {k: dumped[k] for k in USER_TABLES} == {"public.profiles": 300, "public.videos": 900,
                                                   "public.generated_videos": 300, "private.mux_webhooks": 600}
    assert not [k for k in dumped if k.split(".")[0] in sbm["platform_schemas"]]
    platform = {f"{t['schema']}.{t['name']}": t["rows"] for t in sbm["platform_data"]["tables"]}
    assert {k: platform[k] for k in PLATFORM_DATA} == {"auth.users": 300, "auth.identities": 300,
                                                       "storage.buckets": 2, "storage.objects": 1350}
    left = {item["object"]: item for item in sbm["left_out"]}
    for unreadable in ("supabase_functions.hooks", "auth.schema_migrations", "storage.migrations"):
        assert "postgres cannot read it" in left[unreadable]["reason"], left[unreadable]
    assert left["pgrst_ddl_watch"]["kind"] == "event trigger"
    assert left["vault.secrets"]["kind"] == "table"
    assert left["storage.objects: Avatars are public"]["sql"].startswith('CREATE POLICY "Avatars are public"')
    assert left["supabase_admin"]["kind"] == "role"
    assert "app_reporting" in m["roles"]["names"]
    assert not [r for r in m["roles"]["names"] if r in left or r.startswith("supabase_")]
    assert sbm["app_schemas"] == ["private", "public"]
    assert len(m["scope"]["include_schemas"]) == 2   # pg_dump --schema for each of the user's schemas


def test_stock_steps_restore_into_a_new_project(sb, source, backed_up, tmp_path):
    """The manifest's supabase steps, run by bash as pasted, as the new project's postgres login."""
    target = new_project(sb)
    passfile = tmp_path / "pgpass"
    try:
        passfile.write_text(f"{sb['host']}:{sb['port']}:*:{sb['app_user']}:{sb['app_password']}\n")
        passfile.chmod(0o600)
        env = dict(os.environ, PGHOST=sb["host"], PGPORT=str(sb["port"]), PGUSER=sb["app_user"],
                   PGPASSFILE=str(passfile), TARGET_DB=target, PATH=f"{sb['bin_dir']}:{os.environ['PATH']}")
        work = tmp_path / "work"
        work.mkdir()
        for step in backed_up["restore"]["supabase"]["steps"]:
            proc = subprocess.run(["bash", "-c", "set -o pipefail; " + step], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=600, check=False)
            assert proc.returncode == 0, f"{step}\n{proc.stderr[-3000:]}"
            errors = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln and "already exists" not in ln]
            assert not errors, f"{step}\n{proc.stderr[-3000:]}"
        for table in USER_TABLES + PLATFORM_DATA:
            assert content(sb, target, table) == content(sb, source, table), table
        for what, query in CATALOG.items():
            assert sb_sql(sb, query, database=target, admin=True) == sb_sql(sb, query, database=source, admin=True), \
                what
        assert visible(sb, target) == visible(sb, source)
    finally:
        passfile.unlink(missing_ok=True)
        drop_project(sb, target)


@pytest.mark.parametrize("table", ["public.generated_videos", "auth.identities"])
def test_a_backup_role_that_cannot_read_one_table_is_told_which(sb, source, table, tmp_path):
    role = f"lb_sb_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    sb_sql(sb, f"CREATE ROLE {role} LOGIN BYPASSRLS PASSWORD '{password}'", database=source, admin=True)
    try:
        sb_sql(sb, f"GRANT CONNECT ON DATABASE {source} TO {role};"
                   f" GRANT USAGE ON SCHEMA public, private, auth, storage TO {role};"
                   f" GRANT SELECT ON ALL TABLES IN SCHEMA public, private, auth, storage TO {role};"
                   f" GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, private, auth, storage TO {role};"
                   f" REVOKE SELECT ON {table} FROM {role}", database=source, admin=True)
        req = request(sb, source, str(tmp_path), user=role, password=password, profile="supabase")
        for attempt in (backup.plan, backup.run):
            with pytest.raises(PermissionDenied) as err:
                attempt(req)
            text = str(err.value)
            schema, name = table.split(".")
            assert f"{schema}.{name}" in text or f'{schema}"."{name}' in text, text
            assert f"GRANT SELECT ON TABLE {table} TO {role}" in text, text
            assert "could not import the requested snapshot" not in text
        assert not any(tmp_path.rglob("*.json")), "a refused backup left a manifest"
    finally:
        sb_sql(sb, f"DROP OWNED BY {role}", database=source, admin=True)
        sb_sql(sb, f"DROP ROLE {role}", database="postgres", admin=True)


def test_backup_playbook_detects_the_project_and_backs_it_up_as_postgres(sb, source, tmp_path):
    """playbooks/backup.yml with a plain lifeboat_databases item (no profile: auto) for the project's postgres
    login: the supabase profile is detected; the password travels in a 0600 vars file, never argv."""
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    path = tmp_path / "backup-vars.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"lifeboat_databases": [{"name": source, "host": sb["host"], "port": sb["port"],
                                           "user": sb["app_user"]}],
                   "lifeboat_database_secrets": {source: {"password": sb["app_password"]}},
                   "lifeboat_backup_destination": str(dest)}, fh)
    try:
        proc = run_playbook("playbooks/backup.yml", "-e", f"@{path}")
    finally:
        path.unlink()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert sb["app_password"] not in proc.stdout + proc.stderr
    manifests = list(dest.rglob("manifest.json"))
    assert len(manifests) == 1, sorted(str(p) for p in dest.rglob("*"))
    doc = json.loads(manifests[0].read_text())
    assert doc["supabase"]["profile"] == "supabase"
    assert "supabase_functions.hooks" in {i["object"] for i in doc["supabase"]["left_out"]}
    assert os.path.exists(os.path.join(dest, doc["supabase"]["platform_data"]["key"]))


def test_the_parts_are_one_snapshot(sb, tmp_path, monkeypatch):
    """A user who signs up (auth.users + public.profiles, committed) after the user's schemas were dumped and
    before the platform's tables are: in neither part, so the parts agree (profiles -> auth.users holds)."""
    from ansible.module_utils.lifeboat import pipeline

    name = new_project(sb, with_app=True)
    try:
        original = pipeline.run_backup_stream
        calls = []

        def signup_after_first_part(*args, **kwargs):
            result = original(*args, **kwargs)
            calls.append(1)
            if len(calls) == 1:   # the user's schemas are stored; the platform's rows are not dumped yet
                sb_sql(sb, "INSERT INTO auth.users (id, aud, role, email) VALUES"
                           " ('00000000-0000-4000-8000-00000000abcd', 'authenticated', 'authenticated',"
                           " 'late@example.com');"
                           " INSERT INTO public.profiles (id, username)"
                           " VALUES ('00000000-0000-4000-8000-00000000abcd', 'late')", database=name, admin=True)
            return result

        monkeypatch.setattr(pipeline, "run_backup_stream", signup_after_first_part)
        dest = tmp_path / "b"
        dest.mkdir(mode=0o700)
        m = backup.run(request(sb, name, str(dest), compression="none"))["manifest"]
        assert len(calls) >= 2
        assert sb_sql(sb, "SELECT count(*) FROM auth.users", database=name, admin=True) == [(301,)]
        platform = {f"{t['schema']}.{t['name']}": t["rows"] for t in m["supabase"]["platform_data"]["tables"]}
        assert platform["auth.users"] == 300
        assert {f"{t['schema']}.{t['name']}": t["rows"] for t in m["tables"]}["public.profiles"] == 300
        data = subprocess.run([f"{sb['bin_dir']}/pg_restore", "--data-only", "-f", "-",
                               str(dest / m["supabase"]["platform_data"]["key"])],
                              capture_output=True, text=True, check=True).stdout
        assert "member7@example.com" in data and "late@example.com" not in data
    finally:
        drop_project(sb, name)


def _drill(lab: dict, dest: str, database: str, level: str):
    storage = open_storage(dest)
    ref = mf.select_backup(storage, database)
    pg = lab["postgres"]
    admin = Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"], password=pg["admin_password"],
                           database="postgres"))
    return verify.verify_one(storage, ref, DecryptionSpec(), admin, verify.Options(level=level, record=True))


def test_a_drill_checks_both_parts_and_never_calls_the_backup_failed(lab, sb, source, tmp_path):
    """A drill server is a plain PostgreSQL: the supabase profile's restore needs a project (its roles, auth and
    storage). The drill checks both dumps to the end and records the restore step as inconclusive, naming the way
    to prove it; restore.yml's choice is not turned away from a good backup (it restored as 'schema public already
    exists', recorded as failed, on the old main). A damaged platform part is still a failed drill, named."""
    dest = str(tmp_path / "dest")
    os.makedirs(dest, mode=0o700)
    manifest = backup.run(request(sb, source, dest))["manifest"]
    res = _drill(lab, dest, source, "drill")
    outcomes = {c["name"]: c["outcome"] for c in res.checks}
    assert res.outcome == "inconclusive", res.checks
    assert {outcomes[n] for n in ("sha256", "decode", "toc", "platform_data sha256", "platform_data decode",
                                  "platform_data toc")} == {"passed"}, res.checks
    restore = next(c for c in res.checks if c["name"] == "restore")
    assert restore["outcome"] == "inconclusive" and "supabase_restore.yml" in restore["detail"], restore
    assert _drill(lab, dest, source, "integrity").outcome == "passed"

    key = manifest["supabase"]["platform_data"]["key"]
    path = os.path.join(dest, key)
    with open(path, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    res = _drill(lab, dest, source, "drill")
    assert res.outcome == "failed", res.checks
    assert any(f.startswith("platform_data sha256:") for f in res.failures()), res.failures()
