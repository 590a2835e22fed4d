"""docs/supabase.md followed word for word on the Supabase-like lab (issue 9, deliverable 6): its inventory and vault
blocks written as printed (only the example's values replaced by the lab project's: host, port, database name,
buckets, endpoints, keys), its bash blocks run as printed (the inventory path replaced by the test's copy of
inventories/local, which stands in for inventories/example), from the backup of the database and of the files to
the parts and the files of the same recovery point; and its IAM policy for the backup bucket held against every S3
call Lifeboat makes there (and on Supabase Storage, the calls the page names)."""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess

import botocore.client
import psycopg
import pytest
from storage_helpers import bucket, settings
from supabase_helpers import drop_project, new_project, sb_dsn, sb_sql
from testlib import LAB_DIR, REPO, VENV_BIN

from ansible.module_utils.lifeboat import s3lean, s3recovery, s3sync
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore import supabase as sbrestore

DOC = REPO / "docs" / "supabase.md"


def block(name: str, lang: str = "bash") -> str:
    m = re.search(r"<!-- docs-test: " + re.escape(name) + r" -->\n```" + lang + r"\n(.*?)```", DOC.read_text(),
                  re.DOTALL)
    assert m, f"docs/supabase.md has no {lang} block {name}"
    return m.group(1)


def substitute(text: str, values: dict[str, str]) -> str:
    for old, new in values.items():
        assert old in text, f"the example value {old!r} is no longer in the block: update this test"
        text = text.replace(old, new)
    return text


def write_private(path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bucket_hashes(client, names) -> dict:
    out = {}
    for b in names:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=b):
            for obj in page.get("Contents", []) or []:
                out[(b, obj["Key"])] = sha(client.get_object(Bucket=b, Key=obj["Key"])["Body"].read())
    return out


def project_files(s: dict, db: str, client, ba: str, bb: str) -> None:
    """The project's storage in two buckets of its own (the lab's avatars/videos are shared): 8 + 4 objects whose
    rows record each upload's eTag and size, as Supabase Storage does."""
    sb_sql(s, f"""
        INSERT INTO storage.buckets (id, name) VALUES ('{ba}', '{ba}'), ('{bb}', '{bb}');
        WITH keep AS (SELECT id, row_number() OVER (ORDER BY name) AS n FROM storage.objects
                      WHERE bucket_id = 'videos' ORDER BY name LIMIT 12)
        UPDATE storage.objects o SET bucket_id = CASE WHEN k.n <= 8 THEN '{ba}' ELSE '{bb}' END
          FROM keep k WHERE o.id = k.id;
        DELETE FROM storage.objects WHERE bucket_id NOT IN ('{ba}', '{bb}');""", database=db, admin=True)
    with psycopg.connect(sb_dsn(s, db, admin=True), autocommit=True) as conn:
        for b, name in conn.execute("SELECT bucket_id, name FROM storage.objects").fetchall():
            data = os.urandom(100) + name.encode()
            etag = client.put_object(Bucket=b, Key=name, Body=data)["ETag"]
            conn.execute("UPDATE storage.objects SET metadata = coalesce(metadata, '{}') || "
                         "jsonb_build_object('eTag', %s::text, 'size', %s::int) WHERE bucket_id = %s AND name = %s",
                         (etag, len(data), b, name))


def run_bash(script: str, env: dict, stdin: str = "") -> subprocess.CompletedProcess:
    # the inventory's copy is outside the checkout: it finds the lab by LIFEBOAT_LAB_DIR, not by its own path
    full = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1",
            "LIFEBOAT_LAB_DIR": str(LAB_DIR), **env}
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], input=stdin, cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=1200, check=False)


