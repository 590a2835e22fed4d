"""Storage engine pieces that need no server: external sort, ETag arithmetic, version choice, local sync."""
from __future__ import annotations

import datetime as dt
import hashlib
import random

import pytest

from ansible.module_utils.lifeboat.errors import ConfigError, SafetyError
from ansible.module_utils.lifeboat.s3restore import Version, parse_time, version_at
from ansible.module_utils.lifeboat.s3sync import (
    LocalSide,
    _candidate_part_sizes,
    _makedirs,
    external_sort,
    md5_etag_of_file,
    SyncOptions,
    sync,
)

MIB = 1024 * 1024


def test_external_sort_spills_and_merges(tmp_path):
    items = [f"k/{random.random()}/é+ {i}" for i in range(1000)]
    out = list(external_sort(iter(items), lambda k: k, lambda k: [k], lambda x: x[0], str(tmp_path), "t", 37))
    assert out == sorted(items)
    assert len(list(tmp_path.iterdir())) == 1000 // 37, "runs were spilled to disk"


def test_multipart_etag_matches_s3_arithmetic(tmp_path):
    data = random.randbytes(11 * MIB + 5)
    p = tmp_path / "f"
    p.write_bytes(data)
    parts = [data[i:i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    want = hashlib.md5(b"".join(hashlib.md5(x).digest() for x in parts)).hexdigest() + "-3"
    assert md5_etag_of_file(str(p), len(data), 5 * MIB) == want
    assert 5 * MIB in _candidate_part_sizes(len(data), 3)
    assert md5_etag_of_file(str(p), len(data), None) == hashlib.md5(data).hexdigest()


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


@pytest.mark.parametrize("key", ["/lead.txt", "a//b", "./x", "a/./b", "a/../b", "../x", "a/..", "..", "a/b/../../../x",
                                 "nul\x00.txt", "//"])
def test_keys_that_name_no_file_are_refused_in_a_directory(tmp_path, key):
    """S3 keys a directory cannot hold as themselves (a leading '/', empty, '.' or '..' segments) are
    refused by name, never mapped onto another file or outside the directory."""
    side = LocalSide(str(tmp_path / "root"), "destination")
    with pytest.raises(ConfigError, match=r"destination: key '.*' (escapes|is not a plain path below) the directory"):
        side.path(key)


def test_plain_keys_and_folder_markers_map_inside(tmp_path):
    side = LocalSide(str(tmp_path / "root"), "destination")
    assert side.path("a/b c/é+%?#&.txt") == str(tmp_path / "root" / "a" / "b c" / "é+%?#&.txt")
    assert side.path("folder/") == str(tmp_path / "root" / "folder")
    assert side.path("...") == str(tmp_path / "root" / "...")
    assert LocalSide("/", "destination").path("srv/x") == "/srv/x"


def test_makedirs_gives_every_new_directory_the_mode(tmp_path):
    _makedirs(str(tmp_path / "a" / "b" / "c"), 0o700)
    for p in ("a", "a/b", "a/b/c"):
        assert (tmp_path / p).stat().st_mode & 0o777 == 0o700, p
