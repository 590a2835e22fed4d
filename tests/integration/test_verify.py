"""verify.yml / lifeboat_backup_verify against the lab: good, tampered, truncated and older-procedure backups."""
from __future__ import annotations

import json
import os
import stat

import pytest
from testlib import run_playbook
from restore_helpers import (
    admin_conn,
    backup_with_engine,
    counts,
    flip_byte,
    make_legacy_backup,
    manifest_counts,
    source_database,
    storage_for,
    truncate,
)

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat import verify as engine
from ansible.module_utils.lifeboat.pgconn import PgTarget


def scratch_dbs(pg) -> list[str]:
    """Scratch databases left behind: idle ones only (a benchmark drill may be running concurrently)."""
    with admin_conn(pg) as conn:
        return [r[0] for r in conn.execute(
            "SELECT d.datname FROM pg_database d WHERE (d.datname LIKE 'lifeboat\\_drill\\_%' "
            "OR d.datname LIKE 'lifeboat\\_stage\\_%') AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a "
            "WHERE a.datname = d.datname)").fetchall()]


def verify_playbook(bucket: str, report_dir, check: bool = False, **extra):
    evars = {"lifeboat_restore_destination": f"s3://{bucket}/db", "lifeboat_verify_report_dir": str(report_dir),
             **extra}
    return run_playbook("playbooks/verify.yml", "-e", json.dumps(evars), check=check)


def admin(pg) -> rs.Admin:
    return rs.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"],
                             password=pg["admin_password"], database="postgres"))


def records(storage, db) -> list[dict]:
    ref = mf.select_backup(storage, db)
    return rs.verification_records(storage, ref)


def read_report(proc_stdout: str, report_dir) -> tuple[str, dict]:
    files = sorted(os.listdir(report_dir))
    md = [f for f in files if f.endswith(".md")]
    js = [f for f in files if f.endswith(".json")]
    assert len(md) == 1 and len(js) == 1, files
    assert stat.S_IMODE(os.stat(report_dir).st_mode) == 0o700
    for f in md + js:
        assert stat.S_IMODE(os.stat(os.path.join(report_dir, f)).st_mode) == 0o600
    return (open(os.path.join(report_dir, md[0])).read(),
            json.load(open(os.path.join(report_dir, js[0]))))


def test_verify_yml_passes_on_a_good_backup(pg, backed_up_by_playbook, tmp_path):
    db, bucket, storage, manifest = backed_up_by_playbook
    report_dir = tmp_path / "reports"
    # check mode: lists the backup, writes nothing
    proc = verify_playbook(bucket, report_dir, check=True, lifeboat_verify_databases=[db])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not report_dir.exists() and records(storage, db) == []

    assertions = [{"name": "every video has a user",
                   "sql": "SELECT v.id FROM public.videos v LEFT JOIN public.users u ON u.id = v.user_id "
                          "WHERE u.id IS NULL"},
                  {"name": "there are invoices", "sql": "SELECT count(*) > 0 FROM public.invoices"}]
    proc = verify_playbook(bucket, report_dir, lifeboat_verify_databases=[db], lifeboat_verify_assertions=assertions)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md, js = read_report(proc.stdout, report_dir)
    assert js["outcome"] == "passed"
    result = js["results"][0]
    assert result["backup_id"] == manifest["backup_id"]
    outcomes = {c["name"]: c["outcome"] for c in result["checks"]}
    assert outcomes == {"sha256": "passed", "restore": "passed", "row_counts": "passed", "schema_hash": "passed",
                        "amcheck": "passed", "privileges": "passed", "assert: every video has a user": "passed",
                        "assert: there are invoices": "passed"}
    assert result["row_counts"] == manifest_counts(manifest)
    assert result["restore_duration_s"] > 0 and result["rto_s_per_gib"] > 0
    assert "PASSED" in md and manifest["backup_id"] in md
    # the verification record sits next to the backup; restore now counts it as verified
    recs = records(storage, db)
    assert len(recs) == 1 and recs[0]["outcome"] == "passed" and recs[0]["level"] == "drill"
    assert rs.choose_backup(storage, db).reason.startswith("latest verified")
    assert scratch_dbs(pg) == []


