#!/usr/bin/env python3
"""Print a Markdown summary of the latest benchmark results (bench/results/*-latest.json).

    .venv/bin/python bench/report.py            # scale 1.0; paste into docs/benchmarks.md "Results"
    BENCH_SCALE=0.05 .venv/bin/python bench/report.py
    .venv/bin/python bench/report.py FILE...    # specific result files
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import benchlib

SCALE = os.environ.get("BENCH_SCALE", "1.0")


def _load(paths: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not paths:
        paths = [str(benchlib.RESULTS / f"{k}-scale{SCALE}-latest.json") for k in ("backup", "restore")]
    for path in paths:
        try:
            with open(path) as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            continue
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
    for doc in docs.values():
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
        if r:
            lines += ["", "| backup target | measured | |", "|---|---:|---|",
                      f"| Lifeboat <= 1.5x floor | {r['lifeboat_vs_floor']:.2f}x | {_v(r['met_vs_floor'])} |",
                      f"| Lifeboat >= 4x faster than the existing procedure | {r['speedup_vs_existing']:.2f}x | "
                      f"{_v(r['met_speedup'])} |",
                      f"| stored size <= gzip's | {r['stored_size_vs_gzip']:.3f}x | {_v(r['met_stored_size'])} |",
                      f"| peak RSS < 200 MB | {r['peak_rss_mb_tree_sampled']:.0f} MB | {_v(r['met_peak_rss'])} |"]
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
