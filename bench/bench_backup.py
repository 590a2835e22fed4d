#!/usr/bin/env python3
"""Backup benchmark (issue 2, "Performance"): one run, side by side, on the benchmark database.

(a) floor      ``pg_dump -Fc -Z0 > /dev/null``
(b) existing   ``pg_dump | gzip > file`` then an upload of the file to the lab's S3
               (the AWS CLI is not installed here: boto3's ``upload_file``, the same
               s3transfer engine with the same defaults as ``aws s3 cp``, stands in;
               set ``LIFEBOAT_BENCH_AWS=/path/to/aws`` to time the real CLI instead)
(c) lifeboat   the engine's backup (module_utils/lifeboat/backup.py) called as the
               module calls it: pg_dump -Fc -> zstd -> gpg (lab public key) -> sha256 ->
               S3 multipart upload -> manifest
(d) pgBackRest the anchor a user would pick instead (bench/pgbackrest_anchor.py): a full physical
               backup of a private cluster holding the same database, and its restore
               (``--no-pgbackrest`` or BENCH_PGBACKREST=0 leaves it out)
(e) sweep      the lifeboat variant again on other scales (``--sweep 0.3,2.0``): its peak memory
               must stay flat with the database's size

Each variant runs as a child process tree: wall time, and memory of the whole
tree (see benchlib.measure). Prints a table and the ratios against the targets,
writes ``bench/results/backup-*.json``. Scratch files live in a private 0700
directory and S3 objects under ``s3://lifeboat-backups/bench/<run>/``; both are
removed at the end. Timings are only printed, never asserted.

    .venv/bin/python bench/bench_backup.py [--rounds N] [--database lifeboat_bench]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import uuid

import benchlib
import gen_db
import pgbackrest_anchor

#: issue 15's targets (the table of docs/benchmarks.md)
TARGETS = {"vs_floor_max": 1.3, "speedup_vs_existing_min": 4.0, "stored_vs_gzip_max": 1.0, "peak_rss_mb_max": 120.0}
#: "flat": the largest peak of the sweep no more than this much above the smallest
FLAT_TOLERANCE = 1.15
HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "lifeboat_child.py")


def db_scale(db: str) -> float | None:
    try:
        with benchlib.admin_target(db).connect() as conn:
            row = conn.execute("SELECT scale FROM bench_meta ORDER BY generated_at DESC LIMIT 1").fetchone()
        return float(row[0]) if row else None
    except Exception:  # noqa: BLE001
        return None


def run_floor(db: str, env: dict[str, str]) -> benchlib.Measurement:
    with open(os.devnull, "wb") as devnull:
        return benchlib.measure("floor: pg_dump -Fc -Z0 > /dev/null",
                                [benchlib.pg_bin("pg_dump"), "-Fc", "-Z0", "-d", db], env=env, stdout=devnull,
                                server_dbs=(db,))


def run_existing(db: str, env: dict[str, str], workdir: str, prefix: str, tag: str) -> tuple[benchlib.Measurement, int]:
    path = os.path.join(workdir, f"db-backup-{tag}.sql.gz")
    cmd = f"{shlex.quote(benchlib.pg_bin('pg_dump'))} -d {shlex.quote(db)} | gzip > {shlex.quote(path)}"
    dump = benchlib.measure("pg_dump | gzip > file", ["bash", "-o", "pipefail", "-c", cmd], env=env,
                            server_dbs=(db,))
    size = os.path.getsize(path) if os.path.exists(path) else 0
    key = f"{prefix}/existing/{os.path.basename(path)}"
    aws = os.environ.get("LIFEBOAT_BENCH_AWS")
    if aws:
        cfg = benchlib.lab()["s3"]["backup"]
        aws_env = dict(os.environ, AWS_ACCESS_KEY_ID=cfg["access_key"], AWS_SECRET_ACCESS_KEY=cfg["secret_key"],
                       AWS_DEFAULT_REGION=cfg["region"])
        up = benchlib.measure("upload (aws s3 cp)",
                              [aws, "s3", "cp", "--only-show-errors", "--endpoint-url", cfg["endpoint"], path,
                               f"s3://{benchlib.BENCH_BUCKET}/{key}"], env=aws_env)
    else:
        up = benchlib.measure("upload (boto3 upload_file)", [sys.executable, CHILD, "upload", path, key])
    os.unlink(path)
    out = benchlib.combine("existing: pg_dump | gzip > file; upload", [dump, up])
    out.extra["stored_size"] = size
    return out, size


def run_lifeboat(db: str, workdir: str, prefix: str, tag: str) -> benchlib.Measurement:
    result = os.path.join(workdir, f"lifeboat-{tag}.json")
    m = benchlib.measure("lifeboat: pg_dump -Fc | zstd | gpg | S3 multipart + manifest",
                         [sys.executable, CHILD, "backup", "--database", db, "--prefix", f"{prefix}/lifeboat-{tag}",
                          "--out", result], server_dbs=(db,))
    if os.path.exists(result):
        with open(result) as fh:
            m.extra.update(json.load(fh))
        os.unlink(result)
    return m


def median(ms: list[benchlib.Measurement]) -> benchlib.Measurement:
    """The round with the median wall time; memory figures are the worst round's."""
    ok = [m for m in ms if m.rc == 0] or ms
    ordered = sorted(ok, key=lambda m: m.wall_s)
    pick = ordered[(len(ordered) - 1) // 2]
    pick.extra["rounds_wall_s"] = [round(m.wall_s, 3) for m in ms]
    pick.extra["rounds_tree_peak_mb"] = [round(m.tree_peak_sampled_mb, 1) for m in ms]
    # memory: the worst round, not the median one (the target is a ceiling)
    pick.tree_peak_sampled_mb = max(m.tree_peak_sampled_mb for m in ok)
    pick.largest_process_mb = max(m.largest_process_mb for m in ok)
    pick.tree_rss_sum_peak_mb = max(m.tree_rss_sum_peak_mb for m in ok)
    pick.extra["rounds_median_wall_s"] = round(statistics.median(m.wall_s for m in ok), 3)
    return pick


def issue15_rows(r: dict, lb, peaks: list[float], anchor: dict) -> list[dict]:
    """The backup rows of issue 15's targets table (bench/report.py prints every kind's rows side by side)."""
    if lb is None:
        return [{"measure": "backup / floor", "now": "failed", "target": "<= 1.3x", "met": False}]
    rows = [
        {"measure": "backup / floor", "now": f"{r['lifeboat_vs_floor']:.2f}x", "target": "<= 1.3x",
         "met": r["met_vs_floor"]},
        {"measure": "older procedure / backup", "now": f"{r['speedup_vs_existing']:.2f}x", "target": ">= 4x",
         "met": r["met_speedup"]},
        {"measure": "stored size / gzip's", "now": f"{r['stored_size_vs_gzip']:.3f}"
         if r.get("stored_size_vs_gzip") else "-", "target": "<= 1.0", "met": r["met_stored_size"]},
    ]
    sweep = r.get("sweep_peak_rss_mb")
    rows.append({"measure": "backup peak RSS, 0.3 to 2.0 scale",
                 "now": (", ".join(f"{v:.0f} MB at {k}" for k, v in sorted(sweep.items(), key=lambda kv: float(kv[0])))
                         if sweep else f"{lb.tree_peak_sampled_mb:.0f} MB (one scale)"),
                 "target": "< 120 MB and flat", "met": r.get("met_peak_rss_flat", None) if sweep else None})
    if anchor.get("backup"):
        rows.append({"measure": "pgBackRest full backup / backup (anchor)",
                     "now": f"{anchor['backup']['wall_s'] / lb.wall_s:.2f}x ({anchor['backup']['wall_s']:.1f} s)",
                     "target": "-", "met": None})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Lifeboat backup benchmark")
    ap.add_argument("--database", default=benchlib.BENCH_DB)
    ap.add_argument("--rounds", type=int, default=1, help="rounds of (floor, existing, lifeboat); median reported")
    ap.add_argument("--no-lifeboat", action="store_true", help="measure (a) and (b) only")
    ap.add_argument("--no-pgbackrest", action="store_true", default=os.environ.get("BENCH_PGBACKREST") == "0",
                    help="leave out the pgBackRest anchor")
    ap.add_argument("--sweep", default="", help="other scales for the memory sweep, e.g. 0.3,2.0 (generated when "
                                                "missing)")
    args = ap.parse_args(argv)

    db = args.database
    size = benchlib.database_size(db)
    if size is None:
        sys.exit(f"database {db} does not exist: run bench/gen_db.py first")
    scale = db_scale(db)
    facts = benchlib.machine()
    run_id = uuid.uuid4().hex[:10]
    prefix = f"{benchlib.BENCH_PREFIX}/{run_id}"
    print(f"backup benchmark: database {db} (scale {scale}, pg_database_size {size / 1e9:.3f} GB), "
          f"{args.rounds} round(s); machine: {facts['nproc']} CPU {facts['cpu_model']}, {facts['memory_gib']} GiB, "
          f"load {facts['loadavg_at_start']}", flush=True)

    target = benchlib.admin_target(db)
    floors: list[benchlib.Measurement] = []
    existing: list[benchlib.Measurement] = []
    lifeboat: list[benchlib.Measurement] = []
    gzip_sizes: list[int] = []
    sweep: list[dict] = []
    anchor: dict = {}
    try:
        with benchlib.private_dir() as work, target.child_env() as env:
            # warm-up (not measured): the database's pages in the OS cache for every variant alike
            run_floor(db, env)
            for r in range(args.rounds):
                tag = f"r{r}"
                floors.append(run_floor(db, env))
                print(f"  round {r + 1}: floor {floors[-1].wall_s:.2f} s", flush=True)
                m, gz = run_existing(db, env, str(work), prefix, tag)
                existing.append(m)
                gzip_sizes.append(gz)
                state = "" if m.rc == 0 else f" FAILED rc={m.rc}: {m.extra.get('stderr', '')[-500:]}"
                print(f"  round {r + 1}: existing {m.wall_s:.2f} s {m.extra['steps']}{state}", flush=True)
                if not args.no_lifeboat:
                    lifeboat.append(run_lifeboat(db, str(work), prefix, tag))
                    lb = lifeboat[-1]
                    why = lb.extra.get("error") or lb.extra.get("stderr", "")[-500:]
                    state = "" if lb.rc == 0 else f" FAILED rc={lb.rc}: {why}"
                    print(f"  round {r + 1}: lifeboat {lb.wall_s:.2f} s{state}", flush=True)
            anchor = {"skipped": "--no-pgbackrest"} if args.no_pgbackrest else pgbackrest_anchor.measure(work, db)
            if "skipped" in anchor or "error" in anchor:
                print(f"  pgBackRest: not measured ({anchor.get('skipped') or anchor.get('error')})", flush=True)
            for other in [float(x) for x in args.sweep.split(",") if x.strip()]:
                other_db = benchlib.bench_db_for(other)
                gen_db.generate(other_db, other, quiet=True)
                tag = f"s{other:g}".replace(".", "_")
                m = run_lifeboat(other_db, str(work), prefix, tag)
                sweep.append({"scale": other, "database": other_db, "database_size_bytes":
                              benchlib.database_size(other_db), "wall_s": round(m.wall_s, 3), "rc": m.rc,
                              "tree_peak_sampled_mb": round(m.tree_peak_sampled_mb, 1),
                              "per_process_hwm_mb": m.per_process_hwm_mb})
                print(f"  sweep: scale {other}: lifeboat {m.wall_s:.2f} s, tree peak {m.tree_peak_sampled_mb:.1f} MB"
                      + ("" if m.rc == 0 else f" FAILED rc={m.rc}"), flush=True)
    finally:
        removed = benchlib.delete_prefix(prefix + "/")
        print(f"  cleanup: {removed} object(s) removed under s3://{benchlib.BENCH_BUCKET}/{prefix}/", flush=True)

    floor = median(floors)
    exist = median(existing)
    lb = median(lifeboat) if lifeboat else None
    lb_ok = lb is not None and lb.rc == 0
    gzip_size = gzip_sizes[0] if gzip_sizes else 0
    lb_size = int(lb.extra.get("stored_size", 0)) if lb_ok else None
    dump_only = exist.extra["steps"].get("pg_dump | gzip > file")

    rows = []
    for m, stored in ((floor, None), (exist, gzip_size), (lb, lb_size)):
        if m is None:
            continue
        rows.append([m.name, f"{m.wall_s:.2f}" + ("" if m.rc == 0 else " (failed)"), f"{m.cpu_s:.1f}",
                     "-" if m.server_cpu_s is None else f"{m.server_cpu_s:.1f}",
                     f"{stored / 1e6:.1f}" if stored else "-",
                     f"{m.tree_peak_sampled_mb:.1f}", f"{m.largest_process_mb:.1f}",
                     f"{m.tree_rss_sum_peak_mb:.1f}"])
    for key, label in (("backup", "pgBackRest full backup (physical, zst)"), ("restore", "pgBackRest restore + start")):
        a = anchor.get(key)
        if a:
            rows.append([label, f"{a['wall_s']:.2f}" + ("" if a["rc"] == 0 else " (failed)"), f"{a['cpu_s']:.1f}",
                         "-", f"{anchor['repo_bytes'] / 1e6:.1f}" if key == "backup" and anchor.get("repo_bytes")
                         else "-", f"{a['tree_peak_sampled_mb']:.1f}", f"{a['largest_process_mb']:.1f}",
                         f"{a['tree_rss_sum_peak_mb']:.1f}"])
    print()
    print(benchlib.fmt_table(rows, ["variant", "wall s", "CPU s (tree)", "CPU s (server)",
                                    "stored MB", "tree peak RSS MB",
                                    "largest process MB", "tree RSS sum MB"]))
    if lb:
        print(f"  lifeboat per-process peaks (MB): {lb.per_process_hwm_mb}")
        print(f"  lifeboat per-process CPU s (sampled): {lb.per_process_cpu_s}; server backends "
              f"{lb.server_cpu_s if lb.server_cpu_s is None else round(lb.server_cpu_s, 1)}")

    ratios: dict[str, object] = {}
    if lb_ok:
        vs_floor = lb.wall_s / floor.wall_s
        speedup = exist.wall_s / lb.wall_s
        speedup_dump_only = dump_only / lb.wall_s if dump_only else None
        size_ratio = lb_size / gzip_size if gzip_size else None
        rss = max(lb.tree_peak_sampled_mb, 0.0)
        ratios = {
            "lifeboat_vs_floor": round(vs_floor, 3), "target_vs_floor_max": TARGETS["vs_floor_max"],
            "met_vs_floor": vs_floor <= TARGETS["vs_floor_max"],
            "speedup_vs_existing": round(speedup, 3), "target_speedup_min": TARGETS["speedup_vs_existing_min"],
            "met_speedup": speedup >= TARGETS["speedup_vs_existing_min"],
            "speedup_vs_existing_dump_only": round(speedup_dump_only, 3) if speedup_dump_only else None,
            "stored_size_vs_gzip": round(size_ratio, 3) if size_ratio else None,
            "met_stored_size": size_ratio is not None and size_ratio <= TARGETS["stored_vs_gzip_max"],
            "peak_rss_mb_tree_sampled": round(rss, 1), "largest_process_mb": round(lb.largest_process_mb, 1),
            "target_peak_rss_mb_max": TARGETS["peak_rss_mb_max"],
            "met_peak_rss": rss < TARGETS["peak_rss_mb_max"],
        }
        if lb.server_cpu_s is not None and floor.server_cpu_s is not None and exist.server_cpu_s is not None:
            tot = {k: m.cpu_s + (m.server_cpu_s or 0.0) for k, m in (("floor", floor), ("existing", exist),
                                                                     ("lifeboat", lb))}
            ratios["total_cpu_s"] = {k: round(v, 1) for k, v in tot.items()}
            ratios["total_cpu_lifeboat_vs_floor"] = round(tot["lifeboat"] / tot["floor"], 3)
            ratios["total_cpu_existing_vs_lifeboat"] = round(tot["existing"] / tot["lifeboat"], 3)
        print()
        print(f"  lifeboat / floor            = {vs_floor:.2f}x   (target <= 1.3x)   "
              f"{benchlib.verdict(ratios['met_vs_floor'])}")
        print(f"  existing / lifeboat         = {speedup:.2f}x   (target >= 4x)     "
              f"{benchlib.verdict(ratios['met_speedup'])}"
              + (f"   [dump+gzip only, without the upload: {speedup_dump_only:.2f}x]" if speedup_dump_only else ""))
        if size_ratio is not None:
            print(f"  stored size / gzip's        = {size_ratio:.3f}    (target <= 1)      "
                  f"{benchlib.verdict(ratios['met_stored_size'])}")
        if "total_cpu_s" in ratios:
            print(f"  CPU seconds, client tree + server backends (load-independent): {ratios['total_cpu_s']}; "
                  f"lifeboat/floor {ratios['total_cpu_lifeboat_vs_floor']:.2f}x, "
                  f"existing/lifeboat {ratios['total_cpu_existing_vs_lifeboat']:.2f}x")
        print(f"  lifeboat peak RSS (tree)    = {rss:.1f} MB (target < 120 MB) "
              f"{benchlib.verdict(ratios['met_peak_rss'])}"
              f"   [largest process {lb.largest_process_mb:.1f} MB]")
    else:
        print("\n  lifeboat: not measured" + (f" ({lb.extra.get('error') or lb.extra.get('stderr', '')[-300:]})"
                                            if lb else " (--no-lifeboat)"))

    peaks = [x["tree_peak_sampled_mb"] for x in sweep if x["rc"] == 0]
    if lb_ok:
        peaks.append(round(lb.tree_peak_sampled_mb, 1))
    if sweep and lb_ok:
        flat = bool(peaks) and max(peaks) <= min(peaks) * FLAT_TOLERANCE
        ratios["sweep_peak_rss_mb"] = {str(x["scale"]): x["tree_peak_sampled_mb"] for x in sweep}
        ratios["sweep_peak_rss_mb"][str(scale)] = round(lb.tree_peak_sampled_mb, 1)
        ratios["met_peak_rss_flat"] = flat and max(peaks) < TARGETS["peak_rss_mb_max"]
        print(f"  peak RSS over the sweep      = {ratios['sweep_peak_rss_mb']} MB (target < 120 MB and flat: "
              f"max <= {FLAT_TOLERANCE}x min) {benchlib.verdict(ratios['met_peak_rss_flat'])}")
    if anchor.get("backup") and lb_ok and anchor["backup"]["rc"] == 0:
        ratios["pgbackrest_backup_vs_lifeboat"] = round(anchor["backup"]["wall_s"] / lb.wall_s, 3)
        print(f"  pgBackRest full backup / lifeboat = {ratios['pgbackrest_backup_vs_lifeboat']:.2f}x "
              f"(repository {anchor['repo_bytes'] / 1e6:.1f} MB for a {anchor['cluster_size_bytes'] / 1e9:.2f} GB "
              "cluster, indexes included)")
    payload = {
        "kind": "backup", "scale": scale, "database": db, "database_size_bytes": size, "rounds": args.rounds,
        "machine": facts, "upload_tool": "aws cli" if os.environ.get("LIFEBOAT_BENCH_AWS") else
        "boto3 upload_file (stand-in for aws s3 cp: same s3transfer engine and defaults)",
        "variants": {"floor": floor.as_dict(), "existing": exist.as_dict(), "lifeboat": lb.as_dict() if lb else None},
        "gzip_size_bytes": gzip_size, "lifeboat_stored_size_bytes": lb_size, "ratios": ratios, "targets": TARGETS,
        "memory_note": benchlib.MEMORY_NOTE, "pgbackrest": anchor, "sweep": sweep,
        "issue15_rows": issue15_rows(ratios, lb if lb_ok else None, peaks, anchor),
    }
    path = benchlib.write_result("backup", payload)
    print(f"\n  results: {os.path.relpath(path, benchlib.REPO)}")
    return 0 if (lb_ok or args.no_lifeboat) else 1


if __name__ == "__main__":
    sys.exit(main())
