"""backup_schedule: the UTC gate (Debian 12's cron has no CRON_TZ) and the role's input checks."""
from __future__ import annotations

import calendar
import subprocess
import sys

import pytest
from testlib import REPO, VENV_BIN

GATE = REPO / "roles" / "backup_schedule" / "files" / "lifeboat-utc-gate"


def gate(fields: str, when: str) -> int:
    epoch = calendar.timegm(__import__("time").strptime(when, "%Y-%m-%d %H:%M"))
    return subprocess.run([sys.executable, str(GATE), fields, str(epoch)], capture_output=True, text=True).returncode


@pytest.mark.parametrize("fields, when, expected", [
    ("15 3 * * *", "2026-11-30 03:15", 0),
    ("15 3 * * *", "2026-11-30 04:15", 1),       # 03:15 UTC is 04:15 in Paris: cron fires, the gate says no
    ("15 3 * * *", "2026-07-01 03:15", 0),       # summer: same UTC hour
    ("45 2 * * 0", "2026-11-29 02:45", 0),       # Sunday
    ("45 2 * * 0", "2026-11-30 02:45", 1),       # Monday
    ("45 2 * * 7", "2026-11-29 02:45", 0),       # 7 is Sunday too
    ("45 */6 * * *", "2026-11-30 18:45", 0),
    ("45 */6 * * *", "2026-11-30 19:45", 1),
    ("0 1-3,22 * * *", "2026-11-30 22:00", 0),
    ("0 1-3,22 * * *", "2026-11-30 04:00", 1),
    ("0 5 1 * 0", "2026-11-29 05:00", 0),        # day and weekday both restricted: either matches (cron)
    ("0 5 1 * 0", "2026-12-01 05:00", 0),
    ("0 5 1 * 0", "2026-12-02 05:00", 1),
    ("0 5 * 12 *", "2026-11-30 05:00", 1),
])
def test_gate_matches_utc_hour_day_month_weekday(fields, when, expected):
    assert gate(fields, when) == expected


@pytest.mark.parametrize("fields", ["15 3 * *", "15 25 * * *", "x 3 * * *", "15 3 0 * *", "15 5-3 * * *"])
def test_gate_refuses_what_is_not_a_schedule(fields):
    proc = subprocess.run([sys.executable, str(GATE), fields, "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "lifeboat-utc-gate" in proc.stderr


PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: backup_schedule
"""


def run_role(tmp_path, **extra) -> subprocess.CompletedProcess:
    import json

    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), str(play), "-e", json.dumps(extra)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("extra, message", [
    ({"backup_schedule_database_hour": "25"},
     "lifeboat database backup: schedule '15 25 * * *' has a number out of range (minute 0-59, hour 0-23"),
    ({"backup_schedule_retention_minute": "75"},
     "lifeboat retention: schedule '75 4 * * *' has a number out of range"),
    ({"backup_schedule_schema_weekday": "sun"},
     "lifeboat weekly schema-only backup: schedule '45 2 * * sun' has a field that is not digits"),
    ({"backup_schedule_timezone": "Europe/Paris"},
     "value of backup_schedule_timezone must be one of: UTC, local, got: Europe/Paris"),
    ({"backup_schedule_retention_enabled": "maybe"},
     "backup_schedule_retention_enabled"),
])
def test_bad_role_inputs_are_named(tmp_path, extra, message):
    proc = run_role(tmp_path, **extra)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, proc.stdout[-3000:]
