"""The monitor: rules over the catalog (catalog.py) that turn a silent failure into an alert.

``evaluate(target, thresholds, now)`` returns the alerts of one cataloged target; each alert is
``{"target", "kind", "message"}`` with a message naming the cause and the limit. Kinds per target
kind (fixed, so every metric series exists on every run, 0 when clear):

- database: stale, too_few, size_change, duration_change, row_loss, verify_stale, verify_failed,
  verify_inconclusive, incomplete, damaged, open_uploads, unreachable
- archive:  stale (last successful run), run_failed, incomplete, damaged, open_uploads, unreachable
- sync:     stale (last successful run), run_failed, unreachable

``metrics_text`` renders the Prometheus text exposition (timestamps, not ages), ``write_atomic`` puts
a file in place with a temporary file and a rename in the same directory (node_exporter's textfile
collector never reads half a file). The HTML report is report.py.
"""
from __future__ import annotations

import datetime as _dt
import os
import statistics
import tempfile
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.catalog import human_age, human_size
from ansible.module_utils.lifeboat.errors import ConfigError, StorageError

KINDS = {
    "database": ("stale", "too_few", "size_change", "duration_change", "row_loss", "verify_stale",
                 "verify_failed", "verify_inconclusive", "incomplete", "damaged", "open_uploads", "unreachable"),
    "archive": ("stale", "run_failed", "incomplete", "damaged", "open_uploads", "unreachable"),
    "sync": ("stale", "run_failed", "unreachable"),
}
#: a size/duration comparison needs at least this many earlier backups
MIN_HISTORY = 3


