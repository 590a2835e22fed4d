"""Replication and lifecycle configuration round trips against moto server (configuration only)."""
from __future__ import annotations

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from moto_helpers import moto_server

from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.s3config import LifecycleRule, ReplicationRule, ensure_lifecycle, ensure_replication

ROLE = "arn:aws:iam::123456789012:role/lifeboat-replication"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    with moto_server(str(tmp_path_factory.mktemp("moto"))) as endpoint:
        yield endpoint


@pytest.fixture
def client(moto):
    return boto3.client("s3", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=Config(s3={"addressing_style": "path"}))


def test_replication_round_trip(client):
    client.create_bucket(Bucket="src-a")
    client.create_bucket(Bucket="dst-a")
    # moto 5.2 answers GetBucketReplication with Filter.Prefix "" and DeleteMarkerReplication Disabled
    # whatever was stored: the round trip uses those values; the prefix/delete-marker request shape is
    # checked on the planned configuration below.
    want = ReplicationRule(destination_bucket="dst-a", role_arn=ROLE, storage_class="STANDARD_IA")
    with pytest.raises(ConfigError, match="needs versioning enabled"):
        ensure_replication(client, "src-a", want)
    client.put_bucket_versioning(Bucket="src-a", VersioningConfiguration={"Status": "Enabled"})
    changed, before, after = ensure_replication(client, "src-a", want, check_mode=True)
    assert changed and before == {}
    with pytest.raises(botocore.exceptions.ClientError, match="ReplicationConfigurationNotFound"):
        client.get_bucket_replication(Bucket="src-a")
    assert ensure_replication(client, "src-a", want)[0]
    stored = client.get_bucket_replication(Bucket="src-a")["ReplicationConfiguration"]
    assert stored["Role"] == ROLE
    rule = stored["Rules"][0]
    assert rule["Destination"] == {"Bucket": "arn:aws:s3:::dst-a", "StorageClass": "STANDARD_IA"}
    assert rule["ID"] == "lifeboat-replication" and rule["Status"] == "Enabled"
    assert not ensure_replication(client, "src-a", want)[0], "second run: no change"
    want.storage_class = "GLACIER_IR"
    assert ensure_replication(client, "src-a", want)[0]
    planned = ReplicationRule(destination_bucket="dst-a", role_arn=ROLE, prefix="videos/",
                              delete_marker_replication=True)
    changed, _, after = ensure_replication(client, "src-a", planned, check_mode=True)
    assert changed and after["Rules"][0]["Filter"] == {"Prefix": "videos/"}
    assert after["Rules"][0]["DeleteMarkerReplication"] == {"Status": "Enabled"}
    with pytest.raises(ConfigError, match="role_arn: 'nope' is not an IAM role ARN"):
        ensure_replication(client, "src-a", ReplicationRule(destination_bucket="dst-a", role_arn="nope"))
    assert ensure_replication(client, "src-a", None)[0]
    assert not ensure_replication(client, "src-a", None)[0]


def test_lifecycle_round_trip(client):
    client.create_bucket(Bucket="dst-b")
    want = LifecycleRule(expire_days=365, noncurrent_expire_days=90, abort_multipart_days=3)
    assert ensure_lifecycle(client, "dst-b", want)[0]
    rules = client.get_bucket_lifecycle_configuration(Bucket="dst-b")["Rules"]
    assert rules[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90
    assert rules[0]["Expiration"]["Days"] == 365
    assert rules[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 3
    assert not ensure_lifecycle(client, "dst-b", want)[0]
    with pytest.raises(ConfigError, match="noncurrent_expire_days: must be at least 1"):
        ensure_lifecycle(client, "dst-b", LifecycleRule(noncurrent_expire_days=0))