@pytest.mark.parametrize("tamper", ["flipped byte", "truncated"])
def test_verify_yml_fails_on_a_damaged_backup(pg, backed_up_by_playbook, tmp_path, tamper):
    db, bucket, storage, manifest = backed_up_by_playbook
    key = manifest["artifact"]["key"]
    if tamper == "flipped byte":
        flip_byte(storage, key)
    else:
        truncate(storage, key)
    for level in ("integrity", "drill"):
        report_dir = tmp_path / level
        proc = verify_playbook(bucket, report_dir, lifeboat_verify_databases=[db], lifeboat_verify_level=level)
        assert proc.returncode != 0, proc.stdout
        assert "VERIFICATION FAILED" in proc.stdout
        assert "checksum mismatch" in proc.stdout and manifest["backup_id"] in proc.stdout
        md, js = read_report(proc.stdout, report_dir)
        assert js["outcome"] == "failed"
        failed = [c for c in js["results"][0]["checks"] if c["outcome"] == "failed"]
        assert failed and failed[0]["name"] == "sha256" and "checksum mismatch" in failed[0]["detail"]
        assert "FAILED" in md
    recs = records(storage, db)
    assert [r["outcome"] for r in recs] == ["failed", "failed"]
    assert scratch_dbs(pg) == []


