#!/usr/bin/env python3
"""Print a Markdown summary of the latest benchmark results (bench/results/*-latest.json).

    .venv/bin/python bench/report.py            # scale 1.0; paste into docs/benchmarks.md "Results"
    BENCH_SCALE=0.05 .venv/bin/python bench/report.py
    .venv/bin/python bench/report.py FILE...    # specific result files

First comes issue 15's targets table, every row side by side (now, target, met), collected from every
results file: a benchmark adds its rows by writing ``issue15_rows`` (a list of {"measure", "now", "target",
"met": true/false/null, "note"}) into its ``bench/results/<kind>-...-latest.json`` (benchlib.write_result);
the restore benchmark's older results are read from their ``ratios``. Each row names the file (and so the
run, its machine and load) it came from.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import bench_s3_sync
import benchlib

SCALE = os.environ.get("BENCH_SCALE", "1.0")


ORDER = ("backup / floor", "older procedure / backup", "stored size / gzip's", "backup peak RSS, 0.3 to 2.0 scale",
         "default restore / `gunzip -c | psql`", "drill / restore", "full bucket copy / `rclone sync`, 10,000 objects",
         "sync with nothing to do / listing both sides")


def _latest_files() -> list[str]:
    """Every kind's latest result at this scale, and the latest of kinds without a scale (the sync benchmark)."""
    out = sorted(str(p) for p in benchlib.RESULTS.glob(f"*-scale{SCALE}-latest.json"))
    out += sorted(str(p) for p in benchlib.RESULTS.glob("*-latest.json") if "-scale" not in p.name)
    return out


def _restore_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    r = doc.get("ratios") or {}
    rows = []
    if "lifeboat_vs_existing" in r:
        rows.append({"measure": "default restore / `gunzip -c | psql`", "now": f"{r['lifeboat_vs_existing']:.2f}x",
                     "target": "<= 0.75x", "met": r["lifeboat_vs_existing"] <= 0.75})
    if "drill_vs_restore" in r:
        rows.append({"measure": "drill / restore", "now": f"{r['drill_vs_restore']:.2f}x", "target": "<= 1.1x",
                     "met": r["drill_vs_restore"] <= 1.1})
    return rows


def targets_table(docs: dict[str, dict[str, Any]]) -> str:
    """Issue 15's targets, every row side by side: measure, now, target, met, from which run."""
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for doc in docs.values():
        found = doc.get("issue15_rows")
        if found is None and doc.get("kind") == "sync":   # results from before the sync rows were written
            found = bench_s3_sync.issue15_rows(doc)
        if found is None and doc.get("kind") == "restore":
            found = _restore_rows(doc)
        if found is None and doc.get("kind") == "backup" and doc.get("ratios"):   # results from before issue 15
            r = doc["ratios"]
            found = [{"measure": "backup / floor", "now": f"{r['lifeboat_vs_floor']:.2f}x", "target": "<= 1.3x",
                      "met": r["lifeboat_vs_floor"] <= 1.3},
                     {"measure": "older procedure / backup", "now": f"{r['speedup_vs_existing']:.2f}x",
                      "target": ">= 4x", "met": r["speedup_vs_existing"] >= 4},
                     {"measure": "stored size / gzip's", "now": f"{r['stored_size_vs_gzip']:.3f}", "target": "<= 1.0",
                      "met": r["stored_size_vs_gzip"] <= 1.0},
                     {"measure": "backup peak RSS, 0.3 to 2.0 scale",
                      "now": f"{r['peak_rss_mb_tree_sampled']:.0f} MB (one scale)", "target": "< 120 MB and flat",
                      "met": None}]
        rows += [(row, doc) for row in found or []]
    seen = {row["measure"] for row, _ in rows}
    for measure in ORDER:
        if measure not in seen:
            rows.append(({"measure": measure, "now": "not measured", "target": "", "met": None}, {}))
    rows.sort(key=lambda rd: ORDER.index(rd[0]["measure"]) if rd[0]["measure"] in ORDER else len(ORDER))
    lines = ["| measure | now | target | | run (load average at start) |", "|---|---:|---|---|---|"]
    for row, doc in rows:
        m = doc.get("machine") or {}
        run = (f"{doc.get('kind')} {m.get('date', '')} ({(m.get('loadavg_at_start') or ['?'])[0]})" if doc else "-")
        note = f" {row['note']}" if row.get("note") else ""
        measure = row["measure"].replace("|", "\\|")
        lines.append(f"| {measure} | {row['now']}{note} | {row['target']} | "
                     f"{_v(row['met']) if row['met'] is not None or row['target'] else ''} | {run} |")
    return "\n".join(lines)


