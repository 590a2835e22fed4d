"""module_utils/lifeboat/restore/names.py: new, old and scratch database names."""
from __future__ import annotations

import datetime as dt

import pytest

from ansible.module_utils.lifeboat import restore as rs


T0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)

def test_names_fit_postgres_identifier_limit():
    long = "a" * 80
    for name in (rs.new_db_name(long, T0), rs.old_db_name(long, T0)):
        assert len(name.encode()) <= 63
    assert rs.new_db_name("appdb", T0, "a1b2c3") == "appdb_lifeboat_new_20261120t020000z_a1b2c3"
    assert rs.old_db_name("appdb", T0, "a1b2c3") == "appdb_lifeboat_old_20261120t020000z_a1b2c3"
    # two restores of one database in the same second never share a name (CI: a fast machine)
    assert rs.new_db_name("appdb", T0) != rs.new_db_name("appdb", T0)
    assert rs.old_db_name("appdb", T0) != rs.old_db_name("appdb", T0)
    # multibyte names are cut on a character boundary
    assert len(rs.new_db_name("é" * 40, T0).encode()) <= 63

def test_scratch_names_are_unique_and_carry_their_age():
    a, b = rs.scratch_name("drill", T0), rs.scratch_name("drill", T0)
    assert a != b and a.startswith("lifeboat_drill_20261120t020000z_")
    assert rs.scratch_age(a, T0 + dt.timedelta(hours=7)) == dt.timedelta(hours=7)
    assert rs.scratch_age(rs.scratch_name("stage", T0), T0) == dt.timedelta(0)
    assert rs.scratch_age("lifeboat_drill_notastamp", T0) is None
    assert rs.scratch_age("appdb", T0) is None
    with pytest.raises(ValueError):
        rs.scratch_name("other", T0)
