#!/usr/bin/python
# Lifeboat: bucket replication and lifecycle retention rules (what no collection module manages as one rule).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_s3_replication
short_description: Manage a bucket's replication rule and lifecycle retention rule, idempotently
description:
  - Sets (or removes) one replication rule, identified by O(rule_id), on O(bucket) towards O(destination_bucket)
    with the IAM role O(role_arn); and/or one lifecycle rule, identified by O(lifecycle_rule_id), that expires
    current versions after O(expire_days), noncurrent versions after O(noncurrent_expire_days) and aborts
    incomplete multipart uploads after O(abort_multipart_days). Other rules of the bucket are kept.
  - Reads the current configuration first and writes only when the managed rule differs; returns a diff.
  - Versioning, default encryption and the public access block are left to C(amazon.aws.s3_bucket)
    (see the C(s3_replication) role). Replication needs versioning on both buckets.
  - "Providers without replication (Supabase Storage, SeaweedFS) cannot use O(replication=present): schedule
    C(lifeboat_s3_sync) instead (role variable C(s3_replication_provider_supports_replication=false))."
options:
  bucket:
    description: The bucket whose configuration is managed (the replication source, or the bucket to expire).
    type: str
    required: true
  replication:
    description: Whether the replication rule should exist; C(ignore) leaves replication alone.
    type: str
    choices: [present, absent, ignore]
    default: ignore
  destination_bucket:
    description: Name of the bucket replicated into (required with O(replication=present)).
    type: str
  role_arn:
    description: ARN of the IAM role S3 assumes to replicate (required with O(replication=present)).
    type: str
  rule_id:
    description: ID of the managed replication rule.
    type: str
    default: lifeboat-replication
  prefix:
    description: Only replicate keys under this prefix (empty for the whole bucket).
    type: str
    default: ""
  storage_class:
    description: Storage class of the replicas.
    type: str
    default: STANDARD
    choices: [STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE,
              REDUCED_REDUNDANCY]
  delete_marker_replication:
    description: Replicate delete markers (false keeps deleted files visible in the replica).
    type: bool
    default: false
  priority:
    description: Priority of the replication rule.
    type: int
    default: 1
  lifecycle:
    description: Whether the lifecycle retention rule should exist; C(ignore) leaves the lifecycle alone.
    type: str
    choices: [present, absent, ignore]
    default: ignore
  lifecycle_rule_id:
    description: ID of the managed lifecycle rule.
    type: str
    default: lifeboat-retention
  lifecycle_prefix:
    description: Only apply the lifecycle rule under this prefix.
    type: str
    default: ""
  expire_days:
    description: Expire current object versions this many days after creation (omit to keep them).
    type: int
  noncurrent_expire_days:
    description: Permanently delete noncurrent versions this many days after they became noncurrent.
    type: int
  abort_multipart_days:
    description:
      - Abort incomplete multipart uploads this many days after they started.
      - The default, one day, is the second net behind each run's own cleanup for uploads that a killed run
        or a vanished endpoint left.
    type: int
    default: 1
extends_documentation_fragment:
  - lifeboat_s3
requirements: [boto3]
author: Lifeboat
"""

EXAMPLES = r"""
- name: Replicate the application bucket to the backup region, keep 90 days of old versions there
  lifeboat_s3_replication:
    bucket: app-storage
    replication: present
    destination_bucket: app-storage-replica
    role_arn: arn:aws:iam::123456789012:role/lifeboat-replication
    storage_class: STANDARD_IA
    delete_marker_replication: false

- name: Retention on the replica
  lifeboat_s3_replication:
    bucket: app-storage-replica
    lifecycle: present
    noncurrent_expire_days: 90
    abort_multipart_days: 3
"""

RETURN = r"""
replication:
  description: The replication configuration after the run (normalised; in check mode, the planned one).
  returned: always
  type: dict
  sample: {"Role": "arn:aws:iam::123456789012:role/lifeboat-replication", "Rules": []}
lifecycle:
  description: The lifecycle configuration after the run (normalised).
  returned: always
  type: dict
  sample: {"Rules": [{"ID": "lifeboat-retention", "NoncurrentVersionExpiration": {"NoncurrentDays": 90}}]}
diff:
  description: Before and after of what changed.
  returned: when changed
  type: dict
  sample: {"before": {}, "after": {}}
"""

from ansible.module_utils.lifeboat import options  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402
from ansible.module_utils.lifeboat.s3 import make_client  # noqa: E402
from ansible.module_utils.lifeboat.s3config import (  # noqa: E402
    STORAGE_CLASSES,
    LifecycleRule,
    ReplicationRule,
    ensure_lifecycle,
    ensure_replication,
)


def argument_spec() -> dict:
    spec = dict(
        bucket=dict(type="str", required=True),
        replication=dict(type="str", default="ignore", choices=["present", "absent", "ignore"]),
        destination_bucket=dict(type="str"),
        role_arn=dict(type="str"),
        rule_id=dict(type="str", default="lifeboat-replication"),
        prefix=dict(type="str", default=""),
        storage_class=dict(type="str", default="STANDARD", choices=list(STORAGE_CLASSES)),
        delete_marker_replication=dict(type="bool", default=False),
        priority=dict(type="int", default=1),
        lifecycle=dict(type="str", default="ignore", choices=["present", "absent", "ignore"]),
        lifecycle_rule_id=dict(type="str", default="lifeboat-retention"),
        lifecycle_prefix=dict(type="str", default=""),
        expire_days=dict(type="int"),
        noncurrent_expire_days=dict(type="int"),
        abort_multipart_days=dict(type="int", default=1),
    )
    spec.update(options.s3_spec())
    return spec


def main() -> None:
    module = LifeboatModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("replication", "present", ["destination_bucket", "role_arn"])],
        required_together=options.s3_together(),
    )
    p = module.params
    settings = options.s3_settings(p)
    changed = False
    before: dict = {}
    after: dict = {}
    out: dict = {"replication": {}, "lifecycle": {}}
    try:
        client = make_client(settings)
        if p["replication"] != "ignore":
            want = None
            if p["replication"] == "present":
                want = ReplicationRule(destination_bucket=p["destination_bucket"], role_arn=p["role_arn"],
                                       rule_id=p["rule_id"], prefix=p["prefix"], storage_class=p["storage_class"],
                                       delete_marker_replication=p["delete_marker_replication"],
                                       priority=p["priority"])
            c, b, a = ensure_replication(client, p["bucket"], want, settings, module.check_mode)
            out["replication"] = a
            if c:
                changed = True
                before["replication"], after["replication"] = b, a
        if p["lifecycle"] != "ignore":
            rule = None
            if p["lifecycle"] == "present":
                rule = LifecycleRule(rule_id=p["lifecycle_rule_id"], prefix=p["lifecycle_prefix"],
                                     expire_days=p["expire_days"], noncurrent_expire_days=p["noncurrent_expire_days"],
                                     abort_multipart_days=p["abort_multipart_days"])
            c, b, a = ensure_lifecycle(client, p["bucket"], rule, settings, module.check_mode)
            out["lifecycle"] = a
            if c:
                changed = True
                before["lifecycle"], after["lifecycle"] = b, a
    except Exception as exc:  # noqa: BLE001 - every failure is named the same way (module.py)
        module.fail_error(exc)
    result = dict(changed=changed, **out)
    if changed:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
