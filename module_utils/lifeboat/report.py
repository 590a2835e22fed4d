"""The monitor's HTML report: one self-contained file (no CDN, no external request; opens offline).

Per target: its status and alerts, a chart of backup size and duration over time, a chart of row
totals over time, and the drill history with the restore time per GiB (RTO). The data is embedded as
JSON; a small inline script draws the charts as SVG when the page loads (``data-charts`` on <body>
counts the charts drawn, which the headless-browser test reads).
"""
from __future__ import annotations

import datetime as _dt
import html
import json
from typing import Any

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.catalog import human_age, human_size

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px} .muted{color:#667}
.ok{color:#0a7a32;font-weight:600} .bad{color:#b3141b;font-weight:600}
table{border-collapse:collapse;margin:8px 0;font-size:13px} td,th{border:1px solid #d5d9e0;padding:3px 8px;
text-align:left} th{background:#f1f3f7} ul.alerts li{color:#b3141b}
.charts{display:flex;flex-wrap:wrap;gap:16px} .chart{border:1px solid #d5d9e0;padding:6px}
.chart svg{display:block} .legend{font-size:12px}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("lifeboat-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function draw(holder, series) {
    var W = 460, H = 200, L = 56, R = 12, T = 12, B = 28;
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"}, holder);
    el("rect", {x: 0, y: 0, width: W, height: H, fill: "#ffffff"}, svg);
    var xs = [], drawn = 0;
    series.forEach(function (s) { s.points.forEach(function (p) { xs.push(p[0]); }); });
    if (!xs.length) { return 0; }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    if (x1 === x0) { x0 -= 3600; x1 += 3600; }
    el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#889"}, svg);
    series.forEach(function (s, i) {
      var ys = s.points.map(function (p) { return p[1]; });
      var y1 = Math.max.apply(null, ys.concat([0])) || 1;
      var pts = s.points.map(function (p) {
        var x = L + (p[0] - x0) / (x1 - x0) * (W - L - R);
        var y = (H - B) - p[1] / y1 * (H - B - T);
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      el("polyline", {points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": 2,
                      "class": "series"}, svg);
      pts.forEach(function (xy) {
        var c = xy.split(",");
        el("circle", {cx: c[0], cy: c[1], r: 3, fill: s.color}, svg);
      });
      var label = el("text", {x: 4, y: T + 12 + 14 * i, fill: s.color, "font-size": 11}, svg);
      label.textContent = s.label + " max " + s.fmt(y1);
      drawn += 1;
    });
    var t0 = el("text", {x: L, y: H - 8, "font-size": 11, fill: "#556"}, svg);
    t0.textContent = new Date(x0 * 1000).toISOString().slice(0, 10);
    var t1 = el("text", {x: W - R, y: H - 8, "font-size": 11, fill: "#556", "text-anchor": "end"}, svg);
    t1.textContent = new Date(x1 * 1000).toISOString().slice(0, 10);
    return drawn ? 1 : 0;
  }
  function mib(v) { return (v / 1048576).toFixed(2) + " MiB"; }
  function sec(v) { return v.toFixed(1) + " s"; }
  function num(v) { return String(Math.round(v)); }
  var charts = 0;
  data.targets.forEach(function (t, i) {
    var size = document.getElementById("chart-size-" + i);
    if (size && t.history.length) {
      charts += draw(size, [
        {label: "size", color: "#1f5fbf", fmt: mib, points: t.history.map(function (h) { return [h.t, h.size]; })},
        {label: "duration", color: "#c2571a", fmt: sec,
         points: t.history.map(function (h) { return [h.t, h.duration]; })}]);
    }
    var rows = document.getElementById("chart-rows-" + i);
    if (rows && t.history.length) {
      charts += draw(rows, [{label: "rows", color: "#0a7a32", fmt: num,
                             points: t.history.map(function (h) { return [h.t, h.rows]; })}]);
    }
  });
  document.body.setAttribute("data-charts", String(charts));
})();
"""


def _history(target: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for b in reversed(target["backups"]):  # oldest first
        if not b.get("manifest_key"):
            continue
        try:
            when = mf.parse_time(str(b.get("started_at")))
        except ValueError:
            continue
        out.append({"t": int(when.timestamp()), "size": int(b.get("size") or 0),
                    "duration": float(b.get("duration_s") or 0), "rows": int(b.get("rows") or 0)})
    return out


def _drills(target: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for b in target["backups"]:
        for v in b.get("verifications") or []:
            rows.append({"backup": b.get("id"), **v})
    return sorted(rows, key=lambda r: str(r.get("at") or ""), reverse=True)


def _esc(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def render(targets: list[dict[str, Any]], alerts: list[dict[str, str]], now: _dt.datetime) -> str:
    """The whole page as one string."""
    by_target: dict[str, list[str]] = {}
    for a in alerts:
        by_target.setdefault(a["target"], []).append(a["message"])
    payload = {"generated": mf.iso(now), "targets": [{"name": t["name"], "history": _history(t)} for t in targets]}
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>Lifeboat backup status</title>", f"<style>{CSS}</style></head><body>",
             "<h1>Lifeboat backup status</h1>",
             f'<p class="muted">generated {_esc(mf.iso(now))} &middot; {len(targets)} target(s) &middot; '
             + (f'<span class="bad">{len(alerts)} alert(s)</span>' if alerts else '<span class="ok">no alert</span>')
             + "</p>", "<table><tr><th>target</th><th>kind</th><th>status</th><th>newest</th><th>age</th>"
             "<th>size</th><th>backups</th></tr>"]
    for t in targets:
        newest = next((b for b in t["backups"] if b.get("manifest_key")), None)
        status = ('<span class="bad">' + str(len(by_target.get(t["name"], []))) + " alert(s)</span>"
                  if by_target.get(t["name"]) else '<span class="ok">OK</span>')
        parts.append(f"<tr><td>{_esc(t['name'])}</td><td>{_esc(t['kind'])}</td><td>{status}</td>"
                     f"<td>{_esc(newest['id'] if newest else None)}</td>"
                     f"<td>{_esc(human_age(newest.get('age_s')) if newest else None)}</td>"
                     f"<td>{_esc(human_size(newest.get('size')) if newest else None)}</td>"
                     f"<td>{len(t['backups'])}</td></tr>")
    parts.append("</table>")
    for i, t in enumerate(targets):
        parts.append(f"<h2>{_esc(t['name'])} <span class=\"muted\">({_esc(t['kind'])}) "
                     f"{_esc(t.get('destination') or '')}</span></h2>")
        if not t["reachable"]:
            parts.append(f'<p class="bad">cannot check: {_esc(t["error"])}</p>')
        if by_target.get(t["name"]):
            parts.append('<ul class="alerts">' + "".join(f"<li>{_esc(m)}</li>" for m in by_target[t["name"]])
                         + "</ul>")
        if t["kind"] == "database" and t["reachable"]:
            parts.append('<div class="charts">'
                         f'<div class="chart"><div class="legend">backup size and duration</div>'
                         f'<div id="chart-size-{i}"></div></div>'
                         f'<div class="chart"><div class="legend">row totals</div>'
                         f'<div id="chart-rows-{i}"></div></div></div>')
            drills = _drills(t)
            parts.append("<table><tr><th>drill</th><th>backup</th><th>outcome</th><th>restore</th>"
                         "<th>RTO s/GiB</th><th>failures</th></tr>")
            for d in drills[:30]:
                outcome = d.get("outcome")
                cls = "ok" if outcome == "passed" else "bad"
                parts.append(f"<tr><td>{_esc(d.get('at'))}</td><td>{_esc(d.get('backup'))}</td>"
                             f'<td class="{cls}">{_esc(outcome)}</td><td>{_esc(d.get("restore_duration_s"))} s</td>'
                             f"<td>{_esc(d.get('rto_s_per_gib'))}</td>"
                             f"<td>{_esc('; '.join(d.get('failures') or []) or None)}</td></tr>")
            if not drills:
                parts.append('<tr><td colspan="6" class="bad">no restore drill on record</td></tr>')
            parts.append("</table>")
        for label in ("last_run", "last_success"):
            rec = t.get(label)
            if rec:
                parts.append(f"<p>{label.replace('_', ' ')}: {_esc(rec.get('outcome'))} at "
                             f"{_esc(rec.get('finished_at'))} ({_esc(rec.get('duration_s'))} s) "
                             f"{_esc(json.dumps(rec.get('counts') or {}, sort_keys=True))}</p>")
    data = json.dumps(payload, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e")
    parts += [f'<script type="application/json" id="lifeboat-data">{data}</script>',
              f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"