@dataclass
class Thresholds:
    max_age_hours: float = 26.0          # RPO: newest complete backup / last successful run
    window_days: float = 7.0
    min_count: int = 7                   # complete backups in the window
    median_of: int = 7                   # previous backups the newest is compared with
    size_change: float = 0.5             # either direction, as a fraction of the median
    duration_change: float = 0.5
    duration_floor_s: float = 60.0       # durations both under this are noise, never compared
    row_loss: float = 0.2                # share of a table's rows lost since the previous backup
    row_loss_min_rows: int = 100         # tables smaller than this in the previous backup are not compared
    verify_max_age_days: float = 8.0
    incomplete_grace_hours: float = 6.0

    def validate(self) -> None:
        for name in ("max_age_hours", "window_days", "verify_max_age_days"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be greater than 0", name)
        for name in ("size_change", "duration_change", "row_loss"):
            if not 0 < getattr(self, name) < 10:
                raise ConfigError(f"{name}: a fraction such as 0.5 (50%), got {getattr(self, name)}", name)
        for name in ("min_count", "median_of", "row_loss_min_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be 0 or more", name)
        if self.incomplete_grace_hours < 0 or self.duration_floor_s < 0:
            raise ConfigError("incomplete_grace_hours and duration_floor_s must be 0 or more", "incomplete_grace_hours")


def _ts(value: Any) -> _dt.datetime | None:
    if not value:
        return None
    try:
        return mf.parse_time(str(value))
    except ValueError:
        return None


def _complete(target: dict[str, Any]) -> list[dict[str, Any]]:
    """Sets with a manifest, newest first (older-procedure dumps without one are listed, not judged)."""
    return [b for b in target["backups"] if b.get("manifest_key")]


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def _changed(kind: str, newest: float, history: list[float], limit: float) -> tuple[bool, str, float]:
    median = statistics.median(history)
    if median <= 0:
        return False, "", 0.0
    change = (newest - median) / median
    return abs(change) > limit, ("grew" if change > 0 else "shrank"), median


def _database_alerts(t: dict[str, Any], th: Thresholds, now: _dt.datetime, add) -> None:
    sets = _complete(t)
    newest = sets[0] if sets else None
    # freshness
    if newest is None:
        add("stale", "no complete backup (with a manifest) found" + (
            f"; {len(t['incomplete'])} incomplete" if t["incomplete"] else ""))
    else:
        when = _ts(newest.get("finished_at")) or _ts(newest.get("started_at"))
        age = (now - when).total_seconds() if when else None
        if age is None or age > th.max_age_hours * 3600:
            add("stale", f"newest complete backup {newest['id']} finished {human_age(age)} ago "
                         f"(limit {th.max_age_hours:g}h)")
    # count in the window
    since = now - _dt.timedelta(days=th.window_days)
    recent = [b for b in sets if (_ts(b.get("started_at")) or now) >= since]
    if len(recent) < th.min_count:
        add("too_few", f"{len(recent)} complete backup(s) in the last {th.window_days:g} days "
                       f"(at least {th.min_count} expected)")
    if newest is not None:
        history = sets[1: 1 + th.median_of]
        sizes = [float(b["size"]) for b in history if b.get("size") is not None]
        if newest.get("size") is not None and len(sizes) >= MIN_HISTORY:
            bad, how, median = _changed("size", float(newest["size"]), sizes, th.size_change)
            if bad:
                add("size_change", f"newest backup {newest['id']} is {human_size(newest['size'])}: it {how} "
                                   f"{_pct(abs(float(newest['size']) - median) / median)} against the median "
                                   f"{human_size(median)} of the previous {len(sizes)} (limit {_pct(th.size_change)})")
        durs = [float(b["duration_s"]) for b in history if b.get("duration_s") is not None]
        nd = newest.get("duration_s")
        if nd is not None and len(durs) >= MIN_HISTORY:
            median = statistics.median(durs)
            if max(float(nd), median) >= th.duration_floor_s:
                bad, how, median = _changed("duration", float(nd), durs, th.duration_change)
                if bad:
                    add("duration_change", f"newest backup {newest['id']} took {float(nd):.0f}s: it {how} "
                                           f"{_pct(abs(float(nd) - median) / median)} against the median "
                                           f"{median:.0f}s of the previous {len(durs)} "
                                           f"(limit {_pct(th.duration_change)})")
        # rows per table against the previous backup
        if len(sets) > 1:
            prev = sets[1]
            lost = []
            for table, before in sorted((prev.get("table_rows") or {}).items()):
                if before < max(1, th.row_loss_min_rows):
                    continue
                after = (newest.get("table_rows") or {}).get(table)
                if after is None:
                    lost.append(f"{table} is gone (had {before} rows)")
                elif (before - after) / before > th.row_loss:
                    lost.append(f"{table} {before} -> {after} rows (-{_pct((before - after) / before)})")
            if lost:
                add("row_loss", f"newest backup {newest['id']} against {prev['id']}: " + "; ".join(lost)
                                + f" (limit -{_pct(th.row_loss)} per table)")
        # verification
        latest = newest.get("verification")
        if latest and latest["outcome"] == "failed":
            add("verify_failed", f"the latest drill of the newest backup {newest['id']} FAILED at {latest['at']}"
                                 + (": " + "; ".join(latest["failures"]) if latest.get("failures") else ""))
        elif latest and latest["outcome"] == "inconclusive":
            add("verify_inconclusive", f"the latest drill of the newest backup {newest['id']} could not run "
                                       f"({latest['at']})" + (": " + "; ".join(latest["failures"])
                                                              if latest.get("failures") else ""))
    passed = [_ts(v.get("at")) for b in sets for v in b.get("verifications") or []
              if v.get("outcome") == "passed" and v.get("level") in (None, "drill")]
    passed = [p for p in passed if p is not None]
    last_pass = max(passed) if passed else None
    if last_pass is None or (now - last_pass).total_seconds() > th.verify_max_age_days * 86400:
        add("verify_stale", ("no passed restore drill on record" if last_pass is None else
                             f"newest passed restore drill was {human_age((now - last_pass).total_seconds())} ago")
            + f" (limit {th.verify_max_age_days:g} days)")


def _run_alerts(t: dict[str, Any], th: Thresholds, now: _dt.datetime, add) -> None:
    ok = t.get("last_success")
    when = _ts(ok.get("finished_at")) if ok else None
    if when is None:
        add("stale", "no successful run recorded" + (f" under {t['destination']}" if t.get("destination") else ""))
    elif (now - when).total_seconds() > th.max_age_hours * 3600:
        add("stale", f"last successful {t['kind']} run finished {human_age((now - when).total_seconds())} ago "
                     f"(limit {th.max_age_hours:g}h)")
    last = t.get("last_run")
    if last and last.get("outcome") != "ok":
        add("run_failed", f"last {t['kind']} run FAILED at {last.get('finished_at')}: "
                          f"{last.get('error') or 'no detail'}")


def _leftover_alerts(t: dict[str, Any], th: Thresholds, now: _dt.datetime, add) -> None:
    bad = t.get("damaged") or []
    if bad:  # at once, no grace: a damaged manifest never heals, and its backup counts as none
        add("damaged", f"{len(bad)} backup set(s) with a DAMAGED manifest (not counted as backups): "
                       + "; ".join(f"{b['id']} ({b['reason']})" for b in bad[:3])
                       + " (restore cannot use them; make a new backup, then remove the set or restore its manifest "
                       "from a copy)")
    grace = th.incomplete_grace_hours * 3600
    old = [i for i in t["incomplete"] if i.get("age_s") is None or i["age_s"] > grace]
    if old:
        add("incomplete", f"{len(old)} backup set(s) without a manifest older than {th.incomplete_grace_hours:g}h: "
                          + ", ".join(str(i["id"]) for i in old[:5]) + " (a failed run left them; delete them)")
    stale_up = [u for u in t["open_uploads"]
                if (_ts(u.get("initiated")) is None) or (now - _ts(u["initiated"])).total_seconds() > grace]
    if stale_up:
        add("open_uploads", f"{len(stale_up)} multipart upload(s) open for more than "
                            f"{th.incomplete_grace_hours:g}h under {t['destination']}: "
                            + ", ".join(str(u["key"]) for u in stale_up[:3])
                            + " (abort them, or add an AbortIncompleteMultipartUpload lifecycle rule)")


def evaluate(target: dict[str, Any], th: Thresholds, now: _dt.datetime) -> list[dict[str, str]]:
    """The alerts of one cataloged target (catalog.scan's result)."""
    alerts: list[dict[str, str]] = []

    def add(kind: str, message: str) -> None:
        alerts.append({"target": target["name"], "kind": kind, "message": f"{target['name']}: {message}"})

    if not target["reachable"]:
        add("unreachable", f"cannot check {target.get('destination') or 'the target'}: {target['error']}")
        return alerts
    if target["kind"] == "database":
        _database_alerts(target, th, now, add)
    else:
        _run_alerts(target, th, now, add)
    if target["kind"] in ("database", "archive"):
        _leftover_alerts(target, th, now, add)
    return alerts


def summary(target: dict[str, Any], th: Thresholds, now: _dt.datetime) -> dict[str, Any]:
    """The numbers the metrics and the report show for one target (timestamps in epoch seconds, 0 = none)."""
    sets = _complete(target)
    newest = sets[0] if sets else None
    since = now - _dt.timedelta(days=th.window_days)

    def epoch(value: Any) -> float:
        when = _ts(value)
        return when.timestamp() if when else 0.0

    passed = [epoch(v.get("at")) for b in sets for v in b.get("verifications") or []
              if v.get("outcome") == "passed" and v.get("level") in (None, "drill")]
    if target["kind"] == "database":
        last_success = epoch(newest.get("finished_at") or newest.get("started_at")) if newest else 0.0
    else:
        last_success = epoch((target.get("last_success") or {}).get("finished_at"))
    return {
        "up": 1 if target["reachable"] else 0,
        "last_success_timestamp_seconds": last_success,
        "last_size_bytes": float((newest or {}).get("size") or 0),
        "last_duration_seconds": float((newest or {}).get("duration_s") or 0),
        "last_rows": float((newest or {}).get("rows") or 0),
        "complete_sets": len(sets),
        "window_sets": len([b for b in sets if (_ts(b.get("started_at")) or now) >= since]),
        "incomplete_sets": len(target["incomplete"]),
        "damaged_sets": len(target.get("damaged") or []),
        "open_uploads": len(target["open_uploads"]),
        "last_verification_timestamp_seconds": max(passed) if passed else 0.0,
        "last_run_timestamp_seconds": epoch((target.get("last_run") or {}).get("finished_at")),
    }


# --------------------------------------------------------------------------------------------- metrics

METRICS = (
    ("up", "lifeboat_backup_target_up", "1 when the target could be read, 0 when it could not be checked."),
    ("last_success_timestamp_seconds", "lifeboat_backup_last_success_timestamp_seconds",
     "End of the newest complete backup (storage: of the last successful run); 0 when there is none."),
    ("last_size_bytes", "lifeboat_backup_last_size_bytes", "Stored size of the newest complete backup."),
    ("last_duration_seconds", "lifeboat_backup_last_duration_seconds", "Duration of the newest complete backup."),
    ("last_rows", "lifeboat_backup_last_rows", "Exact row total of the newest complete backup."),
    ("complete_sets", "lifeboat_backup_complete_sets", "Complete backups (with a manifest) in the store."),
    ("window_sets", "lifeboat_backup_window_sets", "Complete backups started within the count window."),
    ("incomplete_sets", "lifeboat_backup_incomplete_sets", "Backup sets without a manifest."),
    ("damaged_sets", "lifeboat_backup_damaged_sets", "Backup sets whose manifest is damaged or torn."),
    ("open_uploads", "lifeboat_backup_open_uploads", "Multipart uploads left open under the backup prefix."),
    ("last_verification_timestamp_seconds", "lifeboat_backup_last_verification_timestamp_seconds",
     "End of the newest passed restore drill; 0 when there is none."),
    ("last_run_timestamp_seconds", "lifeboat_backup_last_run_timestamp_seconds",
     "End of the last storage job run (sync, archive), whatever its outcome; 0 when none is recorded."),
)


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value)) if float(value) != int(value) else str(int(value))


