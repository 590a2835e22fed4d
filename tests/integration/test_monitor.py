"""list.yml and monitor.yml on the lab: real backups (dated through the engine's clock), real drills, a real SMTP
server and a webhook receiver on 127.0.0.1, promtool on the metrics and headless Chromium on the report.

Targets (prefixes of one scratch bucket, one source database with a 4,000-row payload table):
  healthy    8 daily backups, the newest 1 h old, a passed drill          -> no alert
  stale      3 backups 2-4 days old                                       -> stale (freshness)
  shrunk     4 backups, then 80% of the payload deleted, the newest       -> size_change, row_loss
  drillfail  1 backup whose drill fails an assertion                      -> verify_failed
  missing    a bucket that does not exist                                 -> unreachable, others still checked
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess

import pytest
from testlib import empty_bucket, run_playbook, s3_client, unique
from monitor_helpers import (
    chromium,
    engine_clock,
    forgetting,
    http_receiver,
    png_colours,
    smtp_server,
    vars_file,
)
from restore_helpers import admin_conn, source_database

from ansible.module_utils.lifeboat import backup, crypto
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat import verify
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import S3Storage

PAYLOAD = """
CREATE TABLE public.payload (id int PRIMARY KEY, blob text NOT NULL);
INSERT INTO public.payload
  SELECT g, (SELECT string_agg(md5(random()::text || g::text || i::text), '') FROM generate_series(1, 16) i)
  FROM generate_series(1, 4000) g;
"""


@pytest.fixture(autouse=True)
def forget_secrets(tmp_path):
    """The vars files carry the lab's secrets: removed after each test."""
    with forgetting(tmp_path):
        yield


def _settings(ep: dict) -> S3Settings:
    return S3Settings(endpoint=ep["endpoint"], region=ep["region"], access_key=ep["access_key"],
                      secret_key=ep["secret_key"])


def _backup(pg, lab, bucket: str, prefix: str, db: str, when: dt.datetime) -> dict:
    ep = lab["s3"]["backup"]
    req = backup.BackupRequest(
        target=PgTarget(host=pg["host"], port=pg["port"], user=pg["backup_user"], password=pg["backup_password"],
                        database=db),
        destination=f"s3://{bucket}/{prefix}", encryption=crypto.EncryptionSpec("gpg", [lab["gpg"]["public_key_file"]]),
        s3=_settings(ep))
    with engine_clock(when):
        return backup.run(req)["manifest"]


def _drill(pg, lab, bucket: str, prefix: str, db: str, assertions=()) -> str:
    storage = S3Storage(f"s3://{bucket}/{prefix}", _settings(lab["s3"]["backup"]))
    admin = rs.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"],
                              password=pg["admin_password"], database="postgres"))
    res = verify.verify_one(storage, mf.select_backup(storage, db), rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"]),
                            admin, verify.Options(level="drill", assertions=list(assertions)))
    return res.outcome


def _target(name: str, lab: dict, destination: str, db: str | None = None) -> dict:
    ep = lab["s3"]["backup"]
    return {"name": name, "kind": "database", "destination": destination, "database": db,
            "endpoint": ep["endpoint"], "region": ep["region"], "access_key": ep["access_key"],
            "secret_key": ep["secret_key"]}


