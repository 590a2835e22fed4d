#!/usr/bin/env python3
"""Child processes of the benchmarks: each variant runs in its own process tree.

    lifeboat_child.py upload FILE KEY                   boto3 upload_file (the `aws s3 cp` stand-in)
    lifeboat_child.py backup  --database DB --prefix P --out R.json
    lifeboat_child.py restore --prefix P --target DB --out R.json
    lifeboat_child.py drill   --prefix P --out R.json

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
    """Lifeboat's backup as the module runs it: custom format, zstd, gpg to the lab key, S3, manifest."""
    from ansible.module_utils.lifeboat import backup as engine  # noqa: F401 - adapted below

    raise NotImplementedError("module_utils/lifeboat/backup.py: entry point not wired into the benchmark yet")


def restore(prefix: str, target: str) -> dict[str, Any]:
    from ansible.module_utils.lifeboat import restore as engine  # noqa: F401

    raise NotImplementedError("module_utils/lifeboat/restore.py: entry point not wired into the benchmark yet")


def drill(prefix: str) -> dict[str, Any]:
    from ansible.module_utils.lifeboat import verify as engine  # noqa: F401

    raise NotImplementedError("module_utils/lifeboat/verify.py: entry point not wired into the benchmark yet")


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
    r.add_argument("--out")
    d = sub.add_parser("drill")
    d.add_argument("--prefix", required=True)
    d.add_argument("--out")
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        if args.cmd == "upload":
            res = upload(args.path, args.key)
        elif args.cmd == "backup":
            res = backup(args.database, args.prefix)
        elif args.cmd == "restore":
            res = restore(args.prefix, args.target)
        else:
            res = drill(args.prefix)
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
