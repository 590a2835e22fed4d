"""One recovery point for a Supabase project's database and files (issue 9, deliverable 5), on the Supabase-like
lab: storage.objects (bucket_id, name) is the list of files the database references; storage_backup.yml mirrors
each Supabase Storage bucket (path-style, unversioned: the lab's primary SeaweedFS) into a versioned backup bucket;
after the database backup is restored, storage_restore.yml's recovery_point step, given that backup's manifest,
puts back exactly the files its storage.objects lists with the content they had at the backup's snapshot time."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time

import psycopg
import pytest
from storage_helpers import bucket
from supabase_helpers import drop_project, new_project, sb_dsn, sb_sql
from testlib import run_playbook

from ansible.module_utils.lifeboat import backup as backupmod
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore import supabase as sbrestore

ODD = "ünï code/it's a \"file\" (1).png"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def objects(sb: dict, db: str) -> set[tuple[str, str]]:
    return set(sb_sql(sb, "SELECT bucket_id, name FROM storage.objects", database=db, admin=True))


def bucket_hashes(client, names: list[str]) -> dict[tuple[str, str], str]:
    out = {}
    for b in names:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=b):
            for obj in page.get("Contents", []) or []:
                out[(b, obj["Key"])] = sha(client.get_object(Bucket=b, Key=obj["Key"])["Body"].read())
    return out


def vars_file(tmp_path, name: str, data: dict) -> str:
    path = tmp_path / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return str(path)


def test_one_recovery_point_restores_the_database_and_its_files(lab, tmp_path):
    s = lab["supabase"]
    primary = lab["s3"]["primary"]
    src = new_project(s, with_app=True)
    dest = None
    try:
        with bucket(primary, prefix="sbfa") as (ba, client), bucket(primary, prefix="sbfb") as (bb, _), \
                bucket(lab["s3"]["backup"], versioned=True, prefix="sbfbackup") as (backup_bucket, _):
            # the project's files: two buckets of its own (the lab's avatars/videos are shared), 12 + 6 objects
            sb_sql(s, f"""
                INSERT INTO storage.buckets (id, name) VALUES ('{ba}', '{ba}'), ('{bb}', '{bb}');
                WITH keep AS (SELECT id, row_number() OVER (ORDER BY name) AS n FROM storage.objects
                              WHERE bucket_id = 'videos' ORDER BY name LIMIT 17)
                UPDATE storage.objects o SET bucket_id = CASE WHEN k.n <= 12 THEN '{ba}' ELSE '{bb}' END
                  FROM keep k WHERE o.id = k.id;
                DELETE FROM storage.objects WHERE bucket_id NOT IN ('{ba}', '{bb}');
                INSERT INTO storage.objects (bucket_id, name) VALUES ('{bb}', $odd${ODD}$odd$);""",
                   database=src, admin=True)

            def put(b: str, name: str, data: bytes) -> None:
                """An upload as Supabase Storage makes it: the object, and its row's metadata (eTag, size)."""
                etag = client.put_object(Bucket=b, Key=name, Body=data)["ETag"]
                with psycopg.connect(sb_dsn(s, src, admin=True), autocommit=True) as conn:
                    conn.execute("UPDATE storage.objects SET metadata = coalesce(metadata, '{}') || "
                                 "jsonb_build_object('eTag', %s::text, 'size', %s::int) "
                                 "WHERE bucket_id = %s AND name = %s", (etag, len(data), b, name))

            for b, name in objects(s, src):
                put(b, name, os.urandom(200) + name.encode())
            names = [ba, bb]
            storage_vars = vars_file(tmp_path, "storage.json", {
                "lifeboat_storage_supabase_buckets": names,
                "lifeboat_storage_backup_url": f"s3://{backup_bucket}/project",
                "lifeboat_storage_run_record_url": "",
                "lifeboat_storage_app_dsn": sb_dsn(s, src)})

            def sync() -> None:
                time.sleep(1.2)   # SeaweedFS keeps LastModified to the second: keep the phases apart
                proc = run_playbook("playbooks/storage_backup.yml", "-e", f"@{storage_vars}",
                                    "--tags", "storage_backup_sync")
                assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
                assert s["app_password"] not in proc.stdout + proc.stderr
                time.sleep(1.2)

            sync()
            a_keys = sorted(n for b, n in objects(s, src) if b == ba)
            # before the database backup: one file overwritten, one uploaded (the next sync copies both
            # only after the backup's snapshot time)
            put(ba, a_keys[0], b"overwritten before the backup")
            sb_sql(s, f"INSERT INTO storage.objects (bucket_id, name) VALUES ('{ba}', 'late/arrival.mp4')",
                   database=src, admin=True)
            put(ba, "late/arrival.mp4", b"uploaded just before the backup")
            store = tmp_path / "db"
            store.mkdir(mode=0o700)
            doc = backupmod.run(backupmod.BackupRequest(
                target=PgTarget(host=s["host"], port=s["port"], user=s["app_user"], password=s["app_password"],
                                database=src),
                destination=str(store)))["manifest"]
            at_backup = bucket_hashes(client, names)
            listed = objects(s, src)
            assert set(at_backup) == listed
            sync()

            # after the backup: files overwritten, deleted, added, rows deleted and added; synced
            put(ba, a_keys[1], b"overwritten after the backup")
            client.delete_object(Bucket=ba, Key=a_keys[2])
            client.delete_object(Bucket=bb, Key=ODD)
            sb_sql(s, f"""DELETE FROM storage.objects
                           WHERE bucket_id = '{ba}' AND name IN ('{a_keys[2]}', '{a_keys[3]}');
                          DELETE FROM storage.objects WHERE name = $odd${ODD}$odd$;
                          INSERT INTO storage.objects (bucket_id, name) VALUES ('{bb}', 'new/after.png')""",
                   database=src, admin=True)
            put(bb, "new/after.png", b"new after the backup")
            sync()
            put(ba, a_keys[4], b"overwritten after the last sync: in no backup")
            assert bucket_hashes(client, names) != at_backup

            # the database as of the backup, into a new project (the manifest's own decoding steps)
            work = tmp_path / "work"
            work.mkdir(mode=0o700)
            env = dict(os.environ, PATH=f"{s['bin_dir']}:{os.environ['PATH']}")
            for step in doc["restore"]["supabase"]["steps"]:
                if step.rstrip().endswith(("> app.dump", "> platform.dump", "> roles.sql")):
                    subprocess.run(["bash", "-c", "set -o pipefail; " + step], cwd=work, env=env, check=True,
                                   capture_output=True, timeout=300)
            dest = new_project(s)
            sbrestore.restore(PgTarget(host=s["host"], port=s["port"], user=s["app_user"],
                                       password=s["app_password"], database=dest),
                              [str(work / "app.dump"), str(work / "platform.dump")],
                              sbrestore.Scope(doc["supabase"]["app_schemas"],
                                              [tuple(t) for t in doc["supabase"]["platform_tables"]]),
                              mode="new", roles_script=(work / "roles.sql").read_text(), bin_dirs=[s["bin_dir"]])
            assert objects(s, dest) == listed

            # the files of the same recovery point, keys from the restored storage.objects
            manifest = next(store.rglob("manifest.json"))
            restore_vars = vars_file(tmp_path, "restore.json", {
                "lifeboat_storage_supabase_buckets": names,
                "lifeboat_storage_backup_url": f"s3://{backup_bucket}/project",
                "lifeboat_storage_app_dsn": sb_dsn(s, dest),
                "lifeboat_storage_restore_steps": ["recovery_point"],
                "lifeboat_storage_restore_as_of_backup": str(manifest),
                "lifeboat_storage_restore_delete_newer": True})
            proc = run_playbook("playbooks/storage_restore.yml", "-e", f"@{restore_vars}")
            out = proc.stdout + proc.stderr
            assert s["app_password"] not in out
            # the file overwritten after the last sync is in no backup: left alone and named, not lost
            assert "NOT touched" in out and proc.returncode == 0, out[-4000:]
            assert f"backup {doc['backup_id']}" in out
            # the file uploaded and the file overwritten just before the backup reached the backup just after it:
            # their content is the one storage.objects recorded (eTag)
            assert "2 from a copy made after the time" in out and "late/arrival.mp4" in out, out[-4000:]
            assert "0 whose content recorded by the database (eTag) is in no backup" in out, out[-4000:]
            after = bucket_hashes(client, names)
            assert {k: v for k, v in after.items() if k != (ba, a_keys[4])} == \
                {k: v for k, v in at_backup.items() if k != (ba, a_keys[4])}
            assert after[(ba, a_keys[4])] == sha(b"overwritten after the last sync: in no backup")

            # with force, the recovery point is exact: storage.objects and the buckets hold the same files
            force_vars = vars_file(tmp_path, "force.json", {"lifeboat_storage_restore_force": True})
            proc = run_playbook("playbooks/storage_restore.yml", "-e", f"@{restore_vars}", "-e", f"@{force_vars}")
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
            after = bucket_hashes(client, names)
            assert after == at_backup
            assert set(after) == objects(s, dest)
            # a second run has nothing to do
            proc = run_playbook("playbooks/storage_restore.yml", "-e", f"@{restore_vars}")
            assert proc.returncode == 0 and "changed=0" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]
    finally:
        if dest:
            drop_project(s, dest)
        drop_project(s, src)