@pytest.fixture(scope="module")
def scenario(pg, lab, source_template):
    client = s3_client(lab["s3"]["backup"])
    bucket = unique("lbmon")
    client.create_bucket(Bucket=bucket)
    now = mf.utcnow()
    day = dt.timedelta(days=1)
    hour = dt.timedelta(hours=1)
    try:
        with source_database(pg, source_template, extra_sql=PAYLOAD) as db:
            for k in range(7, -1, -1):
                _backup(pg, lab, bucket, "healthy", db, now - k * day - hour)
            assert _drill(pg, lab, bucket, "healthy", db) == "passed"
            for k in (4, 3, 2):
                _backup(pg, lab, bucket, "stale", db, now - k * day - hour)
            full = [_backup(pg, lab, bucket, "shrunk", db, now - k * day - hour) for k in (4, 3, 2, 1)]
            with admin_conn(pg, db) as conn:
                conn.execute("DELETE FROM public.payload WHERE id % 5 <> 0")
            small = _backup(pg, lab, bucket, "shrunk", db, now - hour)
            assert small["artifact"]["size"] < 0.4 * full[-1]["artifact"]["size"], "the payload must dominate"
            _backup(pg, lab, bucket, "drillfail", db, now - hour)
            assert _drill(pg, lab, bucket, "drillfail", db,
                          [verify.Assertion("payload kept", "SELECT false")]) == "failed"
            yield {"bucket": bucket, "db": db, "now": now,
                   "targets": [_target("healthy", lab, f"s3://{bucket}/healthy", db),
                               _target("stale", lab, f"s3://{bucket}/stale", db),
                               _target("shrunk", lab, f"s3://{bucket}/shrunk", db),
                               _target("drillfail", lab, f"s3://{bucket}/drillfail", db),
                               _target("missing", lab, f"s3://{unique('lbgone')}/db", db)]}
    finally:
        empty_bucket(client, bucket)


def _monitor(tmp_path, targets, smtp_port, webhook, **extra):
    metrics = tmp_path / "metrics" / "lifeboat.prom"
    report = tmp_path / "reports" / "status.html"
    ev = vars_file(tmp_path, {"lifeboat_monitor_targets": targets, "lifeboat_monitor_metrics_file": str(metrics),
                              "lifeboat_monitor_report_file": str(report), "lifeboat_monitor_webhook_url": webhook,
                              "lifeboat_monitor_mail_to": ["ops@example.test"], "lifeboat_monitor_mail_port": smtp_port,
                              "lifeboat_monitor_mail_host": "127.0.0.1", "lifeboat_monitor_mail_secure": "never",
                              **extra})
    proc = run_playbook("playbooks/monitor.yml", *ev)
    return proc, metrics, report


# (target, alert kind, a phrase of its message)
EXPECTED = [
    ("stale", "stale", re.compile(r"stale: newest complete backup \S+ finished 2d\d\dh ago \(limit 26h\)")),
    ("shrunk", "size_change", re.compile(r"shrunk: newest backup \S+ is [\d.]+ \w+: it shrank \d+% "
                                         r"against the median")),
    ("shrunk", "row_loss", re.compile(r"shrunk: newest backup \S+ against \S+: "
                                      r"public\.payload 4000 -> 800 rows \(-80%\)")),
    ("drillfail", "verify_failed", re.compile(r"drillfail: the latest drill of the newest backup \S+ FAILED at .*"
                                              r"payload kept")),
    ("missing", "unreachable", re.compile(r"missing: cannot check s3://lbgone-\w+/db: .*does not exist")),
]


