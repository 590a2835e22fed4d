#!/usr/bin/python
# Lifeboat: list every backup of every target (the catalog).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_catalog
short_description: List every backup set of every Lifeboat target, newest first
description:
  - Reads each target's store (one listing per target) and returns every backup set with its id, start and end
    time, age, size, duration, format, compression, encryption (recipients' fingerprints), table and row totals,
    whether its manifest is present, and its latest verification (passed, failed or inconclusive; when; RTO).
  - Also lists backup sets without a manifest (incomplete), sets whose manifest is damaged or torn (damaged, by id
    with the reason; never silently skipped), multipart uploads left open under the root, the
    older procedure's C(db-backup-*.sql.gz) and C(backup_*.sql.gz) dumps (marked C(legacy)), and for storage
    targets the last run and last successful run of the sync or archive job.
  - A target that cannot be read (missing bucket, rejected credentials, unreachable endpoint) is returned with
    C(reachable=false) and the cause in C(error); the other targets are still read.
  - Reads only; check mode is the same as a normal run.
extends_documentation_fragment: [lifeboat_s3.targets]
options:
  limit:
    description: At most this many backups per target in RV(table) and RV(targets) (newest first); 0 lists all.
    type: int
    default: 0
  table_rows:
    description: Include each backup's per-table row counts (C(table_rows)) in RV(targets).
    type: bool
    default: false
requirements: [boto3]
author: Lifeboat
"""

EXAMPLES = r"""
- name: List the backups of the application database
  lifeboat_catalog:
    targets:
      - name: appdb
        destination: s3://lifeboat-backups/db
        database: appdb
        endpoint: https://s3.eu-central-1.amazonaws.com
        region: eu-central-1
      - name: uploads-mirror
        kind: sync
        run_record: s3://lifeboat-backups/runs/storage-sync
  register: catalog

- name: Show the table
  ansible.builtin.debug:
    msg: "{{ catalog.table }}"
"""

RETURN = r"""
targets:
  description:
    - One entry per target, in the order given; C(backups) newest first.
    - "Each backup: id, database, legacy (null, C(db-backup) or C(backup_)), started_at, finished_at, age_s, size,
      duration_s, format, compression, encryption (method, recipients), tables, rows, artifact_key, manifest_key
      (null: no manifest), verification (the latest: outcome, at, level, restore_duration_s, rto_s_per_gib,
      failures), verifications (all, oldest first)."
  returned: always
  type: list
  elements: dict
  sample: [{"name": "appdb", "kind": "database", "reachable": true, "error": null,
            "backups": [{"id": "appdb-20261122T031500Z", "size": 1048576, "rows": 5120}],
            "incomplete": [], "damaged": [], "open_uploads": [], "last_run": null, "last_success": null}]
table:
  description: The catalog as text, one block per target and one line per backup (newest first).
  returned: always
  type: list
  elements: str
  sample: ["== appdb (database) s3://lifeboat-backups/db", "   ID  STARTED  AGE ..."]
backups:
  description: Number of backup sets listed over all targets.
  returned: always
  type: int
  sample: 12
unreachable_targets:
  description: Names of the targets that could not be read.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.lifeboat import catalog  # noqa: E402
from ansible.module_utils.lifeboat import options  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402


def target_options() -> dict:
    """Suboptions of ``targets``: the catalog's, and the S3 options of each target's store (unprefixed)."""
    return {**catalog.target_options(), **options.s3_spec("")}


def target_settings(item: dict):
    return options.s3_settings(item, "", concurrency=4)


def argument_spec() -> dict:
    return dict(
        targets=dict(type="list", elements="dict", required=True, options=target_options()),
        limit=dict(type="int", default=0),
        table_rows=dict(type="bool", default=False),
    )


def main() -> None:
    module = LifeboatModule(argument_spec(), what="catalog")
    p = module.params
    if p["limit"] < 0:
        module.fail_json(msg="limit: must be 0 (all) or more")
    try:
        found = catalog.scan_all(catalog.targets_from(p["targets"], target_settings))
    except Exception as exc:  # noqa: BLE001 - every failure is named the same way (module.py)
        module.fail_error(exc)
    if p["limit"]:
        for t in found:
            t["backups"] = t["backups"][: p["limit"]]
    module.exit_json(changed=False, targets=[catalog.public(t, p["table_rows"]) for t in found],
                     table=catalog.render_table(found), backups=sum(len(t["backups"]) for t in found),
                     unreachable_targets=[t["name"] for t in found if not t["reachable"]])


if __name__ == "__main__":
    main()
