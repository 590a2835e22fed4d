"""Retention: which backup sets to keep, as a small pure function (no I/O).

Semantics (chosen: restic's ``forget`` policy, not borg's ``prune``):

- Complete backups of one series (one database, one archive name) are walked
  newest first. Every rule has its own counter (independent counters: a backup
  kept by ``keep_daily`` also counts for ``keep_weekly``, ``keep_monthly``...).
- ``keep_last N`` keeps the N newest backups.
- ``keep_hourly/daily/weekly/monthly/yearly N`` keep the newest backup of each
  of the N newest calendar buckets (hour, day, ISO 8601 week, month, year) that
  hold a backup. Buckets are taken in UTC. Empty buckets (a gap) are skipped,
  not counted: ``keep_daily 7`` keeps the last 7 days *that have a backup*.
- When a rule still has count left at the oldest complete backup, the oldest
  is kept by that rule too, even in a bucket already kept (the history kept is
  as long as the counts allow; restic does the same since 0.17).
- ``keep_within D`` keeps every backup not older than D, measured from the
  newest *complete* backup, never from now: when backups stop, the last good
  ones do not age out.

Guarantees no policy can override (the ``reasons`` say which one applied):

- the newest ``min_verified`` backups whose latest conclusive verification passed (default 1);
- the newest complete backup;
- an incomplete backup (no manifest) younger than ``incomplete_grace`` (it may
  still be running). Older incomplete backups are deleted (the caller aborts their
  open multipart uploads).

A policy with no rule that keeps anything is refused (ConfigError), as are negative counts.
"""
from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ansible.module_utils.lifeboat.errors import ConfigError

RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
GUARANTEE_VERIFIED = "min_verified"
GUARANTEE_NEWEST = "newest complete"
GUARANTEE_RUNNING = "incomplete, younger than incomplete_grace (may still be running)"

_DURATION_RE = re.compile(r"(\d+)\s*([ymwdh])")


@dataclass(frozen=True)
class BackupSet:
    """One backup of a series, as the policy sees it."""

    backup_id: str
    time: _dt.datetime                 # start of the backup, timezone-aware
    complete: bool = True              # manifest present
    verified: bool | None = None       # newest conclusive drill: True passed, False failed, None never
    series: str = ""


