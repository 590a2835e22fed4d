"""Compare the restored database with its backup's manifest: exact row counts and the schema hash.

Run on the controller by verify.yml: python check_db.py REPO BUCKET MANIFEST_KEY (connection and S3 settings
in the environment). Prints one JSON object; exit 0 when everything matches, 1 otherwise.
"""
import json
import os
import sys

import ansible.module_utils
import boto3
import psycopg
from botocore.config import Config

repo, bucket, key = sys.argv[1:4]
ansible.module_utils.__path__.append(os.path.join(repo, "module_utils"))
from ansible.module_utils.lifeboat import pgmeta  # noqa: E402

s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name=os.environ["S3_REGION"],
                  config=Config(s3={"addressing_style": "path"}))
manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
out = {"backup_id": manifest["backup_id"], "tables": {}, "mismatches": []}
with psycopg.connect(os.environ["PG_CONNINFO"], autocommit=True) as conn:
    for t in manifest["tables"]:
        name = f'{t["schema"]}.{t["name"]}'
        rows = conn.execute(f'SELECT count(*) FROM ONLY "{t["schema"]}"."{t["name"]}"').fetchone()[0]
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
