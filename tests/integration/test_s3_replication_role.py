"""Role s3_replication against moto server: applied twice (second run changes nothing), stored config = inputs."""
from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from testlib import run_playbook
from moto_helpers import moto_server

ROLE_ARN = "arn:aws:iam::123456789012:role/lifeboat-replication"

PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: s3_replication
"""


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    with moto_server(str(tmp_path_factory.mktemp("moto"))) as endpoint:
        yield endpoint


def client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing-secret", config=Config(s3={"addressing_style": "path"}))


def apply(tmp_path, endpoint, **overrides):
    values = {
        "s3_replication_source_bucket": "app-storage-src",
        "s3_replication_destination_bucket": "app-storage-replica",
        "s3_replication_source_endpoint": endpoint,
        "s3_replication_source_region": "us-east-1",
        "s3_replication_source_access_key": "testing",
        "s3_replication_source_secret_key": "testing-secret",
        "s3_replication_role_arn": ROLE_ARN,
        "s3_replication_storage_class": "STANDARD_IA",
        "s3_replication_noncurrent_expire_days": 45,
        "s3_replication_expire_days": 400,
        "s3_replication_abort_multipart_days": 3,
        "s3_replication_policy_dir": str(tmp_path / "policies"),
    }
    values.update(overrides)
    (tmp_path / "vars.json").write_text(json.dumps(values))
    (tmp_path / "play.yml").write_text(PLAY)
    proc = run_playbook(str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}")
    assert "testing-secret" not in proc.stdout + proc.stderr
    return proc


def test_role_twice_no_change_and_config_matches(tmp_path, moto):
    first = apply(tmp_path, moto)
    assert first.returncode == 0, first.stdout + first.stderr
    second = apply(tmp_path, moto)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "changed=0" in second.stdout, second.stdout

    c = client(moto)
    for bucket in ("app-storage-src", "app-storage-replica"):
        assert c.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        enc = c.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        pab = c.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(pab.values()) and len(pab) == 4
    rep = c.get_bucket_replication(Bucket="app-storage-src")["ReplicationConfiguration"]
    assert rep["Role"] == ROLE_ARN
    assert [(r["ID"], r["Status"], r["Destination"]["Bucket"], r["Destination"]["StorageClass"])
            for r in rep["Rules"]] == [("lifeboat-replication", "Enabled", "arn:aws:s3:::app-storage-replica",
                                        "STANDARD_IA")]
    rules = c.get_bucket_lifecycle_configuration(Bucket="app-storage-replica")["Rules"]
    assert len(rules) == 1
    assert rules[0]["Expiration"] == {"Days": 400}
    assert rules[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 45
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}

    pol = json.loads((tmp_path / "policies" / "replication_role.json").read_text())
    actions = {a for s in pol["Statement"] for a in s["Action"]}
    assert "s3:ReplicateObject" in actions and "s3:ReplicateDelete" not in actions and "s3:*" not in actions
    assert any("arn:aws:s3:::app-storage-replica/*" in s["Resource"] for s in pol["Statement"])
    user = json.loads((tmp_path / "policies" / "backup_user.json").read_text())
    deny = [s for s in user["Statement"] if s["Effect"] == "Deny"][0]
    assert "s3:DeleteObjectVersion" in deny["Action"]
    assert oct((tmp_path / "policies").stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "policies" / "backup_user.json").stat().st_mode & 0o777) == "0o600"

    # an input change is applied, then stable again
    changed = apply(tmp_path, moto, s3_replication_noncurrent_expire_days=30)
    assert changed.returncode == 0 and "changed=0" not in changed.stdout
    assert c.get_bucket_lifecycle_configuration(Bucket="app-storage-replica")["Rules"][0][
        "NoncurrentVersionExpiration"]["NoncurrentDays"] == 30


def test_role_without_provider_replication(tmp_path, moto):
    proc = apply(tmp_path, moto, s3_replication_source_bucket="supabase-like-src",
                 s3_replication_destination_bucket="supabase-like-backup",
                 s3_replication_provider_supports_replication=False, s3_replication_role_arn="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "does not support bucket replication" in proc.stdout
    assert "backup_schedule_storage_playbook: playbooks/storage_backup.yml" in proc.stdout
    c = client(moto)
    with pytest.raises(c.exceptions.ClientError, match="ReplicationConfigurationNotFound"):
        c.get_bucket_replication(Bucket="supabase-like-src")
    assert c.get_bucket_versioning(Bucket="supabase-like-backup")["Status"] == "Enabled"


def test_role_refuses_bad_inputs(tmp_path, moto):
    proc = apply(tmp_path, moto, s3_replication_role_arn="not-an-arn")
    assert proc.returncode != 0 and "s3_replication needs two distinct buckets" in proc.stdout