def test_monitor_raises_each_alert_everywhere(tmp_path, scenario):
    with smtp_server() as (port, box), http_receiver() as (url, requests):
        proc, metrics, report = _monitor(tmp_path, scenario["targets"], port, url + "/hooks/slack")
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert "ALERT(S)" in proc.stdout
        assert "healthy: OK" in proc.stdout                      # still checked next to the unreachable one
        mails = [m["body"] for m in box.messages]
        hooks = [json.loads(r["body"])["text"] for r in requests if r["path"] == "/hooks/slack"]
    assert len(mails) == 1 and box.messages[0]["to"] == ["ops@example.test"], box.messages
    assert "backup alert(s)" in box.messages[0]["subject"]
    assert len(hooks) == 1, requests
    text = metrics.read_text()
    for target, kind, phrase in EXPECTED:
        assert phrase.search(proc.stdout), (target, kind, proc.stdout[-6000:])
        assert phrase.search(mails[0]), (target, kind, mails[0])
        assert phrase.search(hooks[0]), (target, kind, hooks[0])
        assert f'lifeboat_backup_alert{{target="{target}",alert="{kind}"}} 1' in text, (target, kind)
    for kind in ("stale", "size_change", "row_loss", "verify_failed", "verify_stale", "too_few"):
        assert f'lifeboat_backup_alert{{target="healthy",alert="{kind}"}} 0' in text
    assert 'lifeboat_backup_target_up{target="missing"} 0' in text
    assert 'lifeboat_backup_target_up{target="healthy"} 1' in text
    assert re.search(r'^lifeboat_backup_window_sets\{target="healthy"\} 7$', text, re.M), text
    assert oct(os.stat(metrics).st_mode & 0o777) == "0o644"
    assert not [f for f in os.listdir(metrics.parent) if f != "lifeboat.prom"], "a temporary file was left"
    for secret in (scenario["targets"][0]["secret_key"],):
        assert secret not in out and secret not in text and secret not in report.read_text()

    # promtool (Debian's prometheus package) accepts the file
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    # the report renders in headless Chromium, with its charts, no console error, not blank
    dom, console, png = chromium(str(report), str(tmp_path))
    assert re.search(r'<body[^>]* data-charts="(\d+)"', dom), dom[:2000]
    charts = int(re.search(r'data-charts="(\d+)"', dom).group(1))
    assert charts == 8, charts                       # size+duration and rows for the 4 reachable databases
    assert dom.count("<polyline") >= 12 and dom.count('class="series"') >= 12
    assert not re.search(r"CONSOLE\(\d+\)|Uncaught", console), console[-3000:]   # no console message at all
    assert png_colours(png) > 20, "the screenshot is blank"
    assert "FAILED" in proc.stdout and "failed" in dom       # the drill history shows the failed drill


