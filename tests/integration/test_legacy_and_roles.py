"""Older-procedure dumps nobody here wrote, roles and GRANTs, newer servers: verify and restore against the lab.

The legacy dumps are made here with the stock tools of that procedure (``pg_dump DB | gzip``), by pg_dump 15
and pg_dump 18, with ``--clean --if-exists``, ``--create``, ``--no-owner``, owners and GRANTs naming roles, an
extension; then broken ones. Every role and database has a unique name and is dropped in teardown.
"""
from __future__ import annotations

import datetime as dt
import gzip
import os
import subprocess
import tempfile

import psycopg
import pytest
from testlib import unique
from psycopg import sql
from restore_helpers import backup_with_engine, make_backup, storage_for

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as engine
from ansible.module_utils.lifeboat import verify as vf
from ansible.module_utils.lifeboat.errors import LifeboatError, RestoreError, VersionMismatch
from ansible.module_utils.lifeboat.pgconn import PgTarget

T0 = dt.datetime(2026, 11, 1, 2, 0, 0, tzinfo=dt.UTC)


# --------------------------------------------------------------------------- helpers

def conn_to(srv: dict, database: str = "postgres"):
    return psycopg.connect(host=srv["host"], port=srv["port"], user=srv["admin_user"],
                           password=srv["admin_password"], dbname=database, autocommit=True)


def admin_for(srv: dict) -> engine.Admin:
    return engine.Admin(PgTarget(host=srv["host"], port=srv["port"], user=srv["admin_user"],
                                 password=srv["admin_password"], database="postgres"))


def keys(lab) -> engine.DecryptKeys:
    return engine.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"], age_identity_file=lab["age"]["identity_file"])


def pg_dump(srv: dict, bin_dir: str, database: str, *flags: str) -> bytes:
    """``pg_dump [flags] DB`` as the older procedure ran it (password through a 0600 PGPASSFILE, never argv)."""
    with tempfile.TemporaryDirectory() as tmp:
        passfile = os.path.join(tmp, "pgpass")
        with open(os.open(passfile, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
            fh.write(f"*:*:*:*:{srv['admin_password']}\n")
        env = dict(os.environ, PGHOST=srv["host"], PGPORT=str(srv["port"]), PGUSER=srv["admin_user"],
                   PGPASSFILE=passfile)
        return subprocess.run([f"{bin_dir}/pg_dump", *flags, database], env=env, capture_output=True,
                              check=True).stdout


def put_legacy(storage, data: bytes, when: dt.datetime, compress: bool = True) -> str:
    key = mf.legacy_name(when)
    storage.put_bytes(key, gzip.compress(data) if compress else data)
    return key


def drop_db(srv: dict, name: str) -> None:
    with conn_to(srv) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def dbs_like(srv: dict, pattern: str) -> list[str]:
    with conn_to(srv) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
                                           (pattern,)).fetchall()]


def restore(srv: dict, lab, storage, database: str, **kw) -> dict:
    req = engine.Request(database=database, confirm=database, safety_snapshot=False, **kw)
    return engine.run(req, storage, admin_for(srv), keys(lab))


def rows(srv: dict, database: str, query: str) -> list[tuple]:
    with conn_to(srv, database) as conn:
        return conn.execute(query).fetchall()


# owners and privileges of everything in the app schema, the schema itself, and the database's owner
_ACL = "(SELECT coalesce(string_agg(x::text, ',' ORDER BY x::text), '') FROM unnest({}) x)"  # order-free
ACL_SQL = f"""
SELECT 'class ' || c.relname, pg_get_userbyid(c.relowner), {_ACL.format('c.relacl')}
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app'
UNION ALL SELECT 'schema ' || nspname, pg_get_userbyid(nspowner), {_ACL.format('nspacl')}
  FROM pg_namespace WHERE nspname = 'app'
UNION ALL SELECT 'function ' || p.proname, pg_get_userbyid(p.proowner), {_ACL.format('p.proacl')}
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'app'
UNION ALL SELECT 'default acl', pg_get_userbyid(d.defaclrole), {_ACL.format('d.defaclacl')} FROM pg_default_acl d
UNION ALL SELECT 'database', pg_get_userbyid(datdba), {_ACL.format('datacl')} FROM pg_database
  WHERE datname = current_database()
ORDER BY 1
"""


