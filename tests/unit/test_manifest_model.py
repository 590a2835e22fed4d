"""module_utils/lifeboat/manifest_model.py: one typed reader for every manifest version Lifeboat has written."""
from __future__ import annotations

import json

import pytest

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import manifest_model as model
from ansible.module_utils.lifeboat.storage import LocalStorage

KEY = "appdb/appdb-20261122T020000Z/appdb.dump.zst.gpg"

#: the first manifest a backup wrote (4263be6, 2026-11-22): no checksum, roles, properties, privileges, hashes
FIRST = {
    "schema": "lifeboat/backup-manifest/v1", "kind": "postgresql", "backup_id": "appdb-20261122T020000Z",
    "database": "appdb", "naming": "lifeboat",
    "server": {"version": "15.18", "version_num": 150018, "host": "127.0.0.1", "port": 55432},
    "pg_dump": {"path": "/usr/lib/postgresql/15/bin/pg_dump", "version": "15.18", "major": 15},
    "format": "custom", "jobs": 1,
    "scope": {"schema_only": False, "data_only": False, "include_tables": [], "exclude_tables": [],
              "include_schemas": [], "exclude_schemas": []},
    "compression": {"algorithm": "zstd", "level": 3, "threads": 2},
    "encryption": {"method": "gpg", "mode": "public-key", "recipients": ["A" * 40]},
    "artifact": {"key": KEY, "uri": "s3://b/" + KEY, "size": 1234, "sha256": "a" * 64, "dump_size": 4567,
                 "dump_sha256": "b" * 64},
    "started_at": "2026-11-22T02:00:00Z", "finished_at": "2026-11-22T02:00:07Z", "duration_s": 7.1,
    "snapshot": "00000003-0000001B-1",
    "tables": [{"schema": "public", "name": "users", "rows": 1000}],
    "schema_hash": "c" * 64, "tool": {"name": "lifeboat", "version": "0.1.0"}, "tags": {},
    "restore": {"steps": [], "command": "..."},
}

#: what today's backups add (issue 10 and the supabase profile), sealed with manifest_sha256
LATEST = dict(FIRST, **{
    "schema_hash_cross_major": "d" * 64,
    "privileges": {"owners": "1" * 64, "acl": "2" * 64, "functions": "3" * 64, "policies": "4" * 64},
    "database_properties": {"encoding": "UTF8", "owner": "app_owner", "acl": [["app_owner", "CONNECT", False]]},
    "roles": {"key": "appdb/appdb-20261122T020000Z/roles.sql.zst.gpg", "method": "pg_dumpall", "size": 9,
              "sha256": "e" * 64, "names": ["app_owner", "postgres"], "required": ["app_owner"]},
    "content_hashes": {"method": "sum64-md5-row-text/v1", "duration_s": 4.2,
                       "tables": [{"schema": "public", "name": "users", "hash": "9f1c2e0b7a4d3c18"}]},
    "supabase": {"profile": "supabase", "app_schemas": ["public"], "platform_schemas": ["auth", "storage"],
                 "platform_tables": [["auth", "users"]], "user_roles": ["app_owner"], "toc_filter": "x",
                 "publication_sql": [], "extensions_sql": [], "data_list_command": "pg_restore -l",
                 "platform_data": {"key": "appdb/x/platform.dump.zst.gpg", "size": 5, "sha256": "f" * 64,
                                   "tables": [{"schema": "auth", "name": "users", "rows": 3}]},
                 "left_out": [{"kind": "schema", "name": "realtime", "reason": "the platform's"}]},
})


def _raw(doc: dict, seal: bool = False) -> bytes:
    return mf.dumps(mf.seal(doc) if seal else doc)


def test_the_first_manifest_version_reads_with_defaults_for_what_came_later():
    man = model.parse(_raw(FIRST), "first")
    assert isinstance(man, model.BackupManifest)
    assert man.backup_id == "appdb-20261122T020000Z" and man.database == "appdb"
    assert man.started_at == mf.parse_time("2026-11-22T02:00:00Z")
    assert man.artifact == model.Artifact(KEY, "s3://b/" + KEY, 1234, "a" * 64, 4567, "b" * 64)
    assert man.compression.algorithm == "zstd" and man.encryption.recipients == ("A" * 40,)
    assert man.row_counts == {"public.users": 1000} and man.pg_dump_major == 15
    assert man.server_version_num == 150018 and man.scope.label == ""
    # not recorded then: the readers' "nothing to compare" values
    assert man.roles is None and man.supabase is None and man.database_properties is None
    assert man.privileges == {} and man.content_hashes.tables == () and man.checksum is None
    assert man.doc == FIRST


def test_todays_manifest_reads_every_part():
    man = model.parse(_raw(LATEST, seal=True), "latest")
    assert man.checksum == mf.manifest_checksum(LATEST)
    assert man.roles.required == ("app_owner",) and man.roles.sha256 == "e" * 64
    assert man.content_hashes.tables[0] == model.TableHash("public", "users", "9f1c2e0b7a4d3c18")
    assert man.supabase.platform_data.key == "appdb/x/platform.dump.zst.gpg"
    assert man.supabase.platform_data.tables == (model.TableRows("auth", "users", 3),)
    assert man.supabase.app_schemas == ("public",) and man.supabase.left_out[0]["name"] == "realtime"
    assert man.supabase.platform_tables == (("auth", "users"),)
    assert man.privileges["policies"] == "4" * 64 and man.database_properties["owner"] == "app_owner"


