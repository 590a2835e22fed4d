#!/usr/bin/env python3
"""`make bench`: generate the benchmark database, then run the backup and restore benchmarks.

    make bench                      # scale 1.0 (about 1 GB), the memory sweep at 0.3, pgBackRest's anchor
    make bench BENCH_SCALE=0.05     # quick
    BENCH_ROUNDS=3 make bench       # median of 3 interleaved rounds of every variant
    BENCH_SWEEP_2=1 make bench      # the sweep also at scale 2.0 (generates a 2 GB database, ~5 more minutes)
    BENCH_SWEEP=0.3,2.0 make bench  # the sweep's other scales ('' for none); BENCH_PGBACKREST=0 skips the anchor
    BENCH_SYNC=0 make bench         # skip the bucket sync benchmark (10,000 objects vs rclone; BENCH_SYNC_SCALE=0.3)
    LIFEBOAT_BENCH_DB_PREFIX=mine make bench   # databases of one's own (mine_1, mine_0_3, ...)

The benchmark database is kept for the next run (one per scale: lifeboat_bench for
1.0, lifeboat_bench_0_05 for 0.05, ...); `bench/gen_db.py --scale S --drop` removes it.
Results: bench/results/*.json, summarized in docs/benchmarks.md.
Exit status: non-zero only when a benchmark could not run
(targets missed are reported, not failures).
"""
from __future__ import annotations

import os
import sys

import bench_backup
import bench_restore
import bench_s3_sync
import benchlib
import gen_db
import report


def main() -> int:
    scale = float(os.environ.get("BENCH_SCALE") or 1.0)
    rounds = int(os.environ.get("BENCH_ROUNDS") or 1)
    db = benchlib.bench_db_for(scale)
    print(f"== gen_db (scale {scale})", flush=True)
    gen_db.generate(db, scale)
    print("\n== backup benchmark", flush=True)
    sweep = os.environ.get("BENCH_SWEEP")
    if sweep is None:
        sweep = ",".join(s for s in ("0.3", "2.0" if os.environ.get("BENCH_SWEEP_2") == "1" else "")
                         if s and abs(float(s) - scale) > 1e-9)
    rc_backup = bench_backup.main(["--database", db, "--rounds", str(rounds), "--sweep", sweep])
    print("\n== restore benchmark", flush=True)
    rc_restore = bench_restore.main(["--database", db, "--rounds", str(rounds)])
    rc_sync = 0
    if os.environ.get("BENCH_SYNC", "1") != "0":
        print("\n== bucket sync benchmark (against rclone sync)", flush=True)
        rc_sync = bench_s3_sync.main(["--scale", os.environ.get("BENCH_SYNC_SCALE") or "1.0"])
    print("\n== issue 15's targets (bench/report.py: every kind's latest results)", flush=True)
    print(report.targets_table(report._load([])))
    return 1 if (rc_backup or rc_restore or rc_sync) else 0


if __name__ == "__main__":
    sys.exit(main())
