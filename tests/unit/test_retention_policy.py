"""The retention policy (module_utils/lifeboat/retention.py): restic-style semantics and the guarantees.

Every expected kept set below is written out by hand from the calendar (not computed by the
code under test). The synthetic year: one daily backup at 03:00 UTC from Mon 2025-12-01 to
Mon 2026-11-30, none from 2026-03-10 to 2026-03-19 (a ten-day gap), plus hourly backups on
2026-11-30 at 10:00..15:00. Sundays are verified (passed), like a weekly drill.
"""
from __future__ import annotations

import datetime as dt

import pytest

from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.retention import (
    BackupSet,
    Duration,
    Policy,
    apply_by_series,
    apply_policy,
    parse_duration,
)

UTC = dt.UTC


def t(text: str) -> dt.datetime:
    """'2026-11-30' (03:00) or '2026-11-30 15:00' -> aware UTC time."""
    if " " not in text:
        text += " 03:00"
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def bid(when: dt.datetime) -> str:
    return "appdb-" + when.strftime("%Y%m%dT%H%M%SZ")


def year_of_backups() -> list[BackupSet]:
    out = []
    day = dt.date(2025, 12, 1)
    while day <= dt.date(2026, 11, 30):
        if not (dt.date(2026, 3, 10) <= day <= dt.date(2026, 3, 19)):
            when = dt.datetime(day.year, day.month, day.day, 3, tzinfo=UTC)
            out.append(BackupSet(bid(when), when, True, True if day.weekday() == 6 else None, "appdb"))
        day += dt.timedelta(days=1)
    for hour in range(10, 16):
        when = dt.datetime(2026, 11, 30, hour, tzinfo=UTC)
        out.append(BackupSet(bid(when), when, True, None, "appdb"))
    return out


NOW = t("2026-11-30 15:30")


def kept(decisions) -> set[str]:
    return {d.backup.backup_id for d in decisions if d.keep}


def ids(*times: str) -> set[str]:
    return {bid(t(x)) for x in times}


def reasons_of(decisions, when: str) -> tuple[str, ...]:
    want = bid(t(when))
    return next(d.reasons for d in decisions if d.backup.backup_id == want)


def test_synthetic_year_has_the_shape_the_expectations_assume():
    backups = year_of_backups()
    assert len(backups) == 365 - 10 + 6
    assert bid(t("2026-03-10")) not in {b.backup_id for b in backups}


def test_gfs_daily7_weekly4_monthly12():
    decisions = apply_policy(year_of_backups(), Policy(keep_daily=7, keep_weekly=4, keep_monthly=12), NOW)
    assert kept(decisions) == ids(
        # keep_daily 7: the newest backup of each of the 7 newest days
        "2026-11-30 15:00", "2026-11-29", "2026-11-28", "2026-11-27", "2026-11-26", "2026-11-25", "2026-11-24",
        # keep_weekly 4: ISO weeks 49 (= 11-30 15:00), 48 (Sun 11-29), 47 (Sun 11-22), 46 (Sun 11-15)
        "2026-11-22", "2026-11-15",
        # keep_monthly 12: Nov 2026 (= 11-30 15:00) then the last day of each month back to Dec 2025
        "2026-10-31", "2026-09-30", "2026-08-31", "2026-07-31", "2026-06-30", "2026-05-31", "2026-04-30",
        "2026-03-31", "2026-02-28", "2026-01-31", "2025-12-31",
    )
    assert len(decisions) == 361
    # independent counters: one backup kept by several rules says so
    assert reasons_of(decisions, "2026-11-30 15:00") == (
        "newest complete", "keep_daily 2026-11-30", "keep_weekly 2026-W49", "keep_monthly 2026-11")
    assert reasons_of(decisions, "2026-11-29") == (
        "min_verified (verified #1 newest)", "keep_daily 2026-11-29", "keep_weekly 2026-W48")
    assert reasons_of(decisions, "2025-12-31") == ("keep_monthly 2025-12",)
    assert reasons_of(decisions, "2025-12-01") == ()   # every count used up before the oldest


