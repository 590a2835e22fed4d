"""Helpers for the verify/restore integration tests: source databases and backups made with stock tools.

``make_backup`` writes a Lifeboat-layout backup (custom format, zstd, gpg or age,
manifest with exact row counts and the schema hash) the way the manifest
contract describes it, with stock tools only (pg_dump | zstd | gpg). It is the
"by hand" procedure of docs/runbook-restore.md in reverse, and lets these tests
run whatever the state of the backup module. ``make_legacy_backup`` writes an
older-procedure ``db-backup-*.sql.gz`` (pg_dump | gzip).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import pathlib
import subprocess
import tempfile

import psycopg
from testlib import dsn, run_playbook, unique
from psycopg import sql

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import S3Storage


def admin_conn(pg: dict, database: str = "postgres"):
    return psycopg.connect(dsn(pg, "admin_user", "admin_password", database), autocommit=True)


SAMPLE_SQL = pathlib.Path(__file__).resolve().parents[2] / "roles" / "lab" / "files" / "sample_app.sql"


@contextlib.contextmanager
def template_database(pg: dict):
    """A private template database loaded from the lab's sample SQL (the shared appdb is never touched:
    CREATE DATABASE ... TEMPLATE appdb would fail whenever another engineer is connected to it)."""
    name = unique("lbtpl").replace("-", "_")
    with admin_conn(pg) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                   sql.Identifier(pg["app_user"])))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([f"{pg['bin_dir']}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", name,
                            "-f", str(SAMPLE_SQL)], env=_env(pg, name, tmp), check=True, capture_output=True)
        yield name
    finally:
        with admin_conn(pg) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def source_database(pg: dict, template: str, extra_sql: str | None = None):
    """A private copy of the sample application database, dropped afterwards (with any swap leftovers)."""
    name = unique("lbsrc").replace("-", "_")
    with admin_conn(pg) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(template), sql.Identifier(pg["app_user"])))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(name), sql.Identifier(pg["backup_user"])))
    if extra_sql:
        with admin_conn(pg, name) as conn:
            conn.execute(extra_sql)
    try:
        yield name
    finally:
        with admin_conn(pg) as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                (name + "%",)).fetchall()
            for (db,) in rows:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def storage_for(bucket: str, endpoint: dict, prefix: str = "db") -> S3Storage:
    settings = S3Settings(endpoint=endpoint["endpoint"], region=endpoint["region"],
                          access_key=endpoint["access_key"], secret_key=endpoint["secret_key"])
    return S3Storage(f"s3://{bucket}/{prefix}", settings)


def _env(pg: dict, database: str, tmp: str) -> dict:
    passfile = os.path.join(tmp, "pgpass")
    with open(os.open(passfile, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
        fh.write(f"*:*:*:*:{pg['admin_password']}\n")
    env = dict(os.environ)
    env.update(PGHOST=pg["host"], PGPORT=str(pg["port"]), PGUSER=pg["admin_user"], PGDATABASE=database,
               PGPASSFILE=passfile)
    return env


def make_backup(pg: dict, lab: dict, storage: S3Storage, database: str, when: dt.datetime | None = None,
                encryption: str = "gpg") -> dict:
    """A Lifeboat backup of ``database`` in ``storage``: returns the manifest."""
    when = when or mf.utcnow()
    layout = mf.layout_for(database, when, "custom", "zstd", encryption)
    bindir = pg["bin_dir"]
    with tempfile.TemporaryDirectory() as tmp, admin_conn(pg, database) as conn:
        conn.autocommit = False
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        snap = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        tables = pgmeta.list_tables(conn)
        counts = pgmeta.row_counts(conn, tables)
        shash = pgmeta.schema_hash(conn)
        env = _env(pg, database, tmp)
        dump = subprocess.run([f"{bindir}/pg_dump", "-Fc", "-Z0", f"--snapshot={snap}", "-d", database],
                              env=env, capture_output=True, check=True)
        conn.rollback()
    raw = dump.stdout
    comp = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    if encryption == "gpg":
        stored = subprocess.run(["gpg", "--homedir", lab["gpg"]["homedir"], "--batch", "--trust-model", "always",
                                 "-e", "-r", lab["gpg"]["fingerprint"]], input=comp, capture_output=True,
                                check=True).stdout
        recipients = [lab["gpg"]["fingerprint"]]
    elif encryption == "age":
        stored = subprocess.run(["age", "-r", lab["age"]["recipient"]], input=comp, capture_output=True,
                                check=True).stdout
        recipients = [lab["age"]["recipient"]]
    else:
        stored, recipients = comp, []
    storage.put_bytes(layout.artifact_key, stored)
    manifest = {
        "schema": mf.SCHEMA, "kind": "postgresql", "backup_id": layout.backup_id, "database": database,
        "naming": "lifeboat", "format": "custom",
        "scope": {"schema_only": False, "data_only": False, "include_tables": [], "exclude_tables": [],
                  "include_schemas": [], "exclude_schemas": []},
        "compression": {"algorithm": "zstd", "level": 3, "threads": 1},
        "encryption": {"method": encryption, "mode": "public-key" if encryption != "none" else None,
                       "recipients": recipients},
        "artifact": {"key": layout.artifact_key, "uri": storage.uri(layout.artifact_key), "size": len(stored),
                     "sha256": hashlib.sha256(stored).hexdigest(), "dump_size": len(raw),
                     "dump_sha256": hashlib.sha256(raw).hexdigest()},
        "started_at": mf.iso(when), "finished_at": mf.iso(when), "duration_s": 1.0,
        "tables": counts, "schema_hash": shash, "tool": {"name": "lifeboat-tests", "version": "0"},
    }
    mf.write_manifest(storage, layout.manifest_key, manifest)
    return manifest


def make_legacy_backup(pg: dict, storage: S3Storage, database: str, when: dt.datetime | None = None) -> str:
    """An older-procedure dump: ``pg_dump | gzip`` uploaded as db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz."""
    when = when or mf.utcnow()
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(pg, database, tmp)
        dump = subprocess.run([f"{pg['bin_dir']}/pg_dump", "-d", database],
                              env=env, capture_output=True, check=True).stdout
    data = subprocess.run(["gzip", "-c"], input=dump, capture_output=True, check=True).stdout
    key = mf.legacy_name(when)
    storage.put_bytes(key, data)
    return key


def counts(pg: dict, database: str) -> dict[str, int]:
    with admin_conn(pg, database) as conn:
        return {f"{r['schema']}.{r['name']}": r["rows"]
                for r in pgmeta.row_counts(conn, pgmeta.list_tables(conn))}


def manifest_counts(manifest: dict) -> dict[str, int]:
    return {f"{t['schema']}.{t['name']}": int(t["rows"]) for t in manifest["tables"]}


def flip_byte(storage: S3Storage, key: str, offset: int | None = None) -> None:
    data = bytearray(storage.get_bytes(key))
    pos = len(data) // 2 if offset is None else offset
    data[pos] ^= 0x01
    storage.put_bytes(key, bytes(data))


def truncate(storage: S3Storage, key: str, keep: float = 0.6) -> None:
    data = storage.get_bytes(key)
    storage.put_bytes(key, data[: int(len(data) * keep)])


def backup_with_engine(pg: dict, lab: dict, storage: S3Storage, bucket: str, endpoint: dict, database: str,
                       fmt: str = "custom", **options) -> dict:
    """A backup made by Lifeboat's own backup engine (backup.run), as the backup role would: returns the manifest."""
    from ansible.module_utils.lifeboat import backup, crypto
    from ansible.module_utils.lifeboat.pgconn import PgTarget

    req = backup.BackupRequest(
        target=PgTarget(host=pg["host"], port=pg["port"], user=pg["backup_user"], password=pg["backup_password"],
                        database=database),
        destination=f"s3://{bucket}/db", format=fmt,
        encryption=crypto.EncryptionSpec("gpg", [lab["gpg"]["public_key_file"]]),
        s3=S3Settings(endpoint=endpoint["endpoint"], region=endpoint["region"], access_key=endpoint["access_key"],
                      secret_key=endpoint["secret_key"]), **options)
    out = backup.run(req)
    return out["manifest"]


def backup_with_playbook(pg: dict, bucket: str, database: str, workdir, **item) -> dict:
    """Run playbooks/backup.yml for ``database`` into ``s3://bucket/db`` (``item``: more keys of the
    lifeboat_databases item); returns the playbook's output.

    The extra vars (with the lab's throwaway password) go through a 0600 file, never argv.
    """
    import json
    import pathlib

    path = pathlib.Path(workdir) / "backup-vars.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"lifeboat_databases": [{"name": database, "host": pg["host"], "port": pg["port"],
                                           "user": pg["backup_user"], **item}],
                   "lifeboat_database_secrets": {database: {"password": pg["backup_password"]}},
                   "lifeboat_backup_destination": f"s3://{bucket}/db"}, fh)
    proc = run_playbook("playbooks/backup.yml", "-e", f"@{path}")
    path.unlink()
    if proc.returncode != 0:
        raise AssertionError("backup.yml failed:\n" + proc.stdout + proc.stderr)
    return proc.stdout
