"""module_utils/lifeboat/s3sync.py: directory-to-directory sync and its refusals."""
from __future__ import annotations


import pytest

from ansible.module_utils.lifeboat.errors import ConfigError, SafetyError
from ansible.module_utils.lifeboat.s3sync import SyncOptions, sync


def test_local_directory_sync_and_refusals(tmp_path):
    src = tmp_path / "a"
    (src / "x" / "y").mkdir(parents=True)
    (src / "x" / "y" / "f é+.txt").write_text("1")
    (src / "top").write_text("2")
    dst = tmp_path / "b"
    assert sync(str(src), str(dst)).copied == 2
    assert not sync(str(src), str(dst)).changed
    (src / "top").write_text("22")
    assert sync(str(src), str(dst)).copied == 1
    with pytest.raises(SafetyError):
        sync(str(src), str(dst), options=SyncOptions(delete=True))
    with pytest.raises(ConfigError, match="same directory"):
        sync(str(src), str(src))
    with pytest.raises(ConfigError, match="absolute"):
        sync("relative/dir", str(dst))