def test_last3_hourly4_yearly3_keeps_the_oldest_while_a_count_is_left():
    decisions = apply_policy(year_of_backups(), Policy(keep_last=3, keep_hourly=4, keep_yearly=3), NOW)
    assert kept(decisions) == ids(
        # keep_last 3 and keep_hourly 4 on the hourlies of the last day
        "2026-11-30 15:00", "2026-11-30 14:00", "2026-11-30 13:00", "2026-11-30 12:00",
        # keep_yearly: 2026 (= 11-30 15:00), 2025 (12-31), and a count left: the oldest backup
        "2025-12-31", "2025-12-01",
        # min_verified 1: the newest passed verification (Sunday 11-29), kept by no rule
        "2026-11-29",
    )
    assert reasons_of(decisions, "2025-12-01") == ("keep_yearly oldest (count left)",)
    assert reasons_of(decisions, "2026-11-29") == ("min_verified (verified #1 newest)",)
    assert reasons_of(decisions, "2026-11-30 12:00") == ("keep_hourly 2026-11-30 12:00",)


SUNDAYS_MAR29_TO_NOV29 = [
    "2026-11-29", "2026-11-22", "2026-11-15", "2026-11-08", "2026-11-01", "2026-10-25", "2026-10-18",
    "2026-10-11", "2026-10-04", "2026-09-27", "2026-09-20", "2026-09-13", "2026-09-06", "2026-08-30",
    "2026-08-23", "2026-08-16", "2026-08-09", "2026-08-02", "2026-07-26", "2026-07-19", "2026-07-12",
    "2026-07-05", "2026-06-28", "2026-06-21", "2026-06-14", "2026-06-07", "2026-05-31", "2026-05-24",
    "2026-05-17", "2026-05-10", "2026-05-03", "2026-04-26", "2026-04-19", "2026-04-12", "2026-04-05",
    "2026-03-29",
]


def test_weekly40_across_the_ten_day_gap_and_within_2d():
    decisions = apply_policy(year_of_backups(), Policy(keep_weekly=40, keep_within=parse_duration("2d")), NOW)
    assert len(SUNDAYS_MAR29_TO_NOV29) == 36   # ISO weeks 48 down to 13
    assert kept(decisions) == ids(
        # week 49 (Mon 11-30): its newest backup is the 15:00 hourly
        "2026-11-30 15:00",
        *SUNDAYS_MAR29_TO_NOV29,
        # week 12 (Mar 16-22): Sunday 03-22 (03-16..19 are in the gap)
        "2026-03-22",
        # week 11 (Mar 9-15): only Monday 03-09 exists (03-10..15 are in the gap)
        "2026-03-09",
        # week 10: Sunday 03-08 (40th week)
        "2026-03-08",
        # keep_within 2d of the newest complete backup (11-30 15:00): from 11-28 15:00 on
        "2026-11-29", "2026-11-30", "2026-11-30 10:00", "2026-11-30 11:00", "2026-11-30 12:00",
        "2026-11-30 13:00", "2026-11-30 14:00",
    )
    assert reasons_of(decisions, "2026-03-09") == ("keep_weekly 2026-W11",)
    assert reasons_of(decisions, "2026-11-28") == ()
    assert len(kept(decisions)) == 46


def test_iso_week_new_year_edges():
    days = [dt.date(2020, 12, 26) + dt.timedelta(days=i) for i in range(16)]   # Sat 12-26 .. Sun 2021-01-10
    backups = [BackupSet(bid(dt.datetime(d.year, d.month, d.day, 3, tzinfo=UTC)),
                         dt.datetime(d.year, d.month, d.day, 3, tzinfo=UTC)) for d in days]
    now = t("2021-01-10 12:00")
    weekly = apply_policy(backups, Policy(keep_weekly=3, min_verified=0), now)
    # 2021-W01 = Jan 4-10 -> Sun 01-10; 2020-W53 = Dec 28 - Jan 3 (across the new year) -> Sun 2021-01-03;
    # 2020-W52 -> Sun 2020-12-27
    assert kept(weekly) == ids("2021-01-10", "2021-01-03", "2020-12-27")
    assert reasons_of(weekly, "2021-01-03") == ("keep_weekly 2020-W53",)
    yearly = apply_policy(backups, Policy(keep_yearly=2, min_verified=0), now)
    # calendar years, not ISO years: 2021-01-03 is in 2020-W53 but in year 2021
    assert kept(yearly) == ids("2021-01-10", "2020-12-31")
    monthly = apply_policy(backups, Policy(keep_monthly=1, keep_weekly=1, min_verified=0), now)
    assert kept(monthly) == ids("2021-01-10")