@pytest.fixture
def world(pg, lab, scratch_bucket):
    """Two unique roles, a source database on PostgreSQL 15 whose objects they own / are granted, with an
    extension; a bucket. Everything created here (also databases created by restores) is dropped afterwards."""
    bucket, endpoint = scratch_bucket
    tag = unique("lg").replace("-", "_")
    owner, reader, db = f"{tag}_owner", f"{tag}_reader", f"{tag}_src"
    pg15 = pg
    try:
        with conn_to(pg15) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(owner)))
            # database-level properties: a --create dump carries them as statements naming the dumped database
            conn.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '8MB'").format(sql.Identifier(db)))
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'legacy source'").format(sql.Identifier(db)))
            conn.execute(sql.SQL("GRANT CONNECT, TEMP ON DATABASE {} TO {}").format(sql.Identifier(db),
                                                                                    sql.Identifier(reader)))
        with conn_to(pg15, db) as conn:
            conn.execute(sql.SQL("""
                CREATE EXTENSION citext;
                CREATE SCHEMA app AUTHORIZATION {o};
                SET ROLE {o};
                ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO {r};
                CREATE TABLE app.users (id serial PRIMARY KEY, email public.citext NOT NULL UNIQUE);
                CREATE TABLE app.orders (id bigserial PRIMARY KEY, user_id int NOT NULL REFERENCES app.users,
                                         note text);
                CREATE FUNCTION app.n_users() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM app.users';
                INSERT INTO app.users (email) SELECT 'User' || g || '@Example.com' FROM generate_series(1, 300) g;
                INSERT INTO app.orders (user_id, note) SELECT 1 + g % 300, 'o' || g FROM generate_series(1, 900) g;
                GRANT USAGE ON SCHEMA app TO {r};
                GRANT INSERT, UPDATE ON app.orders TO {r};
                REVOKE EXECUTE ON FUNCTION app.n_users() FROM PUBLIC;
                GRANT EXECUTE ON FUNCTION app.n_users() TO {r};
                RESET ROLE;
            """).format(o=sql.Identifier(owner), r=sql.Identifier(reader)))
        yield {"db": db, "owner": owner, "reader": reader, "tag": tag, "bucket": bucket,
               "storage": storage_for(bucket, endpoint), "endpoint": endpoint}
    finally:
        for name in dbs_like(pg15, tag + "%"):
            drop_db(pg15, name)
        with conn_to(pg15) as conn:
            for role in (owner, reader):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def pg18(lab):
    """The lab's PostgreSQL 18 server: a 'fresh server' where the source's roles do not exist."""
    srv = lab["postgres18"]
    made: list[str] = []
    yield srv, made
    for prefix in made:
        for name in dbs_like(srv, prefix + "%"):
            drop_db(srv, name)


def expected_counts() -> dict[str, int]:
    return {"app.users": 300, "app.orders": 900}


def app_counts(result: dict) -> dict[str, int]:
    return {k: v for k, v in result["row_counts"].items() if k.startswith("app.")}


# --------------------------------------------------------------------------- pg_dump 15 / 18 plain dumps

@pytest.mark.parametrize("dumper", ["15", "18"])
def test_plain_dump_by_pg_dump_15_and_18_verifies_and_restores_with_owners(pg, lab, world, dumper):
    """pg_dump 18 of a PG15 server writes \\restrict and ``SET transaction_timeout`` (unknown to PG15)."""
    storage, db = world["storage"], world["db"]
    bin_dir = pg["bin_dir"] if dumper == "15" else lab["postgres18"]["bin_dir"]
    dump = pg_dump(pg, bin_dir, db)
    assert b"\\restrict " in dump
    assert (b"SET transaction_timeout" in dump) == (dumper == "18")
    before_acl = rows(pg, db, ACL_SQL)
    key = put_legacy(storage, dump, T0)

    ref = mf.select_backup(storage, db, backup_id=key)
    res = vf.verify_one(storage, ref, keys(lab), admin_for(pg), vf.Options(record=False))
    assert res.outcome == "passed", res.failures()
    assert res.row_counts == {**res.row_counts, **expected_counts()}
    restore_check = next(c for c in res.checks if c["name"] == "restore")
    assert ("transaction_timeout" in restore_check["detail"]) == (dumper == "18")

    with conn_to(pg, db) as conn:  # damage, then restore (swap)
        conn.execute("DELETE FROM app.orders WHERE id > 100")
    out = restore(pg, lab, storage, db, backup_id=key)
    assert out["legacy"] is True and app_counts(out) == expected_counts()
    assert rows(pg, db, ACL_SQL) == before_acl  # owners, GRANTs, default privileges as before
    assert rows(pg, db, "SELECT email = 'USER1@EXAMPLE.COM' FROM app.users WHERE id = 1") == [(True,)]  # citext
    assert dbs_like(pg, db + "_lifeboat_old_%")  # the damaged one is kept
    if dumper == "18":
        assert any("SET transaction_timeout" in w for w in out["warnings"]), out["warnings"]