@dataclass(frozen=True)
class Duration:
    """A calendar duration (years, months, days, hours), restic style: ``1y6m``, ``30d``, ``2w``, ``36h``."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def before(self, when: _dt.datetime) -> _dt.datetime:
        """``when`` minus this duration (months clamp to the month's last day)."""
        month_index = when.year * 12 + (when.month - 1) - self.years * 12 - self.months
        year, month = divmod(month_index, 12)
        month += 1
        day = min(when.day, _days_in_month(year, month))
        return when.replace(year=year, month=month, day=day) - _dt.timedelta(days=self.days, hours=self.hours)

    def __str__(self) -> str:
        parts = [f"{v}{u}" for v, u in ((self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h"))
                 if v]
        return "".join(parts) or "0h"

    @property
    def is_zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)


def _days_in_month(year: int, month: int) -> int:
    nxt = _dt.date(year + (month == 12), month % 12 + 1, 1)
    return (nxt - _dt.timedelta(days=1)).day


def parse_duration(text: str | None, option: str = "keep_within") -> Duration | None:
    """``'1y6m'``, ``'30d'``, ``'2w'``, ``'36h'`` -> Duration; empty/None -> None."""
    if text is None or str(text).strip() == "":
        return None
    raw = str(text).strip().lower().replace(" ", "")
    pos = 0
    values = {"y": 0, "m": 0, "w": 0, "d": 0, "h": 0}
    for m in _DURATION_RE.finditer(raw):
        if m.start() != pos:
            break
        values[m.group(2)] += int(m.group(1))
        pos = m.end()
    if pos != len(raw) or not raw:
        raise ConfigError(f"{option}: '{text}' is not a duration; write numbers with units y (years), m (months), "
                          "w (weeks), d (days), h (hours), e.g. '30d', '1y6m', '36h'", option)
    return Duration(values["y"], values["m"], values["w"] * 7 + values["d"], values["h"])


def parse_timedelta(text: str | None, option: str = "incomplete_grace") -> _dt.timedelta | None:
    """Like parse_duration, for a fixed span: weeks, days and hours only."""
    d = parse_duration(text, option)
    if d is None:
        return None
    if d.years or d.months:
        raise ConfigError(f"{option}: '{text}' uses years or months; give weeks, days or hours (e.g. '24h', '2d')",
                          option)
    return _dt.timedelta(days=d.days, hours=d.hours)


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: Duration | None = None
    min_verified: int = 1
    incomplete_grace: _dt.timedelta = field(default_factory=lambda: _dt.timedelta(hours=24))

    def validate(self) -> None:
        for name in (*RULES, "min_verified"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name}: must be a whole number >= 0, got {value!r}", name)
        if self.incomplete_grace < _dt.timedelta(0):
            raise ConfigError("incomplete_grace: must not be negative", "incomplete_grace")
        if not any(getattr(self, r) for r in RULES) and (self.keep_within is None or self.keep_within.is_zero):
            raise ConfigError("retention policy keeps nothing: set at least one of " + ", ".join(RULES)
                              + " or keep_within (the guarantees alone would delete every other backup)",
                              "keep_daily")

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {r: getattr(self, r) for r in RULES if getattr(self, r)}
        if self.keep_within is not None and not self.keep_within.is_zero:
            out["keep_within"] = str(self.keep_within)
        out["min_verified"] = self.min_verified
        out["incomplete_grace_h"] = round(self.incomplete_grace.total_seconds() / 3600, 3)
        return out


@dataclass(frozen=True)
class Decision:
    backup: BackupSet
    keep: bool
    reasons: tuple[str, ...]


def _utc(when: _dt.datetime) -> _dt.datetime:
    if when.tzinfo is None:
        raise ConfigError(f"backup time {when!r} has no time zone")
    return when.astimezone(_dt.UTC)


def _iso_week(t: _dt.datetime) -> tuple[int, int]:
    iso = t.isocalendar()
    return (iso[0], iso[1])


BUCKETS: dict[str, Callable[[_dt.datetime], object]] = {
    "keep_hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "keep_daily": lambda t: (t.year, t.month, t.day),
    "keep_weekly": _iso_week,
    "keep_monthly": lambda t: (t.year, t.month),
    "keep_yearly": lambda t: t.year,
}


def apply_policy(backups: Iterable[BackupSet], policy: Policy, now: _dt.datetime) -> list[Decision]:
    """Decide keep/delete for every backup of ONE series; newest first in the result."""
    policy.validate()
    now = _utc(now)
    items = sorted(backups, key=lambda b: (_utc(b.time), b.backup_id), reverse=True)
    reasons: dict[int, list[str]] = {i: [] for i in range(len(items))}
    complete = [i for i, b in enumerate(items) if b.complete]

    # the policy, over complete backups only
    counters = {r: getattr(policy, r) for r in RULES}
    last_bucket: dict[str, object] = {}
    for pos, i in enumerate(complete):
        t = _utc(items[i].time)
        oldest = pos == len(complete) - 1
        for rule in RULES:
            if counters[rule] <= 0:
                continue
            key: object = i if rule == "keep_last" else BUCKETS[rule](t)
            new_bucket = rule not in last_bucket or last_bucket[rule] != key
            if not new_bucket and not oldest:
                continue
            last_bucket[rule] = key
            counters[rule] -= 1
            if rule == "keep_last":
                reasons[i].append("keep_last")
            elif new_bucket:
                reasons[i].append(f"{rule} {_label(rule, t)}")
            else:
                reasons[i].append(f"{rule} oldest (count left)")
    if complete and policy.keep_within is not None and not policy.keep_within.is_zero:
        newest = _utc(items[complete[0]].time)
        limit = policy.keep_within.before(newest)
        for i in complete:
            if _utc(items[i].time) >= limit:
                reasons[i].append(f"keep_within {policy.keep_within} of the newest complete backup")

    # the guarantees
    if complete:
        reasons[complete[0]].insert(0, GUARANTEE_NEWEST)
    verified = [i for i in complete if items[i].verified is True][: policy.min_verified]
    for rank, i in enumerate(verified, 1):
        reasons[i].insert(0, f"{GUARANTEE_VERIFIED} (verified #{rank} newest)")
    for i, b in enumerate(items):
        if not b.complete and now - _utc(b.time) < policy.incomplete_grace:
            reasons[i].append(GUARANTEE_RUNNING)

    return [Decision(b, bool(reasons[i]), tuple(reasons[i])) for i, b in enumerate(items)]


def _label(rule: str, t: _dt.datetime) -> str:
    if rule == "keep_hourly":
        return t.strftime("%Y-%m-%d %H:00")
    if rule == "keep_daily":
        return t.strftime("%Y-%m-%d")
    if rule == "keep_weekly":
        y, w = _iso_week(t)
        return f"{y}-W{w:02d}"
    if rule == "keep_monthly":
        return t.strftime("%Y-%m")
    return t.strftime("%Y")


def apply_by_series(backups: Iterable[BackupSet], policy: Policy, now: _dt.datetime) -> list[Decision]:
    """apply_policy on each series separately (a database's backups never age out another's)."""
    groups: dict[str, list[BackupSet]] = {}
    for b in backups:
        groups.setdefault(b.series, []).append(b)
    out: list[Decision] = []
    for name in sorted(groups):
        out.extend(apply_policy(groups[name], policy, now))
    return out
