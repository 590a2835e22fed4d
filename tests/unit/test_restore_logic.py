"""Pure logic of restore/verify: names, backup choice by time and verification, plan, validation, hooks."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat import verify as vf
from ansible.module_utils.lifeboat.errors import ConfigError, NotFound, SafetyError
from ansible.module_utils.lifeboat.storage import LocalStorage

T0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)


def add_backup(storage: LocalStorage, db: str, when: dt.datetime, verified: str | None = None) -> mf.Layout:
    layout = mf.layout_for(db, when, "custom", "zstd", "gpg")
    storage.put_bytes(layout.artifact_key, b"x")
    mf.write_manifest(storage, layout.manifest_key, {
        "schema": mf.SCHEMA, "backup_id": layout.backup_id, "database": db, "started_at": mf.iso(when),
        "format": "custom", "compression": {"algorithm": "zstd"}, "encryption": {"method": "gpg"},
        "artifact": {"key": layout.artifact_key, "size": 1, "sha256": "0" * 64}, "tables": []})
    if verified:
        storage.put_bytes(layout.verification_key(when + dt.timedelta(hours=1)), json.dumps(
            {"schema": mf.VERIFY_SCHEMA, "outcome": verified,
             "finished_at": mf.iso(when + dt.timedelta(hours=1))}).encode())
    return layout


@pytest.fixture
def store(tmp_path):
    return LocalStorage(str(tmp_path / "store"))


# ------------------------------------------------------------------ names

def test_names_fit_postgres_identifier_limit():
    long = "a" * 80
    for name in (rs.new_db_name(long, T0), rs.old_db_name(long, T0)):
        assert len(name.encode()) <= 63
    assert rs.new_db_name("appdb", T0) == "appdb_lifeboat_new_20261120t020000z"
    assert rs.old_db_name("appdb", T0) == "appdb_lifeboat_old_20261120t020000z"
    # multibyte names are cut on a character boundary
    assert len(rs.new_db_name("é" * 40, T0).encode()) <= 63


def test_scratch_names_are_unique_and_carry_their_age():
    a, b = rs.scratch_name("drill", T0), rs.scratch_name("drill", T0)
    assert a != b and a.startswith("lifeboat_drill_20261120t020000z_")
    assert rs.scratch_age(a, T0 + dt.timedelta(hours=7)) == dt.timedelta(hours=7)
    assert rs.scratch_age(rs.scratch_name("stage", T0), T0) == dt.timedelta(0)
    assert rs.scratch_age("lifeboat_drill_notastamp", T0) is None
    assert rs.scratch_age("appdb", T0) is None
    with pytest.raises(ValueError):
        rs.scratch_name("other", T0)


# ------------------------------------------------------------------ backup choice

def test_latest_verified_by_default_with_warning_about_newer(store):
    add_backup(store, "appdb", T0, verified="passed")
    newer = add_backup(store, "appdb", T0 + dt.timedelta(days=1))
    choice = rs.choose_backup(store, "appdb")
    assert choice.ref.backup_id == "appdb-20261120T020000Z"
    assert choice.reason == "latest verified backup"
    assert newer.backup_id in choice.warnings[0]


def test_fallback_to_latest_complete_when_none_verified(store):
    add_backup(store, "appdb", T0, verified="failed")
    add_backup(store, "appdb", T0 + dt.timedelta(days=1))
    choice = rs.choose_backup(store, "appdb")
    assert choice.ref.backup_id == "appdb-20261121T020000Z"
    assert choice.reason == "latest complete backup" and "no backup" in choice.warnings[0]
    with pytest.raises(NotFound, match="require_verified"):
        rs.choose_backup(store, "appdb", require_verified=True)


def test_before_a_time(store):
    for day in range(5):
        add_backup(store, "appdb", T0 + dt.timedelta(days=day), verified="passed")
    # "the last backup before 2026-11-22 12:00" (naive = UTC)
    assert rs.choose_backup(store, "appdb", before="2026-11-22 12:00").ref.backup_id == "appdb-20261122T020000Z"
    # strictly before
    assert rs.choose_backup(store, "appdb", before="2026-11-22T02:00:00Z").ref.backup_id == \
        "appdb-20261121T020000Z"
    assert rs.choose_backup(store, "appdb", before="2026-11-22 04:00+02:00").ref.backup_id == \
        "appdb-20261121T020000Z"
    with pytest.raises(NotFound, match="before 2026-11-19"):
        rs.choose_backup(store, "appdb", before="2026-11-19 00:00")


def test_by_id_and_unknown_id(store):
    add_backup(store, "appdb", T0)
    add_backup(store, "other", T0)
    assert rs.choose_backup(store, "appdb", backup_id="appdb-20261120T020000Z").reason.startswith("backup id")
    with pytest.raises(NotFound, match="backup_id: no backup 'appdb-2020'"):
        rs.choose_backup(store, "appdb", backup_id="appdb-2020")


def test_incomplete_backup_is_never_chosen(store):
    layout = add_backup(store, "appdb", T0)
    later = mf.layout_for("appdb", T0 + dt.timedelta(days=1), "custom", "zstd", "gpg")
    store.put_bytes(later.artifact_key, b"partial, no manifest")
    assert rs.choose_backup(store, "appdb").ref.backup_id == layout.backup_id


def test_legacy_dumps_are_candidates(store):
    store.put_bytes(mf.legacy_name(T0 + dt.timedelta(days=2)), b"gz")
    add_backup(store, "appdb", T0)
    choice = rs.choose_backup(store, "appdb")
    assert choice.ref.legacy and choice.ref.backup_id == "db-backup-2026-11-22_02-00-00"
    src = rs.source_for(store, choice.ref)
    assert (src.fmt, src.compression, src.encryption, src.legacy) == ("plain", "gzip", "none", True)


# ------------------------------------------------------------------ request validation and plan

def test_confirmation_must_name_the_database():
    req = rs.Request(database="appdb", confirm="appdb_copy")
    with pytest.raises(SafetyError) as err:
        req.check_confirmation()
    assert "'appdb'" in str(err.value) and "'appdb_copy'" in str(err.value)
    with pytest.raises(SafetyError, match="got nothing"):
        rs.Request(database="appdb").check_confirmation()
    rs.Request(database="appdb", confirm="appdb").check_confirmation()


@pytest.mark.parametrize("kwargs, option", [
    ({"mode": "partial"}, "tables"),
    ({"mode": "swap", "tables": ["users"]}, "tables"),
    ({"mode": "side_schema", "tables": ["users"]}, "side_schema"),
    ({"schema_only": True, "data_only": True}, "schema_only"),
    ({"data_only": True}, "data_only"),
    ({"jobs": 0}, "jobs"),
    ({"maintenance_on": {"type": "command", "argv": []}}, "maintenance_on"),
    ({"maintenance_off": {"type": "http", "url": "file:///etc/passwd"}}, "maintenance_off"),
    ({"post_restore": [{"type": "smoke"}]}, "post_restore[0]"),
    ({"mode": "upsert"}, "mode"),
])
def test_request_validation_names_the_option(kwargs, option):
    with pytest.raises(ConfigError) as err:
        rs.Request(database="appdb", **kwargs).validate()
    assert err.value.option == option


def _src(legacy=False):
    ref = mf.BackupRef("appdb-20261120T020000Z", "appdb", "appdb/x/appdb.dump.zst.gpg", None if legacy else "m",
                       T0, 1, legacy)
    man = None if legacy else {"tables": [{"schema": "public", "name": "users", "rows": 4}]}
    return rs.Source(ref, man, "plain" if legacy else "custom", "gzip" if legacy else "zstd",
                     "none" if legacy else "gpg", None, None, None, None)


def test_plan_swap_names_every_step():
    req = rs.Request(database="appdb", maintenance_on={"type": "http", "url": "http://u:secret@h/on"},
                     post_restore=[{"type": "command", "argv": ["systemctl", "restart", "app"]}])
    names = {"new": "appdb_lifeboat_new_x", "old": "appdb_lifeboat_old_x", "stage": "s"}
    lines = rs.plan_lines(req, _src(), rs.Choice(_src().ref, "latest verified backup", []), True, names)
    text = "\n".join(lines)
    assert [ln.split(".")[0] for ln in lines if ln[0].isdigit()] == ["1", "2", "3", "4", "5", "6", "7"]
    assert "appdb_lifeboat_new_x" in text and "appdb_lifeboat_old_x" in text and "one transaction" in text
    assert "safety snapshot: a Lifeboat backup" in text
    assert "secret" not in text and "***" in text
    assert "command systemctl ..." in text


def test_plan_in_place_says_not_atomic_and_legacy():
    req = rs.Request(database="appdb", mode="in_place", safety_snapshot=False)
    names = {"new": "n", "old": "o", "stage": "s"}
    text = "\n".join(rs.plan_lines(req, _src(legacy=True), rs.Choice(_src(True).ref, "backup id x", []), True,
                                   names))
    assert "NOT ATOMIC" in text and "SKIPPED on request" in text
    assert "older-procedure plain SQL dump" in text and "report row counts" in text
    assert "streamed into psql" in text


def test_plan_parallel_mentions_staging_and_free_space():
    req = rs.Request(database="appdb", jobs=4, staging_dir="/var/tmp/lb")
    text = "\n".join(rs.plan_lines(req, _src(), rs.Choice(_src().ref, "r", []), False,
                                   {"new": "n", "old": "o", "stage": "s"}))
    assert "staged in /var/tmp/lb (free space checked first) for pg_restore -j 4" in text
    assert "does not exist" in text


def test_free_space_check(tmp_path):
    rs.check_free_space(str(tmp_path), 1, 0)
    with pytest.raises(Exception, match="not enough disk.*jobs: 1"):
        rs.check_free_space(str(tmp_path), 10 ** 18, 0)


# ------------------------------------------------------------------ hooks

def test_command_hook_gets_context_and_reports_failure(tmp_path):
    out = tmp_path / "out"
    argv = ["/bin/sh", "-c", f'echo "$LIFEBOAT_DATABASE $LIFEBOAT_MODE" > {out}']
    res = rs.run_hook({"type": "command", "argv": argv}, "maintenance_on", {"database": "appdb", "mode": "swap"})
    assert res.ok and out.read_text().strip() == "appdb swap"
    res = rs.run_hook({"type": "command", "argv": ["/bin/sh", "-c", "echo boom >&2; exit 3"]}, "x", {})
    assert not res.ok and "exit 3" in res.detail and "boom" in res.detail
    res = rs.run_hook({"type": "command", "argv": ["/nonexistent/cmd"]}, "x", {})
    assert not res.ok and "FileNotFoundError" in res.detail
    assert rs.run_hook(None, "x", {}).ok and rs.run_hook({"type": "none"}, "x", {}).detail == "none"


def test_http_hook_unreachable_is_a_failure_not_an_exception():
    res = rs.run_hook({"type": "http", "url": "http://127.0.0.1:9/off", "timeout": 2}, "maintenance_off", {})
    assert not res.ok and "127.0.0.1:9" in res.detail


# ------------------------------------------------------------------ verify results and report

def test_result_outcome_record_and_markdown():
    r = vf.Result("appdb-1", "appdb", "appdb/1/appdb.dump", False, "drill", T0)
    r.check("sha256", True, "ok")
    r.check("amcheck", None, "not available")
    assert r.outcome == "passed"
    r.check("row_counts", False, "public.users: 3 rows, manifest 4")
    r.restore_duration_s, r.restored_bytes = 2.0, rs.GIB // 2
    rec = r.record()
    assert rec["schema"] == mf.VERIFY_SCHEMA and rec["outcome"] == "failed" and rec["rto_s_per_gib"] == 4.0
    assert r.failures() == ["row_counts: public.users: 3 rows, manifest 4"]
    md = vf.render_markdown([r], "s3://b/db")
    assert "**FAILED**" in md and "| row_counts | FAILED | public.users: 3 rows, manifest 4 |" in md
    assert "| amcheck | skipped |" in md


def test_reports_are_private(tmp_path):
    import os
    import stat

    r = vf.Result("appdb-1", "appdb", "k", False, "integrity", T0)
    r.check("sha256", True, "ok")
    paths = vf.write_reports([r], str(tmp_path / "reports"), "s3://b")
    assert stat.S_IMODE(os.stat(tmp_path / "reports").st_mode) == 0o700
    for p in paths.values():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert json.loads(open(paths["json"]).read())["outcome"] == "passed"


def test_verify_targets_latest_of_each_database(store):
    add_backup(store, "appdb", T0)
    add_backup(store, "appdb", T0 + dt.timedelta(days=1))
    add_backup(store, "other", T0)
    store.put_bytes(mf.legacy_name(T0), b"gz")
    refs = vf.targets(store, [], None)
    assert sorted(r.backup_id for r in refs) == ["appdb-20261121T020000Z", "db-backup-2026-11-20_02-00-00",
                                                 "other-20261120T020000Z"]
    assert [r.backup_id for r in vf.targets(store, ["other"], None)] == ["other-20261120T020000Z"]