def _load(paths: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not paths:
        paths = _latest_files()
    for path in paths:
        try:
            with open(path) as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            continue
        doc.setdefault("kind", os.path.basename(path).split("-scale")[0])  # older sync results lack it
        out[doc["kind"]] = doc
    return out


def _cpu(m: dict[str, Any]) -> str:
    server = m.get("server_cpu_s")
    return f"{m.get('cpu_s', 0):.1f} / " + ("-" if server is None else f"{server:.1f}")


def _v(ok: Any) -> str:
    return benchlib.verdict(None if ok is None else bool(ok))


def render(docs: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    if not docs:
        return "no results yet: run `make bench`"
    lines += [targets_table(docs), ""]
    for doc in docs.values():
        if "machine" not in doc or "database_size_bytes" not in doc:
            continue
        m = doc["machine"]
        head = (f"scale {doc['scale']} ({doc['database_size_bytes'] / 1e9:.2f} GB database), {m['nproc']} vCPU "
                f"{m['cpu_model']}, {m['memory_gib']} GiB")
        lines.append(f"- {doc['kind']}: {head}, {m['date']}, load average at start {m['loadavg_at_start'][0]} "
                     "(a shared machine: compare the load average between runs)")
    lines.append("")
    b = docs.get("backup")
    if b:
        v = b["variants"]
        r = b["ratios"]
        lines += ["| backup | wall s | CPU s client / server | stored MB | peak RSS MB (tree) |",
                  "|---|---:|---:|---:|---:|"]
        lines.append(f"| floor `pg_dump -Fc -Z0 > /dev/null` | {v['floor']['wall_s']:.1f} | "
                     f"{_cpu(v['floor'])} | - | {v['floor']['tree_peak_sampled_mb']:.0f} |")
        steps = v["existing"].get("extra", {}).get("steps", {})
        lines.append(f"| existing `pg_dump \\| gzip > file` + upload | {v['existing']['wall_s']:.1f} "
                     f"({' + '.join(f'{s:.1f}' for s in steps.values())}) | {_cpu(v['existing'])} | "
                     f"{b['gzip_size_bytes'] / 1e6:.1f} | "
                     f"{v['existing']['tree_peak_sampled_mb']:.0f} |")
        lb = v.get("lifeboat")
        if lb and lb.get("rc") == 0:
            lines.append(f"| Lifeboat (zstd + gpg + S3 multipart + manifest) | {lb['wall_s']:.1f} | "
                         f"{_cpu(lb)} | "
                         f"{b['lifeboat_stored_size_bytes'] / 1e6:.1f} | {lb['tree_peak_sampled_mb']:.0f} |")
        if b.get("rounds", 1) > 1:
            lines.append("")
            lines.append(f"Median of {b['rounds']} interleaved rounds; per-round wall times: "
                         + "; ".join(f"{k} {v[k]['extra'].get('rounds_wall_s')}" for k in v if v[k]))
        pb = b.get("pgbackrest") or {}
        for key, label in (("backup", "pgBackRest full backup (physical, zst, local repository)"),
                           ("restore", "pgBackRest restore + server started")):
            m = pb.get(key)
            if m and m.get("rc") == 0:
                stored = f"{pb['repo_bytes'] / 1e6:.1f}" if key == "backup" and pb.get("repo_bytes") else "-"
                lines.append(f"| {label} | {m['wall_s']:.1f} | {_cpu(m)} | {stored} | "
                             f"{m['tree_peak_sampled_mb']:.0f} |")
        if pb.get("skipped") or pb.get("error"):
            lines.append(f"\npgBackRest: not measured ({pb.get('skipped') or pb.get('error')})")
        for x in b.get("sweep") or []:
            lines.append(f"\nSweep: scale {x['scale']} ({(x.get('database_size_bytes') or 0) / 1e9:.2f} GB): Lifeboat "
                         f"{x['wall_s']:.1f} s, peak RSS {x['tree_peak_sampled_mb']:.0f} MB")
        if r:
            if "total_cpu_lifeboat_vs_floor" in r:
                lines += ["", f"Total CPU (client tree + server backends), less sensitive to the machine's load: "
                          f"{r['total_cpu_s']} s; Lifeboat / floor {r['total_cpu_lifeboat_vs_floor']:.2f}x, "
                          f"existing / Lifeboat {r['total_cpu_existing_vs_lifeboat']:.2f}x."]
        lines.append("")
    s = docs.get("restore")
    if s:
        v = s["variants"]
        r = s["ratios"]
        gb = s["database_size_bytes"] / 1e9
        lines += ["| restore | wall s | CPU s client / server | RTO s/GB | peak RSS MB (tree) |",
                  "|---|---:|---:|---:|---:|"]
        for key, label in (("existing", "existing `gunzip -c \\| psql`"),
                           ("lifeboat", f"Lifeboat full restore from S3 (default: jobs={r.get('lifeboat_jobs', 1)}, "
                                        f"{r.get('lifeboat_restore_path', 'streamed')})"),
                           ("lifeboat_streamed", "Lifeboat full restore from S3 (jobs=1, streamed)"),
                           ("lifeboat_jobs", f"Lifeboat full restore from S3 (jobs={r.get('lifeboat_jobs', 2)})"),
                           ("drill", "Lifeboat verification drill")):
            m = v.get(key)
            if not m:
                continue
            if m.get("rc") != 0:
                lines.append(f"| {label} | failed | - | - | - |")
                continue
            lines.append(f"| {label} | {m['wall_s']:.1f} | {_cpu(m)} | {m['wall_s'] / gb:.0f} | "
                         f"{m['tree_peak_sampled_mb']:.0f} |")
        if s.get("rounds", 1) > 1:
            lines.append("")
            lines.append(f"Median (lower middle for an even count) of {s['rounds']} interleaved rounds; "
                         "per-round wall times: "
                         + "; ".join(f"{k} {v[k]['extra'].get('rounds_wall_s')}" for k in v if v[k]))
        if r:
            lines += ["", "| restore target | measured | |", "|---|---:|---|"]
            if "lifeboat_vs_existing" in r:
                target = (s.get("targets") or {}).get("restore_vs_existing_max", 0.6)
                lines.append(f"| full restore <= {target}x existing | {r['lifeboat_vs_existing']:.2f}x | "
                             f"{_v(r['met_restore_vs_existing'])} |")
            if "drill_vs_restore" in r:
                lines.append(f"| drill <= full restore + 10% | {r['drill_vs_restore']:.2f}x | {_v(r['met_drill'])} |")
            if "lifeboat_peak_rss_mb_tree_sampled" in r:
                peak = max(r["lifeboat_peak_rss_mb_tree_sampled"], r.get("drill_peak_rss_mb_tree_sampled", 0))
                lines.append(f"| peak RSS < 200 MB | {peak:.0f} MB | {_v(peak < 200)} |")
        for item in s.get("missing", []):
            lines.append(f"\nNot measured: {item}")
    return "\n".join(lines)


def main() -> int:
    print(render(_load(sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
