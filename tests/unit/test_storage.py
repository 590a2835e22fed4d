"""module_utils/lifeboat/storage.py: the local directory store (atomic writes, private modes, refusals)."""
from __future__ import annotations

import stat

import pytest
from ansible.module_utils.lifeboat.errors import ConfigError, NotFound
from ansible.module_utils.lifeboat.storage import LocalStorage, open_storage


def test_local_writer_commits_atomically_with_private_modes(tmp_path):
    root = tmp_path / "dest"
    store = LocalStorage(str(root))
    store.check(write=True)
    w = store.open_writer("appdb/b1/appdb.dump")
    w.write(b"abc")
    assert not (root / "appdb/b1/appdb.dump").exists(), "nothing final before close()"
    assert (root / "appdb/b1/appdb.dump.partial").exists()
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
    assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))

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
    """A directory store's open uploads are its .partial files (a writer killed or still writing); abort removes
    them; get_json reads a JSON object, None when missing, not JSON or not an object."""
    store = LocalStorage(str(tmp_path / "store"))
    w = store.open_writer("appdb/b1/appdb.dump")
    w.write(b"half")
    ups = store.open_uploads()
    assert len(ups) == 1 and ups[0].key.startswith("appdb/b1/appdb.dump") and ups[0].key.endswith(".partial")
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


def test_one_listing_type_for_stores_and_transfer_sides(tmp_path):
    """A directory listed as a backup store (LocalStorage) and as a side of a sync (LocalSide) gives the same
    entries of the same type: key relative to the root, size, no ETag, modification time."""
    from ansible.module_utils.lifeboat import sides, storage

    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "one.bin").write_bytes(b"12345")
    (root / "two.txt").write_bytes(b"x")
    as_store = sorted(LocalStorage(str(root)).list(""), key=lambda e: e.key)
    as_side = sorted(sides.LocalSide(str(root), "source").list(), key=lambda e: e.key)
    assert as_store == as_side and [e.key for e in as_side] == ["a/b/one.bin", "two.txt"]
    assert all(type(e) is storage.Entry and e.etag is None and e.last_modified for e in as_store + as_side)
    assert storage.ObjectInfo is storage.Entry is sides.Entry
