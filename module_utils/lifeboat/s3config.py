"""Bucket configuration no collection module covers: a replication rule and a lifecycle rule, idempotent.

Each function reads the current configuration, compares the rule it manages
(by ID, other rules are kept as they are) in a normalised shape, writes only
when something differs, and returns (changed, before, after) for a diff.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.s3 import S3Settings, translate

STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER",
                   "DEEP_ARCHIVE", "REDUCED_REDUNDANCY")


@dataclass
class ReplicationRule:
    destination_bucket: str
    role_arn: str
    rule_id: str = "lifeboat-replication"
    prefix: str = ""
    storage_class: str = "STANDARD"
    delete_marker_replication: bool = False
    priority: int = 1

    def validate(self) -> None:
        if not self.role_arn.startswith("arn:"):
            raise ConfigError(f"role_arn: '{self.role_arn}' is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                              "role_arn")
        if self.storage_class not in STORAGE_CLASSES:
            raise ConfigError(f"storage_class: '{self.storage_class}' is not one of {', '.join(STORAGE_CLASSES)}",
                              "storage_class")

    def rule(self) -> dict[str, Any]:
        return {
            "ID": self.rule_id,
            "Priority": self.priority,
            "Status": "Enabled",
            "Filter": {"Prefix": self.prefix},
            "DeleteMarkerReplication": {"Status": "Enabled" if self.delete_marker_replication else "Disabled"},
            "Destination": {"Bucket": f"arn:aws:s3:::{self.destination_bucket}", "StorageClass": self.storage_class},
        }


@dataclass
class LifecycleRule:
    rule_id: str = "lifeboat-retention"
    prefix: str = ""
    expire_days: int | None = None
    noncurrent_expire_days: int | None = None
    abort_multipart_days: int | None = 1

    def validate(self) -> None:
        for name in ("expire_days", "noncurrent_expire_days", "abort_multipart_days"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}: must be at least 1 day", name)
        if self.expire_days is None and self.noncurrent_expire_days is None and self.abort_multipart_days is None:
            raise ConfigError("lifecycle: give at least one of expire_days, noncurrent_expire_days, "
                              "abort_multipart_days", "lifecycle")

    def rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"ID": self.rule_id, "Status": "Enabled", "Filter": {"Prefix": self.prefix}}
        if self.expire_days is not None:
            rule["Expiration"] = {"Days": self.expire_days}
        if self.noncurrent_expire_days is not None:
            rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": self.noncurrent_expire_days}
        if self.abort_multipart_days is not None:
            rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": self.abort_multipart_days}
        return rule


def _norm_replication(rule: dict[str, Any]) -> dict[str, Any]:
    flt = rule.get("Filter") or {}
    prefix = flt.get("Prefix", (flt.get("And") or {}).get("Prefix", rule.get("Prefix", ""))) or ""
    dest = rule.get("Destination") or {}
    return {
        "ID": rule.get("ID"),
        "Priority": int(rule.get("Priority", 0) or 0),
        "Status": rule.get("Status"),
        "Filter": {"Prefix": prefix},
        "DeleteMarkerReplication": {"Status": (rule.get("DeleteMarkerReplication") or {}).get("Status", "Disabled")},
        "Destination": {"Bucket": dest.get("Bucket"), "StorageClass": dest.get("StorageClass", "STANDARD")},
    }


def _norm_lifecycle(rule: dict[str, Any]) -> dict[str, Any]:
    flt = rule.get("Filter") or {}
    out: dict[str, Any] = {"ID": rule.get("ID"), "Status": rule.get("Status"),
                           "Filter": {"Prefix": flt.get("Prefix", rule.get("Prefix", "")) or ""}}
    if (rule.get("Expiration") or {}).get("Days") is not None:
        out["Expiration"] = {"Days": int(rule["Expiration"]["Days"])}
    if (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays") is not None:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(rule["NoncurrentVersionExpiration"]
                                                                    ["NoncurrentDays"])}
    if (rule.get("AbortIncompleteMultipartUpload") or {}).get("DaysAfterInitiation") is not None:
        out["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
    return out


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def ensure_replication(client: Any, bucket: str, want: ReplicationRule | None, settings: S3Settings | None = None,
                       check_mode: bool = False) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """Make ``bucket``'s replication hold rule ``want`` (None: remove the lifeboat rule)."""
    try:
        current = client.get_bucket_replication(Bucket=bucket).get("ReplicationConfiguration") or {}
    except Exception as exc:  # noqa: BLE001
        if _code(exc) != "ReplicationConfigurationNotFoundError":
            raise translate(exc, f"bucket s3://{bucket} replication", settings, bucket) from None
        current = {}
    rules = [_norm_replication(r) for r in current.get("Rules", []) or []]
    before = {"Role": current.get("Role"), "Rules": rules} if current else {}
    rule_id = want.rule_id if want else "lifeboat-replication"
    others = [r for r in rules if r["ID"] != rule_id]
    if want is None:
        after = {"Role": current.get("Role"), "Rules": others} if others else {}
    else:
        want.validate()
        status = client.get_bucket_versioning(Bucket=bucket).get("Status")
        if status != "Enabled":
            raise ConfigError(f"bucket: replication needs versioning enabled on s3://{bucket} (it is "
                              f"{(status or 'not enabled').lower()})", "bucket")
        after = {"Role": want.role_arn, "Rules": others + [want.rule()]}
    if _sorted_rules(before) == _sorted_rules(after):
        return False, before, after
    if not check_mode:
        try:
            if after:
                client.put_bucket_replication(Bucket=bucket, ReplicationConfiguration=after)
            else:
                client.delete_bucket_replication(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"bucket s3://{bucket} replication", settings, bucket) from None
    return True, before, after


def ensure_lifecycle(client: Any, bucket: str, want: LifecycleRule | None, settings: S3Settings | None = None,
                     check_mode: bool = False) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """Make ``bucket``'s lifecycle hold rule ``want`` (None: remove it); other rules are kept."""
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", []) or []
    except Exception as exc:  # noqa: BLE001
        if _code(exc) != "NoSuchLifecycleConfiguration":
            raise translate(exc, f"bucket s3://{bucket} lifecycle", settings, bucket) from None
        rules = []
    norm = [_norm_lifecycle(r) for r in rules]
    before = {"Rules": norm} if norm else {}
    rule_id = want.rule_id if want else "lifeboat-retention"
    others = [r for r in norm if r["ID"] != rule_id]
    if want is not None:
        want.validate()
    new_rules = others + ([want.rule()] if want else [])
    after = {"Rules": new_rules} if new_rules else {}
    if _sorted_rules(before) == _sorted_rules(after):
        return False, before, after
    if not check_mode:
        try:
            if new_rules:
                client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=after)
            else:
                client.delete_bucket_lifecycle(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"bucket s3://{bucket} lifecycle", settings, bucket) from None
    return True, before, after


def _sorted_rules(cfg: dict[str, Any]) -> dict[str, Any]:
    if not cfg:
        return {}
    out = dict(cfg)
    out["Rules"] = sorted(cfg.get("Rules", []), key=lambda r: str(r.get("ID")))
    return out
