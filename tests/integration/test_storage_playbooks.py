"""playbooks/storage_restore.yml and storage_backup.yml end to end on the lab (scratch buckets via -e)."""
from __future__ import annotations

import datetime as dt
import json
import time

import psycopg
from testlib import run_playbook
from storage_helpers import bucket, contents

QUERY = "select storage_path from videos order by storage_path limit 30"


def extra(tmp_path, **values):
    path = tmp_path / f"extra-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(values))
    return ["-e", f"@{path}"]


def test_storage_backup_then_restore_missing_and_point_in_time(tmp_path, lab, app_dsn):
    app = lab["s3"]["primary"]["buckets"][0]
    src = lab["s3"]["primary"]
    with psycopg.connect(app_dsn) as conn:
        keys = [r[0] for r in conn.execute(QUERY)]
    with bucket(src) as (prim, pc), bucket(lab["s3"]["backup"], versioned=True) as (bk, bc):
        for k in keys:  # the application's files, as in the lab's bucket
            pc.copy_object(Bucket=prim, Key=k, CopySource={"Bucket": app, "Key": k})
        pc.put_object(Bucket=prim, Key="notes/readme.txt", Body=b"v1")
        ev = extra(tmp_path, lifeboat_storage_primary_url=f"s3://{prim}",
                   lifeboat_storage_backup_url=f"s3://{bk}/app-storage",
                   lifeboat_storage_missing_query=QUERY)

        # nightly backup of the bucket (sync into the versioned backup bucket)
        proc = run_playbook("playbooks/storage_backup.yml", *ev, "--tags", "storage_backup_sync")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(contents(bc, bk, "app-storage/")) == len(keys) + 1
        proc = run_playbook("playbooks/storage_backup.yml", *ev, "--tags", "storage_backup_sync")
        assert proc.returncode == 0 and "changed=0" in proc.stdout, proc.stdout

        time.sleep(1.2)
        at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        time.sleep(1.5)
        # incident: files lost, one overwritten; the next backup records it
        for k in keys[:3]:
            pc.delete_object(Bucket=prim, Key=k)
        pc.put_object(Bucket=prim, Key="notes/readme.txt", Body=b"v2 (bad)")
        proc = run_playbook("playbooks/storage_backup.yml", *ev, "--tags", "storage_backup_sync")
        assert proc.returncode == 0, proc.stdout + proc.stderr

        # missing files: check mode reports, touches nothing
        proc = run_playbook("playbooks/storage_restore.yml", *ev, check=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert all(pc.list_objects_v2(Bucket=prim, Prefix=k)["KeyCount"] == 0 for k in keys[:3])
        proc = run_playbook("playbooks/storage_restore.yml", *ev)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for k in keys[:3]:
            assert k in proc.stdout
            assert pc.get_object(Bucket=prim, Key=k)["Body"].read()
        proc = run_playbook("playbooks/storage_restore.yml", *ev)
        assert proc.returncode == 0 and "changed=0" in proc.stdout

        # point in time for the notes/ prefix
        ev2 = ev + extra(tmp_path, lifeboat_storage_restore_steps=["point_in_time"],
                         lifeboat_storage_restore_time=at, lifeboat_storage_restore_prefix="notes")
        proc = run_playbook("playbooks/storage_restore.yml", *ev2)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert pc.get_object(Bucket=prim, Key="notes/readme.txt")["Body"].read() == b"v1"

        # a key referenced but present nowhere is reported
        pc.delete_object(Bucket=prim, Key=keys[5])
        for v in bc.list_object_versions(Bucket=bk, Prefix=f"app-storage/{keys[5]}").get("Versions", []):
            bc.delete_object(Bucket=bk, Key=v["Key"], VersionId=v["VersionId"])
        proc = run_playbook("playbooks/storage_restore.yml", *ev)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "not_found" in proc.stdout and keys[5] in proc.stdout
        for secret in (lab["s3"]["primary"]["secret_key"], lab["s3"]["backup"]["secret_key"],
                       lab["postgres"]["backup_password"]):
            assert secret not in proc.stdout + proc.stderr


def test_storage_backup_archives_directories_and_config(tmp_path, lab):
    tree = tmp_path / "srv" / "storage"
    (tree / "uploads").mkdir(parents=True)
    (tree / "uploads" / "a.jpg").write_bytes(b"jpeg")
    (tree / "uploads" / "skip.tmp").write_bytes(b"tmp")
    env = tmp_path / "srv" / ".env"
    env.write_text("SECRET_TOKEN=abc123-very-secret\n")
    with bucket(lab["s3"]["backup"]) as (bk, bc):
        ev = extra(tmp_path, lifeboat_storage_archive_url=f"s3://{bk}/files",
                   lifeboat_storage_archive_dirs=[{"name": "storage", "path": str(tree), "exclude": ["*.tmp"]}],
                   lifeboat_storage_config_files=[str(env)])
        tags = ["--tags", "storage_backup_archive,storage_backup_config"]
        proc = run_playbook("playbooks/storage_backup.yml", *ev, *tags, check=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert bc.list_objects_v2(Bucket=bk)["KeyCount"] == 0
        proc = run_playbook("playbooks/storage_backup.yml", *ev, *tags)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        keys = sorted(o["Key"] for o in bc.list_objects_v2(Bucket=bk)["Contents"])
        assert len(keys) == 4 and sum(k.endswith("manifest.json") for k in keys) == 2
        for k in keys:
            body = bc.get_object(Bucket=bk, Key=k)["Body"].read()
            assert b"abc123-very-secret" not in body
        proc = run_playbook("playbooks/storage_backup.yml", *ev, *tags)
        assert proc.returncode == 0 and "changed=0" in proc.stdout, proc.stdout

        out = tmp_path / "restored"
        play = tmp_path / "restore.yml"
        play.write_text(f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - lifeboat_archive:
        state: restored
        name: storage
        destination: "{{{{ lifeboat_storage_archive_url }}}}"
        endpoint: "{{{{ lifeboat_storage_backup_endpoint }}}}"
        region: "{{{{ lifeboat_storage_backup_region }}}}"
        access_key: "{{{{ lifeboat_storage_backup_access_key }}}}"
        secret_key: "{{{{ lifeboat_storage_backup_secret_key }}}}"
        secret_key_file: "{{{{ lifeboat_lab_json.gpg.secret_key_file }}}}"
        restore_to: {out}
""")
        proc = run_playbook(str(play), "-i", "inventories/local", *ev)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (out / "storage" / "uploads" / "a.jpg").read_bytes() == b"jpeg"
        assert not (out / "storage" / "uploads" / "skip.tmp").exists()
