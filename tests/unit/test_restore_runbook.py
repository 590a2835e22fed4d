"""module_utils/lifeboat/restore/runbook.py: the plan names every step."""
from __future__ import annotations

import datetime as dt


from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as rs


T0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)

def _src(legacy=False):
    ref = mf.BackupRef("appdb-20261120T020000Z", "appdb", "appdb/x/appdb.dump.zst.gpg", None if legacy else "m",
                       T0, 1, legacy)
    man = None if legacy else mf.model.backup_manifest(
        {"backup_id": ref.backup_id, "started_at": mf.iso(T0), "artifact": {"key": ref.artifact_key},
         "tables": [{"schema": "public", "name": "users", "rows": 4}]}, "test")
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
