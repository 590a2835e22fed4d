"""Killed runs (issue 12): a real process SIGKILLed at a named point, then a normal run that cleans up and succeeds.

The killed run is a child Python process driving Lifeboat's engine against the lab (PostgreSQL, SeaweedFS).
It kills ITSELF with SIGKILL at the point under test (after the first part of the artifact's multipart upload
landed; just before the manifest is written), or the test kills it from outside at a moment it observes in
PostgreSQL (a restore loading its new database, a drill holding its scratch database). Nothing is mocked:
the store, the server and the leftovers are real; the next run is an ordinary call.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from restore_helpers import admin_conn
from testlib import REPO, admin_sql

from ansible.module_utils.lifeboat import backup, crypto
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat import verify as engine
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings

DRIVER = r"""
import json, os, signal, sys
sys.path.insert(0, sys.argv[2])
import testlib  # noqa: F401 - makes ansible.module_utils.lifeboat importable
from ansible.module_utils.lifeboat import backup, crypto, storage as st, storage_s3
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat import verify as engine
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings
cfg = json.load(open(sys.argv[1]))
mode, pg, ep = sys.argv[3], cfg["pg"], cfg["endpoint"]
s3 = S3Settings(endpoint=ep["endpoint"], region=ep["region"], access_key=ep["access_key"], secret_key=ep["secret_key"])
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if mode == "upload":  # the first part of the artifact landed, the upload is open: killed
    real = storage_s3._S3Writer._upload_part
    def part(self, number, body):
        out = real(self, number, body)
        die()
        return out
    storage_s3._S3Writer._upload_part = part
if mode == "manifest":  # artifact and roles stored, the manifest not written yet: killed
    mf.write_manifest = die
admin = rs.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"], password=pg["admin_password"],
                          database="postgres"))
if mode in ("upload", "manifest"):
    backup.run(backup.BackupRequest(
        target=PgTarget(host=pg["host"], port=pg["port"], user=pg["backup_user"], password=pg["backup_password"],
                        database=cfg["db"]),
        destination=f"s3://{cfg['bucket']}/db", compression="none", part_size_mb=5,
        encryption=crypto.EncryptionSpec("gpg", [cfg["gpg_public"]]), s3=s3))
storage = st.S3Storage(f"s3://{cfg['bucket']}/db", s3)
keys = rs.DecryptKeys(gpg_homedir=cfg["gpg"])
if mode == "restore":
    rs.run(rs.Request(database=cfg["db"], confirm=cfg["db"], safety_snapshot=False), storage, admin, keys)
if mode == "drill":
    engine.verify_one(storage, mf.select_backup(storage, cfg["db"]), keys, admin, engine.Options(level="drill"))
print("finished without being killed")
"""


def _config(tmp_path, pg, lab, bucket, db) -> str:
    path = tmp_path / "cfg.json"  # holds the lab's throwaway passwords: 0600, removed with tmp_path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"pg": pg, "endpoint": lab["s3"]["backup"], "bucket": bucket, "db": db,
                   "gpg": lab["gpg"]["homedir"], "gpg_public": lab["gpg"]["public_key_file"]}, fh)
    return str(path)


def _start(cfg: str, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, cfg, str(REPO / "tests"), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _killed(proc: subprocess.Popen) -> None:
    out = proc.communicate(timeout=300)[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed (exit {proc.returncode}):\n{out[-3000:]}"


def _private_dirs(pid: int) -> list[str]:
    """The killed process's private temporary directories (PGPASSFILE, GnuPG home...), aged past the sweep's
    guard against a PID of another namespace (tmpfiles.STALE_AFTER), as a later night's run would find them."""
    import tempfile

    base = tempfile.gettempdir()
    found = [os.path.join(base, n) for n in os.listdir(base) if n.startswith("lifeboat-") and f"-{pid}-" in n]
    old = time.time() - 3600
    for path in found:
        os.utime(path, (old, old))
    return found


