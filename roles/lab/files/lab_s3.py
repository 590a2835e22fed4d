"""Lab helper: create buckets and seed sample objects on the lab's SeaweedFS.

Reads a JSON request on stdin and prints a JSON result with "changed".
Credentials are read from the lab's 0600 secret files named in the request, so
they travel neither in argv nor in the task's arguments. Commands:
  buckets  {"endpoint", "region", "access_key_file", "secret_key_file",
            "buckets": [{"name", "versioning", "abort_multipart_days" (optional)}]}
  seed     {"endpoint", "region", "access_key_file", "secret_key_file", "bucket",
            "pg": {"host", "port", "dbname", "user", "password_file"}}
  storage  {"endpoint", "region", "access_key_file", "secret_key_file",
            "pg": {...}}: the Supabase-like project's storage: one unversioned bucket per
            storage.buckets row (as Supabase Storage has: no versioning), one object
            per storage.objects row (bucket_id, name)
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
import psycopg
from botocore.exceptions import BotoCoreError, ClientError


def secret(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def client(req: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=req["endpoint"],
        region_name=req["region"],
        aws_access_key_id=secret(req["access_key_file"]),
        aws_secret_access_key=secret(req["secret_key_file"]),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


def ensure_buckets(req: dict[str, Any]) -> dict[str, Any]:
    s3 = client(req)
    changed: list[str] = []
    deadline = time.monotonic() + 30
    while True:  # the S3 port can answer a moment before the filer is ready
        try:
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            break
        except (ClientError, BotoCoreError) as exc:
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if (isinstance(exc, ClientError) and status < 500) or time.monotonic() > deadline:
                raise  # a refused credential is final; only "not ready yet" is retried
            time.sleep(0.5)
    for bucket in req["buckets"]:
        name = bucket["name"]
        if name not in existing:
            s3.create_bucket(Bucket=name)
            changed.append(f"created {name}")
        want = "Enabled" if bucket.get("versioning") else None
        have = s3.get_bucket_versioning(Bucket=name).get("Status")
        if want and have != want:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": want})
            changed.append(f"versioning {name}")
        days = bucket.get("abort_multipart_days")
        if days and _ensure_abort_rule(s3, name, int(days)):
            changed.append(f"lifecycle {name}: abort incomplete multipart uploads after {days} day(s)")
    return {"changed": bool(changed), "actions": changed}


ABORT_RULE_ID = "lifeboat-abort-incomplete-multipart"


def _ensure_abort_rule(s3: Any, name: str, days: int) -> bool:
    """The bucket's lifecycle holds the abort-incomplete-multipart rule (other rules kept); True when changed.

    The second net behind each backup's own sweep of killed runs' uploads, as docs/deploy.md asks of a
    production bucket."""
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=name).get("Rules", [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    want = {"ID": ABORT_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days}}
    mine = [r for r in rules if r.get("ID") == ABORT_RULE_ID]
    if mine and mine[0].get("AbortIncompleteMultipartUpload") == want["AbortIncompleteMultipartUpload"] \
            and mine[0].get("Status") == "Enabled":
        return False
    others = [r for r in rules if r.get("ID") != ABORT_RULE_ID]
    s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [*others, want]})
    return True


def object_body(key: str) -> bytes:
    return f"lifeboat lab sample object\nkey={key}\n".encode()


def seed(req: dict[str, Any]) -> dict[str, Any]:
    pg = req["pg"]
    with psycopg.connect(host=pg["host"], port=pg["port"], dbname=pg["dbname"],
                         user=pg["user"], password=secret(pg["password_file"]), connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT storage_path FROM public.videos"
            " UNION SELECT output_path FROM public.generated_videos WHERE output_path IS NOT NULL"
        ).fetchall()
    wanted = {r[0] for r in rows}
    s3 = client(req)
    bucket = req["bucket"]
    present: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        present.update(o["Key"] for o in page.get("Contents", []))
    missing = sorted(wanted - present)

    def put(key: str) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=object_body(key), ContentType="video/mp4")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, missing))
    return {"changed": bool(missing), "uploaded": len(missing), "total": len(wanted)}


def seed_storage(req: dict[str, Any]) -> dict[str, Any]:
    pg = req["pg"]
    with psycopg.connect(host=pg["host"], port=pg["port"], dbname=pg["dbname"],
                         user=pg["user"], password=secret(pg["password_file"]), connect_timeout=10) as conn:
        buckets = [r[0] for r in conn.execute("SELECT id FROM storage.buckets ORDER BY id").fetchall()]
        rows = conn.execute("SELECT bucket_id, name, coalesce(metadata ->> 'mimetype', 'application/octet-stream')"
                            " FROM storage.objects").fetchall()
    result = ensure_buckets({**req, "buckets": [{"name": b, "versioning": False} for b in buckets]})
    s3 = client(req)
    missing: list[tuple[str, str, str]] = []
    for bucket in buckets:
        present: set[str] = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            present.update(o["Key"] for o in page.get("Contents", []))
        missing.extend(r for r in rows if r[0] == bucket and r[1] not in present)

    def put(row: tuple[str, str, str]) -> None:
        s3.put_object(Bucket=row[0], Key=row[1], Body=object_body(f"{row[0]}/{row[1]}"), ContentType=row[2])

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, missing))
    return {"changed": bool(missing) or result["changed"], "uploaded": len(missing), "total": len(rows),
            "buckets": buckets}


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    req = json.load(sys.stdin)
    try:
        if command == "buckets":
            result = ensure_buckets(req)
        elif command == "seed":
            result = seed(req)
        elif command == "storage":
            result = seed_storage(req)
        else:
            print(json.dumps({"failed": True, "msg": f"unknown command {command!r}"}))
            return 2
    except (ClientError, BotoCoreError) as exc:
        print(json.dumps({"failed": True, "msg": f"S3 at {req.get('endpoint')}: {exc}"}))
        return 1
    except psycopg.Error as exc:
        pg = req.get("pg", {})
        print(json.dumps({"failed": True, "msg": f"PostgreSQL {pg.get('host')}:{pg.get('port')}: {exc}"}))
        return 1
    except OSError as exc:
        print(json.dumps({"failed": True, "msg": f"cannot read a lab secret file: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
