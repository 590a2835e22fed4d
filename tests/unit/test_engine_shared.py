"""Unit tests of the shared engine pieces that need no server."""
from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pytest
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.errors import ConfigError, IntegrityError, NotFound
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import mask_url, parse_s3_url
from ansible.module_utils.lifeboat.storage import LocalStorage, open_storage

UTC = dt.timezone.utc


def test_parse_s3_url_and_errors():
    loc = parse_s3_url("s3://lifeboat-backups/db/prod/")
    assert (loc.bucket, loc.prefix) == ("lifeboat-backups", "db/prod")
    assert loc.key("appdb", "x.json") == "db/prod/appdb/x.json"
    assert str(parse_s3_url("s3://bucket")) == "s3://bucket"
    with pytest.raises(ConfigError, match="not an s3:// URL"):
        parse_s3_url("https://bucket/x")
    with pytest.raises(ConfigError, match="not a valid bucket name"):
        parse_s3_url("s3://UPPER/x")


def test_mask_url_hides_password():
    masked = mask_url("postgresql://postgres.abc:s3cr%40t@db.example.com:5432/postgres")
    assert "s3cr" not in masked and "***" in masked and "db.example.com:5432" in masked
    assert mask_url("s3://bucket/prefix") == "s3://bucket/prefix"


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


def test_layout_lifeboat_and_legacy_names():
    when = dt.datetime(2026, 11, 20, 12, 0, 5, tzinfo=UTC)
    lay = mf.layout_for("appdb", when, "custom", "zstd", "gpg", prefix="db")
    assert lay.backup_id == "appdb-20261120T120005Z"
    assert lay.artifact_key == "db/appdb/appdb-20261120T120005Z/appdb.dump.zst.gpg"
    assert lay.manifest_key == "db/appdb/appdb-20261120T120005Z/manifest.json"
    assert lay.verification_key(when) == "db/appdb/appdb-20261120T120005Z/verify-20261120T120005Z.json"
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


@pytest.mark.parametrize("pattern,expected", [
    ("users", (None, "users")),
    ("public.Users", ("public", "users")),
    ('"Audit Log"', (None, "Audit Log")),
    ('app."Mixed.Case"', ("app", "Mixed.Case")),
    ("analytics.*", ("analytics", "*")),
])
def test_table_patterns_follow_psql_rules(pattern, expected):
    assert pgmeta._split_pattern(pattern) == expected


def test_pg_target_from_dsn_and_child_env_keeps_password_out_of_env():
    t = PgTarget.from_options(
        dsn="postgresql://postgres.ref:p%40ss:word@db.example.com:6543/postgres?sslmode=require")
    assert (t.host, t.port, t.user, t.database) == ("db.example.com", 6543, "postgres.ref", "postgres")
    assert t.password == "p@ss:word"
    assert "p@ss" not in t.describe() and "p@ss" not in repr(t)
    with t.child_env() as env:
        assert env["PGHOST"] == "db.example.com" and env["PGSSLMODE"] == "require"
        assert "PGPASSWORD" not in env
        assert not any("p@ss" in v for v in env.values())
        passfile = env["PGPASSFILE"]
        assert stat.S_IMODE(os.stat(passfile).st_mode) == 0o600
        assert open(passfile).read() == "*:*:*:*:p@ss\\:word\n"
    assert not os.path.exists(passfile), "the password file is removed afterwards"
    with pytest.raises(ConfigError, match="database"):
        PgTarget.from_options(host="h", user="u")
    with pytest.raises(ConfigError, match="not a port number|cannot be parsed") as err:
        PgTarget.from_options(dsn="postgresql://u:secretpw@h:notaport/db")
    assert "secretpw" not in str(err.value)