def test_recovery_point_needs_one_time(lab, tmp_path):
    """Neither a backup nor a time, or both: refused before anything runs, naming the two variables."""
    proc = run_playbook("playbooks/storage_restore.yml", "-e", '{"lifeboat_storage_restore_steps": ["recovery_point"]}')
    assert proc.returncode != 0
    assert "lifeboat_storage_restore_as_of_backup" in proc.stdout and "lifeboat_storage_restore_time" in proc.stdout


@pytest.mark.parametrize("where", ["missing", "damaged"])
def test_as_of_a_backup_whose_manifest_is_missing_or_damaged_is_refused(lab, tmp_path, where):
    """The recovery time comes only from a manifest that reads and checks: a wrong location or a damaged manifest
    is named, and no file is touched."""
    from ansible.module_utils.lifeboat.errors import LifeboatError
    from ansible.module_utils.lifeboat.s3recovery import backup_time

    d = tmp_path / "postgres" / "postgres-20261203T110000Z"
    d.mkdir(parents=True)
    if where == "damaged":
        (d / "manifest.json").write_text('{"schema": "lifeboat/manifest/v1", "manifest_sha256": "00"}')
    with pytest.raises(LifeboatError) as exc:
        backup_time(str(d))
    assert str(d) in str(exc.value) or "manifest" in str(exc.value)


