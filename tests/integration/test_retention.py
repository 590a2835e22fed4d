"""Retention on real stores: a local directory and the lab's SeaweedFS (lifeboat_retention, playbooks/retention.yml).

A store is filled with real backups (pg_dump of the lab database, a real directory archive) and
synthetic older sets (manifests of the same schemas, verification records, incomplete sets with
open multipart uploads or .partial files, the older procedure's dumps). The expected survivors
are written out by hand.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket

import pytest
from testlib import run_playbook
from storage_helpers import bucket, settings

from ansible.module_utils.lifeboat import archive, backup
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.crypto import EncryptionSpec
from ansible.module_utils.lifeboat.errors import AuthError, ConnectionFailed, NotFound
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.prune import run_retention
from ansible.module_utils.lifeboat.retention import Policy
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import LocalStorage, S3Storage, Storage

NOW = mf.utcnow()


def ago(**kw) -> dt.datetime:
    return NOW - dt.timedelta(**kw)


def sid(name: str, when: dt.datetime) -> str:
    return f"{name}-{mf.stamp(when)}"


def put_json(storage: Storage, key: str, data: dict) -> None:
    storage.put_bytes(key, json.dumps(data).encode(), content_type="application/json")


def fake_db_backup(storage: Storage, db: str, when: dt.datetime, verified: str | None = None,
                   schema_only: bool = False) -> str:
    bid = sid(db, when)
    art = f"{db}/{bid}/{db}.dump.zst"
    storage.put_bytes(art, b"not a real dump, only its place in the store")
    if verified:
        put_json(storage, f"{db}/{bid}/verify-{mf.stamp(when + dt.timedelta(hours=2))}.json",
                 {"schema": mf.VERIFY_SCHEMA, "backup_id": bid, "outcome": verified,
                  "finished_at": mf.iso(when + dt.timedelta(hours=2))})
    put_json(storage, f"{db}/{bid}/manifest.json",
             {"schema": mf.SCHEMA, "kind": "postgresql", "backup_id": bid, "database": db,
              "started_at": mf.iso(when), "artifact": {"key": art, "size": 44},
              "scope": {"schema_only": schema_only, "data_only": False, "include_tables": [], "exclude_tables": [],
                        "include_schemas": [], "exclude_schemas": []}})
    return bid


def fake_archive(storage: Storage, name: str, when: dt.datetime) -> str:
    aid = sid(name, when)
    art = f"{name}/{aid}/{name}.tar.zst"
    storage.put_bytes(art, b"tar")
    put_json(storage, f"{name}/{aid}/manifest.json",
             {"schema": "lifeboat.archive/1", "archive_id": aid, "name": name, "created_at": mf.iso(when),
              "artifact": {"key": art}})
    return aid


def incomplete(storage: Storage, db: str, when: dt.datetime) -> str:
    """A backup that never wrote its manifest: an open multipart upload (S3) or a partial file (directory)."""
    bid = sid(db, when)
    key = f"{db}/{bid}/{db}.dump.zst"
    if isinstance(storage, S3Storage):
        up = storage.client.create_multipart_upload(Bucket=storage.bucket, Key=storage.full_key(key))
        storage.client.upload_part(Bucket=storage.bucket, Key=storage.full_key(key), UploadId=up["UploadId"],
                                   PartNumber=1, Body=b"x" * 1024)
    else:
        path = storage.path(key) + ".1-2-ab.lifeboat-partial"   # a killed writer's (storage_local)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"half a dump")
    return bid


def populate(storage: Storage, lab: dict, tmp_path, s3=None) -> dict:
    """Real backups now, synthetic older ones; returns the ids by role."""
    pg = lab["postgres"]
    dest = storage.url
    real = backup.run(backup.BackupRequest(
        target=PgTarget(host=pg["host"], port=pg["port"], user=pg["backup_user"], password=pg["backup_password"],
                        database=pg["app_database"]),
        destination=dest, s3=s3 or S3Settings()))
    tree = tmp_path / "storage"
    (tree / "uploads").mkdir(parents=True)
    (tree / "uploads" / "a.png").write_bytes(b"png")
    arch = archive.create_archive(archive.ArchiveSpec(name="storage", path=str(tree), encryption=EncryptionSpec()),
                                  dest, s3)
    db = pg["app_database"]
    ids = {"real": real["backup_id"], "real_archive": arch.archive_id, "db": {}, "schema": {}, "storage": {}}
    for days in range(1, 11):
        verified = {1: "failed", 5: "passed", 7: "passed"}.get(days)
        ids["db"][days] = fake_db_backup(storage, db, ago(days=days), verified)
    for weeks in range(1, 6):
        ids["schema"][weeks] = fake_db_backup(storage, db, ago(weeks=weeks, hours=1), schema_only=True)
    for days in range(1, 6):
        ids["storage"][days] = fake_archive(storage, "storage", ago(days=days, hours=2))
    ids["config"] = fake_archive(storage, "config", ago(days=40))
    ids["young"] = incomplete(storage, db, ago(hours=1))
    ids["old"] = incomplete(storage, db, ago(days=3, hours=5))
    ids["legacy"] = ["db-backup-2024-01-05_03-00-00", "db-backup-2024-01-06_03-00-00", "backup_20240107_030000",
                     "backup_20240108_030000"]
    for name in ids["legacy"]:
        storage.put_bytes(f"{name}.sql.gz", b"\x1f\x8b old dump")
    return ids


def expected_kept(ids: dict) -> set[str]:
    db, schema, storage = ids["db"], ids["schema"], ids["storage"]
    return {
        # database:appdb, keep_daily 3: today (the real backup), 1 and 2 days ago; 5 days ago is the
        # newest with a passed verification (1 day ago failed its drill)
        ids["real"], db[1], db[2], db[5],
        # database:appdb:schema-only, its own series: the 3 newest weekly ones
        schema[1], schema[2], schema[3],
        # archive:storage: today (real), 1 and 2 days ago
        ids["real_archive"], storage[1], storage[2],
        # archive:config: its only (newest complete) archive, 40 days old
        ids["config"],
        # incomplete, 1 hour old: may still be running
        ids["young"],
        # the older procedure's dumps: left alone
        *ids["legacy"],
    }


POLICY = Policy(keep_daily=3, incomplete_grace=dt.timedelta(hours=6))


def all_ids(backups: list[dict]) -> set[str]:
    return {b["backup_id"] for b in backups}


def kept_ids(backups: list[dict]) -> set[str]:
    return {b["backup_id"] for b in backups if b["action"] == "keep"}


def s3_state(client, name: str) -> tuple[list[str], list[str]]:
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", []) or [])
    ups = sorted(u["Key"] for u in client.list_multipart_uploads(Bucket=name).get("Uploads", []) or [])
    return keys, ups


def local_state(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def row(backups: list[dict], bid: str) -> dict:
    return next(b for b in backups if b["backup_id"] == bid)


def test_local_directory_check_then_prune_then_nothing(tmp_path, lab):
    root = tmp_path / "backups"
    storage = LocalStorage(str(root))
    ids = populate(storage, lab, tmp_path)
    before = local_state(root)

    plan = run_retention(storage, POLICY, check_mode=True)
    assert plan.changed is True
    assert local_state(root) == before, "check mode touched the store"
    assert kept_ids(plan.backups) == expected_kept(ids)
    assert all_ids(plan.backups) - kept_ids(plan.backups) == {
        ids["db"][d] for d in (3, 4, 6, 7, 8, 9, 10)} | {ids["schema"][4], ids["schema"][5]} | {
        ids["storage"][3], ids["storage"][4], ids["storage"][5]} | {ids["old"]}
    assert row(plan.backups, ids["db"][5])["reasons"] == ["min_verified (verified #1 newest)"]
    assert row(plan.backups, ids["db"][1])["verified"] is False
    assert row(plan.backups, ids["real"])["reasons"][0] == "newest complete"
    assert row(plan.backups, ids["legacy"][3])["reasons"] == [
        "older procedure's dump: left alone (include_legacy: true to apply the policy)"]
    assert row(plan.backups, ids["old"])["kind"] == "incomplete"
    assert "delete database:appdb " + ids["db"][3] in plan.before
    assert ids["db"][3] not in plan.after and ids["db"][5] in plan.after

    res = run_retention(storage, POLICY)
    assert res.changed is True and sorted(res.deleted) == sorted(all_ids(plan.backups) - kept_ids(plan.backups))
    after = local_state(root)
    assert not any(ids["db"][3] in p or ids["old"] in p for p in after)
    assert not (root / "appdb" / ids["old"]).exists(), "the crashed backup's directory stayed"
    assert any(p.endswith(".lifeboat-partial") and ids["young"] in p for p in after), "the running backup was touched"
    # the real backup still restores from its manifest: manifest and artifact both there
    man = mf.read_manifest(storage, f"appdb/{ids['real']}/manifest.json")
    assert storage.exists(man["artifact"]["key"])
    for name in ids["legacy"]:
        assert (root / f"{name}.sql.gz").exists()

    again = run_retention(storage, POLICY)
    assert again.changed is False and again.deleted == []
    assert local_state(root) == after

    # now with the older procedure's dumps: keep_daily 3 over them keeps the three newest days
    legacy = run_retention(storage, POLICY, include_legacy=True)
    assert legacy.deleted == ["db-backup-2024-01-05_03-00-00"]
    assert not (root / "db-backup-2024-01-05_03-00-00.sql.gz").exists()
    assert (root / "backup_20240108_030000.sql.gz").exists()
    assert row(legacy.backups, "backup_20240108_030000")["reasons"][0] == "newest complete"


def test_s3_versioned_bucket_aborts_uploads_and_says_what_deletes_leave(tmp_path, lab):
    b = lab["s3"]["backup"]
    with bucket(b, versioned=True) as (name, client):
        s3 = settings(b)
        storage = S3Storage(f"s3://{name}/db", s3)
        ids = populate(storage, lab, tmp_path, s3)
        keys_before, uploads_before = s3_state(client, name)
        assert len(uploads_before) == 2

        plan = run_retention(storage, POLICY, check_mode=True)
        assert s3_state(client, name) == (keys_before, uploads_before), "check mode touched the bucket"
        assert kept_ids(plan.backups) == expected_kept(ids)
        assert plan.versioning == "Enabled"
        assert any("delete marker" in w and "noncurrent version" in w and "s3_replication_noncurrent_expire_days"
                   in w for w in plan.warnings)

        res = run_retention(storage, POLICY)
        keys, uploads = s3_state(client, name)
        assert res.aborted_uploads == 1
        assert uploads == [f"db/appdb/{ids['young']}/appdb.dump.zst"], "only the running backup's upload stays"
        assert not any(ids["db"][3] in k for k in keys)
        assert any(k.endswith(f"{ids['real']}/manifest.json") for k in keys)
        # what a delete leaves on a versioned bucket: a delete marker over a noncurrent version
        versions = client.list_object_versions(Bucket=name, Prefix=f"db/appdb/{ids['db'][3]}/")
        assert {m["Key"] for m in versions.get("DeleteMarkers", [])} == {
            f"db/appdb/{ids['db'][3]}/manifest.json", f"db/appdb/{ids['db'][3]}/appdb.dump.zst"}
        assert versions.get("Versions"), "the noncurrent versions are what the lifecycle rule expires"

        again = run_retention(storage, POLICY)
        assert again.changed is False and s3_state(client, name) == (keys, uploads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_missing_or_refused_bucket_fails_and_deletes_nothing(tmp_path, lab):
    b = lab["s3"]["backup"]
    with bucket(b) as (name, client):
        storage = S3Storage(f"s3://{name}/db", settings(b))
        fake_db_backup(storage, "appdb", ago(days=2))
        fake_db_backup(storage, "appdb", ago(days=1))
        before = s3_state(client, name)

        down = settings(b, max_attempts=1, connect_timeout=2)
        down = type(down)(**{**down.__dict__, "endpoint": f"http://127.0.0.1:{free_port()}"})
        with pytest.raises(ConnectionFailed, match=r"cannot reach http://127\.0\.0\.1:\d+"):
            run_retention(S3Storage(f"s3://{name}/db", down), Policy(keep_last=1))
        wrong = type(down)(**{**settings(b).__dict__, "secret_key": "not-the-secret"})
        with pytest.raises(AuthError, match="access denied"):
            run_retention(S3Storage(f"s3://{name}/db", wrong), Policy(keep_last=1))
        with pytest.raises(NotFound, match="does not exist"):
            run_retention(S3Storage(f"s3://{name}-missing/db", settings(b)), Policy(keep_last=1))
        assert s3_state(client, name) == before


def test_playbook_check_diff_run_rerun_and_bad_policy(tmp_path, lab):
    b = lab["s3"]["backup"]
    with bucket(b) as (name, client):
        storage = S3Storage(f"s3://{name}/db", settings(b))
        old = fake_db_backup(storage, "appdb", ago(days=9))
        mid = fake_db_backup(storage, "appdb", ago(days=8), verified="passed")
        new = fake_db_backup(storage, "appdb", ago(days=1))
        local = tmp_path / "files"
        lstore = LocalStorage(str(local))
        a_old = fake_archive(lstore, "storage", ago(days=3))
        a_new = fake_archive(lstore, "storage", ago(days=2))
        targets = [{"destination": f"s3://{name}/db", "credentials": "database"},
                   {"destination": str(local), "credentials": "none"}]
        extra = json.dumps({"lifeboat_retention_targets": targets, "lifeboat_retention_keep_daily": 0,
                            "lifeboat_retention_keep_weekly": 0, "lifeboat_retention_keep_monthly": 0,
                            "lifeboat_retention_keep_last": 1})
        before = s3_state(client, name)

        proc = run_playbook("playbooks/retention.yml", "-e", extra, "--diff", check=True)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert b["secret_key"] not in out
        assert s3_state(client, name) == before and sorted(os.listdir(local / "storage")) == sorted([a_old, a_new])
        assert f"delete database:appdb {old}" in out
        assert f"keep   database:appdb {mid}" in out and "min_verified (verified #1 newest)" in out
        assert f"delete archive:storage {a_old}" in out
        assert "1 to delete (check mode)" in out

        proc = run_playbook("playbooks/retention.yml", "-e", extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        keys, _ = s3_state(client, name)
        assert {k.split("/")[2] for k in keys} == {mid, new}
        assert os.listdir(local / "storage") == [a_new]

        proc = run_playbook("playbooks/retention.yml", "-e", extra)
        assert proc.returncode == 0 and "changed=0" in proc.stdout, proc.stdout

        bad = json.dumps({"lifeboat_retention_targets": targets, "lifeboat_retention_keep_daily": 0,
                          "lifeboat_retention_keep_weekly": 0, "lifeboat_retention_keep_monthly": 0})
        proc = run_playbook("playbooks/retention.yml", "-e", bad)
        assert proc.returncode != 0
        assert "retention policy keeps nothing" in proc.stdout
        neg = json.dumps({"lifeboat_retention_targets": targets, "lifeboat_retention_keep_daily": -2})
        proc = run_playbook("playbooks/retention.yml", "-e", neg)
        assert proc.returncode != 0
        assert "keep_* and min_verified must be whole numbers >= 0, got 0, 0, -2, 4, 12, 0, 1" in proc.stdout
        typo = json.dumps({"lifeboat_retention_targets": [{"destination": str(local), "keep_dayly": 3}]})
        proc = run_playbook("playbooks/retention.yml", "-e", typo)
        assert proc.returncode != 0 and "unknown key(s) keep_dayly (known: destination, credentials" in proc.stdout
        assert {k.split("/")[2] for k in s3_state(client, name)[0]} == {mid, new}


def test_weekly_schema_backup_goes_to_its_own_prefix_with_the_schema_files(tmp_path, lab):
    from ansible.module_utils.lifeboat.crypto import DecryptionSpec

    b = lab["s3"]["backup"]
    app = tmp_path / "app" / "prisma"
    app.mkdir(parents=True)
    schema_file = app / "schema.prisma"
    schema_file.write_text('model Video {\n  id String @id\n}\n')
    env_file = tmp_path / "app" / ".env"
    env_file.write_text("APP_SECRET=not-real\n")
    with bucket(b) as (name, client):
        extra = json.dumps({"lifeboat_backup_destination": f"s3://{name}/db",
                            "lifeboat_backup_schema_destination": f"s3://{name}/db-schema",
                            "lifeboat_storage_archive_url": f"s3://{name}/files",
                            "lifeboat_storage_config_files": [str(env_file)],
                            "lifeboat_storage_schema_files": [str(schema_file)]})
        proc = run_playbook("playbooks/schema_backup.yml", "-e", extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        keys, _ = s3_state(client, name)
        assert not any(k.startswith("db/") for k in keys), "a schema-only dump landed where restore.yml looks"
        man_key = next(k for k in keys if k.startswith("db-schema/") and k.endswith("/manifest.json"))
        man = json.loads(client.get_object(Bucket=name, Key=man_key)["Body"].read())
        assert man["scope"]["schema_only"] is True and man["tables"] == []
        assert len(man["schema_hash"]) == 64

        out = tmp_path / "restored"
        out.mkdir()
        archive.restore_archive("config", f"s3://{name}/files", str(out), settings(b),
                                DecryptionSpec(method="gpg", secret_key_file=lab["gpg"]["secret_key_file"]))
        restored = out / str(schema_file).lstrip("/")
        assert restored.read_text() == schema_file.read_text()
        assert (out / str(env_file).lstrip("/")).read_text() == "APP_SECRET=not-real\n"
        art = next(k for k in keys if k.startswith("files/config/") and not k.endswith(".json"))
        assert art.endswith(".gpg")

        # retention sees the schema-only series apart from the full backups
        res = run_retention(S3Storage(f"s3://{name}/db-schema", settings(b)), Policy(keep_last=1), check_mode=True)
        assert {r["series"] for r in res.backups} == {f"database:{lab['postgres']['app_database']}:schema-only"}

