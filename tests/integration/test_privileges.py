"""Issue 9, "permission errors named": a backup role that cannot read everything in the dump's scope.

The lab's PostgreSQL 15 with a login created here that has SELECT on the sample application's tables but not
on one table (``public."Hidden Notes"``: a name that needs quoting in a pattern) and no USAGE on one schema
(``locked``). The backup (and ``backup.yml --check``) fails before anything is dumped, naming both with the fix
(the exclude option and pattern, or the GRANT); with those patterns excluded the backup succeeds and restores
the same tables. If something is still denied during the run, the real cause is shown, never pg_dump's
secondary "could not import the requested snapshot".
"""
from __future__ import annotations

import json
import os
import re
import uuid

import psycopg
import pytest
from psycopg import sql
from restore_helpers import admin_conn, source_database
from testlib import empty_bucket, run_playbook, s3_client

from ansible.module_utils.lifeboat import backup, crypto, pgmeta, privileges
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.errors import PermissionDenied
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import S3Storage

EXTRA_SQL = """
CREATE SCHEMA locked;
CREATE TABLE locked.vault (id int PRIMARY KEY, secret text);
INSERT INTO locked.vault SELECT g, 'v' || g FROM generate_series(1, 5) g;
CREATE TABLE public."Hidden Notes" (id serial PRIMARY KEY, note text);
INSERT INTO public."Hidden Notes" (note) VALUES ('a'), ('b');
"""


@pytest.fixture
def limited(lab, source_template):
    """(database, role, password): a private copy of the sample database with the two unreadable objects, and a
    login that may read everything else (explicit grants, not pg_read_all_data); both dropped afterwards."""
    pg = lab["postgres"]
    role = f"lbtest_limited_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with admin_conn(pg) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    try:
        with source_database(pg, source_template, EXTRA_SQL) as db:
            with admin_conn(pg, db) as conn:
                r = sql.Identifier(role)
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db), r))
                for schema in ("public", "analytics"):
                    s = sql.Identifier(schema)
                    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
                    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r))
                    conn.execute(sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r))
                conn.execute(sql.SQL('REVOKE SELECT ON public."Hidden Notes" FROM {}').format(r))
                # the role may read the table in 'locked' but not reach it: the schema is what is missing
                conn.execute(sql.SQL("GRANT SELECT ON locked.vault TO {}").format(r))
            yield db, role, password
    finally:
        with admin_conn(pg) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def bucket(lab):
    client = s3_client(lab["s3"]["backup"])
    name = f"lbtest-perm-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        empty_bucket(client, name)


def _vars(tmp_path, pg: dict, db: str, role: str, password: str, bucket: str, **item) -> str:
    path = tmp_path / f"vars-{uuid.uuid4().hex[:6]}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"lifeboat_databases": [{"name": db, "host": pg["host"], "port": pg["port"], "user": role, **item}],
                   "lifeboat_database_secrets": {db: {"password": password}},
                   "lifeboat_backup_destination": f"s3://{bucket}/db"}, fh)
    return str(path)


def _objects(lab: dict, bucket: str) -> list[str]:
    client = s3_client(lab["s3"]["backup"])
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []) or []]


def _assert_names_both_with_fix(out: str, role: str) -> None:
    out = out.replace('\\"', '"')   # the task's msg is printed as JSON
    assert "could not import the requested snapshot" not in out, out[-3000:]
    assert f"the backup role '{role}' cannot read 2 object(s)" in out, out[-3000:]
    # the schema without USAGE: the exclude pattern and the GRANT
    assert f"schema locked (owner 'lifeboat_admin'): role '{role}' lacks USAGE" in out, out[-3000:]
    assert "add 'locked' to exclude_schemas" in out, out[-3000:]
    assert f"GRANT USAGE ON SCHEMA locked TO {role};" in out, out[-3000:]
    # the table without SELECT: a quoted pattern (capitals and a space) and the GRANT
    assert f'table public."Hidden Notes" (owner \'lifeboat_admin\'): role \'{role}\' lacks SELECT' in out, out[-3000:]
    assert "add 'public.\"Hidden Notes\"' to exclude_tables" in out, out[-3000:]
    assert f'GRANT SELECT ON TABLE public."Hidden Notes" TO {role};' in out, out[-3000:]


