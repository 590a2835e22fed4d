"""module_utils/lifeboat/storage.py: the local directory store (atomic writes, private modes, refusals)."""
from __future__ import annotations

import stat

import pytest
from ansible.module_utils.lifeboat.errors import AlreadyExists, ConditionFailed, ConfigError, NotFound
from ansible.module_utils.lifeboat.storage import LocalStorage, open_storage


def test_local_writer_commits_atomically_with_private_modes(tmp_path):
    root = tmp_path / "dest"
    store = LocalStorage(str(root))
    store.check(write=True)
    w = store.open_writer("appdb/b1/appdb.dump")
    w.write(b"abc")
    assert not (root / "appdb/b1/appdb.dump").exists(), "nothing final before close()"
    partial = [p.name for p in (root / "appdb/b1").iterdir()]
    assert len(partial) == 1 and partial[0].startswith("appdb.dump.") and partial[0].endswith(".lifeboat-partial")
    w.close()
    final = root / "appdb/b1/appdb.dump"
    assert final.read_bytes() == b"abc"
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "appdb").stat().st_mode) == 0o700
    assert [o.key for o in store.list()] == ["appdb/b1/appdb.dump"]

def test_local_writer_abort_leaves_nothing(tmp_path):
    store = LocalStorage(str(tmp_path))
    w = store.open_writer("x/y.bin")
    w.write(b"partial data")
    w.abort()
    assert list(store.list()) == []
    assert not any(p.name.endswith("partial") for p in tmp_path.rglob("*"))

def test_local_storage_refuses_escaping_keys_and_relative_roots(tmp_path):
    store = LocalStorage(str(tmp_path))
    with pytest.raises(ConfigError, match="escapes"):
        store.path("../etc/passwd")
    with pytest.raises(ConfigError, match="absolute"):
        LocalStorage("relative/dir")
    with pytest.raises(ConfigError, match="unsupported scheme"):
        open_storage("gs://bucket/x")
    with pytest.raises(NotFound):
        store.get_bytes("missing.json")


def test_local_open_uploads_get_json(tmp_path):
    """A directory store's open uploads are its partial files (a writer killed or still writing); abort removes
    them; get_json reads a JSON object, None when missing, not JSON or not an object."""
    store = LocalStorage(str(tmp_path / "store"))
    w = store.open_writer("appdb/b1/appdb.dump")
    w.write(b"half")
    ups = store.open_uploads()
    assert len(ups) == 1 and ups[0].key.startswith("appdb/b1/appdb.dump") and ups[0].key.endswith(".lifeboat-partial")
    assert ups[0].upload_id is None and ups[0].initiated is not None
    assert [o.key for o in store.list("")] == []          # never listed as an object
    store.abort_upload(ups[0])
    assert store.open_uploads() == []
    w.abort()
    store.put_bytes("a.json", b'{"k": 1}')
    store.put_bytes("b.json", b"not json")
    store.put_bytes("c.json", b"[1]")
    assert store.get_json("a.json") == {"k": 1}
    assert store.get_json("b.json") is None and store.get_json("c.json") is None and store.get_json("d.json") is None


def test_one_directory_store_for_backups_and_transfers(tmp_path):
    """A directory is one kind of store whether it holds backups or is a side of a sync: one walk (key order,
    regular files only, links not followed, writers' partial files never listed), one set of key rules.
    A user's own file named '*.partial' is a file like any other (the old backup store's listing skipped it,
    so a sync of that directory would have left it behind)."""
    from ansible.module_utils.lifeboat import sides, storage

    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "one.bin").write_bytes(b"12345")
    (root / "a.txt").write_bytes(b"x")
    (root / "notes.partial").write_bytes(b"a user's file")
    (root / "x.bin.1-2-ab.lifeboat-partial").write_bytes(b"a writer's")
    (root / "link").symlink_to(root / "a.txt")
    store = LocalStorage(str(root))
    side = sides.open_side(str(root), None, "source")
    assert type(side) is LocalStorage and side.option == "source"
    keys = [e.key for e in store.list()]
    assert keys == ["a.txt", "a/b/one.bin", "notes.partial"]          # byte order, as S3 lists
    assert list(side.entries()) == list(store.list())
    assert [e.key for e in store.list("a/")] == ["a/b/one.bin"] and [e.key for e in store.list("a")] == keys[:2]
    assert [u.key for u in store.open_uploads()] == ["x.bin.1-2-ab.lifeboat-partial"]
    assert all(type(e) is storage.Entry and e.etag is None and e.last_modified for e in store.list())
    assert storage.ObjectInfo is storage.Entry
    with pytest.raises(ConfigError, match=r"^source: key 'a//b' is not a plain path below"):
        side.path("a//b")


def test_two_writers_of_one_key_never_share_a_partial_file(tmp_path):
    """Each writer has its own partial file: the one that commits last wins whole, the other's bytes never
    end up under the name (a fixed partial name let a second writer's unfinished file be renamed in)."""
    store = LocalStorage(str(tmp_path))
    w1, w2 = store.open_writer("k"), store.open_writer("k")
    w1.write(b"first, complete")
    w2.write(b"second, half")
    w1.close()
    assert (tmp_path / "k").read_bytes() == b"first, complete"
    w2.write(b" and the rest")
    w2.close()
    assert (tmp_path / "k").read_bytes() == b"second, half and the rest"
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_partial_file_planted_as_a_link_is_never_followed(tmp_path):
    store = LocalStorage(str(tmp_path / "d"))
    store.check(write=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    w = store.open_writer("k")
    w.abort()
    (tmp_path / "d" / "k.lifeboat-partial").symlink_to(victim)
    store.put_bytes("k", b"new")
    assert victim.read_bytes() == b"precious" and (tmp_path / "d" / "k").read_bytes() == b"new"


def test_conditional_writes_never_replace_what_changed(store):
    """The conditional copy's two conditions, on a directory and in memory: a write that must find the object as
    it was compared fails (ConditionFailed) when another writer changed it meanwhile, and one that must find it
    absent fails (AlreadyExists) when it appeared; either way the other writer's content stays."""
    store.put_bytes("k", b"as compared")
    (seen,) = store.list("k")
    store.put_bytes("k", b"the application's newer file")
    w = store.open_writer("k", unchanged=seen)
    w.write(b"restored")
    with pytest.raises(ConditionFailed, match="changed since it was compared.*nothing was replaced"):
        w.close()
    assert store.get_bytes("k") == b"the application's newer file" and store.open_uploads() == []
    (now,) = store.list("k")
    with store.open_writer("k", unchanged=now) as w:
        w.write(b"restored")
    assert store.get_bytes("k") == b"restored"
    with pytest.raises(AlreadyExists):
        store.put_bytes("k", b"again", exclusive=True)
    assert store.get_bytes("k") == b"restored"


def test_versions_of_a_store_that_keeps_none_are_refused_by_name(store):
    """Listing versions and copying a version are Storage methods; a directory or the in-memory store says it
    keeps no versions and what to use instead."""
    from ansible.module_utils.lifeboat.memstore import MemoryStorage
    from ansible.module_utils.lifeboat.storage_api import Version

    what = (r"not supported by (a directory store|the in-memory store) \(.*\): it keeps no versions; "
            r"use a versioned bucket")
    with pytest.raises(ConfigError, match=what):
        list(store.list_versions())
    with pytest.raises(ConfigError, match=what):
        store.newest_version("k")
    with pytest.raises(ConfigError, match=r"not supported by the in-memory store"):
        store.copy_version(MemoryStorage(), Version("k", "v1", 0.0, True, False, 1))
