"""module_utils/lifeboat/backupsets.py: one grouping of a root's listing, read alike by the catalog, retention
(prune.scan) and the sweep of killed runs (leftovers.sweep)."""
from __future__ import annotations

import datetime as dt
import json
import os
import time

from ansible.module_utils.lifeboat import backupsets, catalog, leftovers, prune
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.memstore import MemoryStorage
from ansible.module_utils.lifeboat.storage import LocalStorage

T0 = dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)
OLD = "db-backup-2026-10-01_02-00-00.sql.gz"
NAMED = "db-backup-2026-10-02_02-00-00.sql.gz"        # naming: legacy, with Lifeboat's manifest beside it
TORN = "backup_20261003_020000.sql.gz"                 # its Lifeboat manifest is torn


def _age_all(store, seconds: float = 7200.0) -> None:
    old = time.time() - seconds
    for e in list(store.list()):
        if isinstance(store, MemoryStorage):
            store.touch(e.key, dt.datetime.fromtimestamp(old, dt.UTC))
        else:
            os.utime(store.path(e.key), (old, old))


def _store(store, add_backup):
    good = add_backup(store, "appdb", T0, verified="passed")
    add_backup(store, "appdb", T0 + dt.timedelta(days=1))
    store.delete(mf.layout_for("appdb", T0 + dt.timedelta(days=1), "custom", "zstd", "gpg").manifest_key)
    bad = add_backup(store, "appdb", T0 + dt.timedelta(days=2))
    raw = store.get_bytes(bad.manifest_key).replace(b'"tables": []', b'"tables": [{"schema": "s"}]')
    store.put_bytes(bad.manifest_key, raw)            # one field wrong (and the checksum no longer matches)
    store.put_bytes(OLD, b"\x1f\x8b old")
    store.put_bytes(NAMED, b"\x1f\x8b named")
    mf.write_manifest(store, NAMED + ".manifest.json", {
        "schema": mf.SCHEMA, "backup_id": NAMED[:-7], "database": "appdb", "started_at": "2026-10-02T02:00:00Z",
        "naming": "legacy", "format": "plain", "compression": {"algorithm": "gzip"},
        "artifact": {"key": NAMED, "size": 10}})
    store.put_bytes(TORN, b"\x1f\x8b torn")
    store.put_bytes(TORN + ".manifest.json", b'{"schema": "lifeboat/backup-manifest/v1", "backup_id"')
    store.put_bytes("appdb/last-run.json", b"{}")                 # a run record: no set
    store.put_bytes("appdb/notes/readme.txt", b"x")               # a folder off the layout: no set
    assert good
    _age_all(store)
    return store


def test_one_grouping_of_sets_older_dumps_and_strays(store, add_backup):
    store = _store(store, add_backup)
    listing = backupsets.list_sets(store)
    ids = {k[1]: s for k, s in listing.sets.items()}
    assert sorted(ids) == ["appdb-20261101T030000Z", "appdb-20261102T030000Z", "appdb-20261103T030000Z"]
    first = ids["appdb-20261101T030000Z"]
    assert first.manifest_key == "appdb/appdb-20261101T030000Z/manifest.json" and len(first.verify_keys) == 1
    assert [o.key for o in first.artifacts] == ["appdb/appdb-20261101T030000Z/appdb.dump.zst.gpg"]
    assert ids["appdb-20261102T030000Z"].manifest_key is None
    assert sorted(listing.older) == sorted([OLD, NAMED, TORN])
    assert listing.older[NAMED].manifest_key == NAMED + ".manifest.json" and listing.older[OLD].manifest_key is None
    # one database's folder (and the flat dumps, listed by their own prefixes) gives the same groups
    one = backupsets.list_sets(store, "appdb")
    assert {k: s.keys for k, s in one.sets.items()} == {k: s.keys for k, s in listing.sets.items()}
    assert sorted(one.older) == sorted(listing.older)


def test_catalog_retention_and_sweep_agree_on_every_set(store, add_backup):
    """The same store read by the three: the incomplete set, the damaged one (a field of the wrong type: the
    catalog names the key, retention leaves it alone, the sweep never touches a set with a manifest), the
    older dumps. On the old code the catalog skipped the torn naming-legacy manifest silently and retention
    planned the damaged set like any other. On a directory and in memory: the catalog scans the store it is given."""
    store = _store(store, add_backup)
    target = catalog.scan(catalog.Target(name="t", kind="database", destination=store.url), storage=store)
    assert [i["id"] for i in target["incomplete"]] == ["appdb-20261102T030000Z"]
    damaged = {d["id"]: d["reason"] for d in target["damaged"]}
    assert sorted(damaged) == sorted([TORN[:-7], "appdb-20261103T030000Z"])
    assert "not valid JSON" in damaged[TORN[:-7]]
    assert "damaged" in damaged["appdb-20261103T030000Z"]
    assert sorted(b["id"] for b in target["backups"]) == sorted([OLD[:-7], NAMED[:-7], "appdb-20261101T030000Z"])

    sets = {s.backup_id: s for s in prune.scan(store)}
    assert sets["appdb-20261102T030000Z"].kind == "incomplete"
    assert sets["appdb-20261103T030000Z"].kind == "unknown" and "check it by hand" in sets[
        "appdb-20261103T030000Z"].left_alone
    assert sets[TORN[:-7]].kind == "unknown" and sets[TORN[:-7]].left_alone
    assert sets[NAMED[:-7]].series == "database:appdb" and sets["appdb-20261101T030000Z"].verified is True
    assert sets[OLD[:-7]].kind == "older-procedure"

    swept = leftovers.sweep(store, "appdb", grace_s=3600)
    assert sorted({k.split("/")[1] for k in swept.removed}) == ["appdb-20261102T030000Z"]
    assert store.exists("appdb/appdb-20261103T030000Z/manifest.json") and store.exists("appdb/notes/readme.txt")


def test_damaged_checksum_alone_is_named_by_catalog_and_left_alone_by_retention(tmp_path, add_backup):
    store = LocalStorage(str(tmp_path))
    lay = add_backup(store, "appdb", T0)
    doc = json.loads(store.get_bytes(lay.manifest_key))
    doc["database"] = "appdc"                    # one flipped value: the checksum no longer matches
    store.put_bytes(lay.manifest_key, mf.dumps(doc))
    target = catalog.scan(catalog.Target(name="t", kind="database", destination=store.root))
    assert [d["id"] for d in target["damaged"]] == [lay.backup_id] and target["backups"] == []
    (only,) = prune.scan(store)
    assert only.kind == "unknown" and "manifest_sha256" in only.left_alone
    assert prune.plan([only], prune.Policy(keep_last=1), T0 + dt.timedelta(days=400)).keep(only)