def metrics_text(targets: list[dict[str, Any]], alerts: list[dict[str, str]], th: Thresholds,
                 now: _dt.datetime) -> str:
    """Prometheus text exposition format (version 0.0.4) for node_exporter's textfile collector."""
    lines: list[str] = []
    sums = [(t, summary(t, th, now)) for t in targets]
    lines += ["# HELP lifeboat_backup_target_info The targets the monitor checks (value always 1).",
              "# TYPE lifeboat_backup_target_info gauge"]
    for t, _ in sums:
        lines.append(f'lifeboat_backup_target_info{{target="{_label(t["name"])}",kind="{_label(t["kind"])}",'
                     f'destination="{_label(t.get("destination") or "")}"}} 1')
    for key, name, help_text in METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for t, s in sums:
            lines.append(f'{name}{{target="{_label(t["name"])}"}} {_num(s[key])}')
    active = {(a["target"], a["kind"]) for a in alerts}
    lines += ["# HELP lifeboat_backup_alert 1 while an alert of this kind is active for the target, else 0.",
              "# TYPE lifeboat_backup_alert gauge"]
    for t, _ in sums:
        for kind in KINDS[t["kind"]]:
            lines.append(f'lifeboat_backup_alert{{target="{_label(t["name"])}",alert="{kind}"}} '
                         f'{1 if (t["name"], kind) in active else 0}')
    lines += ["# HELP lifeboat_backup_alerts_active Alerts active in the last monitor run.",
              "# TYPE lifeboat_backup_alerts_active gauge", f"lifeboat_backup_alerts_active {len(alerts)}",
              "# HELP lifeboat_monitor_last_run_timestamp_seconds When the monitor last ran.",
              "# TYPE lifeboat_monitor_last_run_timestamp_seconds gauge",
              f"lifeboat_monitor_last_run_timestamp_seconds {_num(now.timestamp())}"]
    return "\n".join(lines) + "\n"


def write_atomic(path: str, data: str, mode: int) -> None:
    """Temporary file in the same directory, fsync, chmod, rename: readers see the old or the new file."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"{path}: directory {directory} does not exist (create it, e.g. node_exporter's "
                          "--collector.textfile.directory)", "metrics_file")
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write in {directory}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def run(targets: list[dict[str, Any]], th: Thresholds, now: _dt.datetime) -> list[dict[str, str]]:
    th.validate()
    alerts: list[dict[str, str]] = []
    for t in targets:
        alerts += evaluate(t, th, now)
    return alerts