def _request(pg, lab, bucket, db, **options) -> backup.BackupRequest:
    ep = lab["s3"]["backup"]
    return backup.BackupRequest(
        target=PgTarget(host=pg["host"], port=pg["port"], user=pg["backup_user"], password=pg["backup_password"],
                        database=db),
        destination=f"s3://{bucket}/db", compression="none", part_size_mb=5,
        encryption=crypto.EncryptionSpec("gpg", [lab["gpg"]["public_key_file"]]),
        s3=S3Settings(endpoint=ep["endpoint"], region=ep["region"], access_key=ep["access_key"],
                      secret_key=ep["secret_key"]), **options)


def _open_uploads(storage, db) -> list[str]:
    pages = storage.client.get_paginator("list_multipart_uploads").paginate(
        Bucket=storage.bucket, Prefix=storage.full_key(mf.safe_name(db)) + "/")
    return [storage.rel_key(u["Key"]) for p in pages for u in p.get("Uploads") or []]


def _sets_without_manifest(storage, db) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    for obj in storage.list(mf.safe_name(db) + "/"):
        parts = obj.key.split("/")
        if len(parts) == 3:
            sets.setdefault(parts[1], []).append(parts[2])
    return {k: v for k, v in sets.items() if mf.MANIFEST_NAME not in v}


@pytest.fixture
def bulky(pg, backed_up):
    """The backed-up database with ~24 MiB of incompressible-enough text: a multipart upload of several parts."""
    db, bucket, storage, first = backed_up
    with admin_conn(pg, db) as conn:
        conn.execute("CREATE TABLE public.bulk AS SELECT g AS id, repeat(md5(random()::text), 150) AS t "
                     "FROM generate_series(1, 5000) g")
        conn.execute(f'GRANT SELECT ON public.bulk TO "{pg["backup_user"]}"')
    return db, bucket, storage, first


def _next_backup_sweeps(pg, lab, bucket, storage, db):
    out = backup.run(_request(pg, lab, bucket, db, sweep_grace_s=0))
    assert _open_uploads(storage, db) == [], "an open multipart upload of the killed run is still there"
    assert _sets_without_manifest(storage, db) == {}, "the killed run's set without manifest is still there"
    man = mf.read_manifest(storage, f"{mf.safe_name(db)}/{out['backup_id']}/manifest.json")
    assert storage.stat(man["artifact"]["key"]).size == man["artifact"]["size"]
    return out


def test_backup_killed_during_upload_next_run_aborts_the_upload(pg, lab, bulky, tmp_path):
    db, bucket, storage, _first = bulky
    proc = _start(_config(tmp_path, pg, lab, bucket, db), "upload")
    _killed(proc)
    left = _open_uploads(storage, db)
    assert left, "the killed run left no open multipart upload: it was not killed during the upload"
    assert not any(k.endswith(mf.MANIFEST_NAME) for k in left)
    dirs = _private_dirs(proc.pid)
    assert any("lifeboat-pg-" in d for d in dirs), f"the killed run's PGPASSFILE directory was not found: {dirs}"
    out = _next_backup_sweeps(pg, lab, bucket, storage, db)
    assert sorted(out["swept"]["aborted_uploads"]) == sorted(left), out["swept"]
    # the private PGPASSFILE of the dead run is gone (swept when this run made its own)
    assert [d for d in dirs if "lifeboat-pg-" in d and os.path.exists(d)] == []


def test_backup_killed_between_upload_and_manifest_next_run_removes_the_set(pg, lab, bulky, tmp_path):
    db, bucket, storage, first = bulky
    _killed(_start(_config(tmp_path, pg, lab, bucket, db), "manifest"))
    orphans = _sets_without_manifest(storage, db)
    assert len(orphans) == 1, orphans
    (orphan_id, names), = orphans.items()
    assert any(n.endswith(".gpg") and not n.startswith("roles.") for n in names), names  # the full artifact
    assert orphan_id not in {r.backup_id for r in mf.iter_backups(storage, db)}  # never listed as a backup
    # a young leftover is left alone by default (it may be a live run's, of a Lifeboat without the lock)
    young = backup.run(_request(pg, lab, bucket, db))
    assert young["swept"]["removed"] == [] and orphan_id in _sets_without_manifest(storage, db)
    out = _next_backup_sweeps(pg, lab, bucket, storage, db)
    assert sorted(out["swept"]["removed"]) == sorted(f"{mf.safe_name(db)}/{orphan_id}/{n}" for n in names)
    ids = {r.backup_id for r in mf.iter_backups(storage, db)}
    assert ids == {first["backup_id"], young["backup_id"], out["backup_id"]}, ids