def test_monitor_is_quiet_when_healthy(tmp_path, scenario):
    with smtp_server() as (port, box), http_receiver() as (url, requests):
        proc, metrics, report = _monitor(tmp_path, scenario["targets"][:1], port, url + "/hooks/slack")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "healthy: OK" in proc.stdout and "ALERT" not in proc.stdout
        assert box.messages == [] and requests == []
    text = metrics.read_text()
    gauges = re.findall(r'^lifeboat_backup_alert\{target="healthy",alert="(\w+)"\} (\d)$', text, re.M)
    assert {k for k, _ in gauges} == {"stale", "too_few", "size_change", "duration_change", "row_loss",
                                      "verify_stale", "verify_failed", "verify_inconclusive", "incomplete", "damaged",
                                      "open_uploads", "unreachable"}
    assert all(v == "0" for _, v in gauges), gauges
    assert re.search(r"^lifeboat_backup_alerts_active 0$", text, re.M)
    newest = re.search(r'^lifeboat_backup_last_success_timestamp_seconds\{target="healthy"\} (\d+)$', text, re.M)
    assert newest and abs(int(newest.group(1)) - (scenario["now"] - dt.timedelta(hours=1)).timestamp()) < 60
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_list_shows_every_backup_newest_first(tmp_path, scenario, lab):
    older = tmp_path / "older"
    older.mkdir(mode=0o700)
    (older / "backup_20261101_030000.sql.gz").write_bytes(b"\x1f\x8b" + b"0" * 64)
    (older / "db-backup-2026-11-02_03-00-00.sql.gz").write_bytes(b"\x1f\x8b" + b"1" * 64)
    targets = scenario["targets"][:1] + [{"name": "older", "destination": str(older)},
                                         scenario["targets"][-1]]
    proc = run_playbook("playbooks/list.yml", *vars_file(tmp_path, {"lifeboat_monitor_targets": targets}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if "== healthy (database)" in ln)
    header = lines[start + 1].split()
    assert header[:4] == ["ID", "STARTED", "AGE", "SIZE"] and "VERIFIED" in header
    ids = [ln.split()[0] for ln in lines[start + 2: start + 10]]
    assert len(ids) == 8 and ids == sorted(ids, reverse=True) and all(i.startswith(scenario["db"][:20]) for i in ids)
    assert "passed" in lines[start + 2] and "gpg(" in lines[start + 2]
    assert "never" in lines[start + 3]
    assert any("backup_20261101_030000" in ln and "older dump" in ln for ln in lines)
    assert any("db-backup-2026-11-02_03-00-00" in ln and "older dump" in ln for ln in lines)
    assert any("CANNOT CHECK" in ln and "does not exist" in ln for ln in lines)

    out = tmp_path / "catalog.json"
    proc = run_playbook("playbooks/list.yml", *vars_file(tmp_path, {"lifeboat_monitor_targets": targets[:1],
                                                                    "lifeboat_list_json_file": str(out),
                                                                    "lifeboat_list_format": "json"}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    newest = data[0]["backups"][0]
    assert newest["verification"]["outcome"] == "passed" and newest["verification"]["rto_s_per_gib"] is not None
    assert newest["encryption"] == {"method": "gpg", "recipients": [lab["gpg"]["fingerprint"]]}
    assert newest["tables"] >= 5 and newest["rows"] > 4000 and newest["size"] > 0 and newest["duration_s"] > 0
    assert '"backups"' in proc.stdout                        # the JSON also in the play's output


def test_a_bad_id_names_the_ids_that_exist(tmp_path, scenario):
    bucket = scenario["bucket"]
    ev = vars_file(tmp_path, {"lifeboat_restore_destination": f"s3://{bucket}/healthy",
                              "lifeboat_verify_report_dir": str(tmp_path / "reports"),
                              "lifeboat_verify_backup_id": "appdb-20200101T000000Z"})
    proc = run_playbook("playbooks/verify.yml", *ev)
    assert proc.returncode != 0
    storage = S3Storage(f"s3://{bucket}/healthy", _settings_from_targets(scenario))
    newest = mf.newest_ids(list(mf.iter_backups(storage)), 5)
    assert "no backup 'appdb-20200101T000000Z'" in proc.stdout
    assert "the backups that exist are: " + ", ".join(newest) in proc.stdout.replace("\n", " ").replace("  ", " ")


def _settings_from_targets(scenario) -> S3Settings:
    t = scenario["targets"][0]
    return S3Settings(endpoint=t["endpoint"], region=t["region"], access_key=t["access_key"],
                      secret_key=t["secret_key"])


def test_storage_jobs_leave_run_records_the_catalog_reads(tmp_path, lab):
    from storage_helpers import bucket

    with bucket(lab["s3"]["primary"]) as (prim, pc), bucket(lab["s3"]["backup"]) as (bk, _):
        pc.put_object(Bucket=prim, Key="a.txt", Body=b"a")
        pc.put_object(Bucket=prim, Key="b/c.txt", Body=b"bc")
        ev = vars_file(tmp_path, {"lifeboat_storage_primary_url": f"s3://{prim}",
                                  "lifeboat_storage_backup_url": f"s3://{bk}/mirror",
                                  "lifeboat_storage_sync_delete": False,
                                  "lifeboat_storage_run_record_url": f"s3://{bk}/runs"})
        proc = run_playbook("playbooks/storage_backup.yml", *ev, "--tags", "storage_backup_sync")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        proc = run_playbook("playbooks/list.yml", *ev, *vars_file(tmp_path, {"lifeboat_databases": []}))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(r"last run: ok at \S+ \([\d.]+s\): copied 2, copied_bytes 3, deleted 0", proc.stdout), \
            proc.stdout
        # the source bucket is gone: the sync fails, its record says so, the monitor alerts
        shutil.rmtree(tmp_path / "metrics", ignore_errors=True)
        ev_bad = vars_file(tmp_path, {"lifeboat_storage_primary_url": f"s3://{unique('lbgone')}",
                                      "lifeboat_storage_backup_url": f"s3://{bk}/mirror",
                                      "lifeboat_storage_sync_delete": False,
                                      "lifeboat_storage_run_record_url": f"s3://{bk}/runs"})
        proc = run_playbook("playbooks/storage_backup.yml", *ev_bad, "--tags", "storage_backup_sync")
        assert proc.returncode != 0
        proc = run_playbook("playbooks/monitor.yml", *ev_bad, *vars_file(tmp_path, {
            "lifeboat_databases": [], "lifeboat_monitor_metrics_file": str(tmp_path / "metrics" / "m.prom"),
            "lifeboat_monitor_report_file": str(tmp_path / "r" / "r.html")}))
        assert proc.returncode != 0
        assert re.search(r"storage-sync: last sync run FAILED at \S+: .*does not exist", proc.stdout), proc.stdout
        assert "storage-sync: stale" not in proc.stdout      # the earlier successful run is recent


def test_incomplete_sets_and_open_uploads(tmp_path, scenario, lab):
    """A set whose manifest never came and a multipart upload left open (a crashed run) are alerts."""
    client = s3_client(lab["s3"]["backup"])
    bucket = scenario["bucket"]
    client.put_object(Bucket=bucket, Key="leftovers/appdb/appdb-20261201T031500Z/appdb.dump.zst.gpg", Body=b"x")
    up = client.create_multipart_upload(Bucket=bucket, Key="leftovers/appdb/appdb-20261202T031500Z/appdb.dump.zst")
    try:
        target = _target("leftovers", lab, f"s3://{bucket}/leftovers")
        with smtp_server() as (port, box), http_receiver() as (url, _):
            proc, metrics, _ = _monitor(tmp_path, [target], port, url,
                                        lifeboat_monitor_thresholds={"incomplete_grace_hours": 0})
        assert proc.returncode != 0
        assert re.search(r"leftovers: 1 backup set\(s\) without a manifest older than 0h: appdb-20261201T031500Z",
                         proc.stdout), proc.stdout
        assert re.search(r"leftovers: 1 multipart upload\(s\) open for more than 0h under s3://\S+/leftovers: "
                         r"leftovers/appdb/appdb-20261202T031500Z/appdb.dump.zst", proc.stdout), proc.stdout
        assert "no complete backup (with a manifest) found; 1 incomplete" in box.messages[0]["body"]
        text = metrics.read_text()
        assert 'lifeboat_backup_alert{target="leftovers",alert="incomplete"} 1' in text
        assert 'lifeboat_backup_alert{target="leftovers",alert="open_uploads"} 1' in text
        assert 'lifeboat_backup_open_uploads{target="leftovers"} 1' in text
        proc = run_playbook("playbooks/list.yml", *vars_file(tmp_path, {"lifeboat_monitor_targets": [target]}))
        assert re.search(r"appdb-20261201T031500Z .* MISSING \(incomplete\)", proc.stdout), proc.stdout
        assert "open multipart uploads: 1" in proc.stdout
    finally:
        client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])


def test_a_notification_that_fails_is_reported_and_the_alerts_still_fail_the_play(tmp_path):
    from monitor_helpers import free_port

    gone = {"name": "gone", "destination": str(tmp_path / "never-made")}
    with http_receiver(status=500) as (url, requests):
        proc, metrics, _ = _monitor(tmp_path, [gone], free_port(), url + "/services/T0/B0/secret-token-123")
    assert proc.returncode != 0
    assert len(requests) == 1                                   # the webhook was tried once, answered 500
    assert "webhook: not sent: HTTP status 500" in proc.stdout, proc.stdout
    assert re.search(r"mail: not sent: .*(refused|Connection|connect)", proc.stdout, re.I), proc.stdout
    assert "1 ALERT(S): gone: cannot check " in proc.stdout and "does not exist" in proc.stdout
    assert "secret-token-123" not in proc.stdout + proc.stderr  # the webhook URL is a secret
    assert 'lifeboat_backup_alert{target="gone",alert="unreachable"} 1' in metrics.read_text()
