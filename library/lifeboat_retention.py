#!/usr/bin/python
# Lifeboat: retention of backup sets (database backups, directory and configuration archives).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_retention
short_description: Delete old backups by a grandfather-father-son policy that never deletes the backup you need
description:
  - Lists every backup set under O(destination) (an S3 prefix or a local directory); database backups
    (one series per database and scope), directory and configuration archives (one series per name), incomplete
    sets (no manifest), and the older procedure's dumps C(db-backup-*.sql.gz) and C(backup_YYYYmmdd_HHMMSS.sql.gz).
  - "Semantics are restic's: each rule counts on its own; C(keep_daily) and friends keep the newest backup of each
    of the N newest UTC calendar buckets (hour, day, ISO week, month, year) holding a backup; a rule with count left
    at the oldest backup keeps the oldest; O(keep_within) is measured from the newest complete backup, not from now."
  - Guarantees no policy overrides; the newest O(min_verified) backups whose latest verification passed, the newest
    complete backup, and incomplete backups younger than O(incomplete_grace) are kept. Older incomplete sets are
    deleted and their open multipart uploads aborted. A policy that keeps nothing is refused.
  - The older procedure's dumps are left alone unless O(include_legacy=true); then they form the series
    C(older-procedure), dated by the timestamp in their names.
  - Check mode (and diff mode) lists every backup with keep/delete and the rule or guarantee that kept it.
  - On a versioned bucket a delete leaves a delete marker and a noncurrent version; the result's C(warnings) say so.
  - The whole store is listed before anything is deleted; an unreachable bucket fails naming the cause and deletes
    nothing. The manifest of a set is deleted first, so an interrupted run leaves an incomplete set, never a manifest
    without its artifact.
