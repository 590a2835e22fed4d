"""s3recovery.version_for_point: which backup version a key the database listed at T gets."""
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
