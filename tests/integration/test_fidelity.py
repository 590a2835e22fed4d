"""A restore gives back what was backed up, not only the row counts (issue 10).

Locale and encoding (stored generated columns recompute under another locale), the database's owner, grants,
settings and comment in a NEW database, the roles a backup needs on a fresh server, the stock-tool command that
keeps owners and privileges, a PostgreSQL 15 backup drilled on 18. Every role, database and bucket is uniquely
named and dropped afterwards (the shared lab's servers are used by others at the same time).
"""
from __future__ import annotations

import os
import subprocess
import uuid

import psycopg
import pytest
from psycopg import sql
from restore_helpers import storage_for

from ansible.module_utils.lifeboat import backup, crypto
from ansible.module_utils.lifeboat import restore as engine
from ansible.module_utils.lifeboat.errors import IntegrityError, RestoreError
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
    assert not [w for w in out["warnings"] if "privileges" in w or "schema hash" in w], out["warnings"]
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


def run_steps(steps: list[str], server: dict, lab: dict, target_db: str, tmp_path) -> subprocess.CompletedProcess:
    """The manifest's stock-tool steps, pasted into bash as they are (libpq from the environment)."""
    passfile = tmp_path / "pgpass"
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"*:*:*:*:{server['admin_password']}\n")
    b = lab["s3"]["backup"]
    env = {"PATH": f"{server['bin_dir']}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"),
           "LC_ALL": "C.UTF-8", "PGHOST": server["host"], "PGPORT": str(server["port"]),
           "PGUSER": server["admin_user"], "PGPASSFILE": str(passfile), "TARGET_DB": target_db,
           "AWS_ACCESS_KEY_ID": b["access_key"], "AWS_SECRET_ACCESS_KEY": b["secret_key"]}
    env["GNUPGHOME"] = lab["gpg"]["homedir"]
    try:
        return subprocess.run(["bash", "-c", "set -e -o pipefail\n" + "\n".join(steps)], env=env,
                              capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    finally:
        passfile.unlink()


def test_stock_tool_steps_keep_owners_privileges_and_a_revoked_execute(pg, lab, scratch_bucket, tmp_path):
    """Fails on the old main: its steps restored with --no-owner --no-privileges, so EXECUTE came back for
    PUBLIC, the SECURITY DEFINER function was owned by the restoring superuser, the grants were gone."""
    t = tag()
    name, owner, reader, new = f"lbfid_s_{t}", f"lbfid_s_owner_{t}", f"lbfid_s_reader_{t}", f"lbfid_s_new_{t}"
    bucket, endpoint = scratch_bucket
    try:
        with connect(pg) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 LOCALE 'C'").format(
                sql.Identifier(name), sql.Identifier(owner)))
            conn.execute(sql.SQL("ALTER DATABASE {} SET app.settings.tier = 'gold'").format(sql.Identifier(name)))
        with connect(pg, name) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
            conn.execute("CREATE TABLE t (id int)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 10)")
            conn.execute("CREATE FUNCTION secret() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 42'")
            conn.execute("REVOKE EXECUTE ON FUNCTION secret() FROM PUBLIC")
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION secret() TO {}").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("GRANT SELECT ON t TO {}").format(sql.Identifier(reader)))
        doc = make_backup(pg, lab, name, bucket, endpoint)
        assert "--no-owner" not in doc["restore"]["command"]
        assert "--no-owner" in doc["restore"]["no_owner_command"] and "LOSES" in doc["restore"]["notes"]
        proc = run_steps(doc["restore"]["steps"], pg, lab, new, tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        with connect(pg, new) as conn:
            assert not conn.execute("SELECT has_function_privilege('public', 'secret()', 'EXECUTE')").fetchone()[0]
            assert conn.execute("SELECT pg_get_userbyid(proowner), prosecdef FROM pg_proc WHERE proname = 'secret'"
                                ).fetchone() == (owner, True)
            assert conn.execute("SELECT has_function_privilege(%s, 'secret()', 'EXECUTE'), "
                                "has_table_privilege(%s, 't', 'SELECT')", (reader, reader)).fetchone() == (True, True)
        state = db_state(pg, new)
        assert (state["collate"], state["owner"]) == ("C", owner)
        assert state["settings"] == [(False, ["app.settings.tier=gold"])]
    finally:
        drop(pg, [name, new], [owner, reader])


def test_a_pg15_backup_drilled_on_pg18_passes_when_nothing_differs(pg, lab, scratch_bucket):
    """Fails on the old main: PostgreSQL 18 records each NOT NULL as a constraint too, so the schema hash of the
    restored copy never matched the PG 15 manifest's and the good backup was recorded as failed."""
    from ansible.module_utils.lifeboat import manifest as mf
    from ansible.module_utils.lifeboat import verify
    server18 = lab.get("postgres18")
    if not server18:
        pytest.skip("the lab has no postgres18")
    name = f"lbfid_x_{tag()}"
    bucket, endpoint = scratch_bucket
    try:
        with connect(pg) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        with connect(pg, name) as conn:
            conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL UNIQUE, "
                         "score int NOT NULL DEFAULT 0 CHECK (score >= 0), note text)")
            conn.execute("CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                         "customer int NOT NULL REFERENCES customers, total numeric(10,2) NOT NULL)")
            conn.execute("CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100")
            conn.execute("INSERT INTO customers SELECT i, 'c' || i || '@example.com', i FROM generate_series(1, 40) i")
            conn.execute("INSERT INTO orders (customer, total) SELECT 1 + i % 40, i * 3.5 "
                         "FROM generate_series(1, 90) i")
        make_backup(pg, lab, name, bucket, endpoint, content_hashes=True)
        storage = storage_for(bucket, endpoint)
        ref = mf.select_backup(storage, name)
        result = verify.verify_one(storage, ref, keys(lab), admin_for(server18), verify.Options(record=False))
        checks = {c["name"]: c for c in result.checks}
        assert result.outcome == "passed", result.failures()
        assert checks["schema_hash"]["outcome"] == "passed" and checks["row_counts"]["outcome"] == "passed"
        assert checks["content_hashes"]["outcome"] == "passed"  # the rows' text is the same on 18
    finally:
        drop(pg, [name], [])


