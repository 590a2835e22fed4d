#!/usr/bin/env python3
"""Child processes of the benchmarks: each variant runs in its own process tree.

    lifeboat_child.py upload FILE KEY                   boto3 upload_file (the `aws s3 cp` stand-in)
    lifeboat_child.py backup  --database DB --prefix P --out R.json
    lifeboat_child.py restore --prefix P --target DB --source SRC [--jobs N] [--staging-dir D] --out R.json
    lifeboat_child.py drill   --prefix P --source SRC --out R.json

Credentials come from the lab file (``.lab/lab.json``), never from argv. The
result (sizes, keys, durations, or the error) is written as JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

import benchlib

benchlib.engine_path()


def _write(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, default=str)


def upload(path: str, key: str) -> dict[str, Any]:
    """What `aws s3 cp FILE s3://...` does: s3transfer with its defaults (8 MiB parts, 10 threads)."""
    from boto3.s3.transfer import TransferConfig

    client = benchlib.s3_client()
    client.upload_file(path, benchlib.BENCH_BUCKET, key, Config=TransferConfig())
    return {"key": key, "size": os.path.getsize(path)}


def storage_for(prefix: str):
    from ansible.module_utils.lifeboat.storage import open_storage

    return open_storage(f"s3://{benchlib.BENCH_BUCKET}/{prefix}", benchlib.s3_settings())


def backup(database: str, prefix: str) -> dict[str, Any]:
    """Lifeboat's backup as the module runs it: custom format, zstd, gpg to the lab key, S3 multipart, manifest.

    The request's other settings are the engine's defaults (the module's defaults).
    """
    from ansible.module_utils.lifeboat import backup as engine
    from ansible.module_utils.lifeboat import crypto

    lab = benchlib.lab()
    req = engine.BackupRequest(
        target=benchlib.admin_target(database),
        destination=f"s3://{benchlib.BENCH_BUCKET}/{prefix}",
        encryption=crypto.EncryptionSpec(method="gpg", recipients=[lab["gpg"]["public_key_file"]]),
        s3=benchlib.s3_settings(),
    )
    res = engine.run(req)
    man = res.get("manifest") or {}
    return {"backup_id": res["backup_id"], "artifact_key": res["key"], "stored_size": res["size"],
            "sha256": res["sha256"], "engine_duration_s": res["duration_s"], "tables": res["tables"],
            "total_rows": res["total_rows"], "dump_size": (man.get("artifact") or {}).get("dump_size"),
            "compression": man.get("compression"), "encryption": (man.get("encryption") or {}).get("method"),
            "format": man.get("format")}


def _admin():
    from ansible.module_utils.lifeboat import restore as engine

    return engine.Admin(benchlib.admin_target("postgres"), "postgres")


def _keys():
    from ansible.module_utils.lifeboat import restore as engine

    return engine.DecryptKeys(secret_key_file=benchlib.lab()["gpg"]["secret_key_file"])


def restore(prefix: str, target: str, source: str, jobs: int | None = None,
            staging_dir: str | None = None) -> dict[str, Any]:
    """Lifeboat's full restore, as restore.yml runs it: latest backup of ``source`` from S3 into the new
    database ``target`` (mode swap with no existing target: restore into a new database, check the row
    counts against the manifest, rename). ``jobs`` None: the module's default (chosen from the server,
    staged in a local file for pg_restore -j); 1: streamed into pg_restore."""
    from ansible.module_utils.lifeboat import restore as engine

    req = engine.Request(database=target, source_database=source, confirm=target, mode="swap", jobs=jobs,
                         staging_dir=staging_dir, safety_snapshot=False)
    res = engine.run(req, storage_for(prefix), _admin(), _keys())
    return {"backup_id": res.get("backup_id"), "restored_bytes": res.get("restored_bytes"),
            "jobs": res.get("jobs"), "restore_path": res.get("restore_path"),
            "steps": [{k: v for k, v in st.items() if k in ("step", "status", "seconds")}
                      for st in res.get("steps", [])], "warnings": res.get("warnings", [])}


def drill(prefix: str, source: str, staging_dir: str | None = None) -> dict[str, Any]:
    """Lifeboat's verification drill, as verify.yml runs it: the latest backup of ``source`` restored into a
    scratch database, row counts and schema hash compared with the manifest, pg_amcheck, record written."""
    from ansible.module_utils.lifeboat import verify as engine

    storage = storage_for(prefix)
    ref = engine.targets(storage, [source], None)[0]
    res = engine.verify_one(storage, ref, _keys(), _admin(), engine.Options(level="drill", staging_dir=staging_dir))
    out = {"backup_id": res.backup_id, "outcome": res.outcome, "restore_duration_s": res.restore_duration_s,
           "restored_bytes": res.restored_bytes, "rto_s_per_gib": res.rto_s_per_gib,
           "jobs": res.restore_jobs, "restore_path": res.restore_path,
           "checks": [{"name": c["name"], "outcome": c["outcome"]} for c in res.checks]}
    if res.outcome != "passed":
        raise RuntimeError(f"drill outcome {res.outcome}: {'; '.join(res.failures())}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upload")
    up.add_argument("path")
    up.add_argument("key")
    b = sub.add_parser("backup")
    b.add_argument("--database", required=True)
    b.add_argument("--prefix", required=True)
    b.add_argument("--out")
    r = sub.add_parser("restore")
    r.add_argument("--prefix", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--source", required=True, help="the backed-up database's name")
    r.add_argument("--jobs", type=int, default=None, help="default: the module's (chosen from the server)")
    r.add_argument("--staging-dir")
    r.add_argument("--out")
    d = sub.add_parser("drill")
    d.add_argument("--prefix", required=True)
    d.add_argument("--source", required=True, help="the backed-up database's name")
    d.add_argument("--staging-dir")
    d.add_argument("--out")
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        if args.cmd == "upload":
            res = upload(args.path, args.key)
        elif args.cmd == "backup":
            res = backup(args.database, args.prefix)
        elif args.cmd == "restore":
            res = restore(args.prefix, args.target, args.source, args.jobs, args.staging_dir)
        else:
            res = drill(args.prefix, args.source, args.staging_dir)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        _write(getattr(args, "out", None), {"error": f"{exc.__class__.__name__}: {exc}",
                                            "traceback": traceback.format_exc()[-3000:]})
        print(f"{args.cmd}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 3
    res["inner_wall_s"] = round(time.perf_counter() - t0, 3)
    _write(getattr(args, "out", None), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
