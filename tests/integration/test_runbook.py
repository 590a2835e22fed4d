"""docs/runbook-restore.md's by-hand steps run as written (issue 11): the document's own bash blocks, with only its
example values (host, bucket, database and role names, key directory) replaced by the lab's, against real
PostgreSQL, SeaweedFS, gpg and the aws CLI. Part C (the older procedure's plain .sql.gz dump); B.1/B.2 are
followed by tests/integration/test_fidelity.py::test_runbook_by_hand_restores_roles_privileges_and_settings.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from restore_helpers import (
    counts,
    make_legacy_backup,
    source_database,
    storage_for,
)
from testlib import REPO

RUNBOOK = REPO / "docs" / "runbook-restore.md"


@pytest.fixture(autouse=True)
def aws_cli() -> None:
    """The runbook's by-hand steps use the aws CLI: `bash scripts/setup.sh --test` installs Debian's awscli, so
    a missing one is a failure here (a skip would let the runbook go unproven)."""
    assert shutil.which("aws"), "no aws CLI on PATH: run bash scripts/setup.sh --test (Debian package awscli)"


def block(heading: str, nth: int = 0) -> str:
    """The ``nth`` ```bash block after ``heading`` (a line of the runbook)."""
    text = RUNBOOK.read_text()
    start = text.index("\n" + heading + "\n")
    body = text[start:].split("```bash\n", nth + 1)[nth + 1]
    return body.split("\n```", 1)[0] + "\n"


def as_in_the_lab(script: str, pg: dict, lab: dict, db: str, replace: dict[str, str]) -> str:
    """The runbook's example values -> the lab's. Nothing else of the text changes."""
    ep = lab["s3"]["backup"]
    pairs = {
        "export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...": "export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY",
        "PGHOST=db.example.internal PGPORT=5432 PGUSER=lifeboat_admin":
            f"PGHOST={pg['host']} PGPORT={pg['port']} PGUSER={pg['admin_user']}",
        "https://s3.example.com": ep["endpoint"],
        "--region eu-west-1": f"--region {ep['region']}",
        "/secure/lifeboat-gnupg": lab["gpg"]["homedir"],
        "app_reader": pg["backup_user"],
        "app_owner": pg["app_user"],
        **replace,
    }
    for old, new in pairs.items():
        script = script.replace(old, new)
    return script.replace("appdb", db)


def run(script: str, tmp_path, pg: dict, lab: dict) -> subprocess.CompletedProcess:
    pgpass = tmp_path / ".pgpass-restore"
    fd = os.open(pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{pg['host']}:{pg['port']}:*:{pg['admin_user']}:{pg['admin_password']}\n")
    ep = lab["s3"]["backup"]
    env = {"PATH": f"{pg['bin_dir']}:{os.environ['PATH']}", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "AWS_ACCESS_KEY_ID": ep["access_key"], "AWS_SECRET_ACCESS_KEY": ep["secret_key"],
           "PGSSLMODE": "prefer"}
    script = script.replace("~/.pgpass-restore", str(pgpass))
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_part_c_by_hand_an_older_procedure_dump(pg, lab, scratch_bucket, source_template, tmp_path):
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        original = counts(pg, db)
        key = make_legacy_backup(pg, storage, db)
        heading = "## C. Older procedure: `db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz`, `backup_YYYYmmdd_HHMMSS.sql.gz`"
        assert "ansible-playbook playbooks/restore.yml" in block(heading)  # the Lifeboat way first, by hand next
        by_hand = block(heading, 1)
        named = re.search(r"s3://lifeboat-backups/db/(db-backup-\S+\.sql\.gz)", by_hand).group(1)
        script = as_in_the_lab(block("## B. By hand, with stock tools only"), pg, lab, db, {}) + \
            as_in_the_lab(by_hand, pg, lab, db, {f"s3://lifeboat-backups/db/{named}": f"s3://{bucket}/db/{key}"})
        proc = run(script, tmp_path, pg, lab)
        assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        assert "-- PostgreSQL database dump complete" in proc.stdout
        assert counts(pg, f"{db}_new") == original
