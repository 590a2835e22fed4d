"""Fixtures of the integration tests: the shared lab (``.lab/lab.json``, ``LIFEBOAT_LAB_DIR``), private
databases and buckets with unique names (removed afterwards), and backed-up copies of the sample database.
"""
from __future__ import annotations


import psycopg
import pytest
from psycopg import sql
from restore_helpers import backup_with_engine, backup_with_playbook, source_database, storage_for, template_database
from testlib import LAB_DIR, dsn, empty_bucket, load_lab, s3_client, unique

from ansible.module_utils.lifeboat import manifest as mf


@pytest.fixture(scope="session")
def lab() -> dict:
    path = LAB_DIR / "lab.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: the integration tests need the local lab, run `make lab` first")
    return load_lab(path)  # secrets hidden from what pytest prints


@pytest.fixture(scope="session")
def pg(lab) -> dict:
    return lab["postgres"]


@pytest.fixture(scope="session")
def pg_admin_dsn(pg) -> str:
    return dsn(pg, "admin_user", "admin_password", "postgres")


@pytest.fixture(scope="session")
def app_dsn(pg) -> str:
    """The lab application database, as its backup user sees it."""
    return dsn(pg, "backup_user", "backup_password", pg["app_database"])


@pytest.fixture
def scratch_db(pg):
    """An empty database with a unique name, dropped after the test."""
    name = unique("lbtest").replace("-", "_")
    admin_dsn = dsn(pg, "admin_user", "admin_password", "postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield {"name": name, "dsn": dsn(pg, "admin_user", "admin_password", name)}
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def s3_primary(lab):
    return s3_client(lab["s3"]["primary"])


@pytest.fixture(scope="session")
def s3_backup(lab):
    return s3_client(lab["s3"]["backup"])


@pytest.fixture
def scratch_bucket(lab, s3_backup):
    """A fresh bucket on the lab's "backup" endpoint: (name, endpoint settings dict)."""
    name = unique("lbtest")
    s3_backup.create_bucket(Bucket=name)
    try:
        yield name, lab["s3"]["backup"]
    finally:
        try:
            empty_bucket(s3_backup, name)
        except Exception as exc:  # report, but do not hide the test's own outcome
            print(f"cleanup of bucket {name} failed: {exc}")


@pytest.fixture(scope="session")
def source_template(pg):
    """A private template database loaded from the lab's sample SQL (see restore_helpers.template_database)."""
    with template_database(pg) as name:
        yield name


@pytest.fixture
def backed_up(pg, lab, scratch_bucket, source_template):
    """(database copy, bucket, storage, manifest): a private source database with one Lifeboat backup."""
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        manifest = backup_with_engine(pg, lab, storage, bucket, endpoint, db)
        yield db, bucket, storage, manifest


@pytest.fixture
def backed_up_by_playbook(pg, lab, scratch_bucket, tmp_path, source_template):
    """Like backed_up, but the backup is made by playbooks/backup.yml."""
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        backup_with_playbook(pg, bucket, db, tmp_path)
        ref = mf.select_backup(storage, db)
        yield db, bucket, storage, mf.read_manifest(storage, ref.manifest_key)
