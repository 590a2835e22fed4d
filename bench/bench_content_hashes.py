#!/usr/bin/env python3
"""What ``content_hashes: true`` costs (issue 10): the same backup with and without per-table content hashes.

Rounds alternate off/on on the benchmark database (bench/gen_db.py). Reported per round: the backup's own
``duration_s``, the hashing time recorded in the manifest (``content_hashes.duration_s``, in the dump's snapshot
while pg_dump runs) and the time the drill's comparison takes on a database of that size
(``restore.checks.compare_content`` run on the source itself). Backups go under
``s3://lifeboat-backups/bench/<run>/`` and are removed at the end. Timings are only printed, never asserted.

    .venv/bin/python bench/bench_content_hashes.py --database lifeboat_bench_0_5 [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from types import SimpleNamespace

import benchlib
from bench_backup import db_scale


def backup(database: str, prefix: str, hashes: bool) -> dict:
    from ansible.module_utils.lifeboat import backup as engine
    from ansible.module_utils.lifeboat import crypto

    lab = benchlib.lab()
    req = engine.BackupRequest(
        target=benchlib.admin_target(database), destination=f"s3://{benchlib.BENCH_BUCKET}/{prefix}",
        encryption=crypto.EncryptionSpec(method="gpg", recipients=[lab["gpg"]["public_key_file"]]),
        s3=benchlib.s3_settings(), content_hashes=hashes)
    return engine.run(req)["manifest"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cost of content_hashes")
    ap.add_argument("--database", default=benchlib.BENCH_DB)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    benchlib.engine_path()
    from ansible.module_utils.lifeboat.restore.checks import compare_content

    size = benchlib.database_size(args.database)
    if size is None:
        sys.exit(f"database {args.database} does not exist: run bench/gen_db.py first")
    facts = benchlib.machine()
    prefix = f"{benchlib.BENCH_PREFIX}/{uuid.uuid4().hex[:10]}"
    print(f"content hashes: {args.database} ({size / 1e9:.3f} GB), {args.rounds} round(s), load "
          f"{facts['loadavg_at_start']}", flush=True)
    off: list[float] = []
    on: list[float] = []
    hashing: list[float] = []
    compare: list[float] = []
    try:
        backup(args.database, f"{prefix}/warm", False)  # warm-up: the pages in the OS cache for both variants
        for r in range(args.rounds):
            doc = backup(args.database, f"{prefix}/off{r}", False)
            off.append(doc["duration_s"])
            doc = backup(args.database, f"{prefix}/on{r}", True)
            on.append(doc["duration_s"])
            hashing.append(doc["content_hashes"]["duration_s"])
            with benchlib.admin_target(args.database).connect() as conn:
                t0 = time.monotonic()
                ok, detail = compare_content(conn, SimpleNamespace(manifest=doc))
                compare.append(round(time.monotonic() - t0, 3))
            print(f"  round {r + 1}: off {off[-1]:.2f} s, on {on[-1]:.2f} s (hashing {hashing[-1]:.2f} s in the "
                  f"snapshot), drill comparison {compare[-1]:.2f} s ({detail})", flush=True)
    finally:
        removed = benchlib.delete_prefix(prefix + "/")
        print(f"  cleanup: {removed} object(s) removed", flush=True)
    med = {k: round(statistics.median(v), 3) for k, v in
           (("backup_off_s", off), ("backup_on_s", on), ("hashing_s", hashing), ("drill_compare_s", compare))}
    med["extra_share"] = round(med["backup_on_s"] / med["backup_off_s"] - 1, 3)
    print(f"median: backup {med['backup_off_s']} s without, {med['backup_on_s']} s with content hashes "
          f"(+{med['extra_share'] * 100:.0f}%); hashing {med['hashing_s']} s; drill comparison "
          f"{med['drill_compare_s']} s", flush=True)
    path = benchlib.write_result("content-hashes", {
        "database": args.database, "database_bytes": size, "scale": db_scale(args.database),
        "machine": facts, "rounds": {"off": off, "on": on, "hashing": hashing, "compare": compare}, "median": med})
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
