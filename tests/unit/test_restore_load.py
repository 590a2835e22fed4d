"""module_utils/lifeboat/restore/load.py: the free-space check before a staged restore."""
from __future__ import annotations


import pytest

from ansible.module_utils.lifeboat import restore as rs


def test_free_space_check(tmp_path):
    rs.check_free_space(str(tmp_path), 1, 0)
    with pytest.raises(Exception, match="not enough disk.*jobs: 1"):
        rs.check_free_space(str(tmp_path), 10 ** 18, 0)


def test_a_staged_run_says_where_its_time_went():
    from ansible.module_utils.lifeboat.restore.decoding import DecodeResult
    from ansible.module_utils.lifeboat.restore.load import RestoreRun

    staged = RestoreRun(DecodeResult(seconds=2.0), 5.0, path="staged", jobs=2, jobs_reason="automatic: at most 4")
    assert staged.describe() == ("pg_restore -j 2 from a staged local copy (automatic: at most 4); staged in 2.0s, "
                                 "pg_restore 3.0s")
    streamed = RestoreRun(DecodeResult(seconds=5.0), 5.0, jobs_reason="streamed: not enough disk in /x")
    assert streamed.describe() == "streamed (streamed: not enough disk in /x)"


def test_the_free_space_check_keeps_a_margin(tmp_path):
    import shutil

    from ansible.module_utils.lifeboat.restore.load import STAGING_MARGIN, check_free_space, staging_needed

    free = shutil.disk_usage(tmp_path).free
    # the dump alone fits; with the margin it does not: refused before anything is fetched
    with pytest.raises(Exception, match=r"needs \d+ bytes in .*and 16777216 bytes of margin"):
        check_free_space(str(tmp_path), free - 1024, 0, STAGING_MARGIN)

    class Src:
        dump_size, size = 10 ** 10, 10 ** 9

    assert staging_needed(Src()) == (10 ** 10, 10 ** 8)  # 1% of a large dump
    Src.dump_size = None
    assert staging_needed(Src()) == (4 * 10 ** 9, 4 * 10 ** 7)  # an older manifest: 4x the stored size, guessed
    Src.size = 1000
    assert staging_needed(Src()) == (4000, STAGING_MARGIN)


def test_a_sinks_own_failure_stops_the_stream_and_is_not_blamed_on_the_artifact():
    """A full staging disk stops the download where it is: the sink's error comes back as it is, and the artifact
    is not read a second time to look for a damaged object (fails on the old decode: a pipeline error, two reads)."""
    import datetime as dt
    import hashlib
    import os

    from ansible.module_utils.lifeboat import crypto
    from ansible.module_utils.lifeboat import manifest as mf
    from ansible.module_utils.lifeboat.memstore import MemoryStorage
    from ansible.module_utils.lifeboat.restore.decoding import decode
    from ansible.module_utils.lifeboat.restore.selection import Source

    store = MemoryStorage()
    data = os.urandom(5 * 1024 * 1024)
    store.put_bytes("db/x/dump", data)
    reads = []
    real = store.open_reader
    store.open_reader = lambda key: reads.append(key) or real(key)
    ref = mf.BackupRef("x", "db", "db/x/dump", "db/x/manifest.json", dt.datetime.now(dt.timezone.utc), len(data),
                       False)
    src = Source(ref, None, "custom", "none", "none", hashlib.sha256(data).hexdigest(), len(data), None, None)

    class Full(Exception):
        pass

    seen = []

    def sink(chunk: bytes) -> None:
        seen.append(len(chunk))
        if sum(seen) > 1024 * 1024:
            raise Full("the staging disk is full")

    with pytest.raises(Full, match="the staging disk is full"):
        decode(store, src, crypto.DecryptionSpec(), sink)
    assert reads == ["db/x/dump"]

    def disk_full(chunk: bytes) -> None:
        raise OSError(28, "No space left on device")

    from ansible.module_utils.lifeboat.errors import StorageError

    with pytest.raises(StorageError, match=r"backup x: the decoded dump could not be written: .*No space left"):
        decode(store, src, crypto.DecryptionSpec(), disk_full)
    assert reads == ["db/x/dump"] * 2