def test_privileges_check_names_what_differs(lab, pg18_roles_source):
    """The fidelity check beyond counts: a grant or a SECURITY DEFINER lost after the restore is named."""
    from ansible.module_utils.lifeboat import manifest as mf
    from ansible.module_utils.lifeboat.restore.checks import compare_privileges
    from ansible.module_utils.lifeboat.restore.selection import source_for
    src, server = pg18_roles_source, pg18_roles_source["server"]
    engine.run(engine.Request(database=src["name"], confirm=src["name"], safety_snapshot=False, create_roles=True),
               src["storage"], admin_for(server), keys(lab))
    source = source_for(src["storage"], mf.select_backup(src["storage"], src["name"]))
    with connect(server, src["name"]) as conn:
        assert compare_privileges(conn, source)[0] is True
        conn.execute("GRANT EXECUTE ON FUNCTION pay(int) TO PUBLIC")
        conn.execute("ALTER FUNCTION pay(int) SECURITY INVOKER")
        ok, detail = compare_privileges(conn, source)
        assert ok is False and "acl" in detail and "functions" in detail and "owners" not in detail.split(" (")[0]
        # restored with no_owner, owners and grants are not compared, functions still are
        ok, detail = compare_privileges(conn, source, no_owner=True)
        assert ok is False and "functions" in detail and "acl" not in detail.split(" (")[0]


