"""module_utils/lifeboat/s3sync.py: the sync over stores without a server (directories, memory) and its refusals."""
from __future__ import annotations

import os
import time


import pytest

from ansible.module_utils.lifeboat.errors import ConfigError, SafetyError
from ansible.module_utils.lifeboat.memstore import MemoryStorage
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


def test_the_sync_runs_between_any_two_stores(store):
    """The planner and the copy work on the Storage interface, so a sync runs over memory and a directory (the
    `store` fixture gives both) without a server: what is copied, what is unchanged (listed ETags, or a
    directory's content ETag computed like the other side's), folder markers (a directory makes them
    directories), check mode, and deletions refused into a store that keeps nothing deleted. The old planner
    dispatched on S3Side/LocalSide and could not take a store."""
    src = MemoryStorage("src")
    src.put_bytes("a/b/one.txt", b"1")
    src.put_bytes("top é.bin", b"2" * 1000)
    src.put_bytes("folder/", b"")                                   # a console's "folder" placeholder
    plan = sync(src, store, options=SyncOptions(check_mode=True))
    assert plan.copied == 3 and sorted(plan.to_copy) == ["a/b/one.txt", "folder/", "top é.bin"]
    assert list(store.list()) == []
    assert sync(src, store).copied == 3
    files = {e.key: store.get_bytes(e.key) for e in store.list() if not e.key.endswith("/")}
    assert files == {"a/b/one.txt": b"1", "top é.bin": b"2" * 1000}
    assert store.has_marker("folder/")
    again = sync(src, store)
    assert not again.changed and again.unchanged == 3
    src.put_bytes("top é.bin", b"3" * 1000)                         # same size, other content
    assert sync(src, store).to_copy == ["top é.bin"]
    assert store.get_bytes("top é.bin") == b"3" * 1000
    back = MemoryStorage("back")
    assert sync(store, back).copied == len(list(store.entries(markers=not store.directories)))
    assert back.get_bytes("a/b/one.txt") == b"1" and not sync(store, back).changed
    why = "local directory" if store.directories else "versioning is not enabled"
    with pytest.raises(SafetyError, match=f"delete: refusing to propagate deletions into .*{why}"):
        sync(src, store, options=SyncOptions(delete=True))


def test_a_killed_writers_partial_file_is_removed_by_a_later_sync(tmp_path):
    """Each writer has its own partial file, so a run killed mid-copy leaves one behind; the next sync into the
    directory removes those its listing passed that are older than a day (a live writer's is younger), and never
    lists or copies them."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_bytes(b"f")
    (dst / "d").mkdir(parents=True)
    old = dst / "d" / "f.txt.111-222-abcd.lifeboat-partial"
    young = dst / "d" / "f.txt.333-444-ef01.lifeboat-partial"
    for p in (old, young):
        p.write_bytes(b"half")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    res = sync(str(src), str(dst))
    assert res.copied == 1 and res.to_copy == ["d/f.txt"]
    assert sorted(p.name for p in (dst / "d").iterdir()) == ["f.txt", young.name]
