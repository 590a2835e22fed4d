"""A restore gives back what was backed up, not only the row counts (issue 10).

Locale and encoding (stored generated columns recompute under another locale), the database's owner, grants,
settings and comment in a NEW database, the roles a backup needs on a fresh server, the stock-tool command that
keeps owners and privileges, a PostgreSQL 15 backup drilled on 18. Every role, database and bucket is uniquely
named and dropped afterwards (the shared lab's servers are used by others at the same time).
"""
from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from restore_helpers import storage_for

from ansible.module_utils.lifeboat import backup, crypto
from ansible.module_utils.lifeboat import restore as engine
from ansible.module_utils.lifeboat.errors import RestoreError
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings

NAMES = ["Ärger", "ÖLFASS", "Ünïcödé Straße", "ΣΊΣΥΦΟΣ", "plain ASCII", "ÇA VA"]


def tag() -> str:
    return uuid.uuid4().hex[:8]


def connect(server: dict, database: str = "postgres"):
    return psycopg.connect(host=server["host"], port=server["port"], user=server["admin_user"],
                           password=server["admin_password"], dbname=database, autocommit=True)


def target(server: dict, database: str) -> PgTarget:
    return PgTarget(host=server["host"], port=server["port"], user=server["admin_user"],
                    password=server["admin_password"], database=database)


def admin_for(server: dict) -> engine.Admin:
    return engine.Admin(target(server, "postgres"))


def make_backup(server: dict, lab: dict, database: str, bucket: str, endpoint: dict, **extra) -> dict:
    req = backup.BackupRequest(
        target=target(server, database), destination=f"s3://{bucket}/db",
        encryption=crypto.EncryptionSpec("gpg", [lab["gpg"]["public_key_file"]]),
        s3=S3Settings(endpoint=endpoint["endpoint"], region=endpoint["region"], access_key=endpoint["access_key"],
                      secret_key=endpoint["secret_key"]), **extra)
    return backup.run(req)["manifest"]


def keys(lab: dict) -> engine.DecryptKeys:
    return engine.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"])


def drop(server: dict, databases: list[str], roles: list[str]) -> None:
    with connect(server) as conn:
        for db in databases:
            for (name,) in conn.execute("SELECT datname FROM pg_database WHERE left(datname, %s) = %s",
                                        (len(db), db)).fetchall():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def generated_values(server: dict, database: str) -> list[tuple]:
    with connect(server, database) as conn:
        return conn.execute("SELECT id, name, low, tsv::text FROM people ORDER BY id").fetchall()


def db_state(server: dict, database: str) -> dict:
    with connect(server) as conn:
        row = conn.execute(
            "SELECT datcollate, datctype, pg_encoding_to_char(encoding), pg_get_userbyid(datdba), "
            "shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (database,)).fetchone()
        acl = conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type "
            "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s ORDER BY 1, 2", (database,)).fetchall()
        settings = conn.execute(
            "SELECT s.setrole <> 0, s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = "
            "s.setdatabase WHERE d.datname = %s ORDER BY 1", (database,)).fetchall()
    return {"collate": row[0], "ctype": row[1], "encoding": row[2], "owner": row[3], "comment": row[4],
            "acl": acl, "settings": [(r, sorted(c)) for r, c in settings]}


@pytest.fixture
def c_locale_source(pg, lab, scratch_bucket):
    """A database created with LOCALE 'C' on the lab's PostgreSQL 15 (whose default is C.UTF-8): stored generated
    columns (lower() of non-ASCII names, a tsvector), an owner role, grants, settings and a comment."""
    t = tag()
    name, owner, reader = f"lbfid_c_{t}", f"lbfid_owner_{t}", f"lbfid_reader_{t}"
    bucket, endpoint = scratch_bucket
    try:
        with connect(pg) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 LOCALE 'C'").format(
                sql.Identifier(name), sql.Identifier(owner)))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(name), sql.Identifier(reader)))
            conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = public, extensions").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("ALTER DATABASE {} SET app.settings.jwt_exp = '3600'").format(sql.Identifier(name)))
            conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem = '5MB'").format(
                sql.Identifier(reader), sql.Identifier(name)))
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'the shop''s data ü'").format(sql.Identifier(name)))
        with connect(pg, name) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
            conn.execute("CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, "
                         "low text GENERATED ALWAYS AS (lower(name)) STORED, "
                         "tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', name)) STORED)")
            conn.execute("INSERT INTO people (id, name) SELECT i, (%s::text[])[1 + i %% %s] || ' ' || i "
                         "FROM generate_series(1, 2000) i", (NAMES, len(NAMES)))
            conn.execute(sql.SQL("GRANT SELECT ON people TO {}").format(sql.Identifier(reader)))
        manifest = make_backup(pg, lab, name, bucket, endpoint)
        yield {"name": name, "owner": owner, "reader": reader, "manifest": manifest,
               "storage": storage_for(bucket, endpoint)}
    finally:
        drop(pg, [name, f"lbfid_new_{t}"], [owner, reader])