def test_content_hashes_fail_the_drill_on_a_silent_value_change(pg, lab, scratch_bucket):
    """Fails on the old main (no content hashes: counts and schema hash matched, the drill passed): a copy whose
    stored generated columns were recomputed under another locale holds other values with the same row counts;
    the drill now fails naming the table, and a value changed after a restore is named too."""
    from ansible.module_utils.lifeboat import manifest as mf
    from ansible.module_utils.lifeboat import verify
    from ansible.module_utils.lifeboat.restore.checks import compare_content
    from ansible.module_utils.lifeboat.restore.selection import source_for
    t = tag()
    name, new = f"lbfid_h_{t}", f"lbfid_h_new_{t}"
    bucket, endpoint = scratch_bucket
    try:
        with connect(pg) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 LOCALE 'C'").format(sql.Identifier(name)))
        with connect(pg, name) as conn:
            conn.execute("CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, "
                         "low text GENERATED ALWAYS AS (lower(name)) STORED)")
            conn.execute("INSERT INTO people (id, name) SELECT i, (%s::text[])[1 + i %% %s] || ' ' || i "
                         "FROM generate_series(1, 500) i", (NAMES, len(NAMES)))
            conn.execute("CREATE TABLE \"Odd \"\"name\" (r int, at timestamptz, b bytea, f float8, m money)")
            conn.execute("INSERT INTO \"Odd \"\"name\" SELECT i, '2026-12-03 08:00+01'::timestamptz + i * "
                         "interval '1 hour', decode(md5(i::text), 'hex'), i / 3.0, i * 1.25 "
                         "FROM generate_series(1, 200) i")
            conn.execute("SET TimeZone = 'America/New_York'")  # the session's settings must not matter
        doc = make_backup(pg, lab, name, bucket, endpoint, content_hashes=True)
        hashes = doc["content_hashes"]
        assert hashes["method"] == "sum64-md5-row-text/v1" and hashes["duration_s"] >= 0
        assert sorted((h["schema"], h["name"]) for h in hashes["tables"]) == [("public", 'Odd "name'),
                                                                              ("public", "people")]
        storage = storage_for(bucket, endpoint)
        ref = mf.select_backup(storage, name)
        result = verify.verify_one(storage, ref, keys(lab), admin_for(pg), verify.Options(record=False))
        checks = {c["name"]: c["outcome"] for c in result.checks}
        assert result.outcome == "passed", result.failures()
        assert checks["content_hashes"] == "passed"

        # the drill's copy under C.UTF-8 (what every restore did before the locale was recorded): same counts,
        # same schema, other lower() values
        doc["database_properties"].update(collate="C.UTF-8", ctype="C.UTF-8")
        doc.pop("manifest_sha256", None)
        mf.write_manifest(storage, ref.manifest_key, doc, exclusive=False)
        result = verify.verify_one(storage, mf.select_backup(storage, name), keys(lab), admin_for(pg),
                                   verify.Options(record=False))
        checks = {c["name"]: c for c in result.checks}
        assert result.outcome == "failed"
        assert checks["row_counts"]["outcome"] == "passed" and checks["schema_hash"]["outcome"] == "passed"
        assert checks["content_hashes"]["outcome"] == "failed"
        assert "public.people" in checks["content_hashes"]["detail"]
        assert "Odd" not in checks["content_hashes"]["detail"]

        # a restore refuses to put it in place, naming the table whose values differ ...
        req = engine.Request(database=new, source_database=name, confirm=new, safety_snapshot=False)
        with pytest.raises(IntegrityError, match=r"does not match .*public\.people.*accept_differences: true"):
            engine.run(req, storage, admin_for(pg), keys(lab))
        with connect(pg) as conn:
            assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (new,)).fetchone()
        # ... unless told to keep it: then it warns naming the table
        req.accept_differences = True
        out = engine.run(req, storage, admin_for(pg), keys(lab))
        assert [w for w in out["warnings"] if "accept_differences" in w and "public.people" in w], out["warnings"]
        with connect(pg, new) as conn:
            conn.execute("UPDATE \"Odd \"\"name\" SET f = f + 1e-9 WHERE r = 7")
            ok, detail = compare_content(conn, source_for(storage, mf.select_backup(storage, name)))
            assert ok is False and 'public.Odd "name' in detail
    finally:
        drop(pg, [name, new], [])


