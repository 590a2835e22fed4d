"""s3recovery: which backup version a key the database listed at T gets, and the restore over stores."""
from __future__ import annotations

from ansible.module_utils.lifeboat.s3recovery import normal_etag, version_for_point
from ansible.module_utils.lifeboat.s3restore import Version


def v(t: float, etag: str | None = None, deleted: bool = False) -> Version:
    return Version("k", f"v{t}", t, False, deleted, 0 if deleted else 10, None if deleted else etag)


def test_the_version_current_at_the_time():
    versions = [v(30, "c"), v(20, "b"), v(10, "a")]   # newest first
    assert version_for_point(versions, 25) == (versions[1], None)
    assert version_for_point(versions, 20) == (versions[1], None)


def test_a_file_the_sync_copied_after_the_time_comes_from_its_first_copy_after_it():
    versions = [v(40, "c"), v(30, "b")]
    assert version_for_point(versions, 25) == (versions[1], "later")


def test_a_file_deleted_from_the_backup_before_the_time_comes_from_the_version_before_the_deletion():
    versions = [v(30, deleted=True), v(20, "b"), v(10, "a")]
    assert version_for_point(versions, 35) == (versions[1], "earlier")
    assert version_for_point([v(30, deleted=True)], 35) == (None, None)
    assert version_for_point([], 35) == (None, None)


def test_the_recorded_etag_picks_the_content_the_database_listed():
    versions = [v(40, "c"), v(30, "b"), v(10, "a")]
    assert version_for_point(versions, 25, "b") == (versions[1], "later")     # overwritten just before T
    assert version_for_point(versions, 25, "a") == (versions[2], None)        # the current one at T
    assert version_for_point(versions, 35, "a") == (versions[2], "earlier")
    assert version_for_point(versions, 25, "zz") == (versions[2], "unmatched")  # no such content: by time


def test_etags_are_compared_without_quotes_or_case():
    assert normal_etag('"ABC"') == "abc"
    assert normal_etag(None) is None and normal_etag('""') is None


def test_a_recovery_point_from_a_versioned_memory_store_into_any_store(store):
    """The recovery-point restore runs on stores (a versioned memory store into a directory or memory, the `store`
    fixture): each listed key as it was at the time, a file the sync copied only after it from that first copy,
    the recorded ETag choosing the content the database listed, an unlisted target file left alone; a rerun
    changes nothing."""
    import datetime as dt
    import hashlib

    from ansible.module_utils.lifeboat.memstore import MemoryStorage
    from ansible.module_utils.lifeboat.s3recovery import restore_recovery_point

    clock = {"now": dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)}
    backup = MemoryStorage("files", clock=lambda: clock["now"], versioned=True)
    backup.put_bytes("a.png", b"a as listed")
    backup.put_bytes("b.png", b"b before")
    at = clock["now"] + dt.timedelta(minutes=30)
    clock["now"] += dt.timedelta(hours=1)
    backup.put_bytes("a.png", b"a, overwritten later")
    backup.put_bytes("b.png", b"b as listed, copied by the sync after the time")
    backup.put_bytes("late.png", b"late")
    store.put_bytes("other.png", b"not listed")
    b_etag = hashlib.md5(b"b as listed, copied by the sync after the time").hexdigest()
    keys = ["a.png", ("b.png", b_etag), "late.png", "gone.png"]
    res = restore_recovery_point(backup, store, keys, at)
    assert {e.key: store.get_bytes(e.key) for e in store.list()} == {
        "a.png": b"a as listed", "b.png": b"b as listed, copied by the sync after the time", "late.png": b"late",
        "other.png": b"not listed"}
    assert res.listed == 4 and res.later_copies_keys == ["b.png", "late.png"] and res.not_found == ["gone.png"]
    assert res.left_newer == 1
    again = restore_recovery_point(backup, store, keys, at)
    assert not again.changed and again.unchanged == 3
