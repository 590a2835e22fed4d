"""Crash-clean and safe under concurrency (issue 12), on the lab: same-second backups, concurrent drills,
verification records of the same second, a swap killed half-way, a damaged manifest.

Same-second runs are made by holding the clock (``manifest.utcnow``) at one second for the test: every run
then asks for the same backup id / record name, which is what two schedulers firing at once do.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import threading

import pytest
from restore_helpers import admin_conn, backup_with_engine, make_backup
from testlib import admin_sql

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat import verify as engine
from ansible.module_utils.lifeboat.errors import LifeboatError, LockHeld
from ansible.module_utils.lifeboat.pgconn import PgTarget

FROZEN = dt.datetime(2026, 12, 2, 17, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def same_second(monkeypatch):
    monkeypatch.setattr(mf, "utcnow", lambda: FROZEN)


def admin(pg) -> rs.Admin:
    return rs.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"],
                             password=pg["admin_password"], database="postgres"))


def _concurrently(*calls):
    """Run the calls at the same moment in threads; [(result or None, exception or None)]."""
    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def runner(i, call):
        barrier.wait()
        try:
            out[i] = (call(), None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out[i] = (None, exc)

    threads = [threading.Thread(target=runner, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return out


def _assert_sound(storage, db):
    """Every listed backup's manifest describes the artifact that is stored (sha256 and size)."""
    refs = list(mf.iter_backups(storage, db))
    for ref in refs:
        man = mf.read_manifest(storage, ref.manifest_key)
        info = storage.stat(man["artifact"]["key"])
        assert info.size == man["artifact"]["size"], ref.backup_id
        assert hashlib.sha256(storage.get_bytes(man["artifact"]["key"])).hexdigest() == man["artifact"]["sha256"]
    return refs


def test_same_second_backups_one_refuses_naming_the_holder(pg, lab, backed_up, same_second):
    db, bucket, storage, _first = backed_up
    endpoint = lab["s3"]["backup"]
    results = _concurrently(lambda: backup_with_engine(pg, lab, storage, bucket, endpoint, db),
                            lambda: backup_with_engine(pg, lab, storage, bucket, endpoint, db))
    ok = [r for r, e in results if e is None]
    errors = [e for r, e in results if e is not None]
    ids = [m["backup_id"] for m in ok]
    # either both complete and distinct, or one refuses clearly: never two "successes" sharing one id
    assert len(set(ids)) == len(ids), f"two runs reported the same backup id {ids}"
    if errors:
        assert len(ok) == 1 and isinstance(errors[0], LockHeld), errors
        assert "another Lifeboat backup of database" in str(errors[0]) and "lifeboat-backup host=" in str(errors[0])
    refs = _assert_sound(storage, db)
    assert {r.backup_id for r in refs} >= set(ids)


def test_same_second_backups_with_lock_wait_both_complete(pg, lab, backed_up, same_second):
    db, bucket, storage, first = backed_up
    endpoint = lab["s3"]["backup"]
    results = _concurrently(
        lambda: backup_with_engine(pg, lab, storage, bucket, endpoint, db, lock_wait_s=120),
        lambda: backup_with_engine(pg, lab, storage, bucket, endpoint, db, lock_wait_s=120))
    assert all(e is None for _r, e in results), results
    ids = sorted(r["backup_id"] for r, _e in results)
    stamp = mf.stamp(FROZEN)
    # the fixture's own backup ran at the real time; these two share the frozen second
    assert ids == [f"{db}-{stamp}", f"{db}-{stamp}-2"], ids
    refs = _assert_sound(storage, db)
    assert {r.backup_id for r in refs} == set(ids) | {first["backup_id"]}


def test_verification_records_of_the_same_second_both_kept(pg, lab, backed_up, same_second):
    db, _bucket, storage, _m = backed_up
    ref = mf.select_backup(storage, db)
    keys = rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"])
    opts = engine.Options(level="integrity")
    results = _concurrently(lambda: engine.verify_one(storage, ref, keys, None, opts),
                            lambda: engine.verify_one(storage, ref, keys, None, opts))
    assert all(e is None for _r, e in results), results
    keys_written = {r.record_key for r, _e in results}
    assert len(keys_written) == 2, keys_written
    recs = rs.verification_records(storage, ref)
    assert len(recs) == 2 and all(r["outcome"] == "passed" for r in recs)