def test_the_page_backs_up_a_project_and_restores_its_files_of_the_same_recovery_point(lab, tmp_path):
    s, primary, backup_ep = lab["supabase"], lab["s3"]["primary"], lab["s3"]["backup"]
    src = new_project(s, with_app=True)
    dest = None
    try:
        with bucket(primary, prefix="sbda") as (ba, client), bucket(primary, prefix="sbdb") as (bb, _), \
                bucket(backup_ep, versioned=True, prefix="sbdbackup") as (vb, _):
            project_files(s, src, client, ba, bb)
            inventory = tmp_path / "inventories" / "supabase"
            shutil.copytree(REPO / "inventories" / "local", inventory)
            write_private(inventory / "group_vars" / "all" / "supabase.yml", substitute(
                block("supabase-inventory", "yaml"), {
                    "  - name: postgres": f"  - name: {src}", "\n  postgres:\n": f"\n  {src}:\n",
                    "db.abcdefghijklmnop.supabase.co": s["host"], "port: 5432": f"port: {s['port']}",
                    "sslmode: require": "sslmode: prefer",   # the lab's Supabase-like cluster has no TLS
                    "s3://lifeboat-backups/db": f"s3://{vb}/db",
                    "https://abcdefghijklmnop.supabase.co/storage/v1/s3": primary["endpoint"],
                    "eu-central-1": primary["region"], "[avatars, videos]": f"[{ba}, {bb}]",
                    "s3://app-storage-backup/supabase": f"s3://{vb}/supabase"}))
            vault = inventory / "group_vars" / "all" / "vault.yml"
            write_private(vault, substitute(block("supabase-vault", "yaml"), {
                '"the database password"': json.dumps(s["app_password"]),
                '"the S3 access key id"': json.dumps(primary["access_key"]),
                '"the S3 secret access key"': json.dumps(primary["secret_key"])}))
            vault_pass = tmp_path / "vault-pass"
            write_private(vault_pass, secrets.token_urlsafe(24) + "\n")
            inv = {"inventories/supabase": str(inventory)}

            proc = run_bash(substitute(block("supabase-vault-encrypt"),
                                       {"~/.config/lifeboat/vault-pass": str(vault_pass), **inv})
                            + substitute(block("supabase-backup"), inv), {})
            out = proc.stdout + proc.stderr
            assert proc.returncode == 0, out[-5000:]
            assert vault.read_text().startswith("$ANSIBLE_VAULT;")
            for secret in (s["app_password"], primary["secret_key"]):
                assert secret not in out
            manifest = re.search(r"manifest:\s+(s3://\S+/manifest\.json)", out).group(1)
            at_backup = bucket_hashes(client, [ba, bb])
            doc = json.loads(client_for(backup_ep).get_object(
                Bucket=vb, Key=manifest.split(f"s3://{vb}/", 1)[1])["Body"].read())
            assert doc["supabase"]["profile"] == "supabase"

            # the incident: files overwritten and deleted after the backup
            keys = sorted(k for b, k in at_backup if b == ba)
            client.put_object(Bucket=ba, Key=keys[0], Body=b"damaged after the backup")
            client.delete_object(Bucket=ba, Key=keys[1])
            client.delete_object(Bucket=bb, Key=sorted(k for b, k in at_backup if b == bb)[0])
            assert bucket_hashes(client, [ba, bb]) != at_backup
            sync = run_bash(substitute(block("supabase-backup").splitlines()[1] + "\n", inv),
                            {"ANSIBLE_VAULT_PASSWORD_FILE": str(vault_pass)})   # the next scheduled sync
            assert sync.returncode == 0, (sync.stdout + sync.stderr)[-3000:]

            # the backup's parts, by the page's commands
            restore_dir = tmp_path / "restore"
            parts_env = {"RESTORE_DIR": str(restore_dir), "BACKUP_MANIFEST": manifest,
                         "BACKUP_ENDPOINT": backup_ep["endpoint"], "BACKUP_REGION": backup_ep["region"],
                         "AWS_ACCESS_KEY_ID": backup_ep["access_key"],
                         "AWS_SECRET_ACCESS_KEY": backup_ep["secret_key"], "GNUPGHOME": lab["gpg"]["homedir"]}
            proc = run_bash(block("supabase-parts"), parts_env)
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
            assert {p.name for p in restore_dir.iterdir()} >= {"app.dump", "platform.dump", "manifest.json"}
            assert oct(restore_dir.stat().st_mode & 0o777) == "0o700"

            # the database into a new project (the page's restore blocks are followed by test_supabase_restore)
            dest = new_project(s)
            sbrestore.restore(PgTarget(host=s["host"], port=s["port"], user=s["app_user"],
                                       password=s["app_password"], database=dest),
                              [str(restore_dir / "app.dump"), str(restore_dir / "platform.dump")],
                              sbrestore.Scope(doc["supabase"]["app_schemas"],
                                              [tuple(t) for t in doc["supabase"]["platform_tables"]]),
                              mode="new", roles_script=(restore_dir / "roles.sql").read_text()
                              if (restore_dir / "roles.sql").exists() else None, bin_dirs=[s["bin_dir"]])

            # the files of the same recovery point, by the page's command
            proc = run_bash(substitute(block("supabase-files"), inv),
                            {"BACKUP_MANIFEST": manifest, "LIFEBOAT_PG_DSN": sb_dsn(s, dest),
                             "ANSIBLE_VAULT_PASSWORD_FILE": str(vault_pass)})
            out = proc.stdout + proc.stderr
            assert proc.returncode == 0, out[-5000:]
            assert s["app_password"] not in out and primary["secret_key"] not in out
            after = bucket_hashes(client, [ba, bb])
            assert after == at_backup
            assert set(after) == set(sb_sql(s, "SELECT bucket_id, name FROM storage.objects", database=dest,
                                            admin=True))
    finally:
        if dest:
            drop_project(s, dest)
        drop_project(s, src)
        cleanup_run_records(lab)