def _content(pg: dict, db: str, tables: list[tuple[str, str]]) -> dict[str, str]:
    """Per-table md5 of every row's text, in a stable order: the same content, not only the same counts."""
    dsn = f"host={pg['host']} port={pg['port']} user={pg['admin_user']} password={pg['admin_password']} dbname={db}"
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema, name in tables:
            q = sql.SQL("SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM ONLY {}.{} t"
                        ).format(sql.Identifier(schema), sql.Identifier(name))
            out[f"{schema}.{name}"] = conn.execute(q).fetchone()[0]
    return out


def test_backup_fails_before_dumping_naming_each_unreadable_object_with_the_fix(lab, limited, bucket, tmp_path):
    """Fails on the old main: there the run fails with pg_dump's 'could not import the requested snapshot'
    and names neither object."""
    pg = lab["postgres"]
    db, role, password = limited
    proc = run_playbook("playbooks/backup.yml", "-e", "@" + _vars(tmp_path, pg, db, role, password, bucket))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    _assert_names_both_with_fix(out, role)
    assert password not in out
    assert _objects(lab, bucket) == [], "nothing may be written: the pre-flight runs before the dump"


def test_check_mode_finds_the_unreadable_objects_too(lab, limited, bucket, tmp_path):
    """Fails on the old main: there backup.yml --check reports the plan and succeeds."""
    pg = lab["postgres"]
    db, role, password = limited
    proc = run_playbook("playbooks/backup.yml", "-e", "@" + _vars(tmp_path, pg, db, role, password, bucket),
                        check=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    _assert_names_both_with_fix(out, role)
    assert _objects(lab, bucket) == []


def test_excluding_them_as_the_message_says_backs_up_and_restores(lab, limited, bucket, tmp_path):
    pg = lab["postgres"]
    db, role, password = limited
    # the patterns are taken from the failure's own message: what it says to add is what works
    proc = run_playbook("playbooks/backup.yml", "-e", "@" + _vars(tmp_path, pg, db, role, password, bucket),
                        check=True)
    out = (proc.stdout + proc.stderr).replace('\\"', '"')
    patterns = dict((opt, pat) for pat, opt in re.findall(r"add '([^']+)' to (exclude_\w+)", out))
    assert patterns == {"exclude_schemas": "locked", "exclude_tables": 'public."Hidden Notes"'}, out[-3000:]
    item = {k: [v] for k, v in patterns.items()}
    for check in (True, False):
        proc = run_playbook("playbooks/backup.yml", "-e",
                            "@" + _vars(tmp_path, pg, db, role, password, bucket, **item), check=check)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    storage = S3Storage(f"s3://{bucket}/db", S3Settings(
        endpoint=lab["s3"]["backup"]["endpoint"], region=lab["s3"]["backup"]["region"],
        access_key=lab["s3"]["backup"]["access_key"], secret_key=lab["s3"]["backup"]["secret_key"]))
    doc = mf.read_manifest(storage, mf.select_backup(storage, db).manifest_key)
    listed = {(t["schema"], t["name"]) for t in doc["tables"]}
    # (c) the facts have the dump's scope: neither excluded object is counted, everything else is
    assert ("locked", "vault") not in listed and ("public", "Hidden Notes") not in listed
    assert {("public", "users"), ("public", "videos"), ("analytics", "events")} <= listed
    target = f"{db}_restored"
    with admin_conn(pg) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))   # dropped with db's prefix
    run = doc["restore"]["command"]
    from test_pg_backup import stock_restore
    proc = stock_restore(run, lab, target, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = sorted(listed)
    assert _content(pg, target, tables) == _content(pg, db, tables)
    dsn = lambda name: (f"host={pg['host']} port={pg['port']} user={pg['admin_user']} "  # noqa: E731
                        f"password={pg['admin_password']} dbname={name}")
    with psycopg.connect(dsn(target), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'locked'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('public.\"Hidden Notes\"')").fetchone()[0] is None
        restored_hash = pgmeta.schema_hash(conn, ["analytics", "public"], tables)
    with psycopg.connect(dsn(db), autocommit=True) as conn:
        assert pgmeta.schema_hash(conn, ["analytics", "public"], tables) == restored_hash


def _engine_request(lab: dict, db: str, role: str, password: str, bucket: str) -> backup.BackupRequest:
    pg, b = lab["postgres"], lab["s3"]["backup"]
    return backup.BackupRequest(
        target=PgTarget(host=pg["host"], port=pg["port"], user=role, password=password, database=db),
        destination=f"s3://{bucket}/db", encryption=crypto.EncryptionSpec("gpg", [lab["gpg"]["public_key_file"]]),
        s3=S3Settings(endpoint=b["endpoint"], region=b["region"], access_key=b["access_key"],
                      secret_key=b["secret_key"]))


def test_denied_during_the_run_shows_the_real_cause_not_the_snapshot_error(lab, limited, bucket, monkeypatch):
    """(b) What the pre-flight did not see (here: switched off, as if the grant changed in between) is reported
    by its real cause: the row counts run in a savepoint and cannot abort the transaction that exported the
    snapshot before pg_dump imported it. Fails on the old main (there: 'could not import the requested
    snapshot')."""
    db, role, password = limited
    monkeypatch.setattr(backup, "preflight_privileges", lambda conn, req: None, raising=False)
    with pytest.raises(PermissionDenied) as err:
        backup.run(_engine_request(lab, db, role, password, bucket))
    msg = str(err.value)
    assert "could not import the requested snapshot" not in msg, msg
    assert "permission denied for schema locked" in msg, msg
    # and the fix for every object, checked again after the failure
    assert f"GRANT USAGE ON SCHEMA locked TO {role};" in msg and "add 'locked' to exclude_schemas" in msg, msg
    assert password not in msg
    assert _objects(lab, bucket) == [], "no backup that looks complete"


def test_find_unreadable_is_reusable_and_follows_the_dump_scope(lab, limited):
    """The function the supabase profile reuses: the list, each with its kind and fix, for a given scope."""
    pg = lab["postgres"]
    db, role, password = limited
    dsn = f"host={pg['host']} port={pg['port']} user={role} password={password} dbname={db}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        items = privileges.find_unreadable(conn)
        assert [(i.kind, i.schema, i.name, i.role, i.missing) for i in items] == [
            ("schema", "locked", "", role, "USAGE"), ("table", "public", "Hidden Notes", role, "SELECT")]
        assert items[0].as_dict()["exclude"] == {"exclude_schemas": "locked"}
        assert items[1].as_dict()["grant"] == f'GRANT SELECT ON TABLE public."Hidden Notes" TO {role};'
        assert privileges.find_unreadable(conn, exclude_schemas=["locked"], exclude_tables=['"Hidden Notes"']) == []
        # pg_dump --table makes --exclude-schema irrelevant: the table is still dumped, so still unreadable
        only = privileges.find_unreadable(conn, include_tables=["locked.vault"], exclude_schemas=["locked"])
        assert [(i.kind, i.schema) for i in only] == [("schema", "locked")]
        assert only[0].exclude == {"exclude_tables": "locked.*"}
        # schema-only: LOCK TABLE needs only one of SELECT/INSERT/UPDATE/DELETE/TRUNCATE; the schema still USAGE
        assert [i.kind for i in privileges.find_unreadable(conn, schema_only=True)] == ["schema", "table"]
    with admin_conn(pg, db) as conn:
        conn.execute(sql.SQL('GRANT INSERT ON public."Hidden Notes" TO {}').format(sql.Identifier(role)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert [i.kind for i in privileges.find_unreadable(conn, schema_only=True)] == ["schema"]
        assert [i.kind for i in privileges.find_unreadable(conn)] == ["schema", "table"]
