"""The monitor's rules, metrics and report over hand-written catalogs (no server): each alert kind fires on the
case it names and stays quiet on its neighbour; the metrics file keeps every series; older dump names parse."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from ansible.module_utils.lifeboat import catalog, monitor, report
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.errors import ConfigError, NotFound

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def backup(days_ago: float, size: int = 1_000_000, duration: float = 100.0, rows: dict | None = None,
           verifications: list | None = None) -> dict:
    when = NOW - dt.timedelta(days=days_ago)
    rows = rows if rows is not None else {"public.users": 1000, "public.videos": 500}
    verifs = verifications or []
    return {"id": f"db-{mf.stamp(when)}", "database": "db", "legacy": None, "complete": True,
            "started_at": mf.iso(when), "finished_at": mf.iso(when), "age_s": days_ago * 86400, "size": size,
            "duration_s": duration, "format": "custom", "compression": "zstd",
            "encryption": {"method": "gpg", "recipients": ["ABCDEF0123456789ABCDEF0123456789ABCDEF01"]},
            "tables": len(rows), "rows": sum(rows.values()), "table_rows": rows, "artifact_key": "k",
            "manifest_key": "db/x/manifest.json", "verifications": verifs,
            "verification": verifs[-1] if verifs else None}


def drill(days_ago: float, outcome: str = "passed") -> dict:
    return {"outcome": outcome, "at": mf.iso(NOW - dt.timedelta(days=days_ago)), "level": "drill",
            "restore_duration_s": 12.0, "restored_bytes": 10 ** 9, "rto_s_per_gib": 12.9,
            "failures": [] if outcome == "passed" else ["row counts: public.users 1000 != 999"]}


def target(backups: list, **extra) -> dict:
    t = {"name": "appdb", "kind": "database", "destination": "s3://b/db", "database": "db", "reachable": True,
         "error": None, "backups": sorted(backups, key=lambda b: b["started_at"], reverse=True), "incomplete": [],
         "open_uploads": [], "last_run": None, "last_success": None}
    t.update(extra)
    return t


def healthy(**changes) -> list:
    """Eight daily backups (the newest 1 h old), a drill passed yesterday on the newest."""
    out = [backup(d + 1 / 24) for d in range(8)]
    out[0] = backup(1 / 24, verifications=[drill(0.5)], **changes)
    return out


def kinds(t: dict, **th) -> list[str]:
    return [a["kind"] for a in monitor.evaluate(t, monitor.Thresholds(**th), NOW)]


def test_healthy_target_has_no_alert():
    assert kinds(target(healthy())) == []


def test_freshness_names_the_backup_and_the_limit():
    t = target([backup(d + 2) for d in range(8)])
    alerts = monitor.evaluate(t, monitor.Thresholds(), NOW)
    stale = [a for a in alerts if a["kind"] == "stale"]
    assert stale and "finished 2d00h ago (limit 26h)" in stale[0]["message"]
    assert "too_few" in kinds(t)  # 6 in the last 7 days


def test_size_change_either_direction_and_not_below_the_limit():
    assert "size_change" in kinds(target(healthy(size=400_000)))     # 60% smaller
    assert "size_change" in kinds(target(healthy(size=1_600_000)))   # 60% larger
    assert "size_change" not in kinds(target(healthy(size=600_000)))  # 40% smaller: within 50%


def test_duration_change_ignores_short_backups():
    assert "duration_change" in kinds(target(healthy(duration=300.0)))
    short = [backup(d + 1 / 24, duration=2.0) for d in range(8)]
    short[0] = backup(1 / 24, duration=9.0, verifications=[drill(0.5)])
    assert "duration_change" not in kinds(target(short))              # 2 s -> 9 s: under the 60 s floor


def test_row_loss_per_table():
    lost = target(healthy(rows={"public.users": 500, "public.videos": 500}))
    alerts = [a for a in monitor.evaluate(lost, monitor.Thresholds(), NOW) if a["kind"] == "row_loss"]
    assert alerts and "public.users 1000 -> 500 rows (-50%)" in alerts[0]["message"]
    assert "public.videos" not in alerts[0]["message"]
    gone = target(healthy(rows={"public.users": 1000}))
    assert "public.videos is gone (had 500 rows)" in " ".join(a["message"] for a in monitor.evaluate(
        gone, monitor.Thresholds(), NOW))
    assert "row_loss" not in kinds(target(healthy(rows={"public.users": 850, "public.videos": 500})))


def test_verification_failed_inconclusive_and_stale():
    failed = healthy()
    failed[0] = backup(1 / 24, verifications=[drill(0.5, "failed")])
    assert {"verify_failed"} <= set(kinds(target(failed)))
    inconclusive = healthy()
    inconclusive[0] = backup(1 / 24, verifications=[drill(3), drill(0.5, "inconclusive")])
    assert "verify_inconclusive" in kinds(target(inconclusive))
    assert "verify_stale" not in kinds(target(inconclusive))          # the passed drill 3 days ago counts
    old = healthy()
    old[0] = backup(1 / 24, verifications=[drill(9)])
    assert "verify_stale" in kinds(target(old))


def test_incomplete_and_open_uploads_after_the_grace_period():
    t = target(healthy(), incomplete=[{"id": "db-old", "age_s": 7 * 3600}, {"id": "db-running", "age_s": 600}],
               open_uploads=[{"key": "db/x/db.dump", "initiated": mf.iso(NOW - dt.timedelta(hours=1))}])
    alerts = monitor.evaluate(t, monitor.Thresholds(), NOW)
    assert [a["kind"] for a in alerts] == ["incomplete"]
    assert "db-old" in alerts[0]["message"] and "db-running" not in alerts[0]["message"]
    t["open_uploads"][0]["initiated"] = mf.iso(NOW - dt.timedelta(hours=8))
    assert "open_uploads" in kinds(t)


def test_storage_runs():
    ok = {"outcome": "ok", "finished_at": mf.iso(NOW - dt.timedelta(hours=3))}
    sync = target([], kind="sync", last_run=ok, last_success=ok)
    assert kinds(sync) == []
    failed = {"outcome": "failed", "finished_at": mf.iso(NOW), "error": "bucket gone"}
    assert kinds(target([], kind="sync", last_run=failed, last_success=ok)) == ["run_failed"]
    assert kinds(target([], kind="sync")) == ["stale"]
    assert kinds(target([], kind="sync", last_run=ok, last_success=ok), max_age_hours=2) == ["stale"]


def test_unreachable_is_an_alert_not_an_error():
    t = target([], reachable=False, error="bucket 'x' does not exist at http://127.0.0.1:1 (NoSuchBucket)")
    alerts = monitor.evaluate(t, monitor.Thresholds(), NOW)
    assert [a["kind"] for a in alerts] == ["unreachable"]
    assert "cannot check s3://b/db: bucket 'x' does not exist" in alerts[0]["message"]


def test_metrics_keep_every_series_and_escape_labels():
    good = target(healthy())
    bad = target([], name='we"ird\\name', reachable=False, error="x")
    alerts = monitor.run([good, bad], monitor.Thresholds(), NOW)
    text = monitor.metrics_text([good, bad], alerts, monitor.Thresholds(), NOW)
    for kind in monitor.KINDS["database"]:
        assert f'lifeboat_backup_alert{{target="appdb",alert="{kind}"}} 0' in text
    assert 'lifeboat_backup_alert{target="we\\"ird\\\\name",alert="unreachable"} 1' in text
    newest = NOW - dt.timedelta(hours=1)
    assert f'lifeboat_backup_last_success_timestamp_seconds{{target="appdb"}} {int(newest.timestamp())}' in text
    assert f"lifeboat_monitor_last_run_timestamp_seconds {int(NOW.timestamp())}" in text
    assert re.search(r"^lifeboat_backup_alerts_active 1$", text, re.M)


def test_thresholds_are_checked():
    with pytest.raises(ConfigError, match="size_change: a fraction"):
        monitor.Thresholds(size_change=50).validate()


def test_report_embeds_its_data_safely():
    t = target(healthy())
    t["name"] = "</script><b>x"
    page = report.render([t], [], NOW)
    assert "</script><b>x" not in page.split('id="lifeboat-data">', 1)[1].split("</script>", 1)[0]
    assert "&lt;/script&gt;&lt;b&gt;x" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere


def test_older_dump_names():
    assert mf.legacy_time("db-backup-2026-11-01_03-00-00.sql.gz") == dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC)
    assert mf.legacy_time("x/backup_20261101_030000.sql.gz") == dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC)
    assert mf.legacy_time("backup_20261341_030000.sql.gz") is None
    assert mf.legacy_time("appdb.dump.zst") is None


def test_a_bad_id_names_the_newest_ids(tmp_path):
    from ansible.module_utils.lifeboat.storage import LocalStorage

    store = LocalStorage(str(tmp_path))
    for day in range(1, 8):
        (tmp_path / f"backup_202611{day:02d}_030000.sql.gz").write_bytes(b"x")
    with pytest.raises(NotFound) as err:
        mf.select_backup(store, backup_id="appdb-nope")
    msg = str(err.value)
    assert "the backups that exist are: backup_20261107_030000, backup_20261106_030000" in msg
    assert "backup_20261102_030000" not in msg and "(newest 5 of 7" in msg
    (tmp_path / "empty").mkdir()
    empty = LocalStorage(str(tmp_path / "empty"))
    with pytest.raises(NotFound, match="there is no complete backup there"):
        mf.select_backup(empty, backup_id="x")


def test_local_directory_catalog_marks_older_dumps_and_incomplete_sets(tmp_path):
    import json
    import os

    (tmp_path / "backup_20261101_030000.sql.gz").write_bytes(b"x" * 2048)
    (tmp_path / "db-backup-2026-11-02_03-00-00.sql.gz").write_bytes(b"y" * 10)
    done = tmp_path / "appdb" / "appdb-20261129T030000Z"
    done.mkdir(parents=True)
    (done / "appdb.dump.zst").write_bytes(b"z" * 100)
    (done / "manifest.json").write_text(json.dumps({
        "schema": mf.SCHEMA, "backup_id": "appdb-20261129T030000Z", "database": "appdb", "format": "custom",
        "started_at": "2026-11-29T03:00:00Z", "finished_at": "2026-11-29T03:00:09Z", "duration_s": 9.0,
        "compression": {"algorithm": "zstd"}, "encryption": {"method": "none", "recipients": []},
        "artifact": {"key": "appdb/appdb-20261129T030000Z/appdb.dump.zst", "size": 100},
        "tables": [{"schema": "public", "name": "users", "rows": 7}]}))
    (done / "verify-20261129T040000Z.json").write_text(json.dumps({
        "schema": mf.VERIFY_SCHEMA, "outcome": "inconclusive", "level": "drill",
        "finished_at": "2026-11-29T04:00:00Z", "checks": [{"name": "server", "outcome": "failed",
                                                            "detail": "cannot connect"}]}))
    half = tmp_path / "appdb" / "appdb-20261130T030000Z"
    half.mkdir()
    (half / "appdb.dump.zst").write_bytes(b"partial")
    os.utime(half / "appdb.dump.zst", (NOW.timestamp() - 8 * 3600,) * 2)
    runs = tmp_path / "runs" / "storage-sync"           # run records under the same root are not backup sets
    runs.mkdir(parents=True)
    (runs / "last-run.json").write_text("{}")
    assert catalog.scan(catalog.Target(name="all", destination=str(tmp_path)), NOW)["incomplete"] == [
        {"id": "appdb-20261130T030000Z", "folder": "appdb/appdb-20261130T030000Z",
         "objects": ["appdb/appdb-20261130T030000Z/appdb.dump.zst"],
         "last_modified": mf.iso(NOW - dt.timedelta(hours=8)), "age_s": 8 * 3600.0}]
    t = catalog.scan(catalog.Target(name="local", destination=str(tmp_path), database="appdb"), NOW)
    assert t["reachable"], t["error"]
    ids = [b["id"] for b in t["backups"]]
    assert ids == ["appdb-20261129T030000Z", "db-backup-2026-11-02_03-00-00", "backup_20261101_030000"]
    assert [b["legacy"] for b in t["backups"]] == [None, "db-backup", "backup_"]
    assert t["backups"][0]["verification"]["outcome"] == "inconclusive"
    assert t["backups"][0]["rows"] == 7 and t["backups"][0]["size"] == 100
    assert [i["id"] for i in t["incomplete"]] == ["appdb-20261130T030000Z"]
    lines = catalog.render_table([t])
    assert lines[1].split()[:3] == ["ID", "STARTED", "AGE"]
    assert any("backup_20261101_030000" in ln and "older dump" in ln for ln in lines)
    assert any("appdb-20261130T030000Z" in ln and "MISSING (incomplete)" in ln for ln in lines)
    assert any("appdb-20261129T030000Z" in ln and "inconclusive 2026-11-29T04:00" in ln for ln in lines)
    alerts = {a["kind"] for a in monitor.evaluate(t, monitor.Thresholds(), NOW)}
    assert {"incomplete", "verify_inconclusive", "verify_stale", "stale", "too_few"} <= alerts
    missing = catalog.scan(catalog.Target(name="gone", destination=str(tmp_path / "nope")), NOW)
    assert not missing["reachable"] and "does not exist" in missing["error"]