def test_drill_reports_row_count_mismatch_and_failed_assertion(pg, lab, backed_up):
    """A manifest that disagrees with the data (and a false assertion) fails the drill, naming the table."""
    db, _bucket, storage, manifest = backed_up
    manifest["tables"][0]["rows"] += 1
    mf.write_manifest(storage, manifest["artifact"]["key"].rsplit("/", 1)[0] + "/manifest.json", manifest,
                      exclusive=False)
    ref = mf.select_backup(storage, db)
    opts = engine.Options(assertions=[engine.Assertion("no users", "SELECT id FROM public.users")],
                          record=False)
    res = engine.verify_one(storage, ref, rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"]), admin(pg), opts)
    assert res.outcome == "failed"
    failures = res.failures()
    table = f"{manifest['tables'][0]['schema']}.{manifest['tables'][0]['name']}"
    assert any(f.startswith("row_counts:") and table in f for f in failures)
    assert any(f.startswith("assert: no users: returned 400 row(s)") for f in failures)
    assert scratch_dbs(pg) == []


def test_integrity_reports_toc(pg, lab, backed_up):
    db, _bucket, storage, manifest = backed_up
    res = engine.verify_one(storage, mf.select_backup(storage, db), rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"]),
                            None, engine.Options(level="integrity", record=False))
    assert res.outcome == "passed", res.checks
    toc = [c for c in res.checks if c["name"] == "toc"][0]
    assert "TOC entries" in toc["detail"]


def test_stale_scratch_databases_are_swept(pg, lab, backed_up):
    db, _bucket, storage, _manifest = backed_up
    old = rs.scratch_name("drill", mf.utcnow() - __import__("datetime").timedelta(hours=30))
    old_busy = rs.scratch_name("stage", mf.utcnow() - __import__("datetime").timedelta(hours=30))
    fresh = rs.scratch_name("drill", mf.utcnow())
    with admin_conn(pg) as conn:
        for name in (old, old_busy, fresh):
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with admin_conn(pg, old_busy):   # a long partial restore still working in its staging database
            res = engine.verify_one(storage, mf.select_backup(storage, db),
                                    rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"]), admin(pg),
                                    engine.Options(record=False, sweep_hours=24))
            assert scratch_dbs(pg) == [fresh]   # old_busy is in use, hence not listed as left behind
        assert res.swept == [old]
        assert sorted(scratch_dbs(pg)) == sorted([fresh, old_busy])
    finally:
        with admin_conn(pg) as conn:
            for name in (old, old_busy, fresh):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_drill_restores_like_a_restore_parallel_or_streamed(pg, lab, backed_up, tmp_path):
    """The drill takes the restore's path: pg_restore -j from a staged copy by default, streamed (saying why)
    when the staging disk is short."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: the automatic jobs are 1")
    db, _bucket, storage, _manifest = backed_up
    ref = mf.select_backup(storage, db)
    gpg = rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"])
    res = engine.verify_one(storage, ref, gpg, admin(pg), engine.Options(record=False, amcheck=False,
                                                                         staging_dir=str(tmp_path)))
    assert res.outcome == "passed", res.checks
    assert res.restore_jobs == min(4, os.cpu_count() or 1) and res.restore_path == "staged"
    restore = [c for c in res.checks if c["name"] == "restore"][0]
    assert f"pg_restore -j {res.restore_jobs} from a staged local copy" in restore["detail"]
    assert res.record()["restore_jobs"] == res.restore_jobs

    import shutil
    short = engine.Options(record=False, amcheck=False, staging_dir=str(tmp_path),
                           staging_keep_free=shutil.disk_usage(tmp_path).total)
    res = engine.verify_one(storage, ref, gpg, admin(pg), short)
    assert res.outcome == "passed", res.checks
    assert res.restore_jobs == 1 and res.restore_path == "streamed"
    restore = [c for c in res.checks if c["name"] == "restore"][0]
    assert "restored streamed, without pg_restore -j" in restore["detail"]
    assert "not enough disk for a parallel restore" in restore["detail"]
    assert list(tmp_path.iterdir()) == []


def test_scratch_database_dropped_when_the_drill_fails(pg, lab, backed_up, tmp_path):
    db, _bucket, storage, _manifest = backed_up
    empty = tmp_path / "gnupg"
    empty.mkdir(mode=0o700)
    res = engine.verify_one(storage, mf.select_backup(storage, db), rs.DecryptKeys(gpg_homedir=str(empty)),
                            admin(pg), engine.Options(record=False))
    # a wrong key is the drill's environment, not the backup: inconclusive, never failed
    assert res.outcome == "inconclusive"
    assert res.failures() == []
    assert any("wrong decryption key" in f for f in res.inconclusive())
    assert res.scratch_database and scratch_dbs(pg) == []


def test_legacy_sql_gz_verifies(pg, lab, scratch_bucket, tmp_path, source_template):
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        key = make_legacy_backup(pg, storage, db)
        expected = counts(pg, db)
        for level in ("integrity", "drill"):
            report_dir = tmp_path / level
            proc = verify_playbook(bucket, report_dir, lifeboat_verify_backup_id=key, lifeboat_verify_level=level)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            _md, js = read_report(proc.stdout, report_dir)
            res = js["results"][0]
            assert res["legacy"] is True and res["outcome"] == "passed"
            if level == "drill":
                assert res["row_counts"] == expected
                assert {c["name"]: c["outcome"] for c in res["checks"]}["row_counts"] == "skipped"
        # a truncated older dump fails integrity: gzip stream or SQL trailer
        truncate(storage, key, keep=0.5)
        report_dir = tmp_path / "truncated"
        proc = verify_playbook(bucket, report_dir, lifeboat_verify_backup_id=key, lifeboat_verify_level="integrity")
        assert proc.returncode != 0
        _md, js = read_report(proc.stdout, report_dir)
        assert js["outcome"] == "failed"
        assert "truncated" in json.dumps(js["results"][0]["checks"]) or "unexpected end" in json.dumps(js)


@pytest.mark.parametrize("fmt", ["plain", "directory"])
def test_other_formats_verify_and_restore(pg, lab, scratch_bucket, source_template, fmt):
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        manifest = backup_with_engine(pg, lab, storage, bucket, endpoint, db, fmt=fmt)
        assert manifest["format"] == fmt
        ref = mf.select_backup(storage, db)
        keys = rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"])
        for level in ("integrity", "drill"):
            res = engine.verify_one(storage, ref, keys, admin(pg), engine.Options(level=level, record=False))
            assert res.outcome == "passed", res.checks
        assert {c["name"] for c in res.checks} >= {"row_counts", "schema_hash", "amcheck"}
        with admin_conn(pg, db) as conn:
            conn.execute("DELETE FROM public.videos")
        rs.run(rs.Request(database=db, confirm=db, safety_snapshot=False), storage, admin(pg), keys)
        assert counts(pg, db) == manifest_counts(manifest)
        assert scratch_dbs(pg) == []