def test_dump_of_a_pg18_server_into_pg15_is_refused_naming_the_versions(pg, lab, world, pg18):
    srv18, made = pg18
    name = world["tag"] + "_18src"
    made.append(world["tag"])
    with conn_to(srv18) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with conn_to(srv18, name) as conn:
        conn.execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)")
    storage, db = world["storage"], world["db"]
    key = put_legacy(storage, pg_dump(srv18, srv18["bin_dir"], name), T0)
    before = rows(pg, db, "SELECT count(*) FROM app.orders")

    with pytest.raises(VersionMismatch) as err:
        restore(pg, lab, storage, db, backup_id=key)
    msg = str(err.value)
    assert "PostgreSQL 18" in msg and "PostgreSQL 15" in msg and key.removesuffix(".sql.gz") in msg, msg
    assert rows(pg, db, "SELECT count(*) FROM app.orders") == before
    assert dbs_like(pg, db + "_lifeboat_%") == []

    res = vf.verify_one(storage, mf.select_backup(storage, db, backup_id=key), keys(lab), admin_for(pg),
                        vf.Options(record=False))
    assert res.outcome == "failed" and any("PostgreSQL 18" in f for f in res.failures()), res.failures()
    # the same dump restores onto a PostgreSQL 18 server
    target = world["tag"] + "_on18"
    out = restore(srv18, lab, storage, target, backup_id=key)
    assert out["row_counts"] == {"public.t": 10}


# --------------------------------------------------------------------------- --clean / --create / --no-owner

@pytest.mark.parametrize("flags", [["--clean", "--if-exists"], ["--create"], ["--clean", "--if-exists", "--create"]],
                         ids=["clean", "create", "clean-create"])