def test_recovery_point_check_mode_rerun_and_unbacked_files(lab):
    """Check mode plans and touches nothing; a run stopped after some files (here: a first run over part of the
    keys) is finished by the next; a listed key in no backup is named; an unlisted file whose content is in no
    backup is never deleted, even with delete_unlisted."""
    import datetime as dt

    from storage_helpers import settings

    from ansible.module_utils.lifeboat.s3recovery import restore_recovery_point

    primary, backup_ep = lab["s3"]["primary"], lab["s3"]["backup"]
    with bucket(primary, prefix="sbfc") as (target, client), \
            bucket(backup_ep, versioned=True, prefix="sbfcb") as (vb, bclient):
        data = {f"k/{i}": os.urandom(64) for i in range(4)}
        for key, body in data.items():
            bclient.put_object(Bucket=vb, Key=f"p/{key}", Body=body)
        client.put_object(Bucket=target, Key="unbacked.txt", Body=b"only here")
        time.sleep(1.2)
        at = dt.datetime.now(dt.timezone.utc)
        listed = [*data, "k/never-backed-up"]
        common = dict(backup_settings=settings(backup_ep), target_settings=settings(primary), delete_unlisted=True)
        plan = restore_recovery_point(f"s3://{vb}/p", f"s3://{target}", listed, at, check_mode=True, **common)
        assert plan.restored == 4 and plan.not_found == ["k/never-backed-up"]
        assert {o["Key"] for o in client.list_objects_v2(Bucket=target)["Contents"]} == {"unbacked.txt"}
        first = restore_recovery_point(f"s3://{vb}/p", f"s3://{target}", listed[:2], at, **common)
        assert first.restored == 2
        rest = restore_recovery_point(f"s3://{vb}/p", f"s3://{target}", listed, at, **common)
        assert (rest.restored, rest.unchanged, rest.skipped_unbacked) == (2, 2, ["unbacked.txt"])
        got = {o["Key"] for o in client.list_objects_v2(Bucket=target)["Contents"]}
        assert got == {*data, "unbacked.txt"}
        for key, body in data.items():
            assert client.get_object(Bucket=target, Key=key)["Body"].read() == body
        again = restore_recovery_point(f"s3://{vb}/p", f"s3://{target}", listed, at, **common)
        assert not again.changed and again.unchanged == 4


