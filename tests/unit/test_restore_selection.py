"""module_utils/lifeboat/restore/selection.py: which backup is chosen (verified, by time, by id)."""
from __future__ import annotations

import datetime as dt

import pytest

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat.errors import NotFound


T0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)


def test_latest_verified_by_default_with_warning_about_newer(store, add_backup):
    add_backup(store, "appdb", T0, verified="passed")
    newer = add_backup(store, "appdb", T0 + dt.timedelta(days=1))
    choice = rs.choose_backup(store, "appdb")
    assert choice.ref.backup_id == "appdb-20261120T020000Z"
    assert choice.reason == "latest verified backup"
    assert newer.backup_id in choice.warnings[0]

def test_fallback_to_latest_complete_when_none_verified(store, add_backup):
    add_backup(store, "appdb", T0, verified="failed")
    add_backup(store, "appdb", T0 + dt.timedelta(days=1))
    choice = rs.choose_backup(store, "appdb")
    assert choice.ref.backup_id == "appdb-20261121T020000Z"
    assert choice.reason == "latest complete backup" and "no backup" in choice.warnings[0]
    with pytest.raises(NotFound, match="require_verified"):
        rs.choose_backup(store, "appdb", require_verified=True)

def test_before_a_time(store, add_backup):
    for day in range(5):
        add_backup(store, "appdb", T0 + dt.timedelta(days=day), verified="passed")
    # "the last backup before 2026-11-22 12:00" (naive = UTC)
    assert rs.choose_backup(store, "appdb", before="2026-11-22 12:00").ref.backup_id == "appdb-20261122T020000Z"
    # strictly before
    assert rs.choose_backup(store, "appdb", before="2026-11-22T02:00:00Z").ref.backup_id == \
        "appdb-20261121T020000Z"
    assert rs.choose_backup(store, "appdb", before="2026-11-22 04:00+02:00").ref.backup_id == \
        "appdb-20261121T020000Z"
    with pytest.raises(NotFound, match="before 2026-11-19"):
        rs.choose_backup(store, "appdb", before="2026-11-19 00:00")

def test_by_id_and_unknown_id(store, add_backup):
    add_backup(store, "appdb", T0)
    add_backup(store, "other", T0)
    assert rs.choose_backup(store, "appdb", backup_id="appdb-20261120T020000Z").reason.startswith("backup id")
    with pytest.raises(NotFound, match="backup_id: no backup 'appdb-2020'"):
        rs.choose_backup(store, "appdb", backup_id="appdb-2020")

def test_incomplete_backup_is_never_chosen(store, add_backup):
    layout = add_backup(store, "appdb", T0)
    later = mf.layout_for("appdb", T0 + dt.timedelta(days=1), "custom", "zstd", "gpg")
    store.put_bytes(later.artifact_key, b"partial, no manifest")
    assert rs.choose_backup(store, "appdb").ref.backup_id == layout.backup_id

def test_legacy_dumps_are_candidates(store, add_backup):
    store.put_bytes(mf.legacy_name(T0 + dt.timedelta(days=2)), b"gz")
    add_backup(store, "appdb", T0)
    choice = rs.choose_backup(store, "appdb")
    assert choice.ref.legacy and choice.ref.backup_id == "db-backup-2026-11-22_02-00-00"
    src = rs.source_for(store, choice.ref)
    assert (src.fmt, src.compression, src.encryption, src.legacy) == ("plain", "gzip", "none", True)


def test_before_that_is_not_a_time_is_refused_naming_the_option_and_an_example(store, add_backup):
    from ansible.module_utils.lifeboat.errors import ConfigError

    add_backup(store, "appdb", T0)
    with pytest.raises(ConfigError, match=r"^before: 'yesterday' is not a time; give a date and time in UTC such as "
                                          r"'\d{4}-\d\d-\d\d 12:00'") as exc:
        rs.choose_backup(store, "appdb", before="yesterday")
    assert exc.value.option == "before"


def test_an_empty_older_dump_is_skipped_in_latest_and_said_so(store):
    import gzip

    store.put_bytes("backup_20261120_020000.sql.gz", gzip.compress(b"-- PostgreSQL database dump\n" * 40))
    store.put_bytes("backup_20261121_020000.sql.gz", gzip.compress(b""))
    store.put_bytes("db-backup-2026-11-22_02-00-00.sql.gz", b"")
    choice = rs.choose_backup(store, "appdb")
    assert choice.ref.backup_id == "backup_20261120_020000"
    said = " ".join(choice.warnings)
    assert "older dump backup_20261121_020000" in said and "db-backup-2026-11-22_02-00-00" in said
    assert "EMPTY gzip" in said and "skipped" in said
    # named explicitly, it is still the one chosen (and refused by the restore, naming why)
    assert rs.choose_backup(store, "appdb", backup_id="backup_20261121_020000").ref.backup_id == \
        "backup_20261121_020000"
