"""Helpers shared by the tests (plain functions and constants; fixtures live in the conftest.py files).

Importing this module makes ``ansible.module_utils.lifeboat`` importable exactly as modules import it.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import uuid

import ansible.module_utils

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(REPO / "module_utils"))

LAB_DIR = pathlib.Path(os.environ.get("LIFEBOAT_LAB_DIR", REPO / ".lab"))
VENV_BIN = pathlib.Path(sys.executable).parent


def unique(prefix: str) -> str:
    """A short unique name usable as a database or bucket name."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}".lower()


SECRET_KEY = re.compile(r"password|secret|token|access_key", re.IGNORECASE)
MASK = "********"


class RedactedDict(dict):
    """A dict (the lab's lab.json) whose repr hides every secret-looking value: what pytest prints when an
    assertion about it fails, which CI logs keep. json.dumps, indexing and comparisons see the real values."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {MASK!r}" if isinstance(k, str) and SECRET_KEY.search(k) and v
                               else f"{k!r}: {v!r}" for k, v in self.items()) + "}"


class Conninfo(str):
    """A libpq conninfo string whose repr hides the password (see RedactedDict)."""

    def __repr__(self) -> str:
        return repr(re.sub(r"password=('(?:\\.|[^'\\])*'|\S*)", f"password={MASK}", str(self)))


def load_lab(path: pathlib.Path) -> RedactedDict:
    """lab.json, every object in it a RedactedDict."""
    return json.loads(path.read_text(), object_hook=RedactedDict)


def dsn(pg: dict, user_key: str, password_key: str, database: str) -> str:
    # a conninfo string (not a URL), each value quoted by libpq's rules: odd characters in passwords are safe
    from psycopg.conninfo import make_conninfo

    return Conninfo(make_conninfo(host=pg["host"], port=pg["port"], user=pg[user_key], password=pg[password_key],
                                  dbname=database))


def admin_sql(lab_pg: dict, sql: str, database: str = "postgres") -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn(lab_pg, "admin_user", "admin_password", database), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def s3_client(endpoint_cfg: dict):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_cfg["endpoint"], region_name=endpoint_cfg["region"],
        aws_access_key_id=endpoint_cfg["access_key"], aws_secret_access_key=endpoint_cfg["secret_key"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))


def empty_bucket(client, bucket: str) -> None:
    """Delete every version, delete marker and pending upload, then the bucket."""
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        for item in (page.get("Versions") or []) + (page.get("DeleteMarkers") or []):
            client.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []) or []:
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) or []:
        client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    client.delete_bucket(Bucket=bucket)


def run_playbook(playbook: str, *args: str, env: dict | None = None, check: bool = False,
                 timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ansible-playbook from the repo root with the venv's ansible; returns the process."""
    full_env = dict(os.environ)
    full_env.update({"ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", "ANSIBLE_NOCOLOR": "1"})
    full_env.update(env or {})
    cmd = [str(VENV_BIN / "ansible-playbook"), playbook, *args]
    if check:
        cmd.append("--check")
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)