def test_in_place_after_an_incident_the_project_and_its_files_return_to_the_backup(lab, tmp_path):
    """The incident in the same project: rows of storage.objects and their files deleted, a file overwritten, a file
    and its row added. The database restored in place, then the files of the same recovery point with
    lifeboat_storage_restore_delete_newer: storage.objects and the buckets hold exactly the backup's files."""
    s, primary = lab["supabase"], lab["s3"]["primary"]
    src = new_project(s, with_app=True)
    try:
        with bucket(primary, prefix="sbfi") as (bi, client), \
                bucket(lab["s3"]["backup"], versioned=True, prefix="sbfib") as (vb, _):
            sb_sql(s, f"""
                INSERT INTO storage.buckets (id, name) VALUES ('{bi}', '{bi}');
                WITH keep AS (SELECT id FROM storage.objects WHERE bucket_id = 'videos' ORDER BY name LIMIT 6)
                UPDATE storage.objects o SET bucket_id = '{bi}' FROM keep k WHERE o.id = k.id;
                DELETE FROM storage.objects WHERE bucket_id <> '{bi}';""", database=src, admin=True)

            def put(name: str, data: bytes) -> None:
                etag = client.put_object(Bucket=bi, Key=name, Body=data)["ETag"]
                sb_sql(s, "UPDATE storage.objects SET metadata = coalesce(metadata, '{}') || "
                          f"jsonb_build_object('eTag', $e${etag}$e$::text) WHERE bucket_id = '{bi}' "
                          f"AND name = $n${name}$n$", database=src, admin=True)

            for (name,) in sb_sql(s, f"SELECT name FROM storage.objects WHERE bucket_id = '{bi}'", database=src,
                                  admin=True):
                put(name, os.urandom(80))
            common = {"lifeboat_storage_supabase_buckets": [bi], "lifeboat_storage_backup_url": f"s3://{vb}/p",
                      "lifeboat_storage_run_record_url": "", "lifeboat_storage_app_dsn": sb_dsn(s, src)}
            storage_vars = vars_file(tmp_path, "s.json", common)
            store = tmp_path / "db"
            store.mkdir(mode=0o700)
            doc = backupmod.run(backupmod.BackupRequest(
                target=PgTarget(host=s["host"], port=s["port"], user=s["app_user"], password=s["app_password"],
                                database=src), destination=str(store)))["manifest"]
            at_backup, listed = bucket_hashes(client, [bi]), objects(s, src)
            time.sleep(1.2)
            proc = run_playbook("playbooks/storage_backup.yml", "-e", f"@{storage_vars}", "--tags",
                                "storage_backup_sync")
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
            time.sleep(1.2)

            names = sorted(n for _, n in listed)   # the incident
            client.delete_object(Bucket=bi, Key=names[0])
            sb_sql(s, f"DELETE FROM storage.objects WHERE name = $n${names[0]}$n$", database=src, admin=True)
            put(names[1], b"overwritten by the incident")
            sb_sql(s, f"INSERT INTO storage.objects (bucket_id, name) VALUES ('{bi}', 'incident.bin')",
                   database=src, admin=True)
            put("incident.bin", b"added by the incident")
            proc = run_playbook("playbooks/storage_backup.yml", "-e", f"@{storage_vars}", "--tags",
                                "storage_backup_sync")
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

            work = tmp_path / "work"
            work.mkdir(mode=0o700)
            env = dict(os.environ, PATH=f"{s['bin_dir']}:{os.environ['PATH']}")
            for step in doc["restore"]["supabase"]["steps"]:
                if step.rstrip().endswith(("> app.dump", "> platform.dump")):
                    subprocess.run(["bash", "-c", "set -o pipefail; " + step], cwd=work, env=env, check=True,
                                   capture_output=True, timeout=300)
            sbrestore.restore(PgTarget(host=s["host"], port=s["port"], user=s["app_user"],
                                       password=s["app_password"], database=src),
                              [str(work / "app.dump"), str(work / "platform.dump")],
                              sbrestore.Scope(doc["supabase"]["app_schemas"],
                                              [tuple(t) for t in doc["supabase"]["platform_tables"]]),
                              mode="in_place", confirm=src, snapshot_dir=str(tmp_path / "safety"),
                              bin_dirs=[s["bin_dir"]])
            assert objects(s, src) == listed
            restore_vars = vars_file(tmp_path, "r.json", {
                **common, "lifeboat_storage_restore_steps": ["recovery_point"],
                "lifeboat_storage_restore_as_of_backup": str(next(store.rglob("manifest.json"))),
                "lifeboat_storage_restore_delete_newer": True})
            proc = run_playbook("playbooks/storage_restore.yml", "-e", f"@{restore_vars}")
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
            after = bucket_hashes(client, [bi])
            assert after == at_backup and set(after) == objects(s, src)
    finally:
        drop_project(s, src)


