"""memstore.MemoryStorage: the store interface's behaviour, the same as a directory's (LocalStorage), and the
logic built on stores (retention, the leftovers sweep) run on it without a server or a directory."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from ansible.module_utils.lifeboat import leftovers, prune
from ansible.module_utils.lifeboat.errors import AlreadyExists, ConfigError, NotFound, StorageError
from ansible.module_utils.lifeboat.memstore import MemoryStorage
from ansible.module_utils.lifeboat.retention import Policy

T0 = dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)


def test_the_interface_behaves_like_a_directory(store):
    store.check(write=True)
    w = store.open_writer("db/set/a.bin")
    w.write(b"hello ")
    w.write(b"world")
    assert [u.key for u in store.open_uploads() if u.key.startswith("db/set/a.bin")]  # not committed yet
    with pytest.raises(NotFound):
        store.stat("db/set/a.bin")
    w.close()
    assert store.get_bytes("db/set/a.bin") == b"hello world" and store.stat("db/set/a.bin").size == 11
    assert store.open_uploads() == []
    aborted = store.open_writer("db/set/b.bin")
    aborted.write(b"x")
    aborted.abort()
    assert store.open_uploads() == [] and not store.exists("db/set/b.bin")
    store.put_bytes("db/set/c.json", b'{"k": 1}', exclusive=True)
    with pytest.raises(AlreadyExists):
        store.put_bytes("db/set/c.json", b'{"k": 2}', exclusive=True)
    assert store.get_json("db/set/c.json") == {"k": 1} and store.get_json("db/set/none.json") is None
    assert [e.key for e in store.list("db/")] == ["db/set/a.bin", "db/set/c.json"]
    store.delete("db/set/a.bin")
    store.delete("db/set/a.bin")  # gone already: not an error
    assert [e.key for e in store.list("")] == ["db/set/c.json"]
    with pytest.raises(ConfigError):
        store.open_writer("../escape")


def test_exclusive_writers_racing_for_one_key_one_wins():
    store = MemoryStorage()
    results: list[str] = []
    writers = [store.open_writer("db/set/manifest.json", exclusive=True) for _ in range(8)]

    def commit(w, n):
        w.write(f"writer {n}".encode())
        try:
            w.close()
            results.append("won")
        except AlreadyExists:
            results.append("lost")

    threads = [threading.Thread(target=commit, args=(w, n)) for n, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"] and store.open_uploads() == []


def test_fault_injection_names_the_key():
    store = MemoryStorage()
    store.fail["db/"] = StorageError("db/: answered 503 SlowDown")
    with pytest.raises(StorageError, match="SlowDown"):
        store.put_bytes("db/x", b"1")


def test_retention_runs_on_the_memory_store(add_backup):
    store = MemoryStorage()
    layouts = [add_backup(store, "appdb", T0 + dt.timedelta(days=d), verified="passed") for d in range(4)]
    killed = store.open_writer("appdb/appdb-20261101T010000Z/appdb.dump.zst.gpg")  # a killed run's upload
    killed.write(b"x")
    result = prune.run_retention(store, Policy(keep_last=2), now=T0 + dt.timedelta(days=5))
    kept = {k.split("/")[1] for k in (e.key for e in store.list("appdb/"))}
    assert kept == {layouts[2].backup_id, layouts[3].backup_id}
    # the killed run's set (older than incomplete_grace) goes too, its open upload aborted
    assert sorted(result.deleted) == sorted(["appdb-20261101T010000Z", layouts[0].backup_id, layouts[1].backup_id])
    assert result.aborted_uploads == 1 and store.open_uploads() == []


def test_the_sweep_runs_on_the_memory_store():
    now = T0 + dt.timedelta(hours=3)
    store = MemoryStorage(clock=lambda: T0)
    store.put_bytes("app/app-20261101T010000Z/app.dump.zst.gpg", b"x")   # killed before its manifest
    store.put_bytes("app/app-20261101T020000Z/app.dump.zst.gpg", b"x")   # complete
    store.put_bytes("app/app-20261101T020000Z/manifest.json", b"{}")
    store.put_bytes("app/app-20261101T030000Z/app.dump.zst.gpg", b"x")   # young: maybe a live run's
    store.touch("app/app-20261101T030000Z/app.dump.zst.gpg", now - dt.timedelta(minutes=1))
    w = store.open_writer("app/app-20261101T040000Z/app.dump.zst.gpg")   # a dead run's open upload
    w.write(b"partial")
    out = leftovers.sweep(store, "app", grace_s=3600, now=now)
    assert out.removed == ["app/app-20261101T010000Z/app.dump.zst.gpg"]
    assert out.aborted_uploads == ["app/app-20261101T040000Z/app.dump.zst.gpg"] and out.reported == []
    assert store.open_uploads() == []
    assert sorted(e.key for e in store.list("")) == ["app/app-20261101T020000Z/app.dump.zst.gpg",
                                                     "app/app-20261101T020000Z/manifest.json",
                                                     "app/app-20261101T030000Z/app.dump.zst.gpg"]