options:
  destination:
    description: C(s3://bucket/prefix) or an absolute directory holding the backups (the same as the backup's).
    type: str
    required: true
  names:
    description:
      - Only these series, by folder name (a database's or an archive's name; C(older-procedure) for the older
        procedure's dumps). Default every series under O(destination).
    type: list
    elements: str
    default: []
  keep_last:
    description: Keep the N newest complete backups.
    type: int
    default: 0
  keep_hourly:
    description: Keep the newest backup of each of the N newest hours (UTC) that have one.
    type: int
    default: 0
  keep_daily:
    description: Keep the newest backup of each of the N newest days (UTC) that have one.
    type: int
    default: 0
  keep_weekly:
    description: Keep the newest backup of each of the N newest ISO 8601 weeks that have one.
    type: int
    default: 0
  keep_monthly:
    description: Keep the newest backup of each of the N newest months that have one.
    type: int
    default: 0
  keep_yearly:
    description: Keep the newest backup of each of the N newest years that have one.
    type: int
    default: 0
  keep_within:
    description:
      - Keep every backup not older than this, measured from the newest complete backup (e.g. C(30d), C(2w),
        C(1y6m), C(36h)).
    type: str
  min_verified:
    description: Always keep the N newest backups of each series whose latest verification record passed.
    type: int
    default: 1
  incomplete_grace:
    description: An incomplete backup (no manifest) younger than this may still be running and is kept (e.g. C(24h)).
    type: str
    default: 24h
  include_legacy:
    description: Apply the policy to the older procedure's dumps too (they are left alone otherwise).
    type: bool
    default: false
extends_documentation_fragment:
  - lifeboat_s3
requirements: [boto3]
author: Lifeboat
"""

EXAMPLES = r"""
- name: See what a policy would delete (every backup, keep/delete and why)
  lifeboat_retention:
    destination: s3://lifeboat-backups/db
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 12
  check_mode: true
  diff: true

- name: Prune the storage archives in a local directory, keeping the older procedure's dumps out of it
  lifeboat_retention:
    destination: /var/backups/lifeboat
    names: [storage, config]
    keep_within: 14d
    keep_monthly: 6
"""

RETURN = r"""
backups:
  description: Every backup set found, oldest first in each series, with the decision and its reasons.
  returned: always
  type: list
  elements: dict
  sample:
    - {"series": "database:appdb", "kind": "database", "backup_id": "appdb-20261130T031500Z",
       "time": "2026-11-30T03:15:00Z", "complete": true, "verified": true, "action": "keep",
       "reasons": ["newest complete", "keep_daily 2026-11-30"], "objects": 3, "open_uploads": 0, "size": 1234}
deleted:
  description: Ids of the backups deleted (empty in check mode).
  returned: always
  type: list
  elements: str
  sample: ["appdb-20261001T031500Z"]
deleted_objects:
  description: Objects (or files) deleted.
  returned: always
  type: int
  sample: 6
aborted_uploads:
  description: Open multipart uploads of deleted incomplete backups that were aborted.
  returned: always
  type: int
  sample: 1
would_delete:
  description: Ids of the backups the policy deletes (in check mode, what a real run would delete).
  returned: always
  type: list
  elements: str
  sample: ["appdb-20261001T031500Z"]
report:
  description: One line per backup, oldest first in each series; action, series, id, time and the reasons.
  returned: always
  type: list
  elements: str
  sample:
    - "keep   database:appdb appdb-20261130T031500Z (2026-11-30T03:15:00Z): newest complete; keep_daily 2026-11-30"
versioning:
  description: Versioning status of the bucket (C(Enabled), C(Suspended), empty when never enabled or for a directory).
  returned: always
  type: str
  sample: Enabled
policy:
  description: The policy applied.
  returned: always
  type: dict
  sample: {"keep_daily": 7, "min_verified": 1, "incomplete_grace_h": 24}
"""

from ansible.module_utils.lifeboat import options  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402
from ansible.module_utils.lifeboat.prune import run_retention  # noqa: E402
from ansible.module_utils.lifeboat.retention import RULES, Policy, parse_duration, parse_timedelta  # noqa: E402
from ansible.module_utils.lifeboat.storage import open_storage  # noqa: E402


def argument_spec() -> dict:
    spec = dict(
        destination=dict(type="str", required=True),
        names=dict(type="list", elements="str", default=[]),
        keep_last=dict(type="int", default=0),
        keep_hourly=dict(type="int", default=0),
        keep_daily=dict(type="int", default=0),
        keep_weekly=dict(type="int", default=0),
        keep_monthly=dict(type="int", default=0),
        keep_yearly=dict(type="int", default=0),
        keep_within=dict(type="str"),
        min_verified=dict(type="int", default=1),
        incomplete_grace=dict(type="str", default="24h"),
        include_legacy=dict(type="bool", default=False),
    )
    spec.update(options.s3_spec())
    return spec


def module_kwargs() -> dict:
    return dict(supports_check_mode=True, required_together=options.s3_together())


def policy_from(params: dict) -> Policy:
    grace = parse_timedelta(params["incomplete_grace"], "incomplete_grace")
    policy = Policy(keep_within=parse_duration(params["keep_within"]), min_verified=params["min_verified"],
                    **{r: params[r] for r in RULES}, **({"incomplete_grace": grace} if grace is not None else {}))
    policy.validate()
    return policy


def main() -> None:
    module = LifeboatModule(argument_spec=argument_spec(), **module_kwargs())
    p = module.params
    try:
        policy = policy_from(p)
        storage = open_storage(p["destination"], options.s3_settings(p))
        res = run_retention(storage, policy, include_legacy=p["include_legacy"], names=p["names"] or None,
                            check_mode=module.check_mode)
    except Exception as exc:  # noqa: BLE001 - every failure is named the same way (module.py)
        module.fail_error(exc)
    for warning in res.warnings:
        module.warn(warning)
    would = [b["backup_id"] for b in res.backups if b["action"] == "delete"]
    module.exit_json(changed=res.changed, backups=res.backups, deleted=res.deleted,
                     deleted_objects=res.deleted_objects, aborted_uploads=res.aborted_uploads, would_delete=would,
                     report=res.before.splitlines(),
                     versioning=res.versioning, policy=res.policy,
                     diff={"before": res.before, "after": res.after,
                           "before_header": p["destination"], "after_header": p["destination"] + " (kept)"})


if __name__ == "__main__":
    main()