def client_for(endpoint: dict):
    from testlib import s3_client
    return s3_client(endpoint)


def cleanup_run_records(lab: dict) -> None:
    """The syncs' run records under the lab's runs/ prefix (inventories/local), of this test's buckets only."""
    c = client_for(lab["s3"]["backup"])
    b = lab["s3"]["backup"]["buckets"][0]
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=b, Prefix="runs/storage-sync-sbd"):
        for obj in page.get("Contents", []) or []:
            c.delete_object(Bucket=b, Key=obj["Key"])


# S3 operation -> the IAM action that allows it (the AWS S3 authorization reference)
ACTION = {"ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket", "HeadBucket": "s3:ListBucket",
          "ListObjectVersions": "s3:ListBucketVersions", "GetBucketVersioning": "s3:GetBucketVersioning",
          "ListMultipartUploads": "s3:ListBucketMultipartUploads", "PutObject": "s3:PutObject",
          "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
          "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload"}
SUPABASE_NAMED = {"ListObjectsV2", "GetObject", "HeadObject", "PutObject", "CreateMultipartUpload", "UploadPart",
                  "CompleteMultipartUpload", "AbortMultipartUpload", "DeleteObject"}


def needed(op: str, params: dict) -> tuple[str, str]:
    """(IAM action, resource ARN) one call needs."""
    b = params.get("Bucket")
    if op in ("GetObject", "HeadObject"):
        act = "s3:GetObjectVersion" if params.get("VersionId") else "s3:GetObject"
    elif op == "DeleteObject":
        act = "s3:DeleteObjectVersion" if params.get("VersionId") else "s3:DeleteObject"
    elif op == "CopyObject":
        act = "s3:PutObject"
    else:
        act = ACTION[op]
    if "Key" in params:
        return act, f"arn:aws:s3:::{b}/{params['Key']}"
    return act, f"arn:aws:s3:::{b}" + (f"?prefix={params.get('Prefix', '')}" if act.startswith("s3:List") else "")


def allowed(policy: dict, act: str, resource: str) -> str | None:
    """The Sid of the statement that allows it, or None."""
    arn, _, prefix = resource.partition("?prefix=")
    for st in policy["Statement"]:
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if act not in acts or not any(fnmatch.fnmatchcase(arn, r) for r in res):
            continue
        cond = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if cond is None or any(fnmatch.fnmatchcase(prefix, c) for c in cond):
            return st["Sid"]
    return None


