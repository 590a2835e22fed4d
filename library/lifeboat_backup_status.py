#!/usr/bin/python
# Lifeboat: check every target against its limits; Prometheus metrics and an HTML report.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_backup_status
short_description: Check the state of every Lifeboat backup and report alerts, metrics and an HTML page
description:
  - Catalogs each target (as C(lifeboat_catalog) does) and checks it; each finding is an alert naming the target,
    the cause and the limit.
  - "Database targets: the newest complete backup is older than O(max_age_hours) (C(stale)); fewer than
    O(min_count) complete backups in the last O(window_days) days (C(too_few)); the newest backup's size or
    duration differs from the median of the previous O(median_of) by more than O(size_change) /
    O(duration_change) in either direction (C(size_change), C(duration_change)); a table lost more than
    O(row_loss) of its rows since the previous backup (C(row_loss)); no passed restore drill in
    O(verify_max_age_days) days (C(verify_stale)); the latest drill of the newest backup failed
    (C(verify_failed)) or could not run (C(verify_inconclusive)); backup sets without a manifest
    (C(incomplete)) or multipart uploads (C(open_uploads)) older than O(incomplete_grace_hours); a set whose
    manifest is damaged or torn (C(damaged), at once, named with the reason)."
  - "Storage targets (sync, archive): no successful run in O(max_age_hours) (C(stale)); the last run failed
    (C(run_failed)). Every target: it could not be read (C(unreachable)), the cause named; the other targets are
    still checked."
  - Writes Prometheus text metrics for node_exporter's textfile collector to O(metrics_file) atomically
    (temporary file and rename in the same directory), every alert kind of every target as a 0/1 gauge, and a
    self-contained HTML report to O(report_file).
  - Never fails because of an alert (the playbook decides); fails only on bad options or an unwritable output.
    Check mode checks and writes no file.
extends_documentation_fragment: [lifeboat_s3.targets]
options:
  max_age_hours:
    description: Freshness limit (the RPO) in hours, for the newest complete backup and a storage job's last
      successful run; a target's own O(targets[].max_age_hours) wins.
    type: float
    default: 26
  window_days:
    description: The window in which O(min_count) complete backups are expected.
    type: float
    default: 7
  min_count:
    description: Complete backups expected in the last O(window_days) days.
    type: int
    default: 7
  median_of:
    description: How many previous backups the newest is compared with (their median); at least 3 are needed.
    type: int
    default: 7
  size_change:
    description: Alert when the newest backup's size differs from the median by more than this fraction.
    type: float
    default: 0.5
  duration_change:
    description: Alert when the newest backup's duration differs from the median by more than this fraction.
    type: float
    default: 0.5
  duration_floor_s:
    description: Durations are compared only when the newest or the median reaches this many seconds.
    type: float
    default: 60
  row_loss:
    description: Alert when a table lost more than this fraction of its rows since the previous backup.
    type: float
    default: 0.2
  row_loss_min_rows:
    description: Tables with fewer rows than this in the previous backup are not compared.
    type: int
    default: 100
  verify_max_age_days:
    description: Alert when the newest passed restore drill is older than this.
    type: float
    default: 8
  incomplete_grace_hours:
    description: Sets without a manifest and open multipart uploads younger than this are runs in progress.
    type: float
    default: 6
  metrics_file:
    description: Where to write the Prometheus metrics (a C(.prom) file in node_exporter's textfile directory,
      which must exist). Omit to write none.
    type: path
  metrics_mode:
    description: Mode of the metrics file (node_exporter reads it; it holds no secret).
    type: str
    default: "0644"
  report_file:
    description: Where to write the HTML report (its directory must exist). Omit to write none.
    type: path
  report_mode:
    description: Mode of the HTML report.
    type: str
    default: "0600"
requirements: [boto3]
author: Lifeboat
"""

EXAMPLES = r"""
- name: Check the backups
  lifeboat_backup_status:
    targets:
      - name: appdb
        destination: s3://lifeboat-backups/db
        database: appdb
      - name: uploads-mirror
        kind: sync
        run_record: s3://lifeboat-backups/runs/storage-sync
        max_age_hours: 13
    metrics_file: /var/lib/prometheus/node-exporter/lifeboat.prom
    report_file: /var/lib/lifeboat/status/report.html
  register: status

- name: Fail when an alert is active
  ansible.builtin.fail:
    msg: "{{ status.messages | join(' || ') }}"
  when: status.alert_count > 0