def test_iso_week_2026_starts_in_december_2025():
    days = [dt.date(2025, 12, 27) + dt.timedelta(days=i) for i in range(10)]   # Sat 12-27 .. Mon 2026-01-05
    backups = [BackupSet(bid(dt.datetime(d.year, d.month, d.day, 3, tzinfo=UTC)),
                         dt.datetime(d.year, d.month, d.day, 3, tzinfo=UTC)) for d in days]
    decisions = apply_policy(backups, Policy(keep_weekly=3, min_verified=0), t("2026-01-05 12:00"))
    # 2026-W02 -> Mon 01-05; 2026-W01 = Mon 2025-12-29 .. Sun 2026-01-04 -> Sun 01-04; 2025-W52 -> Sun 12-28
    assert kept(decisions) == ids("2026-01-05", "2026-01-04", "2025-12-28")
    assert reasons_of(decisions, "2026-01-04") == ("keep_weekly 2026-W01",)


def test_backups_that_stopped_ten_days_ago_keep_their_history():
    # dailies Nov 1..20, nothing since; now is Nov 30
    backups = [BackupSet(bid(t(f"2026-11-{d:02d}")), t(f"2026-11-{d:02d}")) for d in range(1, 21)]
    decisions = apply_policy(backups, Policy(keep_within=parse_duration("3d"), min_verified=0), t("2026-11-30 12:00"))
    # measured from the newest complete backup (11-20 03:00), not from now: 11-17 03:00 .. 11-20
    assert kept(decisions) == ids("2026-11-20", "2026-11-19", "2026-11-18", "2026-11-17")
    daily = apply_policy(backups, Policy(keep_daily=2, min_verified=0), t("2026-11-30 12:00"))
    assert kept(daily) == ids("2026-11-20", "2026-11-19")


def test_failed_and_unverified_newest_keep_the_newest_passed_ones():
    def b(day: int, verified):
        return BackupSet(bid(t(f"2026-11-{day:02d}")), t(f"2026-11-{day:02d}"), True, verified)
    backups = [b(1, True), b(2, True), b(3, True), b(4, None), b(5, False)]
    one = apply_policy(backups, Policy(keep_last=1), t("2026-11-05 12:00"))
    # 11-05 failed its drill: still the newest complete (kept), and 11-03, the newest passed, is kept too
    assert kept(one) == ids("2026-11-05", "2026-11-03")
    assert reasons_of(one, "2026-11-05") == ("newest complete", "keep_last")
    assert reasons_of(one, "2026-11-03") == ("min_verified (verified #1 newest)",)
    two = apply_policy(backups, Policy(keep_last=1, min_verified=2), t("2026-11-05 12:00"))
    assert kept(two) == ids("2026-11-05", "2026-11-03", "2026-11-02")
    none_verified = [BackupSet(x.backup_id, x.time, True, None) for x in backups]
    assert kept(apply_policy(none_verified, Policy(keep_last=2), t("2026-11-05 12:00"))) == ids(
        "2026-11-05", "2026-11-04")