def test_the_backup_bucket_policy_allows_exactly_the_calls_lifeboat_makes(lab, monkeypatch):
    """Sync (with a deletion propagated and a run record), the recovery point's manifest read and its restore (with
    an unlisted file deleted), every S3 call recorded: each call on the backup side is allowed by the page's policy,
    each statement's actions are used (but for two rarer paths, named below), and on Supabase Storage only
    the calls the page names are made."""
    primary, backup_ep = lab["s3"]["primary"], lab["s3"]["backup"]
    calls: list[tuple[str, dict]] = []
    real = botocore.client.BaseClient._make_api_call
    real_lean = s3lean.LeanS3._request

    def record(self, operation_name, api_params):
        calls.append((operation_name, dict(api_params)))
        return real(self, operation_name, api_params)

    def record_lean(self, op, method, b, key, body, headers):   # the sync's GET/PUT of each object
        calls.append((op, {"Bucket": b, "Key": key}))
        return real_lean(self, op, method, b, key, body, headers)

    with bucket(primary, prefix="sbdiam") as (src, client), \
            bucket(backup_ep, versioned=True, prefix="sbdiamb") as (vb, bclient):
        for i in range(3):
            client.put_object(Bucket=src, Key=f"f/{i}.png", Body=os.urandom(50))
        s3sync.sync(f"s3://{src}", f"s3://{vb}/supabase/{src}", settings(primary), settings(backup_ep),
                    s3sync.SyncOptions(delete=True))
        client.delete_object(Bucket=src, Key="f/2.png")
        client.put_object(Bucket=src, Key="f/new.png", Body=b"new")
        bclient.put_object(Bucket=vb, Key="db/postgres/postgres-20261203T110000Z/manifest.json", Body=b"{}")
        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
        monkeypatch.setattr(s3lean.LeanS3, "_request", record_lean)
        s3sync.sync(f"s3://{src}", f"s3://{vb}/supabase/{src}", settings(primary), settings(backup_ep),
                    s3sync.SyncOptions(delete=True))
        from ansible.module_utils.lifeboat import runrecord
        import datetime as dt
        now = dt.datetime.now(dt.timezone.utc)
        runrecord.write(f"s3://{vb}/runs/storage-sync-{src}", settings(backup_ep),
                        runrecord.build("sync", "storage-sync", "s", "d", True, now, now, 0.0, {}))
        with pytest.raises(Exception, match="damaged|manifest"):
            s3recovery.backup_time(f"s3://{vb}/db/postgres/postgres-20261203T110000Z/manifest.json",
                                   settings(backup_ep))
        s3recovery.restore_recovery_point(f"s3://{vb}/supabase/{src}", f"s3://{src}", ["f/0.png", "f/2.png"],
                                          dt.datetime.now(dt.timezone.utc), settings(backup_ep), settings(primary),
                                          delete_unlisted=True)
        monkeypatch.undo()
        assert {o["Key"] for o in client.list_objects_v2(Bucket=src).get("Contents", [])} == {"f/0.png", "f/2.png"}

    policy = json.loads(block("supabase-iam-backup", "json").replace("app-storage-backup", vb)
                        .replace("lifeboat-backups", vb))
    used: dict[str, set[str]] = {}
    for op, params in calls:
        if params.get("Bucket") == vb or (op == "CopyObject" and str(params.get("CopySource", {})).find(vb) >= 0):
            act, res = needed(op, params)
            sid = allowed(policy, act, res)
            assert sid, f"{op} {res} needs {act}, which the page's policy does not allow"
            used.setdefault(sid, set()).add(act)
        else:
            assert params.get("Bucket") == src, (op, params)
            assert op in SUPABASE_NAMED, f"{op} on Supabase Storage is not among the calls the page names"
    for st in policy["Statement"]:
        acts = set(st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
        # called only on paths this run does not take: the abort of a failed multipart upload, and the sync's HEAD
        # of a mirrored file copied in parts (its ETag is not the source's)
        unused = acts - used.get(st["Sid"], set()) - {"s3:AbortMultipartUpload", "s3:GetObject"}
        assert not unused, f"statement {st['Sid']} allows {sorted(unused)}, which Lifeboat never called"


def test_the_transaction_pooler_is_named_before_a_restore_connects(tmp_path):
    """The page says not to use the transaction pooler: supabase_restore.yml given its connection string stops
    before connecting, naming it and the two that work, the password never printed."""
    for name in ("app.dump", "platform.dump"):
        write_private(tmp_path / name, "")
    pw = secrets.token_urlsafe(12)
    proc = run_bash("ansible-playbook playbooks/supabase_restore.yml -e lifeboat_supabase_restore_mode=new "
                    f"-e lifeboat_supabase_restore_dir={tmp_path}\n",
                    {"LIFEBOAT_PG_DSN": f"postgresql://postgres.abcdefghijklmnop:{pw}@aws-0-eu-central-1.pooler."
                                        "supabase.com:6543/postgres"})
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert "transaction pooler (port 6543)" in out and "session pooler (the same host, port 5432)" in out, out[-2000:]
    assert pw not in out