def test_an_unreachable_as_of_backup_names_whose_credentials_read_it_and_the_fix(lab, scratch_bucket, tmp_path):
    """as_of_backup is read with the file backup's S3 settings: a manifest they cannot reach (another store's
    credentials, a wrong location) fails naming that and how to give it instead (a local copy)."""
    from ansible.module_utils.lifeboat import s3recovery
    from ansible.module_utils.lifeboat.errors import LifeboatError
    from ansible.module_utils.lifeboat.s3 import S3Settings

    bucket, ep = scratch_bucket
    url = f"s3://{bucket}/db/postgres/postgres-20261203T110000Z/manifest.json"
    good = S3Settings(endpoint=ep["endpoint"], region=ep["region"], access_key=ep["access_key"],
                      secret_key=ep["secret_key"])
    wrong = S3Settings(endpoint=ep["endpoint"], region=ep["region"], access_key=ep["access_key"],
                       secret_key="not-the-secret-" + ep["secret_key"][:4])
    for settings in (good, wrong):   # nothing there; there, but unreadable with these credentials
        with pytest.raises(LifeboatError) as err:
            s3recovery.backup_time(url, settings)
        text = str(err.value)
        assert err.value.option == "as_of_backup", text
        assert "file backup's S3 settings" in text and f"s3 cp {url} manifest.json" in text, text
        assert ep["secret_key"] not in text
    # a local path that does not exist: no S3 hint, the plain error
    with pytest.raises(LifeboatError) as err:
        s3recovery.backup_time(str(tmp_path / "nothing" / "manifest.json"))
    assert "S3 settings" not in str(err.value)
