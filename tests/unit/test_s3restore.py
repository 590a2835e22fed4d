"""module_utils/lifeboat/s3restore.py: the version at a point in time, time parsing."""
from __future__ import annotations

import datetime as dt

import pytest

from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.s3restore import Version, parse_time, version_at


def test_version_at_picks_newest_not_after_t():
    vs = [Version("k", "3", 300.0, True, True), Version("k", "2", 200.0, False, False, 1, "b"),
          Version("k", "1", 100.0, False, False, 1, "a")]
    assert version_at(vs, 50) is None
    assert version_at(vs, 150).version_id == "1"
    assert version_at(vs, 200).version_id == "2"
    assert version_at(vs, 400) is None, "deleted at 300"

def test_parse_time():
    assert parse_time("2026-11-22T02:00:00Z") == dt.datetime(2026, 11, 22, 2, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="restore_time"):
        parse_time("yesterday")