def test_manifest_records_the_database_locale_owner_settings_acl_and_comment(c_locale_source):
    props = c_locale_source["manifest"]["database_properties"]
    assert (props["encoding"], props["locale_provider"], props["collate"], props["ctype"]) == ("UTF8", "libc", "C",
                                                                                                "C")
    assert props["owner"] == c_locale_source["owner"]
    assert sorted(props["settings"]) == ["app.settings.jwt_exp=3600", "search_path=public, extensions"]
    assert props["role_settings"] == [[c_locale_source["reader"], "work_mem=5MB"]]
    assert [c_locale_source["reader"], "CONNECT", False] in props["acl"]
    assert not any(grantee == "PUBLIC" for grantee, _p, _g in props["acl"])
    assert props["comment"] == "the shop's data ü"


def test_restore_into_a_new_database_keeps_locale_values_owner_settings_grants_and_comment(pg, lab, c_locale_source):
    """Fails on the old main: the new database got the server's default locale (C.UTF-8), so lower() of the
    non-ASCII names and the tsvector were recomputed with other values, and it lost settings, grants, comment."""
    src = c_locale_source
    new = src["name"].replace("lbfid_c_", "lbfid_new_")
    before = generated_values(pg, src["name"])
    assert any(name != low and name.lower() != low for _i, name, low, _t in before)  # C keeps 'Ä' upper
    out = engine.run(engine.Request(database=new, source_database=src["name"], confirm=new, safety_snapshot=False),
                     src["storage"], admin_for(pg), keys(lab))
    assert out["backup_id"] == src["manifest"]["backup_id"]
    state, expected = db_state(pg, new), db_state(pg, src["name"])
    assert (state["collate"], state["ctype"], state["encoding"]) == ("C", "C", "UTF8")
    assert generated_values(pg, new) == before
    assert state == expected
    assert state["owner"] == src["owner"] and state["comment"] == "the shop's data ü"


def test_a_locale_the_target_server_lacks_fails_before_any_data_moves_naming_it(pg):
    name = f"lbfid_noloc_{tag()}"
    try:
        with connect(pg) as conn, pytest.raises(RestoreError) as err:
            engine.create_database(conn, name, locale={"encoding": "UTF8", "locale_provider": "libc",
                                                       "collate": "xx_XX.UTF-8", "ctype": "xx_XX.UTF-8"})
        assert "xx_XX.UTF-8" in str(err.value) and "Nothing was restored" in str(err.value)
        with connect(pg) as conn:
            assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    finally:
        drop(pg, [name], [])


@pytest.fixture
def pg18_roles_source(lab, scratch_bucket):
    """On the lab's PostgreSQL 18: a database owned by its own role, a function whose EXECUTE is revoked from
    PUBLIC and granted to a second role, a table granted to it; backed up, then the database AND the roles dropped
    (the fresh server of the worst day)."""
    server = lab.get("postgres18")
    if not server:
        pytest.skip("the lab has no postgres18")
    t = tag()
    name, owner, reader = f"lbfid_r_{t}", f"lbfid_r_owner_{t}", f"Lbfid Reader {t}"
    bucket, endpoint = scratch_bucket
    try:
        with connect(server) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(owner)))
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(reader), sql.Identifier(owner)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
        with connect(server, name) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
            conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
            conn.execute("INSERT INTO accounts SELECT i, i * 10 FROM generate_series(1, 50) i")
            conn.execute("CREATE FUNCTION pay(int) RETURNS int LANGUAGE sql SECURITY DEFINER "
                         "SET search_path = pg_catalog, public AS 'SELECT $1 * 2'")
            conn.execute("REVOKE EXECUTE ON FUNCTION pay(int) FROM PUBLIC")
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION pay(int) TO {}").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("GRANT SELECT ON accounts TO {}").format(sql.Identifier(reader)))
        manifest = make_backup(server, lab, name, bucket, endpoint)
        drop(server, [name], [owner, reader])
        yield {"server": server, "name": name, "owner": owner, "reader": reader, "manifest": manifest,
               "storage": storage_for(bucket, endpoint)}
    finally:
        drop(server, [name], [owner, reader])


