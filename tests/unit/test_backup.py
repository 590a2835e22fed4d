"""Backup engine pieces that need no server: validation, pg_dump argv, part sizes, restore instructions."""
from __future__ import annotations

import datetime as dt
import shlex

import pytest

from ansible.module_utils.lifeboat import backup, crypto, manifest, pipeline
from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import MIB, LocalStorage, S3Storage

SECRET = "pa:ss w0rd"


def req(**kw) -> backup.BackupRequest:
    base = dict(target=PgTarget(host="db.example", port=5432, user="u", password=SECRET, database="appdb"),
                destination="s3://bkt/db")
    base.update(kw)
    return backup.BackupRequest(**base)


@pytest.mark.parametrize("kw, match", [
    (dict(schema_only=True, data_only=True), "mutually exclusive"),
    (dict(naming="legacy"), "require format: plain"),
    (dict(naming="legacy", format="plain", compression="zstd"), "compression: gzip"),
    (dict(naming="legacy", format="plain", compression="gzip", encryption=crypto.EncryptionSpec("age", ["x"])),
     "readable with gunzip"),
    (dict(format="tar"), "format"),
    (dict(part_size_mb=4), "below S3's minimum"),
    (dict(jobs=0), "jobs"),
])
def test_validate_names_the_option(kw, match):
    with pytest.raises(ConfigError, match=match):
        backup.validate(req(**kw))


def test_legacy_plain_gzip_is_valid_and_named_like_the_old_procedure():
    r = req(naming="legacy", format="plain", compression="gzip")
    backup.validate(r)
    lay = backup._layout(r, dt.datetime(2026, 11, 22, 3, 4, 5, tzinfo=dt.UTC), "none")
    assert lay.artifact_key == "db-backup-2026-11-22_03-04-05.sql.gz"
    assert lay.manifest_key == "db-backup-2026-11-22_03-04-05.sql.gz.manifest.json"


def test_pg_dump_argv_has_snapshot_no_compression_and_no_secret():
    r = req(include_tables=["public.users"], exclude_schemas=["audit"], schema_only=True)
    argv = backup._pg_dump_argv(r, "/usr/bin/pg_dump", "00000003-0000001B-1", None)
    assert "--snapshot=00000003-0000001B-1" in argv and "--format=c" in argv and "--compress=0" in argv
    assert "--table=public.users" in argv and "--exclude-schema=audit" in argv and "--schema-only" in argv
    assert "--no-password" in argv
    assert not any(SECRET in a or "appdb" in a for a in argv)  # the database comes from PGDATABASE
    d = backup._pg_dump_argv(req(format="directory", jobs=3), "pg_dump", "s", "/tmp/x/appdb")
    assert "--format=d" in d and "--jobs=3" in d and "--file=/tmp/x/appdb" in d
    p = backup._pg_dump_argv(req(format="plain"), "pg_dump", "s", None)
    assert "--format=p" in p and "--compress=0" not in p


def test_part_size_grows_for_huge_databases():
    r = req()
    assert backup.part_size_for(r) == 8 * MIB
    assert backup.part_size_for(r, 10 * 1024 ** 3) == 8 * MIB
    big = backup.part_size_for(r, 2 * 1024 ** 4)  # 2 TiB
    assert big % MIB == 0 and 2 * 1024 ** 4 / big <= 9000


def _instructions(r: backup.BackupRequest, storage, enc_method="none"):
    enc = crypto.Encryptor()
    enc.method = enc_method
    enc.mode = "public-key"
    enc.recipients = ["ABCD"]
    comp = pipeline.Compression(r.compression)
    lay = backup._layout(r, dt.datetime(2026, 11, 22, 2, 0, 0, tzinfo=dt.UTC), enc_method)
    return backup.restore_instructions(r, storage, lay, comp, enc)


def test_restore_command_custom_s3_gpg():
    r = req(s3=S3Settings(endpoint="http://127.0.0.1:40106", region="eu-west-1", access_key="AK", secret_key="SK"))
    st = S3Storage("s3://bkt/db", r.s3, client=object())
    out = _instructions(r, st, "gpg")
    assert out["command"] == (
        "set -o pipefail; aws --endpoint-url http://127.0.0.1:40106 --region eu-west-1 s3 cp "
        "s3://bkt/db/appdb/appdb-20261122T020000Z/appdb.dump.zst.gpg - | gpg --decrypt | zstd -d | "
        'pg_restore --exit-on-error -d "$TARGET_DB"')
    # owners and privileges are kept; the no-owner form is a labelled alternative that says what it loses
    assert out["no_owner_command"].endswith('pg_restore --no-owner --no-privileges --exit-on-error -d "$TARGET_DB"')
    assert "LOSES owners and privileges" in out["notes"]
    assert "ABCD" in out["notes"] and "PGPASSFILE" in out["notes"]
    text = repr(out)
    assert "SK" not in text and SECRET not in text