def test_clean_and_create_dumps_restore_into_the_new_database_never_the_live_one(pg, lab, world, flags):
    """A --create dump says DROP DATABASE / CREATE DATABASE <dumped name> and \\connect <dumped name>: run as
    written, it would drop the live database (or restore into it) instead of the new one."""
    storage, db = world["storage"], world["db"]
    dump = pg_dump(pg, pg["bin_dir"], db, *flags)
    key = put_legacy(storage, dump, T0)
    with conn_to(pg, db) as conn:  # the live database moves on after the dump
        conn.execute("INSERT INTO app.orders (user_id, note) VALUES (1, 'after the dump')")

    res = vf.verify_one(storage, mf.select_backup(storage, db, backup_id=key), keys(lab), admin_for(pg),
                        vf.Options(record=False))
    assert res.outcome == "passed", res.failures()
    assert res.row_counts["app.orders"] == 900
    assert rows(pg, db, "SELECT count(*) FROM app.orders") == [(901,)]  # the drill never touched the source

    out = restore(pg, lab, storage, db, backup_id=key)
    assert app_counts(out) == expected_counts()
    assert rows(pg, db, "SELECT count(*) FROM app.orders") == [(900,)]
    old = dbs_like(pg, db + "_lifeboat_old_%")
    assert len(old) == 1 and rows(pg, old[0], "SELECT count(*) FROM app.orders") == [(901,)]
    assert rows(pg, db, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()") \
        == [(world["owner"],)]
    if "--create" in flags:
        assert any("CREATE DATABASE" in w and "\\connect" in w for w in out["warnings"]), out["warnings"]


def test_dump_naming_missing_roles_onto_a_fresh_server(pg, lab, world, pg18):
    """The incident case: the old server is gone, the new one has none of its roles."""
    srv18, made = pg18
    made.append(world["tag"])
    storage, db = world["storage"], world["db"]
    with_owners = put_legacy(storage, pg_dump(pg, pg["bin_dir"], db), T0)
    no_owner = put_legacy(storage, pg_dump(pg, pg["bin_dir"], db, "--no-owner"), T0 + dt.timedelta(hours=1))
    # --create: its \connect lines name a database this server does not have
    bare = put_legacy(storage, pg_dump(pg, pg["bin_dir"], db, "--no-owner", "--no-privileges", "--create"),
                      T0 + dt.timedelta(hours=2))
    target = world["tag"] + "_fresh"
    for key, role in ((with_owners, world["owner"]), (no_owner, world["reader"])):
        with pytest.raises(RestoreError) as err:
            restore(srv18, lab, storage, target, backup_id=key)
        msg = str(err.value)
        assert f'role "{role}" does not exist' in msg and "psql:<stdin>:" in msg, msg
        assert "create the dump's roles first" in msg, msg
        assert dbs_like(srv18, world["tag"] + "%") == []  # nothing half-restored is left
    res = vf.verify_one(storage, mf.select_backup(storage, db, backup_id=bare), keys(lab), admin_for(srv18),
                        vf.Options(record=False))
    assert res.outcome == "passed", res.failures()
    out = restore(srv18, lab, storage, target, backup_id=bare)
    assert app_counts(out) == expected_counts()
    assert dbs_like(srv18, db) == []  # nothing was created under the dumped database's name


# --------------------------------------------------------------------------- broken files

def test_broken_legacy_files_fail_clearly_and_leave_nothing(pg, lab, world):
    storage, db = world["storage"], world["db"]
    good = pg_dump(pg, pg["bin_dir"], db)
    packed = gzip.compress(good)
    lines = good.split(b"\n")
    half = next(i for i, ln in enumerate(lines)
                if ln.startswith(b"ALTER TABLE ONLY") and b"PRIMARY KEY" in lines[i + 1])
    assert b"COPY app.orders" in b"\n".join(lines[:half])
    # an error half-way: after the tables' data, before the constraints, a statement on a table that does not exist
    bad_sql = b"\n".join(lines[:half] + [b"ALTER TABLE app.no_such_table ADD COLUMN x int;"] + lines[half:])
    cases = {
        "truncated": (packed[: len(packed) // 2], False, ("truncated", "damaged")),
        "not gzip": (b"this is not gzip at all\n" * 50, False, ("gzip",)),
        "empty": (b"", False, ("empty", "gzip", "truncated")),
        "empty gzip": (b"", True, ("does not start like a pg_dump sql script", "empty")),
        "sql error": (bad_sql, True, ("no_such_table",)),
    }
    before = rows(pg, db, "SELECT count(*) FROM app.orders")
    for i, (label, (data, compress, words)) in enumerate(cases.items()):
        key = put_legacy(storage, data, T0 + dt.timedelta(minutes=i), compress=compress)
        ref = mf.select_backup(storage, db, backup_id=key)
        integ = vf.verify_one(storage, ref, keys(lab), None, vf.Options(level="integrity", record=False))
        if label != "sql error":  # the SQL error is found by the drill only: the file itself is complete
            assert integ.outcome == "failed", (label, integ.checks)
            assert any(w in " ".join(integ.failures()).lower() for w in words), (label, integ.failures())
        drill = vf.verify_one(storage, ref, keys(lab), admin_for(pg), vf.Options(record=False))
        assert drill.outcome == "failed", (label, drill.checks)
        with pytest.raises(LifeboatError) as err:
            restore(pg, lab, storage, db, backup_id=key)
        msg = str(err.value).lower()
        assert ref.backup_id.lower() in msg and any(w in msg for w in words), (label, msg)
        if label == "sql error":
            assert isinstance(err.value, RestoreError)
            line = bad_sql[: bad_sql.index(b"no_such_table")].count(b"\n") + 1
            assert f"psql:<stdin>:{line}:" in msg, msg  # the failing line of the dump
        assert rows(pg, db, "SELECT count(*) FROM app.orders") == before, label
        assert dbs_like(pg, db + "_lifeboat_%") == [], label


# --------------------------------------------------------------------------- selection

def test_selection_among_legacy_dumps_and_lifeboat_backups(pg, lab, world):
    storage, db = world["storage"], world["db"]
    dump = pg_dump(pg, pg["bin_dir"], db)
    h = dt.timedelta(hours=1)
    l1 = put_legacy(storage, dump, T0)
    own2 = make_backup(pg, lab, storage, db, when=T0 + 2 * h)["backup_id"]
    l3 = put_legacy(storage, dump, T0 + 3 * h)
    own4 = make_backup(pg, lab, storage, db, when=T0 + 4 * h)["backup_id"]
    incomplete = make_backup(pg, lab, storage, db, when=T0 + 5 * h)
    storage.delete(mf.layout_for(db, T0 + 5 * h, "custom", "zstd", "gpg").manifest_key)
    l6_elsewhere = "archive/" + mf.legacy_name(T0 + 6 * h)  # not at the root: not a backup of this prefix
    storage.put_bytes(l6_elsewhere, gzip.compress(dump))

    def bid(key: str) -> str:
        return mf.select_backup(storage, db, backup_id=key).backup_id

    pick = engine.choose_backup
    assert pick(storage, db).ref.backup_id == own4  # 06:00, newer than the legacy dumps; 07:00 is incomplete
    assert pick(storage, db, before="2026-11-01 06:00").ref.backup_id == bid(l3)  # 05:00
    assert pick(storage, db, before="2026-11-01T05:00:00Z").ref.backup_id == own2  # 04:00 (strictly before)
    assert pick(storage, db, before="2026-11-01 03:59").ref.backup_id == bid(l1)  # 02:00
    assert pick(storage, db, backup_id=l3).ref.legacy is True
    assert pick(storage, db, backup_id=bid(l3)).ref.artifact_key == l3
    assert pick(storage, db, backup_id=own2).ref.legacy is False
    assert incomplete["backup_id"] not in [r.backup_id for r in mf.iter_backups(storage, db)]
    with pytest.raises(LifeboatError):
        pick(storage, db, before="2026-11-01 01:00")


# --------------------------------------------------------------------------- Lifeboat's own backups and roles

def test_own_backup_keeps_owners_and_grants_and_missing_roles_fail_clearly(pg, lab, world, pg18):
    storage, db = world["storage"], world["db"]
    srv18, made = pg18
    made.append(world["tag"])
    with conn_to(pg) as conn:  # the backup user needs to connect; the lab's backup role reads everything
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db),
                                                                          sql.Identifier(pg["backup_user"])))
    before_acl = rows(pg, db, ACL_SQL)
    manifest = backup_with_engine(pg, lab, storage, world["bucket"], world["endpoint"], db)
    with conn_to(pg, db) as conn:
        conn.execute("DELETE FROM app.orders; ALTER TABLE app.users OWNER TO CURRENT_USER")
    out = restore(pg, lab, storage, db, backup_id=manifest["backup_id"])
    assert app_counts(out) == expected_counts()
    assert rows(pg, db, ACL_SQL) == before_acl

    # onto a server without the roles: fails before anything is swapped, names the role and both remedies
    target = world["tag"] + "_own18"
    with pytest.raises(RestoreError) as err:
        restore(srv18, lab, storage, target, backup_id=manifest["backup_id"], source_database=db)
    msg = str(err.value)
    # every missing role is named at once (not only the first), before any data moves
    assert world["owner"] in msg and world["reader"] in msg and "Nothing was restored" in msg, msg
    assert "create_roles: true" in msg and "no_owner: true" in msg, msg
    assert dbs_like(srv18, world["tag"] + "%") == []
    out = restore(srv18, lab, storage, target, backup_id=manifest["backup_id"], no_owner=True, source_database=db)
    assert app_counts(out) == expected_counts()
    assert rows(srv18, target, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'users'") \
        == [(srv18["admin_user"],)]


def test_partial_restore_of_one_table_from_a_legacy_dump(pg, lab, world):
    storage, db = world["storage"], world["db"]
    key = put_legacy(storage, pg_dump(pg, pg["bin_dir"], db, "--clean", "--if-exists", "--create"), T0)
    with conn_to(pg, db) as conn:
        conn.execute("DELETE FROM app.orders WHERE id % 2 = 0; INSERT INTO app.users (email) VALUES ('new@x')")
    out = restore(pg, lab, storage, db, backup_id=key, mode="partial", tables=["app.orders"])
    assert out["row_counts"] == {"app.orders": 900}
    assert rows(pg, db, "SELECT count(*) FROM app.orders") == [(900,)]
    assert rows(pg, db, "SELECT count(*) FROM app.users") == [(301,)]  # other tables untouched
    assert dbs_like(pg, out["staging_database"]) == []  # the staging database is dropped


def test_no_owner_on_a_plain_dump_is_reported_not_silently_ignored(pg, lab, world):
    """psql cannot skip OWNER/GRANT of a plain dump: asking for no_owner gets a warning saying so."""
    storage, db = world["storage"], world["db"]
    before_acl = rows(pg, db, ACL_SQL)
    key = put_legacy(storage, pg_dump(pg, pg["bin_dir"], db), T0)
    out = restore(pg, lab, storage, db, backup_id=key, no_owner=True)
    assert any("no_owner: true does not apply" in w and "plain SQL dump" in w for w in out["warnings"]), \
        out["warnings"]
    assert rows(pg, db, ACL_SQL) == before_acl  # owners and GRANTs ran as written
    assert app_counts(out) == expected_counts()