def test_backup_set_holds_the_roles_it_needs(pg18_roles_source):
    doc = pg18_roles_source["manifest"]["roles"]
    assert {pg18_roles_source["owner"], pg18_roles_source["reader"]} <= set(doc["required"])
    assert {pg18_roles_source["owner"], pg18_roles_source["reader"]} <= set(doc["names"])
    assert doc["method"] == "pg_dumpall" and doc["key"].endswith("/roles.sql.zst.gpg") and len(doc["sha256"]) == 64


def test_fresh_server_names_all_missing_roles_then_creates_them_on_request(lab, pg18_roles_source):
    """Fails on the old main: no roles in the backup set; the restore stopped at the first missing role."""
    src, server = pg18_roles_source, pg18_roles_source["server"]
    req = engine.Request(database=src["name"], confirm=src["name"], safety_snapshot=False)
    with pytest.raises(RestoreError) as err:
        engine.run(req, src["storage"], admin_for(server), keys(lab))
    assert src["owner"] in str(err.value) and src["reader"] in str(err.value) and "create_roles" in str(err.value)
    with connect(server) as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (src["name"],)).fetchone()
    req = engine.Request(database=src["name"], confirm=src["name"], safety_snapshot=False, create_roles=True)
    out = engine.run(req, src["storage"], admin_for(server), keys(lab))
    assert sorted(out["created_roles"]) == sorted([src["owner"], src["reader"]])
    with connect(server, src["name"]) as conn:
        roles = dict(conn.execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)",
                                  ([src["owner"], src["reader"]],)).fetchall())
        assert roles == {src["owner"]: True, src["reader"]: False}
        assert conn.execute("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = %s",
                            (src["owner"],)).fetchone()[0]
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
                            ).fetchone()[0] == src["owner"]
        assert conn.execute("SELECT pg_get_userbyid(proowner), prosecdef FROM pg_proc WHERE proname = 'pay'"
                            ).fetchone() == (src["owner"], True)
        assert not conn.execute("SELECT has_function_privilege('public', 'pay(int)', 'EXECUTE')").fetchone()[0]
        assert conn.execute("SELECT has_function_privilege(%s, 'pay(int)', 'EXECUTE'), "
                            "has_table_privilege(%s, 'accounts', 'SELECT')", (src["reader"], src["reader"])
                            ).fetchone() == (True, True)
        assert conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (src["owner"], src["reader"])).fetchone()[0]


def test_catalog_roles_script_recreates_a_role_like_pg_dumpall(pg):
    """Where pg_dumpall may not run, the same statements come from pg_roles (readable by any role)."""
    from ansible.module_utils.lifeboat import roles as rolemod
    t = tag()
    role, member = f"Lbfid Cat {t}", f"lbfid_cat_m_{t}"
    try:
        with connect(pg) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN CREATEDB CONNECTION LIMIT 3").format(sql.Identifier(role)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(member),
                                                                           sql.Identifier(role)))
            conn.execute(sql.SQL("ALTER ROLE {} SET work_mem = '3MB'").format(sql.Identifier(member)))
        with psycopg.connect(host=pg["host"], port=pg["port"], user=pg["backup_user"],
                             password=pg["backup_password"], dbname=pg["app_database"]) as conn:
            script = rolemod.catalog_roles_sql(conn).decode()
        assert role in rolemod.role_names(script) and member in rolemod.role_names(script)
        drop(pg, [], [member, role])
        with connect(pg) as conn:
            have = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
            assert rolemod.create_roles(conn, script, [role, member], have) == sorted([role, member])
            got = conn.execute("SELECT rolcreatedb, rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = %s",
                               (role,)).fetchone()
            assert got == (True, False, 3)
            assert conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (member, role)).fetchone()[0]
            assert conn.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                                "WHERE r.rolname = %s", (member,)).fetchone()[0] == ["work_mem=3MB"]
    finally:
        drop(pg, [], [member, role])
