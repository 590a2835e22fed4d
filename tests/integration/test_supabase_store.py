"""A Supabase backup restored from the backup store by its manifest, on the Supabase-like lab (port 55434).

The backup module's supabase profile writes the parts (age-encrypted, zstd) to a scratch bucket of the lab's
SeaweedFS; restore/supabase_fetch.py chooses the backup (by id here), checks each part's sha256 while it streams,
decrypts and decompresses it into a private directory, and restores it as the new project's ``postgres`` login.
What must come back exactly: per-table content hashes (application, auth, storage), the application's catalogs
(definitions, owners, grants, function privileges: the manifest's hashes), the policies, the membership of the
``supabase_realtime`` publication, the database's settings, and the rows anon/authenticated see through RLS.
"""
from __future__ import annotations

import os

import psycopg
import pytest
from psycopg import sql
from supabase_helpers import drop_project, new_project, sb_dsn, sb_sql
from testlib import s3_client

from ansible.module_utils.lifeboat import backup as backupmod
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.crypto import DecryptionSpec, EncryptionSpec
from ansible.module_utils.lifeboat.errors import IntegrityError
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore.supabase_fetch import restore_from_store
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import S3Storage

TABLES = ["public.profiles", "public.videos", "public.generated_videos", "private.mux_webhooks",
          "auth.users", "auth.identities", "auth.sessions", "auth.refresh_tokens", "auth.audit_log_entries",
          "storage.buckets", "storage.objects"]


def state(s: dict, db: str) -> dict:
    """Everything that must come back exactly, read as the platform's superuser."""
    out: dict = {}
    with psycopg.connect(sb_dsn(s, db, admin=True), autocommit=True) as conn:
        for t in TABLES:
            out[t] = conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                  f"FROM {t} x").fetchone()  # noqa: S608 - the test's own table names
        out["schema"] = pgmeta.schema_hash(conn, schemas=["public", "private"])
        out["privileges"] = pgmeta.privileges_hashes(conn, schemas=["public", "private"])
        out["policies"] = conn.execute(
            "SELECT schemaname, tablename, policyname, roles::text, cmd, qual, with_check FROM pg_policies "
            "WHERE schemaname IN ('public', 'private', 'storage') ORDER BY 1, 2, 3").fetchall()
        out["publication"] = conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime' "
            "ORDER BY 1, 2").fetchall()
        out["settings"] = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = current_database() AND s.setrole = 0").fetchall()
        out["platform_triggers"] = conn.execute(
            "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c "
            "ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('auth', 'storage') AND NOT t.tgisinternal ORDER BY 1, 2").fetchall()
        uid = conn.execute("SELECT id::text FROM auth.users ORDER BY id LIMIT 1 OFFSET 6").fetchone()[0]
        for role in ("anon", "authenticated"):
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (uid,))
                out[f"rls {role} videos"] = conn.execute(
                    "SELECT count(*), md5(coalesce(string_agg(id::text, ',' ORDER BY id), '')) FROM public.videos"
                ).fetchone()
                out[f"rls {role} files"] = conn.execute("SELECT count(*) FROM storage.objects").fetchone()[0]
    return out