def _kill_when(proc: subprocess.Popen, pg: dict, query: str, args: tuple, what: str) -> None:
    with admin_conn(pg) as watch:
        end = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < end:
            if watch.execute(query, args).fetchone()[0]:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    out = proc.communicate(timeout=120)[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"{what} was never observed (exit {proc.returncode}):\n{out[-3000:]}"


def test_restore_killed_while_loading_next_restore_drops_its_database(pg, lab, backed_up, tmp_path):
    db, bucket, storage, _m = backed_up
    proc = _start(_config(tmp_path, pg, lab, bucket, db), "restore")
    new_like = db.replace("_", "\\_") + "\\_lifeboat\\_new\\_%"
    # killed while pg_restore writes into the new database (a session of it is active there)
    _kill_when(proc, pg, "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE %s AND state = 'active'",
               (new_like,), "a restore loading its new database")
    left = [r[0] for r in admin_sql(pg, f"SELECT datname FROM pg_database WHERE datname LIKE '{new_like}'")]
    assert left, "the killed restore left no new database"
    dirs = _private_dirs(proc.pid)  # its PGPASSFILE holds the ADMIN's password
    assert any("lifeboat-pg-" in d for d in dirs), dirs
    try:
        res = rs.run(rs.Request(database=db, confirm=db, safety_snapshot=False), storage,
                     rs.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"],
                                       password=pg["admin_password"], database="postgres")),
                     rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"]))
        assert all(any(f"dropped '{name}'" in line for line in res.get("repaired", [])) for name in left), res
        assert admin_sql(pg, f"SELECT datname FROM pg_database WHERE datname LIKE '{new_like}'") == []
        with admin_conn(pg, db) as conn:
            assert conn.execute("SELECT count(*) FROM public.users").fetchone()[0] > 0
        assert [d for d in dirs if "lifeboat-pg-" in d and os.path.exists(d)] == []
    finally:
        for (name,) in admin_sql(pg, f"SELECT datname FROM pg_database WHERE datname LIKE '{db}_lifeboat_%'"):
            admin_sql(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_drill_killed_next_drill_drops_its_scratch_database(pg, lab, backed_up, tmp_path):
    db, bucket, storage, _m = backed_up
    proc = _start(_config(tmp_path, pg, lab, bucket, db), "drill")
    mine = f'%"owner": "lifeboat-drill host=%pid={proc.pid}"%'
    query = ("SELECT count(*) FROM pg_database d JOIN pg_stat_activity a ON a.datname = d.datname "
             "WHERE pg_catalog.shobj_description(d.oid, 'pg_database') LIKE %s AND a.state = 'active'")
    _kill_when(proc, pg, query, (mine,), "a drill loading its scratch database")
    left = [r[0] for r in admin_sql(pg, "SELECT datname FROM pg_database d WHERE "
                                        f"pg_catalog.shobj_description(d.oid, 'pg_database') LIKE '{mine}'")]
    assert len(left) == 1, left
    try:
        # the default sweep_hours (6) would keep an old-style leftover for six hours: a dead owner's goes now
        keys = rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"])
        res = engine.verify_one(storage, mf.select_backup(storage, db), keys,
                                rs.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"],
                                                  password=pg["admin_password"], database="postgres")),
                                engine.Options(level="drill", record=False))
        assert res.outcome == "passed", res.failures()
        assert any(left[0] in line for line in res.swept), res.swept
        assert admin_sql(pg, f"SELECT datname FROM pg_database WHERE datname = '{left[0]}'") == []
    finally:
        admin_sql(pg, f'DROP DATABASE IF EXISTS "{left[0]}" WITH (FORCE)')