def runbook_by_hand_blocks() -> list[str]:
    """The bash blocks of docs/runbook-restore.md section B up to B.3: the setup, B.1 (fetch and check) and
    B.2 (roles, database, grants, dump, counts, swap), as printed."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "runbook-restore.md").read_text()
    section = text[text.index("## B. By hand"):text.index("### B.3")]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3, f"docs/runbook-restore.md section B changed shape: {len(blocks)} bash blocks"
    return blocks


def test_runbook_by_hand_restores_roles_privileges_and_settings(pg, lab, scratch_bucket, tmp_path):
    """docs/runbook-restore.md B.1 and B.2, pasted into bash with only the example's names replaced by this
    test's: the application's roles are gone (dropped with the damaged database), the runbook brings back the
    roles, the database's owner, grant and setting, the table grants, a revoked EXECUTE that stays revoked and
    the SECURITY DEFINER owner, then swaps the restored copy in under the live name."""
    t = tag()
    name, owner, reader = f"lbrb_{t}", f"lbrb_owner_{t}", f"lbrb_reader_{t}"
    bucket, endpoint = scratch_bucket
    try:
        with connect(pg) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 LOCALE 'C.UTF-8'").format(
                sql.Identifier(name), sql.Identifier(owner)))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(name),
                                                                               sql.Identifier(reader)))
            conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = public, extensions").format(
                sql.Identifier(name)))
        with connect(pg, name) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
            conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, 37) i")
            conn.execute("CREATE FUNCTION secret() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 42'")
            conn.execute("REVOKE EXECUTE ON FUNCTION secret() FROM PUBLIC")
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION secret() TO {}").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("GRANT SELECT ON users TO {}").format(sql.Identifier(reader)))
        expected = db_state(pg, name)
        doc = make_backup(pg, lab, name, bucket, endpoint)
        # the worst day: the database is damaged (here: empty) and the application's roles are gone
        drop(pg, [name], [owner, reader])
        with connect(pg) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))

        base = doc["artifact"]["uri"].rsplit("/", 1)[0]
        script = "\n".join(runbook_by_hand_blocks())
        passfile = tmp_path / "pgpass"
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"*:*:*:*:{pg['admin_password']}\n")
        for example, real in (
                ("AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...",
                 'AWS_ACCESS_KEY_ID="$LAB_AK" AWS_SECRET_ACCESS_KEY="$LAB_SK"'),
                ("db.example.internal", pg["host"]), ("PGPORT=5432", f"PGPORT={pg['port']}"),
                ("PGUSER=lifeboat_admin", f"PGUSER={pg['admin_user']}"), ("~/.pgpass-restore", str(passfile)),
                ("/secure/lifeboat-gnupg", lab["gpg"]["homedir"]), ("https://s3.example.com", endpoint["endpoint"]),
                ("--region eu-west-1", f"--region {endpoint['region']}"),
                ("s3://lifeboat-backups/db/appdb/appdb-20261121T020000Z", base),
                ("appdb", name), ("app_owner", owner), ("app_reader", reader)):
            assert example in script, f"the runbook no longer shows {example!r}"
            script = script.replace(example, real)
        env = {"PATH": f"{pg['bin_dir']}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"),
               "LC_ALL": "C.UTF-8", "LAB_AK": endpoint["access_key"], "LAB_SK": endpoint["secret_key"]}
        proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600,
                              check=False, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert doc["artifact"]["sha256"] in proc.stdout  # B.1's sha256sum printed the manifest's value

        with connect(pg, name) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 37
            assert dict(conn.execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)",
                                     ([owner, reader],)).fetchall()) == {owner: True, reader: False}
            assert not conn.execute("SELECT has_function_privilege('public', 'secret()', 'EXECUTE')").fetchone()[0]
            assert conn.execute("SELECT pg_get_userbyid(proowner), prosecdef FROM pg_proc WHERE proname = 'secret'"
                                ).fetchone() == (owner, True)
            assert conn.execute("SELECT has_function_privilege(%s, 'secret()', 'EXECUTE'), "
                                "has_table_privilege(%s, 'users', 'SELECT'), pg_get_userbyid(relowner) "
                                "FROM pg_class WHERE relname = 'users'", (reader, reader)).fetchone() == (
                True, True, owner)
        assert db_state(pg, name) == expected
        with connect(pg) as conn:  # the damaged database was kept under the runbook's old name
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (f"{name}_old_20261122",)
                                ).fetchone()
    finally:
        drop(pg, [name], [owner, reader])


def test_backup_playbook_item_switches_content_hashes_on(pg, lab, scratch_bucket, tmp_path, source_template):
    """playbooks/backup.yml passes an item's content_hashes (or lifeboat_backup_content_hashes) to the module;
    the drill of that backup checks them."""
    from restore_helpers import backup_with_playbook, source_database

    from ansible.module_utils.lifeboat import manifest as mf
    from ansible.module_utils.lifeboat import verify
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        backup_with_playbook(pg, bucket, db, tmp_path, content_hashes=True)
        ref = mf.select_backup(storage, db)
        doc = mf.read_manifest(storage, ref.manifest_key)
        assert {(h["schema"], h["name"]) for h in doc["content_hashes"]["tables"]} == {
            (t["schema"], t["name"]) for t in doc["tables"]} and doc["tables"]
        result = verify.verify_one(storage, ref, keys(lab), admin_for(pg), verify.Options(record=False))
        assert {c["name"]: c["outcome"] for c in result.checks}["content_hashes"] == "passed", result.checks