"""

RETURN = r"""
alerts:
  description: The active alerts, each with target, kind and message.
  returned: always
  type: list
  elements: dict
  sample: [{"target": "appdb", "kind": "stale",
            "message": "appdb: newest complete backup appdb-20261120T031500Z finished 2d03h ago (limit 26h)"}]
alert_count:
  description: Number of active alerts.
  returned: always
  type: int
  sample: 0
messages:
  description: The alerts' messages.
  returned: always
  type: list
  elements: str
  sample: []
status:
  description: One line per target, C(OK) or its alert kinds.
  returned: always
  type: list
  elements: str
  sample: ["appdb: OK", "uploads-mirror: stale"]
targets:
  description: The catalog of each target (as C(lifeboat_catalog) returns it).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "appdb", "reachable": true, "backups": []}]
table:
  description: The catalog as text, one line per backup.
  returned: always
  type: list
  elements: str
  sample: ["== appdb (database) s3://lifeboat-backups/db"]
metrics_file:
  description: The metrics file written (null when none, or in check mode).
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/lifeboat.prom
report_file:
  description: The HTML report written (null when none, or in check mode).
  returned: always
  type: str
  sample: /var/lib/lifeboat/status/report.html
"""

import dataclasses  # noqa: E402

from ansible.module_utils.lifeboat import catalog, monitor, report  # noqa: E402
from ansible.module_utils.lifeboat import manifest as mf  # noqa: E402
from ansible.module_utils.lifeboat import options  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402

THRESHOLDS = dict(max_age_hours=26.0, window_days=7.0, min_count=7, median_of=7, size_change=0.5,
                  duration_change=0.5, duration_floor_s=60.0, row_loss=0.2, row_loss_min_rows=100,
                  verify_max_age_days=8.0, incomplete_grace_hours=6.0)


def target_options() -> dict:
    """Suboptions of ``targets``: the catalog's, and the S3 options of each target's store (unprefixed)."""
    return {**catalog.target_options(), **options.s3_spec("")}


def target_settings(item: dict):
    return options.s3_settings(item, "", concurrency=4)


def argument_spec() -> dict:
    spec = dict(targets=dict(type="list", elements="dict", required=True, options=target_options()))
    for name, default in THRESHOLDS.items():
        spec[name] = dict(type="int" if isinstance(default, int) else "float", default=default)
    spec.update(
        metrics_file=dict(type="path"),
        metrics_mode=dict(type="str", default="0644"),
        report_file=dict(type="path"),
        report_mode=dict(type="str", default="0600"),
    )
    return spec


def main() -> None:
    module = LifeboatModule(argument_spec(), what="backup status")
    p = module.params
    th = monitor.Thresholds(**{k: p[k] for k in THRESHOLDS})
    now = mf.utcnow()
    try:
        th.validate()
        found = catalog.scan_all(catalog.targets_from(p["targets"], target_settings), now)
        alerts = []
        for item, target in zip(p["targets"], found, strict=True):
            own = dataclasses.replace(th, max_age_hours=item["max_age_hours"]) if item.get("max_age_hours") else th
            alerts += monitor.evaluate(target, own, now)
        written = {"metrics_file": None, "report_file": None}
        if not module.check_mode:
            if p["metrics_file"]:
                monitor.write_atomic(p["metrics_file"], monitor.metrics_text(found, alerts, th, now),
                                     options.parse_mode(p["metrics_mode"], "metrics_mode"))
                written["metrics_file"] = p["metrics_file"]
            if p["report_file"]:
                monitor.write_atomic(p["report_file"], report.render(found, alerts, now),
                                     options.parse_mode(p["report_mode"], "report_mode"))
                written["report_file"] = p["report_file"]
    except Exception as exc:  # noqa: BLE001 - every failure is named the same way (module.py)
        module.fail_error(exc)
    kinds: dict[str, list[str]] = {}
    for a in alerts:
        kinds.setdefault(a["target"], []).append(a["kind"])
    status = [f"{t['name']}: " + (", ".join(kinds[t["name"]]) if t["name"] in kinds else "OK") for t in found]
    module.exit_json(changed=False, alerts=alerts, alert_count=len(alerts), messages=[a["message"] for a in alerts],
                     status=status, targets=[catalog.public(t) for t in found], table=catalog.render_table(found),
                     **written)


if __name__ == "__main__":
    main()
