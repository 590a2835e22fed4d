"""Compare the restored database with its backup's manifest: exact row counts and the schema hash.

Run on the controller by verify.yml: python check_db.py REPO BUCKET MANIFEST_KEY, the connection and S3 settings
as one JSON object on stdin (s3_endpoint, s3_region, access_key, secret_key, conninfo: never in argv or the
environment, which ansible's `environment:` puts on a /bin/sh command line). Prints one JSON object; exit 0 when
everything matches, 1 otherwise.
"""
import json
import os
import sys

import ansible.module_utils
import boto3
import psycopg
from psycopg import sql
from botocore.config import Config

repo, bucket, key = sys.argv[1:4]
settings = json.load(sys.stdin)
ansible.module_utils.__path__.append(os.path.join(repo, "module_utils"))
from ansible.module_utils.lifeboat import pgmeta  # noqa: E402

s3 = boto3.client("s3", endpoint_url=settings["s3_endpoint"], region_name=settings["s3_region"],
                  aws_access_key_id=settings["access_key"], aws_secret_access_key=settings["secret_key"],
                  config=Config(s3={"addressing_style": "path"}))
manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
out = {"backup_id": manifest["backup_id"], "tables": {}, "mismatches": []}
with psycopg.connect(settings["conninfo"], autocommit=True) as conn:
    for t in manifest["tables"]:
        name = f'{t["schema"]}.{t["name"]}'
        query = sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(t["schema"], t["name"]))
        rows = conn.execute(query).fetchone()[0]
        out["tables"][name] = {"manifest": t["rows"], "restored": rows}
        if rows != t["rows"]:
            out["mismatches"].append(f"{name}: manifest {t['rows']} rows, restored {rows}")
    out["schema_hash"] = {"manifest": manifest["schema_hash"], "restored": pgmeta.schema_hash(conn)}
    if out["schema_hash"]["manifest"] != out["schema_hash"]["restored"]:
        out["mismatches"].append("schema hash differs")
if not manifest["tables"]:
    out["mismatches"].append("the manifest lists no table")
print(json.dumps(out))
sys.exit(1 if out["mismatches"] else 0)
