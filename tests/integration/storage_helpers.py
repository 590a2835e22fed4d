"""Helpers shared by the storage integration tests (buckets on the lab's SeaweedFS)."""
from __future__ import annotations

import contextlib

from testlib import empty_bucket, s3_client, unique

from ansible.module_utils.lifeboat.s3 import S3Settings

ODD_KEYS = [
    "with space/a b.txt",
    "unicode/é ü 日本.txt",
    "plus+sign/a+b=c.txt",
    "a",
    "a-c",
    "a/b",
    "a/b/c",
    "deep/1/2/3/leaf.bin",
]


def settings(endpoint: dict, **kw) -> S3Settings:
    return S3Settings(endpoint=endpoint["endpoint"], region=endpoint["region"],
                      access_key=endpoint["access_key"], secret_key=endpoint["secret_key"], **kw)


@contextlib.contextmanager
def bucket(endpoint: dict, versioned: bool = False, prefix: str = "lbtest"):
    client = s3_client(endpoint)
    name = unique(prefix)
    client.create_bucket(Bucket=name)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    try:
        yield name, client
    finally:
        try:
            empty_bucket(client, name)
        except Exception as exc:  # report, do not hide the test's outcome
            print(f"cleanup of bucket {name} failed: {exc}")


def contents(client, name: str, prefix: str = "") -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix):
        for obj in page.get("Contents", []) or []:
            out[obj["Key"][len(prefix):]] = client.get_object(Bucket=name, Key=obj["Key"])["Body"].read()
    return out