def test_incomplete_backups_young_kept_old_deleted_never_counted():
    now = t("2026-11-30 12:00")
    backups = [
        BackupSet("appdb-running", t("2026-11-30 11:30"), complete=False),        # young: may be running
        BackupSet("appdb-crashed", t("2026-11-28 03:00"), complete=False),        # old: deleted
        BackupSet(bid(t("2026-11-29")), t("2026-11-29")),
        BackupSet(bid(t("2026-11-27")), t("2026-11-27")),
        BackupSet(bid(t("2026-11-26")), t("2026-11-26")),
    ]
    decisions = apply_policy(backups, Policy(keep_last=1, incomplete_grace=dt.timedelta(hours=6),
                                             min_verified=0), now)
    assert kept(decisions) == {"appdb-running", bid(t("2026-11-29"))}
    running = next(d for d in decisions if d.backup.backup_id == "appdb-running")
    assert running.reasons == ("incomplete, younger than incomplete_grace (may still be running)",)
    # the incomplete 11-28 counts for no rule: keep_daily 2 keeps 11-29 and 11-27
    daily = apply_policy(backups, Policy(keep_daily=2, incomplete_grace=dt.timedelta(hours=6)), now)
    assert kept(daily) == {"appdb-running", bid(t("2026-11-29")), bid(t("2026-11-27"))}
    # only incomplete backups: nothing complete to protect, old ones still go
    only = apply_policy(backups[:2], Policy(keep_last=5), now)
    assert kept(only) == {"appdb-running"}


def test_independent_counters_restic_not_borg():
    backups = [BackupSet(bid(t(x)), t(x)) for x in ("2026-11-30 10:00", "2026-11-30", "2026-11-29", "2026-11-28")]
    decisions = apply_policy(backups, Policy(keep_last=2, keep_daily=2, min_verified=0), t("2026-11-30 12:00"))
    # keep_last 2 -> 11-30 10:00, 11-30 03:00; keep_daily 2 counts independently -> 11-30 10:00, 11-29.
    # (borg would not count 11-30 10:00 for keep_daily and would keep 11-28 too.)
    assert kept(decisions) == ids("2026-11-30 10:00", "2026-11-30", "2026-11-29")


def test_each_series_is_pruned_on_its_own():
    a = [BackupSet(f"a-{d}", t(f"2026-11-{d:02d}"), series="appdb") for d in (1, 2, 3)]
    b = [BackupSet(f"b-{d}", t(f"2026-10-{d:02d}"), series="storage") for d in (1, 2, 3)]
    decisions = apply_by_series(a + b, Policy(keep_last=1, min_verified=0), t("2026-11-30"))
    assert kept(decisions) == {"a-3", "b-3"}


@pytest.mark.parametrize("policy, option", [
    (Policy(), "keep_daily"),
    (Policy(min_verified=3), "keep_daily"),
    (Policy(keep_within=Duration()), "keep_daily"),
    (Policy(keep_daily=-1), "keep_daily"),
    (Policy(keep_last=2, min_verified=-1), "min_verified"),
    (Policy(keep_last=2, incomplete_grace=dt.timedelta(hours=-1)), "incomplete_grace"),
])
def test_policies_that_keep_nothing_or_negative_counts_are_refused(policy, option):
    with pytest.raises(ConfigError) as err:
        apply_policy(year_of_backups(), policy, NOW)
    assert err.value.option == option
    assert option in str(err.value)


def test_a_policy_that_keeps_nothing_names_the_rules():
    with pytest.raises(ConfigError, match="keeps nothing: set at least one of keep_last, keep_hourly"):
        apply_policy([], Policy(), NOW)


@pytest.mark.parametrize("text, expected", [
    ("30d", Duration(days=30)),
    ("2w", Duration(days=14)),
    ("1y6m", Duration(years=1, months=6)),
    ("36h", Duration(hours=36)),
    ("1y 2m 3d 4h", Duration(1, 2, 3, 4)),
    ("", None),
])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30", "d", "3x", "1.5d", "-2d", "2d junk"])
def test_bad_durations_are_named(text):
    with pytest.raises(ConfigError, match="keep_within: .* is not a duration; write numbers with units"):
        parse_duration(text)


def test_month_durations_clamp_to_the_month_end():
    assert Duration(months=1).before(t("2026-03-31")) == t("2026-02-28")
    assert Duration(years=1).before(t("2024-02-29")) == t("2023-02-28")
    assert Duration(months=13, days=1, hours=3).before(t("2026-01-15")) == t("2024-12-14 00:00")


def test_naive_times_are_refused():
    with pytest.raises(ConfigError, match="no time zone"):
        apply_policy([BackupSet("x", dt.datetime(2026, 1, 1))], Policy(keep_last=1), NOW)
