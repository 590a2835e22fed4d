"""module_utils/lifeboat/restore/load.py: the free-space check before a staged restore."""
from __future__ import annotations


import pytest

from ansible.module_utils.lifeboat import restore as rs


def test_free_space_check(tmp_path):
    rs.check_free_space(str(tmp_path), 1, 0)
    with pytest.raises(Exception, match="not enough disk.*jobs: 1"):
        rs.check_free_space(str(tmp_path), 10 ** 18, 0)