def test_hand_made_and_legacy_naming_manifests_read():
    # the smallest manifest readers ever accepted (tests and older tools wrote these) and naming: legacy's
    small = {"schema": mf.SCHEMA, "backup_id": "db-backup-2026-11-18_02-00-00", "started_at": "2026-11-18 02:00",
             "artifact": {"key": "db-backup-2026-11-18_02-00-00.sql.gz"}, "naming": "legacy", "format": "plain",
             "compression": {"method": "gzip"}, "roles": {"skipped": "naming: legacy stores no roles file"},
             "content_hashes": {}}
    man = model.parse(_raw(small), "small")
    assert man.naming == "legacy" and man.format == "plain" and man.compression.algorithm == "gzip"
    assert man.encryption.method == "none" and man.roles.key == "" and man.roles.required == ()
    assert man.tables == () and man.finished_at is None


def test_archive_manifests_of_every_version_read():
    old = {"schema": mf.ARCHIVE_SCHEMA, "archive_id": "site-20260101T000000Z", "name": "site", "files": 1,
           "artifact": {"key": "site/site-20260101T000000Z/site.tar", "size": 3, "sha256": "0" * 64},
           "compression": {"algorithm": "none"}, "encryption": {"method": "none"}}
    man = model.parse(_raw(old), "archive", mf.ARCHIVE_SCHEMA)
    assert isinstance(man, model.ArchiveManifest) and man.files == 1 and man.created_at is None
    man = model.parse(_raw(dict(old, created_at="2026-01-01T00:00:00Z", tree_signature="s"), seal=True), "a", None)
    assert man.tree_signature == "s" and man.created_at == mf.parse_time("2026-01-01T00:00:00Z")


@pytest.mark.parametrize("change, key, want", [
    ({"tables": [{"schema": "public", "name": "users", "rows": "1000"}]}, "tables[0].rows", "an integer"),
    ({"artifact": {"uri": "s3://b/x"}}, "artifact.key", "missing"),
    ({"artifact": "s3://b/x"}, "artifact", "an object"),
    ({"started_at": "yesterday"}, "started_at", "not an ISO 8601 time"),
    ({"roles": {"key": "r", "required": ["a", 7]}}, "roles.required[1]", "a string"),
    ({"encryption": {"method": "gpg", "recipients": "AB"}}, "encryption.recipients", "a list"),
    ({"privileges": {"owners": 5}}, "privileges.owners", "a string"),
    ({"scope": {"schema_only": "no"}}, "scope.schema_only", "true or false"),
    ({"backup_id": None}, "backup_id", "missing"),
])
def test_a_field_of_the_wrong_type_is_damaged_naming_the_key_and_the_fix(change, key, want):
    doc = dict(FIRST, **change)
    with pytest.raises(model.DamagedManifest) as err:
        model.parse(_raw(doc, seal=True), "s3://b/appdb/x/manifest.json of backup x")
    text = str(err.value)
    assert f"'{key}'" in text and want in text, text
    assert "s3://b/appdb/x/manifest.json of backup x" in text and "restore an intact copy" in text
    assert not isinstance(err.value, model.ForeignManifest) and key in err.value.reason


def test_foreign_newer_and_other_kind_manifests_are_named_as_such():
    with pytest.raises(model.ForeignManifest, match="not a Lifeboat manifest .*move it out"):
        model.parse(json.dumps({"schema": "barman/backup-info"}).encode(), "w")
    with pytest.raises(model.ForeignManifest, match="newer Lifeboat's format .*upgrade Lifeboat"):
        model.parse(json.dumps(dict(FIRST, schema="lifeboat/backup-manifest/v2")).encode(), "w")
    with pytest.raises(model.ForeignManifest, match="another kind of Lifeboat set"):
        model.parse(json.dumps({"schema": mf.ARCHIVE_SCHEMA, "archive_id": "a"}).encode(), "w", mf.SCHEMA)
    with pytest.raises(model.DamagedManifest, match="not valid JSON"):
        model.parse(b'{"schema": "lifeboat/backup-', "w")
    with pytest.raises(model.DamagedManifest, match="does not match its content"):
        model.parse(_raw(mf.seal(FIRST)).replace(b'"appdb"', b'"appdc"'), "w")


def test_storage_readers_use_the_typed_model(tmp_path):
    store = LocalStorage(str(tmp_path))
    key = "appdb/appdb-20261122T020000Z/manifest.json"
    store.put_bytes(KEY, b"x")
    mf.write_manifest(store, key, FIRST)
    assert mf.read_backup(store, key).artifact.key == KEY
    assert [r.backup_id for r in mf.iter_backups(store, "appdb")] == ["appdb-20261122T020000Z"]
    # a manifest with a field of the wrong type: not listed as a backup, named as damaged with the key
    bad = "appdb/appdb-20261123T020000Z/manifest.json"
    mf.write_manifest(store, bad, dict(FIRST, backup_id="appdb-20261123T020000Z",
                                       tables=[{"schema": "public", "name": "users", "rows": None}]))
    assert [r.backup_id for r in mf.iter_backups(store, "appdb")] == ["appdb-20261122T020000Z"]
    damaged = mf.damaged_manifests(store, "appdb")
    assert [d.backup_id for d in damaged] == ["appdb-20261123T020000Z"] and "tables[0].rows" in damaged[0].reason
