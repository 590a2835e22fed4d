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