def test_drill_never_drops_a_live_drills_scratch_database(pg, lab, backed_up):
    """A drill with sweep_hours 0 runs while another run holds its scratch database (created, idle)."""
    db, _bucket, storage, _m = backed_up
    adm = admin(pg)
    with rs.scratch_database(adm, "drill") as live:
        keys = rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"])
        res = engine.verify_one(storage, mf.select_backup(storage, db), keys, adm,
                                engine.Options(level="drill", sweep_hours=0))
        assert res.outcome == "passed", res.failures()
        assert live not in res.swept
        with admin_conn(pg) as conn:
            row = conn.execute("SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database "
                               "WHERE datname = %s", (live,)).fetchone()
        assert row is not None, f"the live scratch database {live} was dropped by the other drill"
        assert row[0].startswith(rs.pgadmin.OWNED_MARK) and '"kind": "drill"' in row[0]


def test_exclusive_write_never_replaces(backed_up):
    _db, _bucket, storage, man = backed_up
    key = man["artifact"]["key"]
    before = storage.get_bytes(key)
    with pytest.raises(LifeboatError, match="already exists"):
        storage.put_bytes(key, b"other run", exclusive=True)
    assert storage.get_bytes(key) == before


def test_exclusive_write_local(tmp_path):
    from ansible.module_utils.lifeboat.storage import LocalStorage

    store = LocalStorage(str(tmp_path / "store"))
    store.put_bytes("a/manifest.json", b"first", exclusive=True)
    with pytest.raises(LifeboatError, match="already exists"):
        store.put_bytes("a/manifest.json", b"second", exclusive=True)
    assert store.get_bytes("a/manifest.json") == b"first"
    assert sorted(p.name for p in (tmp_path / "store" / "a").iterdir()) == ["manifest.json"]


SWAP_DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
import testlib  # noqa: F401 - makes ansible.module_utils.lifeboat importable
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import S3Storage
cfg = json.load(open(sys.argv[1]))
pg, ep = cfg["pg"], cfg["endpoint"]
storage = S3Storage(f"s3://{cfg['bucket']}/db", S3Settings(endpoint=ep["endpoint"], region=ep["region"],
                    access_key=ep["access_key"], secret_key=ep["secret_key"]))
admin = rs.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"], password=pg["admin_password"],
                          database="postgres"))
