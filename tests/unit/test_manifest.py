"""module_utils/lifeboat/manifest.py: layout, backup selection, manifest reading."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.errors import IntegrityError, NotFound
from ansible.module_utils.lifeboat.storage import LocalStorage


UTC = dt.timezone.utc

def test_layout_lifeboat_and_legacy_names():
    when = dt.datetime(2026, 11, 20, 12, 0, 5, tzinfo=UTC)
    lay = mf.layout_for("appdb", when, "custom", "zstd", "gpg", prefix="db")
    assert lay.backup_id == "appdb-20261120T120005Z"
    assert lay.artifact_key == "db/appdb/appdb-20261120T120005Z/appdb.dump.zst.gpg"
    assert lay.manifest_key == "db/appdb/appdb-20261120T120005Z/manifest.json"
    assert lay.verification_key(when, "ab12") == "db/appdb/appdb-20261120T120005Z/verify-20261120T120005Z-ab12.json"
    # two drills finishing in the same second get two records
    assert lay.verification_key(when) != lay.verification_key(when)
    second = mf.layout_for("appdb", when, "custom", "zstd", "gpg", prefix="db", seq=2)
    assert second.backup_id == "appdb-20261120T120005Z-2"
    assert second.manifest_key == "db/appdb/appdb-20261120T120005Z-2/manifest.json"
    legacy = mf.layout_for("appdb", when, "plain", "gzip", "none", naming="legacy")
    assert legacy.artifact_key == "db-backup-2026-11-20_12-00-05.sql.gz"
    assert legacy.manifest_key == "db-backup-2026-11-20_12-00-05.sql.gz.manifest.json"
    # unusual database names stay one safe path segment
    odd = mf.layout_for("My DB/../x", when, "plain", "none", "none")
    assert odd.artifact_key.count("/") == 2 and ".." not in odd.artifact_key.split("/")

def _fake_backup(store, database, when, complete=True):
    lay = mf.layout_for(database, when, "custom", "zstd", "none")
    store.put_bytes(lay.artifact_key, b"dump")
    if complete:
        mf.write_manifest(store, lay.manifest_key, {
            "schema": mf.SCHEMA, "backup_id": lay.backup_id, "database": database,
            "started_at": mf.iso(when), "artifact": {"key": lay.artifact_key, "size": 4}})
    return lay

def test_select_backup_latest_by_id_before_and_incomplete(tmp_path):
    store = LocalStorage(str(tmp_path))
    t1 = dt.datetime(2026, 11, 19, 3, 0, tzinfo=UTC)
    t2 = dt.datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    t3 = dt.datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    b1 = _fake_backup(store, "appdb", t1)
    b2 = _fake_backup(store, "appdb", t2)
    _fake_backup(store, "appdb", t3, complete=False)  # no manifest: never "latest"
    _fake_backup(store, "otherdb", t3)
    store.put_bytes("db-backup-2026-11-18_02-00-00.sql.gz", b"\x1f\x8b old procedure")

    assert mf.select_backup(store, "appdb").backup_id == b2.backup_id
    assert mf.select_backup(store, "appdb", before=mf.parse_time("2026-11-20 02:00")).backup_id == b1.backup_id
    assert mf.select_backup(store, "appdb", backup_id=b1.backup_id).artifact_key == b1.artifact_key
    old = mf.select_backup(store, "appdb", before=mf.parse_time("2026-11-19"))
    assert old.legacy and old.manifest_key is None and old.backup_id == "db-backup-2026-11-18_02-00-00"
    with pytest.raises(NotFound, match="no backup 'nope'"):
        mf.select_backup(store, "appdb", backup_id="nope")
    with pytest.raises(NotFound, match="no complete backup before"):
        mf.select_backup(store, "appdb", before=mf.parse_time("2026-01-01"), include_legacy=False)

def test_read_manifest_rejects_foreign_or_broken(tmp_path):
    store = LocalStorage(str(tmp_path))
    store.put_bytes("a/manifest.json", b"{not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        mf.read_manifest(store, "a/manifest.json")
    store.put_bytes("b/manifest.json", json.dumps({"schema": "other"}).encode())
    with pytest.raises(IntegrityError, match="expected 'lifeboat/backup-manifest/v1'"):
        mf.read_manifest(store, "b/manifest.json")


def test_manifest_checksum_detects_a_flipped_byte():
    doc = {"schema": mf.SCHEMA, "backup_id": "appdb-20261120T120005Z", "database": "appdb", "tables": [1, 2]}
    raw = mf.dumps(mf.seal(doc))
    data, problem = mf.manifest_problem(raw)
    assert problem is None and data["backup_id"] == doc["backup_id"]
    damaged = raw.replace(b'"appdb"', b'"appdc"')
    assert mf.manifest_problem(damaged)[1].endswith("does not match its content: damaged")
    torn = raw[: len(raw) // 2]
    assert "not valid JSON" in mf.manifest_problem(torn)[1]
    # a manifest written before checksums existed is accepted as it is
    assert mf.manifest_problem(mf.dumps(doc))[1] is None
    assert mf.backup_id_of_key("db/appdb/appdb-20261120T120005Z-2/manifest.json") == "appdb-20261120T120005Z-2"
