"""module_utils/lifeboat/storage_local.py (and storage_api's ETag arithmetic): a directory's keys, modes, walk and
partial files."""
from __future__ import annotations

import hashlib
import random

import pytest

from ansible.module_utils.lifeboat.errors import ConfigError, StorageError
from ansible.module_utils.lifeboat.storage_api import candidate_part_sizes, md5_etag_of_file
from ansible.module_utils.lifeboat.storage_local import LocalStorage, makedirs


MIB = 1024 * 1024

def test_multipart_etag_matches_s3_arithmetic(tmp_path):
    data = random.randbytes(11 * MIB + 5)
    p = tmp_path / "f"
    p.write_bytes(data)
    parts = [data[i:i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    want = hashlib.md5(b"".join(hashlib.md5(x).digest() for x in parts)).hexdigest() + "-3"
    assert md5_etag_of_file(str(p), len(data), 5 * MIB) == want
    assert 5 * MIB in candidate_part_sizes(len(data), 3)
    assert md5_etag_of_file(str(p), len(data), None) == hashlib.md5(data).hexdigest()

@pytest.mark.parametrize("key", ["/lead.txt", "a//b", "./x", "a/./b", "a/../b", "../x", "a/..", "..", "a/b/../../../x",
                                 "nul\x00.txt", "//"])
def test_keys_that_name_no_file_are_refused_in_a_directory(tmp_path, key):
    """S3 keys a directory cannot hold as themselves (a leading '/', empty, '.' or '..' segments) are
    refused by name, never mapped onto another file or outside the directory."""
    side = LocalStorage(str(tmp_path / "root"), "destination")
    with pytest.raises(ConfigError, match=r"destination: key '.*' (escapes|is not a plain path below) the directory"):
        side.path(key)

def test_plain_keys_and_folder_markers_map_inside(tmp_path):
    side = LocalStorage(str(tmp_path / "root"), "destination")
    assert side.path("a/b c/é+%?#&.txt") == str(tmp_path / "root" / "a" / "b c" / "é+%?#&.txt")
    assert side.path("folder/") == str(tmp_path / "root" / "folder")
    assert side.path("...") == str(tmp_path / "root" / "...")
    assert LocalStorage("/", "destination").path("srv/x") == "/srv/x"

def test_makedirs_gives_every_new_directory_the_mode(tmp_path):
    makedirs(str(tmp_path / "a" / "b" / "c"), 0o700)
    for p in ("a", "a/b", "a/b/c"):
        assert (tmp_path / p).stat().st_mode & 0o777 == 0o700, p


def test_exclusive_write_on_a_filesystem_without_hard_links(tmp_path, monkeypatch):
    """Some mounts refuse hard links (EPERM/ENOTSUP): an exclusive write (a backup's manifest, a restore's copy of
    a file that was absent) still commits, and still never replaces a file that is there."""
    import errno
    import os

    from ansible.module_utils.lifeboat.errors import AlreadyExists

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    store = LocalStorage(str(tmp_path / "root"))
    monkeypatch.setattr(os, "link", no_links)
    store.put_bytes("a/k", b"first", exclusive=True)
    with pytest.raises(AlreadyExists):
        store.put_bytes("a/k", b"second", exclusive=True)
    assert store.get_bytes("a/k") == b"first" and [p.name for p in (tmp_path / "root" / "a").iterdir()] == ["k"]


def test_a_file_where_a_folder_of_that_name_is_names_the_clash(tmp_path):
    """An exclusive write of 'a' where the directory a/ holds other keys ('a' and 'a/b' in a bucket) says it is a
    file/folder clash, not that another run wrote the file."""
    store = LocalStorage(str(tmp_path / "root"))
    store.put_bytes("a/b", b"b")
    with pytest.raises(StorageError, match=r"key 'a': a name that is both a file and a folder"):
        store.put_bytes("a", b"a", exclusive=True)
    assert store.get_bytes("a/b") == b"b"