req = rs.Request(database=cfg["db"], confirm=cfg["db"], safety_snapshot=False)
rs.run(req, storage, admin, rs.DecryptKeys(gpg_homedir=cfg["gpg"]))
"""


def test_restore_killed_during_the_swap_is_repaired_by_the_next_run(pg, lab, backed_up, tmp_path):
    """SIGKILL the restore when the live database refuses connections (the swap's first step, observed in
    pg_database); the live name must not stay locked out and the next restore repairs and succeeds."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from testlib import REPO

    db, bucket, storage, _m = backed_up
    cfg = tmp_path / "cfg.json"
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"pg": pg, "endpoint": lab["s3"]["backup"], "bucket": bucket, "db": db,
                   "gpg": lab["gpg"]["homedir"]}, fh)
    killed_at = None
    new_like = f"SELECT datname FROM pg_database WHERE datname LIKE '{db}_lifeboat_new_%'"
    try:
        with admin_conn(pg) as watch:
            for _attempt in range(5):
                blocker = admin_conn(pg, db)  # a session the swap must terminate: widens the window
                blocker.__enter__()
                proc = subprocess.Popen([sys.executable, "-c", SWAP_DRIVER, str(cfg), str(REPO / "tests")])
                try:
                    while proc.poll() is None:
                        row = watch.execute("SELECT datallowconn FROM pg_catalog.pg_database WHERE datname = %s",
                                            (db,)).fetchone()
                        if row is not None and row[0] is False:
                            # freeze the restore first, then look: on a loaded machine it may already have sent
                            # the renames' COMMIT between our query and the signal (the swap then completed,
                            # nothing to repair: let it finish and try again)
                            os.kill(proc.pid, signal.SIGSTOP)
                            time.sleep(0.2)  # a statement already sent completes on the server
                            if admin_sql(pg, new_like):
                                os.kill(proc.pid, signal.SIGKILL)
                                killed_at = "connections disabled"
                            else:
                                os.kill(proc.pid, signal.SIGCONT)
                            break
                        time.sleep(0.002)
                    proc.wait(timeout=120)
                finally:
                    try:
                        blocker.__exit__(None, None, None)
                    except Exception:  # noqa: BLE001 - terminated by the swap
                        pass
                if killed_at:
                    break
        assert killed_at, "the swap's window was never observed (the restore finished first five times)"
        leftovers = [r[0] for r in admin_sql(pg, new_like)]
        assert leftovers, "the killed restore left no new database: it was not killed during the swap"
        # the next normal run repairs what the killed one left, then restores
        from ansible.module_utils.lifeboat import restore as rs2

        res = rs2.run(rs2.Request(database=db, confirm=db, safety_snapshot=False), storage, admin(pg),
                      rs2.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"]))
        repaired = res.get("repaired", [])
        assert any("ALLOW_CONNECTIONS false" in line or "interrupted swap" in line for line in repaired), res
        with admin_conn(pg, db) as conn:  # the live name accepts connections
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        assert admin_sql(pg, new_like) == []
        assert admin_sql(pg, f"SELECT datname FROM pg_database WHERE datname LIKE '{db}%' AND NOT datallowconn") == []
    finally:
        for (name,) in admin_sql(pg, f"SELECT datname FROM pg_database WHERE datname LIKE '{db}_lifeboat_%'"):
            admin_sql(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _record(storage, ref, outcome: str, when: dt.datetime) -> None:
    storage.put_bytes(ref.layout().verification_key(when), json.dumps(
        {"schema": mf.VERIFY_SCHEMA, "backup_id": ref.backup_id, "outcome": outcome,
         "finished_at": mf.iso(when)}).encode(), exclusive=True)


def test_restore_plan_says_when_the_newest_drill_failed(pg, lab, backed_up):
    db, _bucket, storage, first = backed_up
    with admin_conn(pg, db) as conn:
        conn.execute("INSERT INTO public.users (id, email) VALUES ('00000000-0000-0000-0000-0000000000aa', 'new@x')")
    later = mf.parse_time(first["started_at"]) + dt.timedelta(hours=2)
    second = make_backup(pg, lab, storage, db, when=later)
    newer = mf.select_backup(storage, db, backup_id=second["backup_id"])
    _record(storage, newer, "failed", later + dt.timedelta(minutes=5))
    choice = rs.choose_backup(storage, db)
    # the backup whose newest drill failed is not picked silently: the older, not-failed one is, and the plan
    # says what was skipped and what newer data it held
    assert choice.ref.backup_id == first["backup_id"], choice
    assert "FAILED" in choice.reason
    text = " ".join(choice.warnings)
    assert second["backup_id"] in text and "FAILED" in text and "2h00m newer" in text
    rows = sum(t["rows"] for t in second["tables"])
    assert f"{rows} rows in {len(second['tables'])} tables" in text
    # every backup failed: the latest is used, and the plan says so
    _record(storage, mf.select_backup(storage, db, backup_id=first["backup_id"]), "failed", later)
    choice = rs.choose_backup(storage, db)
    assert choice.ref.backup_id == second["backup_id"] and "newest drill FAILED" in choice.reason


def test_damaged_manifest_reported_by_name_by_verify_and_restore(pg, lab, backed_up):
    db, _bucket, storage, first = backed_up
    later = mf.parse_time(first["started_at"]) + dt.timedelta(hours=1)
    second = make_backup(pg, lab, storage, db, when=later)
    key = f"{db}/{second['backup_id']}/manifest.json"
    raw = storage.get_bytes(key)
    storage.put_bytes(key, raw.replace(b'"rows": ', b'"rows": 1', 1))  # one changed value, still valid JSON
    damaged = mf.damaged_manifests(storage, db)
    assert [d.backup_id for d in damaged] == [second["backup_id"]] and "damaged" in damaged[0].reason
    # restore: not silently skipped; the plan names it
    choice = rs.choose_backup(storage, db)
    assert choice.ref.backup_id == first["backup_id"]
    assert any(second["backup_id"] in w and "DAMAGED" in w for w in choice.warnings), choice.warnings
    with pytest.raises(LifeboatError, match=f"{second['backup_id']}.*damaged"):
        rs.choose_backup(storage, db, backup_id=second["backup_id"])
    # verify: the damaged backup is a target and fails on its manifest, by name
    refs = engine.targets(storage, [db], None)
    assert {r.backup_id for r in refs} == {first["backup_id"], second["backup_id"]}
    bad = next(r for r in refs if r.backup_id == second["backup_id"])
    res = engine.verify_one(storage, bad, rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"]), None,
                            engine.Options(level="integrity", record=False))
    assert res.outcome == "failed"
    assert any(second["backup_id"] in f and "damaged" in f for f in res.failures()), res.failures()


# ------------------------------------------------------------------ a hung endpoint (private SeaweedFS)

def _free_base() -> int:
    """A base port whose 13 ports (and base+10008) are all free on 127.0.0.1."""
    import random
    import socket

    for _ in range(50):
        base = random.randrange(45000, 54000, 20)
        ports = [base + i for i in range(13)] + [base + 10008]
        ok = True
        for port in ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise AssertionError("no free port range for a private SeaweedFS")


@pytest.fixture
def private_weed(tmp_path):
    """A SeaweedFS of this test's own (never the shared lab's), stopped by its PID at the end."""
    import os
    import secrets
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from testlib import s3_client

    weed = shutil.which("weed") or os.path.join(os.path.dirname(sys.executable), "weed")
    base = _free_base()
    access, secret = secrets.token_hex(12), secrets.token_hex(20)
    data = tmp_path / "weed"
    data.mkdir()
    argv = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            "-webdav=false", f"-master.port={base}", f"-master.port.grpc={base + 1}", f"-volume.port={base + 2}",
            f"-volume.port.grpc={base + 3}", f"-filer.port={base + 4}", f"-filer.port.grpc={base + 5}",
            f"-s3.port={base + 6}", f"-s3.port.grpc={base + 7}", f"-admin.port={base + 8}",
            f"-admin.port.grpc={base + 10008}", f"-s3.port.iceberg={base + 10}", f"-s3.port.lance={base + 11}",
            f"-metricsPort={base + 12}"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    log = open(tmp_path / "weed.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data)
    endpoint = {"endpoint": f"http://127.0.0.1:{base + 6}", "region": "us-east-1", "access_key": access,
                "secret_key": secret}
    try:
        client = s3_client(endpoint)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket="hung")
                break
            except Exception:  # noqa: BLE001 - not ready yet
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("the private SeaweedFS did not start: "
                                         + (tmp_path / "weed.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield proc, endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


def test_hung_endpoint_ended_by_the_deadline_and_the_source_released(pg, lab, source_template, private_weed):
    """SIGSTOP the store while the dump streams into it: the deadline ends the run, names the endpoint, and the
    source's transaction does not stay open."""
    import os
    import signal
    import time

    from restore_helpers import source_database

    from ansible.module_utils.lifeboat import backup
    from ansible.module_utils.lifeboat.errors import DeadlineExceeded
    from ansible.module_utils.lifeboat.s3 import S3Settings

    weed, endpoint = private_weed
    with source_database(pg, source_template) as db:
        with admin_conn(pg, db) as conn:  # ~24 MiB of hex text: several 5 MiB parts even compressed
            conn.execute("CREATE TABLE public.bulk AS SELECT g AS id, repeat(md5(random()::text), 150) AS t "
                         "FROM generate_series(1, 5000) g")
        req = backup.BackupRequest(
            target=PgTarget(host=pg["host"], port=pg["port"], user=pg["backup_user"],
                            password=pg["backup_password"], database=db),
            destination="s3://hung/db", compression="none", part_size_mb=5, deadline_s=15,
            s3=S3Settings(endpoint=endpoint["endpoint"], region=endpoint["region"],
                          access_key=endpoint["access_key"], secret_key=endpoint["secret_key"],
                          read_timeout=120, max_attempts=3))
        stopped = threading.Event()

        def stop_when_dumping():
            with admin_conn(pg) as conn:
                end = time.monotonic() + 60
                while time.monotonic() < end:
                    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                                       "application_name LIKE 'lifeboat-backup-%%' AND query ILIKE 'COPY%%'",
                                       (db,)).fetchone()
                    if row[0]:
                        os.kill(weed.pid, signal.SIGSTOP)
                        stopped.set()
                        return
                    time.sleep(0.01)

        watcher = threading.Thread(target=stop_when_dumping, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            backup.run(req)
        elapsed = time.monotonic() - t0
        watcher.join(timeout=5)
        assert stopped.is_set(), "the store was never stopped during the dump"
        msg = str(info.value)
        assert endpoint["endpoint"] in msg and "stopped answering" in msg and "deadline" in msg, msg
        assert elapsed < 15 + 20, f"the run took {elapsed:.0f}s for a 15s deadline"
        # the source's sessions of this run are gone: nothing idle in transaction holds the vacuum horizon
        end = time.monotonic() + 10
        while True:
            left = admin_sql(pg, f"SELECT pid, state, application_name FROM pg_stat_activity WHERE datname = '{db}' "
                                 "AND application_name LIKE 'lifeboat-backup%'")
            if not left or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert left == [], left


def test_two_swap_restores_of_the_same_second_both_succeed(pg, lab, backed_up, same_second):
    """A fast machine: two restores of one database within one second. Each has its own new and old names
    (the second's swap used to refuse: '<db>_lifeboat_old_<stamp>' already existed)."""
    db, _bucket, storage, _m = backed_up
    keys = rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"])
    first = rs.run(rs.Request(database=db, confirm=db, safety_snapshot=False), storage, admin(pg), keys)
    second = rs.run(rs.Request(database=db, confirm=db, safety_snapshot=False), storage, admin(pg), keys)
    stamp = mf.stamp(FROZEN).lower()
    olds = [first["old_database"], second["old_database"]]
    assert olds[0] != olds[1] and all(f"_lifeboat_old_{stamp}_" in o for o in olds), olds
    kept = {r[0] for r in admin_sql(pg, f"SELECT datname FROM pg_database WHERE datname LIKE '{db}_lifeboat_%'")}
    assert kept == set(olds), kept  # both previous databases kept, no new database left behind
    with admin_conn(pg, db) as conn:
        assert conn.execute("SELECT count(*) FROM public.users").fetchone()[0] > 0


def test_damaged_and_torn_manifests_reported_by_name_by_the_catalog_and_monitor(pg, lab, backed_up):
    """The catalog (list.yml) and the monitor name a damaged (one value changed) and a torn (cut short) manifest,
    with the reason; neither is silently dropped from the listing nor counted as a backup."""
    from ansible.module_utils.lifeboat import catalog, monitor
    from ansible.module_utils.lifeboat.s3 import S3Settings

    db, bucket, storage, first = backed_up
    later = mf.parse_time(first["started_at"]) + dt.timedelta(hours=1)
    second = make_backup(pg, lab, storage, db, when=later)
    third = make_backup(pg, lab, storage, db, when=later + dt.timedelta(hours=1))
    damaged_key = f"{db}/{second['backup_id']}/manifest.json"
    storage.put_bytes(damaged_key, storage.get_bytes(damaged_key).replace(b'"rows": ', b'"rows": 1', 1))
    torn_key = f"{db}/{third['backup_id']}/manifest.json"
    raw = storage.get_bytes(torn_key)
    storage.put_bytes(torn_key, raw[: len(raw) // 2])
    ep = lab["s3"]["backup"]
    target = catalog.Target(name="crashsafe", destination=f"s3://{bucket}/db", database=db,
                            s3=S3Settings(endpoint=ep["endpoint"], region=ep["region"], access_key=ep["access_key"],
                                          secret_key=ep["secret_key"]))
    found = catalog.scan(target)
    assert found["reachable"], found["error"]
    assert [b["id"] for b in found["backups"]] == [first["backup_id"]]
    bad = {d["id"]: d["reason"] for d in found["damaged"]}
    assert set(bad) == {second["backup_id"], third["backup_id"]}, found["damaged"]
    assert "manifest_sha256" in bad[second["backup_id"]] and "damaged" in bad[second["backup_id"]]
    assert "not valid JSON" in bad[third["backup_id"]] and "torn" in bad[third["backup_id"]]
    assert found["incomplete"] == []
    table = "\n".join(catalog.render_table([found]))
    assert f"DAMAGED {second['backup_id']}" in table and f"DAMAGED {third['backup_id']}" in table
    alerts = [a for a in monitor.evaluate(found, monitor.Thresholds(), mf.utcnow()) if a["kind"] == "damaged"]
    assert len(alerts) == 1 and second["backup_id"] in alerts[0]["message"] and third["backup_id"] in \
        alerts[0]["message"], alerts
