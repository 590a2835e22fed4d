"""module_utils/lifeboat/s3restore.py: the version at a point in time, time parsing, the restore over stores."""
from __future__ import annotations

import datetime as dt

import pytest

from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.memstore import MemoryStorage
from ansible.module_utils.lifeboat.s3restore import Version, parse_time, restore_point_in_time, version_at


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


def test_point_in_time_restore_from_a_versioned_memory_store_into_any_store(store):
    """The restore plans and copies through the Storage interface: from a versioned in-memory store into a
    directory or memory (the `store` fixture), without a server. The file overwritten and the file deleted after
    T come back as they were at T; the file created after T is left (deleted with delete_newer, being backed up);
    a target file that is in no backup is never touched; a rerun changes nothing."""
    clock = {"now": dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)}
    backup = MemoryStorage("backup", clock=lambda: clock["now"], versioned=True)
    backup.put_bytes("a.txt", b"a at T")
    backup.put_bytes("d/b.txt", b"b at T")
    at = clock["now"] + dt.timedelta(hours=1)
    clock["now"] += dt.timedelta(hours=2)
    backup.put_bytes("a.txt", b"a, overwritten")
    backup.delete("d/b.txt")
    backup.put_bytes("c.txt", b"created after T")
    for key in ("a.txt", "c.txt"):                          # the target as the incident left it
        store.put_bytes(key, backup.get_bytes(key))
    store.put_bytes("unbacked.txt", b"only in the target")
    plan = restore_point_in_time(backup, store, at, check_mode=True)
    assert plan.restored == 2 and plan.left_newer == 2 and store.get_bytes("a.txt") == b"a, overwritten"
    res = restore_point_in_time(backup, store, at, delete_newer=True)
    assert sorted(res.restored_keys) == ["a.txt", "d/b.txt"] and res.deleted_keys == ["c.txt"]
    assert res.skipped_unbacked == ["unbacked.txt"]
    assert {e.key: store.get_bytes(e.key) for e in store.list()} == {
        "a.txt": b"a at T", "d/b.txt": b"b at T", "unbacked.txt": b"only in the target"}
    again = restore_point_in_time(backup, store, at, delete_newer=True)
    assert not again.changed and again.unchanged == 2
    with pytest.raises(ConfigError, match="has no versioning"):
        restore_point_in_time(MemoryStorage("plain"), store, at)
