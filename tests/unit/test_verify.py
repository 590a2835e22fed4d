"""module_utils/lifeboat/verify.py: results, records, reports, targets."""
from __future__ import annotations

import datetime as dt
import json


from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat import verify as vf


T0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)


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


def test_reports_of_the_same_second_never_overwrite(tmp_path, monkeypatch):
    """Two verify runs of one second in one process (a fast machine): both reports kept."""
    monkeypatch.setattr(vf.mf, "utcnow", lambda: T0)
    ok = vf.Result("appdb-1", "appdb", "k", False, "integrity", T0)
    ok.check("sha256", True, "ok")
    bad = vf.Result("appdb-2", "appdb", "k", False, "integrity", T0)
    bad.check("sha256", False, "mismatch")
    first = vf.write_reports([ok], str(tmp_path / "reports"), "s3://b")
    second = vf.write_reports([bad], str(tmp_path / "reports"), "s3://b")
    assert first["json"] != second["json"]
    assert json.loads(open(first["json"]).read())["outcome"] == "passed"
    assert json.loads(open(second["json"]).read())["outcome"] == "failed"

def test_verify_targets_latest_of_each_database(store, add_backup):
    add_backup(store, "appdb", T0)
    add_backup(store, "appdb", T0 + dt.timedelta(days=1))
    add_backup(store, "other", T0)
    store.put_bytes(mf.legacy_name(T0), b"gz")
    refs = vf.targets(store, [], None)
    assert sorted(r.backup_id for r in refs) == ["appdb-20261121T020000Z", "db-backup-2026-11-20_02-00-00",
                                                 "other-20261120T020000Z"]
    assert [r.backup_id for r in vf.targets(store, ["other"], None)] == ["other-20261120T020000Z"]