def diff(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def login(s: dict, db: str) -> PgTarget:
    return PgTarget(host=s["host"], port=s["port"], user=s["app_user"], password=s["app_password"], database=db)


def store_settings(endpoint: dict) -> S3Settings:
    return S3Settings(endpoint=endpoint["endpoint"], region=endpoint["region"], access_key=endpoint["access_key"],
                      secret_key=endpoint["secret_key"])


def take_backup(lab: dict, db: str, bucket: str) -> dict:
    s = lab["supabase"]
    req = backupmod.BackupRequest(target=login(s, db), destination=f"s3://{bucket}/db",
                                  encryption=EncryptionSpec("age", [lab["age"]["recipient"]]),
                                  s3=store_settings(lab["s3"]["backup"]), content_hashes=True)
    return backupmod.run(req)["manifest"]


def run_as_admin(s: dict, db: str, statements: list[str]) -> None:
    for statement in statements:
        sb_sql(s, statement, database=db, admin=True)


@pytest.fixture
def projects(lab):
    made: list[str] = []
    s = lab["supabase"]

    def make(with_app: bool = False) -> str:
        made.append(new_project(s, with_app=with_app))
        return made[-1]

    try:
        yield make
    finally:
        for db in made:
            drop_project(s, db)


def test_restore_from_the_store_by_id_into_a_new_project_then_in_place(lab, projects, scratch_bucket, tmp_path):
    s = lab["supabase"]
    bucket, endpoint = scratch_bucket
    storage = S3Storage(f"s3://{bucket}/db", store_settings(endpoint))
    keys = DecryptionSpec.from_keys(age_identity_file=lab["age"]["identity_file"])
    src = projects(with_app=True)
    first = take_backup(lab, src, bucket)
    before = state(s, src)
    assert before["publication"] == [("public", "videos")]
    assert before["rls anon videos"][0] > 0 and before["rls authenticated files"] > 0
    with psycopg.connect(sb_dsn(s, src), autocommit=True) as conn:  # later changes: in the second backup only
        conn.execute("DELETE FROM public.generated_videos")
        conn.execute("UPDATE public.videos SET title = 'later'")
    second = take_backup(lab, src, bucket)
    assert second["backup_id"] != first["backup_id"]

    dest = projects()
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    done = restore_from_store(storage, login(s, dest), keys, source_database=src, backup_id=first["backup_id"],
                              work_dir=str(work), mode="new", bin_dirs=[s["bin_dir"]])
    assert done.backup_id == first["backup_id"]
    assert list(work.iterdir()) == []  # the decoded parts do not outlive the run
    result = done.result
    assert result.publications == ["public.videos in publication supabase_realtime"]
    # the application's database setting: the login may not set it on this platform; named with its statement
    assert any("app.settings.mux_environment" in n and "must be owner of database" in n for n in result.skipped), \
        "\n".join(result.skipped) + repr(first.get("database_properties"))
    assert any("app.settings.mux_environment" in st for st in result.platform_sql)
    # the user's policies on storage.objects: only its owner may create them; named, with the statement
    assert any("Avatars are public on storage.objects: only the table's owner (supabase_storage_admin) may create" in n
               for n in result.skipped)
    run_as_admin(s, dest, result.platform_sql)  # the dashboard's part: storage policies, the setting
    after = state(s, dest)
    assert not (d := diff(after, before)), d

    # an incident in the restored project, then an in-place restore of the same backup from the store
    with psycopg.connect(sb_dsn(s, dest), autocommit=True) as conn:
        conn.execute("DELETE FROM storage.objects WHERE name LIKE '%1%'")
        conn.execute("DROP TABLE public.generated_videos")
        conn.execute("UPDATE public.videos SET title = 'defaced'")
        conn.execute("ALTER PUBLICATION supabase_realtime DROP TABLE public.videos")
    done = restore_from_store(storage, login(s, dest), keys, source_database=src, backup_id=first["backup_id"],
                              work_dir=str(work), mode="in_place", confirm=dest, snapshot_dir=str(tmp_path / "snap"),
                              bin_dirs=[s["bin_dir"]])
    assert set(done.result.moved_aside) == {"public", "private"}
    run_as_admin(s, dest, done.result.platform_sql)
    assert not (d := diff(state(s, dest), before)), d

    # a damaged part: the restore stops naming it, before the project is touched
    data_key = first["supabase"]["platform_data"]["uri"].split(f"s3://{bucket}/", 1)[1]
    client = s3_client(endpoint)
    body = client.get_object(Bucket=bucket, Key=data_key)["Body"].read()
    client.put_object(Bucket=bucket, Key=data_key, Body=body[:100] + bytes([body[100] ^ 1]) + body[101:])
    with psycopg.connect(sb_dsn(s, dest), autocommit=True) as conn:
        conn.execute("UPDATE public.videos SET title = 'after the restore'")
    marked = state(s, dest)
    with pytest.raises(IntegrityError, match=r"part platform: checksum mismatch .*platform-data\.dump"):
        restore_from_store(storage, login(s, dest), keys, source_database=src, backup_id=first["backup_id"],
                           work_dir=str(work), mode="in_place", confirm=dest, snapshot_dir=str(tmp_path / "snap"),
                           bin_dirs=[s["bin_dir"]])
    assert state(s, dest) == marked
    assert list(work.iterdir()) == []
    assert not [p for p in os.listdir(tmp_path / "snap") if p.endswith(".dump") and "before-restore" not in p]


def test_docs_restore_from_the_store_word_for_word(lab, projects, scratch_bucket):
    """docs/supabase.md's store block, run as printed (the lab inventory's store and age key): a new project gets
    the backup's data, catalogs, publication membership; what the login may not do is printed with its reason."""
    from test_supabase_restore import run_doc

    s = lab["supabase"]
    bucket, _endpoint = scratch_bucket
    src = projects(with_app=True)
    doc = take_backup(lab, src, bucket)
    before = state(s, src)
    dest = projects()
    proc = run_doc(["supabase-dsn", "supabase-store-new"], sb_dsn(s, dest),
                   {"BACKUPS": f"s3://{bucket}/db", "BACKUP_ID": doc["backup_id"], "SOURCE_DATABASE": src})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert s["app_password"] not in proc.stdout + proc.stderr
    assert doc["backup_id"] in proc.stdout and "public.videos in publication supabase_realtime" in proc.stdout
    assert "must be owner of database" in proc.stdout and "CREATE POLICY" in proc.stdout
    # the dashboard's part, as printed: the policies on storage.objects and the application's setting
    run_as_admin(s, dest, [item["sql"] for item in doc["supabase"]["left_out"] if item.get("sql")]
                 + [f'ALTER DATABASE "{dest}" SET "app.settings.mux_environment" = \'lab\''])
    assert not (d := diff(state(s, dest), before)), d


def drill(lab: dict, storage: S3Storage, db: str, backup_id: str, platform_sql: str | None = None):
    from supabase_helpers import PLATFORM_SQL

    from ansible.module_utils.lifeboat import verify
    from ansible.module_utils.lifeboat.restore.pgadmin import Admin

    s = lab["supabase"]
    admin = Admin(PgTarget(host=s["host"], port=s["port"], user=s["admin_user"], password=s["admin_password"],
                           database="postgres"), "postgres", [s["bin_dir"]])
    keys = DecryptionSpec.from_keys(age_identity_file=lab["age"]["identity_file"])
    options = verify.Options(level="drill", record=False, amcheck=False,
                             supabase_platform_sql=str(PLATFORM_SQL) if platform_sql is None else platform_sql)
    (ref,) = verify.targets(storage, [db], backup_id)
    return verify.verify_one(storage, ref, keys, admin, options)


def test_drill_of_a_supabase_backup_in_a_scratch_project(lab, projects, scratch_bucket):
    """The drill restores the supabase backup into a scratch project made from the platform script and compares
    it with the manifest; a flipped byte in the platform part fails the drill naming that part."""
    s = lab["supabase"]
    bucket, endpoint = scratch_bucket
    storage = S3Storage(f"s3://{bucket}/db", store_settings(endpoint))
    src = projects(with_app=True)
    doc = take_backup(lab, src, bucket)
    result = drill(lab, storage, src, doc["backup_id"])
    outcomes = {c["name"]: c["outcome"] for c in result.checks}
    assert result.outcome == "passed", result.checks
    for name in ("platform", "restore", "row_counts", "schema_hash", "privileges", "content_hashes",
                 "publications", "platform_data sha256"):
        assert outcomes.get(name) == "passed", (name, result.checks)
    recorded = {f"{t['schema']}.{t['name']}": t["rows"] for t in doc["tables"]
                + doc["supabase"]["platform_data"]["tables"]}
    assert result.row_counts == recorded and len(recorded) == 11 and recorded["auth.users"] > 0
    with psycopg.connect(sb_dsn(s, "postgres", admin=True), autocommit=True) as conn:  # the scratch project is gone
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (result.scratch_database,)).fetchone()[0] == 0

    # without a platform script, the restore step is inconclusive (never failed), naming what it needs
    plain = drill(lab, storage, src, doc["backup_id"], platform_sql="")
    assert plain.outcome == "inconclusive" and "supabase_platform_sql" in plain.inconclusive()[0]

    data_key = doc["supabase"]["platform_data"]["uri"].split(f"s3://{bucket}/", 1)[1]
    client = s3_client(endpoint)
    body = client.get_object(Bucket=bucket, Key=data_key)["Body"].read()
    client.put_object(Bucket=bucket, Key=data_key, Body=body[:200] + bytes([body[200] ^ 1]) + body[201:])
    bad = drill(lab, storage, src, doc["backup_id"])
    assert bad.outcome == "failed"
    assert any(f.startswith("platform_data sha256: checksum mismatch") for f in bad.failures()), bad.failures()
