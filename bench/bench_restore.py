#!/usr/bin/env python3
"""Restore benchmark (issue 3, "Performance"): one run, side by side, on the benchmark database.

(a) existing   ``gunzip -c db-backup.sql.gz | psql`` into a fresh database
(b) lifeboat   full restore from the lab's S3 (module_utils/lifeboat/restore/) with the module's
               defaults: fetch -> sha256 -> gpg -> zstd -> a staged local file -> pg_restore -j N
               into a new database, N chosen from the server (restore/parallel.py)
(b') streamed  the same with jobs=1: decoded straight into one pg_restore (no local file)
(c) drill      the verification drill (module_utils/lifeboat/verify.py) with its defaults (the
               restore's path): scratch database, row counts + schema hash vs the manifest, pg_amcheck

Preparation (not timed): the gzip file of the existing procedure and a Lifeboat
backup under ``s3://lifeboat-backups/bench/<run>/``. Each variant runs as a child
process tree (wall time, memory of the tree: see benchlib.measure). Every
database, file and object the run creates is removed at the end. Timings are
only printed, never asserted.

    .venv/bin/python bench/bench_restore.py [--database lifeboat_bench]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import uuid

import benchlib
from bench_backup import db_scale, median

TARGETS = {"restore_vs_existing_max": 0.75, "drill_vs_restore_max": 1.1, "peak_rss_mb_max": 200.0}
HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_DBS = ("lbbench_", "lifeboat_drill_")  # the databases restored into (scratch names)
CHILD = os.path.join(HERE, "lifeboat_child.py")


def child(name: str, cmd: str, work: str, *args: str) -> benchlib.Measurement:
    out = os.path.join(work, f"{cmd}-{uuid.uuid4().hex[:6]}.json")
    m = benchlib.measure(name, [sys.executable, CHILD, cmd, *args, "--out", out], server_dbs=SERVER_DBS)
    if os.path.exists(out):
        with open(out) as fh:
            m.extra.update(json.load(fh))
        os.unlink(out)
    return m


def restored_size(db: str) -> int | None:
    return benchlib.database_size(db)


def err(m: benchlib.Measurement) -> str:
    return str(m.extra.get("error") or m.extra.get("stderr", ""))[-400:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Lifeboat restore benchmark")
    ap.add_argument("--database", default=benchlib.BENCH_DB)
    ap.add_argument("--rounds", type=int, default=1, help="rounds of every variant; the median is reported")
    ap.add_argument("--no-streamed", action="store_true",
                    help="skip the streamed variant (jobs=1: decoded straight into pg_restore)")
    args = ap.parse_args(argv)
    db = args.database
    size = benchlib.database_size(db)
    if size is None:
        sys.exit(f"database {db} does not exist: run bench/gen_db.py first")
    scale = db_scale(db)
    facts = benchlib.machine()
    run_id = uuid.uuid4().hex[:10]
    prefix = f"{benchlib.BENCH_PREFIX}/{run_id}"
    legacy_db = f"lbbench_existing_{run_id}"
    lifeboat_db = f"lbbench_lifeboat_{run_id}"
    gb = size / 1e9
    print(f"restore benchmark: database {db} (scale {scale}, pg_database_size {gb:.3f} GB); machine: "
          f"{facts['nproc']} CPU {facts['cpu_model']}, {facts['memory_gib']} GiB, load {facts['loadavg_at_start']}",
          flush=True)
    results: dict[str, benchlib.Measurement | None] = {"existing": None, "lifeboat": None,
                                                       "lifeboat_streamed": None, "drill": None}
    sizes: dict[str, int | None] = {}
    missing: list[str] = []
    prep: dict[str, object] = {}
    try:
        with benchlib.private_dir() as work, benchlib.admin_target(db).child_env() as env:
            gz = os.path.join(work, "db-backup.sql.gz")
            cmd = f"{shlex.quote(benchlib.pg_bin('pg_dump'))} -d {shlex.quote(db)} | gzip > {shlex.quote(gz)}"
            m = benchlib.measure("prep: pg_dump | gzip", ["bash", "-o", "pipefail", "-c", cmd], env=env)
            if m.rc != 0:
                sys.exit(f"preparation failed: pg_dump | gzip: {err(m)}")
            prep["gzip_bytes"] = os.path.getsize(gz)
            bk = child("prep: lifeboat backup", "backup", str(work), "--database", db, "--prefix", prefix)
            prep["lifeboat_backup"] = {"rc": bk.rc, "wall_s": round(bk.wall_s, 3),
                                       **{k: bk.extra.get(k) for k in ("backup_id", "stored_size", "artifact_key",
                                                                       "error")}}
            print(f"  prep: gzip file {prep['gzip_bytes'] / 1e6:.1f} MB; lifeboat backup "
                  f"{'ok' if bk.rc == 0 else 'FAILED: ' + err(bk)}", flush=True)

            runs: dict[str, list[benchlib.Measurement]] = {k: [] for k in results}
            for rnd in range(args.rounds):
                tag = f"round {rnd + 1}: " if args.rounds > 1 else ""
                # (a) the existing procedure
                benchlib.create_database(legacy_db)
                restore_cmd = (f"gunzip -c {shlex.quote(gz)} | {shlex.quote(benchlib.pg_bin('psql'))} -X -q "
                               f"-v ON_ERROR_STOP=1 -d {shlex.quote(legacy_db)} > /dev/null")
                with benchlib.admin_target(legacy_db).child_env() as renv:
                    e = benchlib.measure("existing: gunzip -c file | psql",
                                         ["bash", "-o", "pipefail", "-c", restore_cmd], env=renv,
                                         server_dbs=SERVER_DBS)
                runs["existing"].append(e)
                sizes["existing"] = restored_size(legacy_db)
                benchlib.drop_database(legacy_db)
                print(f"  {tag}existing: {e.wall_s:.2f} s" + ("" if e.rc == 0 else f" FAILED: {err(e)}"), flush=True)
                if bk.rc != 0:
                    continue
                # (b) Lifeboat's full restore from S3 into a new database
                lr = child("lifeboat: full restore from S3", "restore", str(work), "--prefix", prefix,
                           "--target", lifeboat_db, "--source", db)
                runs["lifeboat"].append(lr)
                sizes["lifeboat"] = restored_size(lifeboat_db)
                print(f"  {tag}lifeboat restore (default: jobs={lr.extra.get('jobs')}, {lr.extra.get('restore_path')})"
                      f": {lr.wall_s:.2f} s" + ("" if lr.rc == 0 else f" FAILED: {err(lr)}"), flush=True)
                benchlib.drop_database(lifeboat_db)
                if not args.no_streamed:
                    # (b') jobs=1: streamed into one pg_restore, no local file
                    lj = child("lifeboat: full restore from S3, jobs=1 (streamed)", "restore", str(work),
                               "--prefix", prefix, "--target", lifeboat_db, "--source", db, "--jobs", "1")
                    runs["lifeboat_streamed"].append(lj)
                    print(f"  {tag}lifeboat restore jobs=1 streamed: {lj.wall_s:.2f} s"
                          + ("" if lj.rc == 0 else f" FAILED: {err(lj)}"), flush=True)
                    benchlib.drop_database(lifeboat_db)
                # (c) the verification drill
                dr = child("lifeboat: verification drill", "drill", str(work), "--prefix", prefix, "--source", db)
                runs["drill"].append(dr)
                print(f"  {tag}drill: {dr.wall_s:.2f} s" + ("" if dr.rc == 0 else f" FAILED: {err(dr)}"),
                      flush=True)
            for key, ms in runs.items():
                results[key] = median(ms) if ms else None
            if bk.rc != 0:
                missing.append(f"lifeboat backup (prep) failed: {err(bk)}")
            for key in ("lifeboat", "lifeboat_streamed", "drill"):
                m = results[key]
                if m is not None and m.rc != 0:
                    missing.append(f"{m.name}: {err(m)}")
    finally:
        for name in (legacy_db, lifeboat_db):
            benchlib.drop_database(name, quiet=True)
        removed = benchlib.delete_prefix(prefix + "/")
        print(f"  cleanup: databases dropped, {removed} object(s) removed under "
              f"s3://{benchlib.BENCH_BUCKET}/{prefix}/", flush=True)

    rows = []
    for m in results.values():
        if m is None:
            continue
        ok = m.rc == 0
        rows.append([m.name, f"{m.wall_s:.2f}" + ("" if ok else " (failed)"), f"{m.cpu_s:.1f}",
                     "-" if m.server_cpu_s is None else f"{m.server_cpu_s:.1f}",
                     f"{m.wall_s / gb:.1f}" if ok else "-",
                     f"{m.tree_peak_sampled_mb:.1f}", f"{m.largest_process_mb:.1f}"])
    print()
    print(benchlib.fmt_table(rows, ["variant", "wall s", "CPU s (tree)", "CPU s (server)",
                                    "RTO s/GB", "tree peak RSS MB",
                                    "largest process MB"]))
    for key in ("lifeboat", "lifeboat_streamed", "drill"):
        m = results[key]
        if m is not None:
            print(f"  {key} per-process peaks (MB): {m.per_process_hwm_mb}")

    ratios: dict[str, object] = {}
    e, lr, dr = results["existing"], results["lifeboat"], results["drill"]
    print()
    if e and e.rc == 0:
        ratios["existing_rto_s_per_gb"] = round(e.wall_s / gb, 2)
    if e and lr and e.rc == 0 and lr.rc == 0:
        r = lr.wall_s / e.wall_s
        ratios.update({"lifeboat_vs_existing": round(r, 3), "met_restore_vs_existing": r <= 0.75,
                       "lifeboat_jobs": lr.extra.get("jobs"), "lifeboat_restore_path": lr.extra.get("restore_path"),
                       "lifeboat_rto_s_per_gb": round(lr.wall_s / gb, 2),
                       "lifeboat_peak_rss_mb_tree_sampled": round(lr.tree_peak_sampled_mb, 1),
                       "met_restore_peak_rss": lr.tree_peak_sampled_mb < 200})
        print(f"  lifeboat restore / existing = {r:.2f}x  (target <= 0.75x; default: jobs={lr.extra.get('jobs')}, "
              f"{lr.extra.get('restore_path')})  "
              f"{benchlib.verdict(ratios['met_restore_vs_existing'])}")
        print(f"  RTO: lifeboat {lr.wall_s / gb:.1f} s/GB, existing {e.wall_s / gb:.1f} s/GB "
              f"(database size {gb:.3f} GB)")
    lj = results["lifeboat_streamed"]
    if e and lj and e.rc == 0 and lj.rc == 0:
        r = lj.wall_s / e.wall_s
        ratios.update({"lifeboat_streamed_vs_existing": round(r, 3),
                       "lifeboat_streamed_rto_s_per_gb": round(lj.wall_s / gb, 2)})
        print(f"  [jobs=1, streamed] restore / existing = {r:.2f}x  ({lj.wall_s / gb:.1f} s/GB)")
        if lr and lr.rc == 0:
            ratios["staged_vs_streamed"] = round(lr.wall_s / lj.wall_s, 3)
            print(f"  default (staged, -j) / streamed = {lr.wall_s / lj.wall_s:.2f}x")
    if lr and dr and lr.rc == 0 and dr.rc == 0:
        d = dr.wall_s / lr.wall_s
        ratios.update({"drill_vs_restore": round(d, 3), "met_drill": d <= 1.1,
                       "drill_peak_rss_mb_tree_sampled": round(dr.tree_peak_sampled_mb, 1),
                       "met_drill_peak_rss": dr.tree_peak_sampled_mb < 200})
        print(f"  drill / lifeboat restore    = {d:.2f}x  (target <= 1.1x)        "
              f"{benchlib.verdict(ratios['met_drill'])}")
    for key in ("lifeboat", "lifeboat_streamed", "drill"):
        m = results[key]
        if m is not None and m.rc == 0:
            print(f"  {key} peak RSS (tree)      = {m.tree_peak_sampled_mb:.1f} MB (target < 200 MB) "
                  f"{benchlib.verdict(m.tree_peak_sampled_mb < 200)}")
    for item in missing:
        print(f"  NOT MEASURED: {item}")
    facts["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"  load average: {facts['loadavg_at_start']} at start, {facts['loadavg_at_end']} at the end "
          f"({facts['nproc']} CPUs; the machine is shared: a load above the CPU count slows every variant)")

    payload = {
        "kind": "restore", "scale": scale, "database": db, "database_size_bytes": size, "machine": facts,
        "rounds": args.rounds,
        "preparation": prep, "restored_size_bytes": sizes,
        "variants": {k: (m.as_dict() if m else None) for k, m in results.items()},
        "ratios": ratios, "targets": TARGETS, "missing": missing,
        "memory_note": benchlib.MEMORY_NOTE,
    }
    path = benchlib.write_result("restore", payload)
    print(f"\n  results: {os.path.relpath(path, benchlib.REPO)}")
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