def test_restore_command_plain_local_age_and_directory(tmp_path):
    st = LocalStorage(str(tmp_path / "b b"))
    out = _instructions(req(format="plain", compression="gzip", destination=str(tmp_path)), st, "age")
    assert out["command"].startswith("set -o pipefail; cat '")  # quoted path with a space
    assert '| age -d -i "$AGE_IDENTITY_FILE" | gzip -d | psql -X -q -v ON_ERROR_STOP=1 -d "$TARGET_DB"' \
        in out["command"]
    out = _instructions(req(format="directory", jobs=4, compression="none"), st)
    assert "tar -x -C \"$d\"" in out["command"] and "pg_restore --exit-on-error -j 4" \
        in out["command"] and '"$d/appdb"' in out["command"]
    assert manifest.FORMAT_EXT["directory"] == "tar"


def test_restore_steps_create_roles_then_a_database_with_the_recorded_locale_and_properties():
    r = req(s3=S3Settings(endpoint="http://127.0.0.1:40106", region="eu-west-1", access_key="AK", secret_key="SK"))
    st = S3Storage("s3://bkt/db", r.s3, client=object())
    lay = manifest.layout_for("appdb", dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.UTC), "custom", "zstd", "gpg")
    comp = pipeline.Compression("zstd").resolve()
    enc = crypto.Encryptor()
    enc.method, enc.mode, enc.recipients = "gpg", "public-key", ["ABCD"]
    props = {"encoding": "UTF8", "locale_provider": "libc", "collate": "C", "ctype": "C", "owner": 'app "owner"',
             "default_acl": False, "acl": [["PUBLIC", "CONNECT", False], ["reader", "TEMPORARY", False]],
             "settings": ["search_path=public, extensions", "app.settings.x=it's"],
             "role_settings": [["reader", "work_mem=5MB"]], "comment": "shop's"}
    out = backup.restore_instructions(r, st, lay, comp, enc, props, {"key": "appdb/x/roles.sql.zst.gpg"})
    steps = out["steps"]
    assert steps[0].endswith("roles.sql.zst.gpg - | gpg --decrypt | zstd -d > roles.sql")
    assert steps[1] == "psql -X -d postgres -f roles.sql"
    assert steps[3] == ('createdb --template=template0 --encoding=UTF8 --locale-provider=libc --lc-collate=C '
                        '--lc-ctype=C "$TARGET_DB"')
    printf, _, psql = steps[4].partition(" | ")
    assert shlex.split(printf)[:2] == ["printf", "%s\\n"]
    assert shlex.split(printf)[2:] == [
        'ALTER DATABASE :"TARGET_DB" OWNER TO "app ""owner""";',
        'REVOKE ALL ON DATABASE :"TARGET_DB" FROM PUBLIC;',
        'GRANT CONNECT ON DATABASE :"TARGET_DB" TO PUBLIC;',
        'GRANT TEMPORARY ON DATABASE :"TARGET_DB" TO "reader";',
        'ALTER DATABASE :"TARGET_DB" SET "search_path" = \'public\', \'extensions\';',
        'ALTER DATABASE :"TARGET_DB" SET "app.settings.x" = \'it\'\'s\';',
        'ALTER ROLE "reader" IN DATABASE :"TARGET_DB" SET "work_mem" = \'5MB\';',
        'COMMENT ON DATABASE :"TARGET_DB" IS \'shop\'\'s\';']
    assert psql == 'psql -X -q -v ON_ERROR_STOP=1 -v TARGET_DB="$TARGET_DB" -d postgres -f -'
    assert steps[5] == 'pg_restore --exit-on-error -d "$TARGET_DB" appdb.dump'
    assert out["roles_command"].endswith("| psql -X -q -d postgres -f -")


@pytest.mark.parametrize("host, port, refused", [
    ("aws-0-eu-central-1.pooler.supabase.com", 6543, True),
    ("AWS-0-eu-central-1.Pooler.Supabase.com.", 6543, True),
    ("aws-0-eu-central-1.pooler.supabase.com", 5432, False),   # the session pooler
    ("db.abcdefghijklmnop.supabase.co", 6543, False),          # not the pooler's host
])
def test_supabase_transaction_pooler_is_refused_naming_the_ones_that_work(host, port, refused, tmp_path):
    """pg_dump cannot import the snapshot through the transaction pooler: named before any connection."""
    r = req(target=PgTarget(host=host, port=port, user="postgres.ref", password=SECRET, database="postgres"),
            destination=str(tmp_path), lock_wait_s=0)
    if refused:
        with pytest.raises(ConfigError, match="transaction pooler.*port 5432.*direct connection") as exc:
            backup.run(r)
        assert SECRET not in str(exc.value)
    else:
        from ansible.module_utils.lifeboat import supabase
        supabase.refuse_transaction_pooler(r.target)
