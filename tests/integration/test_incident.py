"""The worst hour without surprises (issue 11): what a newcomer meets during an incident, at playbook level."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from storage_helpers import bucket
from testlib import REPO, run_playbook


def vars_file(tmp_path, values: dict) -> str:
    """Extra vars through a 0600 file (never argv); pytest removes tmp_path after the run."""
    path = tmp_path / "vars.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return str(path)


def keys(client, name: str) -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


@pytest.mark.parametrize(("playbook", "typo", "meant"), [
    ("playbooks/restore.yml", "lifeboat_restore_backup_ld", "lifeboat_restore_backup_id"),
    ("playbooks/storage_restore.yml", "lifeboat_storage_restore_prefx", "lifeboat_storage_restore_prefix"),
    ("playbooks/backup.yml", "lifeboat_backup_compresion", "lifeboat_backup_compression"),
])
def test_a_typo_in_a_variable_name_is_refused_naming_the_closest(playbook, typo, meant):
    proc = run_playbook(playbook, "-e", f"{typo}=x", "-e", "lifeboat_confirm=nothing", check=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{playbook} ran with the unknown variable {typo}:\n{out[-3000:]}"
    assert f"unknown variable {typo}: did you mean {meant}?" in out, out[-3000:]
    assert "ok=0" in out  # refused before anything ran


def test_make_backup_protects_the_databases_the_bucket_and_the_archives(tmp_path, lab):
    """`make backup` with the lab's own configuration (destinations moved to scratch buckets): the database,
    the bucket, the lab's directory archive and its configuration archive, each printed with where it landed."""
    plan = subprocess.run(["make", "-n", "-o", "lab", "-o", "setup", "backup"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout
    assert "playbooks/storage_backup.yml" in plan, f"make backup does not back up the storage:\n{plan}"
    with bucket(lab["s3"]["backup"]) as (dest, client), \
            bucket(lab["s3"]["backup"], versioned=True) as (mirror, _):
        path = vars_file(tmp_path, {"lifeboat_backup_destination": f"s3://{dest}/db",
                                    "lifeboat_storage_backup_url": f"s3://{mirror}/app-storage",
                                    "lifeboat_storage_archive_url": f"s3://{dest}/files",
                                    "lifeboat_storage_run_record_url": f"s3://{dest}/runs"})
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        proc = subprocess.run(["make", "-o", "lab", "-o", "setup", "backup", f"ARGS=-e @{path}"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=900, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        stored = keys(client, dest)
        mirrored = keys(client, mirror)
        db = [k for k in stored if k.startswith(f"db/{lab['postgres']['app_database']}/")]
        public = [k for k in stored if k.startswith("files/public/") and ".tar" in k]
        config = [k for k in stored if k.startswith("files/config/") and ".tar" in k]
        assert db and public and config, stored
        assert len(mirrored) >= 20 and all(k.startswith("app-storage/") for k in mirrored), mirrored[:5]
        # each printed with where it landed
        assert re.search(rf"backup: +s3://{dest}/db/{lab['postgres']['app_database']}/", out), out[-4000:]
        assert f"bucket: s3://{lab['s3']['primary']['buckets'][0]} -> s3://{mirror}/app-storage" in out, out[-4000:]
        for key in public + config:
            assert f"backup:          s3://{dest}/{key}" in out, (key, out[-4000:])
        # the recorded restore command runs as pasted on this S3-compatible store: endpoint and region included
        backup_ep = lab["s3"]["backup"]
        for key in public + config:
            manifest = json.loads(client.get_object(Bucket=dest, Key=key.rsplit("/", 1)[0] + "/manifest.json")
                                  ["Body"].read())
            fetch = (f"aws --endpoint-url {backup_ep['endpoint']} --region {backup_ep['region']} "
                     f"s3 cp s3://{dest}/{key} -")
            assert manifest["restore_command"].startswith(fetch), manifest["restore_command"]


def verify(bucket: str, tmp_path, **extra) -> subprocess.CompletedProcess:
    path = vars_file(tmp_path, {"lifeboat_restore_destination": f"s3://{bucket}/db",
                                "lifeboat_verify_report_dir": str(tmp_path / "reports"), **extra})
    return run_playbook("playbooks/verify.yml", "-e", f"@{path}")


def test_a_drill_that_cannot_run_is_inconclusive_and_the_backup_stays_verified(pg, backed_up_by_playbook, tmp_path):
    from ansible.module_utils.lifeboat import manifest as mf
    from ansible.module_utils.lifeboat import restore as rs

    db, bucket, storage, manifest = backed_up_by_playbook
    proc = verify(bucket, tmp_path, lifeboat_verify_databases=[db])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # a wrong key directory: the drill could not run; recorded as inconclusive, never as failed
    proc = verify(bucket, tmp_path, lifeboat_verify_databases=[db],
                  lifeboat_restore_gpg_homedir=str(tmp_path / "no-such-gnupg"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "VERIFICATION INCONCLUSIVE" in out and "VERIFICATION FAILED" not in out, out[-3000:]
    assert "no-such-gnupg" in out
    records = rs.verification_records(storage, mf.select_backup(storage, db))
    assert [r["outcome"] for r in records] == ["passed", "inconclusive"]
    assert {c["name"]: c["outcome"] for c in records[-1]["checks"]}.get("restore") == "inconclusive"
    # restore still trusts the backup: the inconclusive drill is no verdict
    choice = rs.choose_backup(storage, db)
    assert choice.ref.backup_id == manifest["backup_id"]
    assert choice.reason.startswith("latest verified"), choice.reason
    assert choice.warnings == []


@pytest.fixture
def drill_role(pg):
    """A non-superuser drill role with CREATEDB (it may not create the amcheck extension); dropped afterwards."""
    from restore_helpers import admin_conn
    from psycopg import sql

    name = f"lbtest_drill_{os.getpid()}"
    password = os.urandom(12).hex()
    with admin_conn(pg) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(name),
                                                                              sql.Literal(password)))
    try:
        yield name, password
    finally:
        with admin_conn(pg) as conn:
            for (db,) in conn.execute("SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                                      "WHERE r.rolname = %s", (name,)).fetchall():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_amcheck_that_is_not_permitted_is_skipped_with_a_warning(backed_up_by_playbook, tmp_path, drill_role):
    db, bucket, storage, manifest = backed_up_by_playbook
    role, password = drill_role
    proc = verify(bucket, tmp_path, lifeboat_verify_databases=[db], lifeboat_restore_user=role,
                  lifeboat_restore_password=password)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    report = json.loads(next((tmp_path / "reports").glob("*.json")).read_text())
    assert report["outcome"] == "passed"
    checks = {c["name"]: c for c in report["results"][0]["checks"]}
    assert checks["amcheck"]["outcome"] == "skipped"
    assert "not permitted" in checks["amcheck"]["detail"] and "lifeboat_verify_amcheck" in checks["amcheck"]["detail"]
    assert checks["row_counts"]["outcome"] == "passed" and checks["schema_hash"]["outcome"] == "passed"
    assert re.search(r"\[WARNING\].*amcheck skipped", out), out[-3000:]
    # and it can be switched off
    for old in (tmp_path / "reports").iterdir():
        old.unlink()
    proc = verify(bucket, tmp_path, lifeboat_verify_databases=[db], lifeboat_restore_user=role,
                  lifeboat_restore_password=password, lifeboat_verify_amcheck=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(next((tmp_path / "reports").glob("*.json")).read_text())
    assert "amcheck" not in {c["name"] for c in report["results"][0]["checks"]}
    assert "amcheck skipped" not in proc.stdout + proc.stderr


def test_the_dsn_takes_precedence_over_the_items_settings(pg, lab, scratch_bucket, source_template, tmp_path):
    """docs/deploy.md: the DSN in lifeboat_database_secrets takes precedence over the item's host, port, user and
    database. The item names database A (and a wrong port); the DSN names database B: B is backed up."""
    from restore_helpers import source_database

    bucket, endpoint = scratch_bucket
    with source_database(pg, source_template) as item_db, \
            source_database(pg, source_template, "CREATE TABLE public.only_in_dsn_db (id int)") as dsn_db:
        dsn = (f"postgresql://{pg['backup_user']}:{pg['backup_password']}@{pg['host']}:{pg['port']}/{dsn_db}"
               "?sslmode=prefer")
        path = vars_file(tmp_path, {
            "lifeboat_databases": [{"name": item_db, "host": "127.0.0.1", "port": 1, "user": "nobody"}],
            "lifeboat_database_secrets": {item_db: {"dsn": dsn}},
            "lifeboat_backup_destination": f"s3://{bucket}/db"})
        proc = run_playbook("playbooks/backup.yml", "-e", f"@{path}")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert pg["backup_password"] not in out
        from testlib import s3_client
        stored = keys(s3_client(endpoint), bucket)
        assert any(k.startswith(f"db/{dsn_db}/") for k in stored), stored
        assert not any(k.startswith(f"db/{item_db}/") for k in stored), stored
        manifest_key = next(k for k in stored if k.startswith(f"db/{dsn_db}/") and k.endswith("manifest.json"))
        manifest = json.loads(s3_client(endpoint).get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
        assert ("public", "only_in_dsn_db") in {(t["schema"], t["name"]) for t in manifest["tables"]}


def test_point_in_time_restore_says_when_it_skipped_overwritten_files(tmp_path, lab):
    """No sync ran after the damage: the overwritten file's current content is in no backup, so it is skipped;
    the summary says so and names the option that restores it anyway."""
    import datetime as dt
    import time

    with bucket(lab["s3"]["primary"]) as (prim, pc), bucket(lab["s3"]["backup"], versioned=True) as (bk, _):
        pc.put_object(Bucket=prim, Key="notes/readme.txt", Body=b"v1")
        path = vars_file(tmp_path, {"lifeboat_storage_primary_url": f"s3://{prim}",
                                    "lifeboat_storage_backup_url": f"s3://{bk}/app-storage"})
        proc = run_playbook("playbooks/storage_backup.yml", "-e", f"@{path}", "--tags", "storage_backup_sync")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        time.sleep(1.2)
        at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        time.sleep(1.5)
        pc.put_object(Bucket=prim, Key="notes/readme.txt", Body=b"v2 (bad)")  # no sync after the damage
        pit = ["-e", f"@{path}", "-e", '{"lifeboat_storage_restore_steps": ["point_in_time"]}',
               "-e", f"lifeboat_storage_restore_time={at}", "-e", "lifeboat_storage_restore_prefix=notes"]
        proc = run_playbook("playbooks/storage_restore.yml", *pit)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert pc.get_object(Bucket=prim, Key="notes/readme.txt")["Body"].read() == b"v2 (bad)"
        assert re.search(r"1 file\(s\) NOT restored, e.g. notes/readme.txt", out), out[-3000:]
        assert "-e lifeboat_storage_restore_force=true" in out
        proc = run_playbook("playbooks/storage_restore.yml", *pit, "-e", "lifeboat_storage_restore_force=true")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert pc.get_object(Bucket=prim, Key="notes/readme.txt")["Body"].read() == b"v1"
        assert "point_in_time_skipped: none" in proc.stdout


# --- 8: confirmation and choice -----------------------------------------------------------------------------------

def on_a_terminal(args: list[str], answer: bytes | None = None, after: bytes = b"", timeout: int = 600):
    """ansible-playbook on a pseudo-terminal (as an operator runs it): (exit code, output, output before the
    answer). ``answer`` is typed once ``after`` has appeared; a run that waits for input it never gets fails at
    ``timeout``."""
    import pty
    import select
    import signal
    import time

    from testlib import VENV_BIN

    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and controlling tty
        os.chdir(REPO)
        os.execve(str(VENV_BIN / "ansible-playbook"), [str(VENV_BIN / "ansible-playbook"), *args], env)
    out, before, deadline = b"", None, time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"still running after {timeout}s (waiting for input?):\n"
                                     + out.decode(errors="replace")[-3000:])
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                out += data
            if answer is not None and before is None and after in out:
                before = out
                time.sleep(0.5)
                os.write(fd, answer)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = out.decode(errors="replace").replace("\r", "")
    return os.waitstatus_to_exitcode(status), text, (before or b"").decode(errors="replace").replace("\r", "")


def restore_vars(tmp_path, db: str, bucket: str, **extra) -> str:
    return vars_file(tmp_path, {"lifeboat_restore_database": db, "lifeboat_restore_destination": f"s3://{bucket}/db",
                                "lifeboat_restore_safety_snapshot": False, **extra})


def test_the_plan_comes_first_then_a_confirmation_naming_the_backup_and_its_age(pg, backed_up, tmp_path):
    from restore_helpers import counts, manifest_counts

    db, bucket, _storage, manifest = backed_up
    path = restore_vars(tmp_path, db, bucket)
    # --check never prompts: on a terminal, with no lifeboat_confirm, it prints the plan and ends
    code, out, _ = on_a_terminal(["playbooks/restore.yml", "-e", f"@{path}", "--check"], timeout=300)
    assert code == 0, out[-3000:]
    assert f"1. backup: {manifest['backup_id']}, taken " in out, out[-3000:]
    assert "to confirm" not in out, out[-3000:]
    # a real run: the plan, then the question naming the backup and its age; the answer restores it
    with pg_conn(pg, db) as conn:
        conn.execute("DELETE FROM public.invoices")
    code, out, before = on_a_terminal(["playbooks/restore.yml", "-e", f"@{path}"], answer=db.encode() + b"\r",
                                      after=b"to confirm")
    assert code == 0, out[-4000:]
    flat = " ".join(before.split())
    assert f"1. backup: {manifest['backup_id']}, taken " in flat, flat[-3000:]
    assert "5. restore into new database" in flat
    asked = flat[flat.rindex("Restore backup"):]
    assert re.match(rf"Restore backup {re.escape(manifest['backup_id'])} \(taken \S+Z, (\d+[smhd] ?)+(\d+m )?ago\) "
                    rf"into database '{db}' \(it REPLACES the current one\)\? Type the name of the target database "
                    "to confirm", asked), asked
    assert flat.index("1. backup:") < flat.rindex("Restore backup")  # the plan came first
    assert counts(pg, db) == manifest_counts(manifest)


def pg_conn(pg, db):
    from restore_helpers import admin_conn
    return admin_conn(pg, db)


def test_choice_errors_name_the_playbooks_variables_and_the_way_out(pg, backed_up, tmp_path):
    from restore_helpers import counts

    db, bucket, _storage, manifest = backed_up

    def check(**extra):
        proc = run_playbook("playbooks/restore.yml", "-e", f"@{restore_vars(tmp_path, db, bucket, **extra)}",
                            check=True)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out[-3000:]
        assert "Traceback" not in out and "ValueError" not in out, out[-3000:]
        return " ".join(out.split())

    # a bad id lists the ids that exist
    out = check(lifeboat_restore_backup_id=f"{db}-20200101T000000Z")
    assert (f"RESTORE FAILED: lifeboat_restore_backup_id: no backup '{db}-20200101T000000Z'" in out
            and f"the backups that exist are: {manifest['backup_id']}" in out), out[-3000:]
    # before=yesterday: what a time looks like, not a raw ValueError
    out = check(lifeboat_restore_before="yesterday")
    assert re.search(r"RESTORE FAILED: lifeboat_restore_before: 'yesterday' is not a time; give a date and time in "
                     r"UTC such as '\d{4}-\d\d-\d\d 12:00'", out), out[-3000:]
    # module options are named as the playbook's variables
    out = check(lifeboat_restore_mode="partial")
    assert "RESTORE FAILED: lifeboat_restore_tables: mode partial needs tables or schemas" in out, out[-3000:]
    # a missing GnuPG directory is reported as such (it was "the public key ... is not in gpg_homedir; give
    # snapshot_options.encryption_recipients"), in check mode and before anything changes in a real run
    missing = str(tmp_path / "no-such-gnupg")
    out = check(lifeboat_restore_gpg_homedir=missing)
    assert f"lifeboat_restore_gpg_homedir: the GnuPG directory '{missing}' does not exist" in out, out[-3000:]
    before = counts(pg, db)
    path = restore_vars(tmp_path, db, bucket, lifeboat_restore_gpg_homedir=missing,
                        lifeboat_restore_safety_snapshot=True, lifeboat_confirm=db)
    proc = run_playbook("playbooks/restore.yml", "-e", f"@{path}")
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert f"lifeboat_restore_gpg_homedir: the GnuPG directory '{missing}' does not exist" in out, out[-3000:]
    assert "is not in gpg_homedir" not in out and "snapshot_options" not in out, out[-3000:]
    assert counts(pg, db) == before


def test_a_restore_into_a_database_that_does_not_exist_shows_no_swap_and_no_old_database(pg, backed_up, tmp_path):
    from psycopg import sql
    from restore_helpers import admin_conn, counts, manifest_counts
    from testlib import unique

    db, bucket, _storage, manifest = backed_up
    target = unique("lbnew").replace("-", "_")
    try:
        path = restore_vars(tmp_path, target, bucket, lifeboat_restore_source_database=db, lifeboat_confirm=target)
        proc = run_playbook("playbooks/restore.yml", "-e", f"@{path}", check=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "(nothing to swap)" in proc.stdout and "_lifeboat_old_" not in proc.stdout, proc.stdout[-3000:]
        proc = run_playbook("playbooks/restore.yml", "-e", f"@{path}")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert counts(pg, target) == manifest_counts(manifest)
        assert "_lifeboat_old_" not in out and "previous database kept" not in out, out[-3000:]
        assert not re.search(r"^\s*\"?\s*swap\s", out, re.M), out[-3000:]
        flat = " ".join(out.split()).replace("''", "'")  # the YAML callback wraps lines and doubles quotes
        assert "nothing to swap, no old database" in flat and f"('{target}' did not exist)" in flat, flat[-3000:]
    finally:
        with admin_conn(pg) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))


# --- 7: the older procedure's dumps --------------------------------------------------------------------------------

def test_older_dumps_in_database_backups_an_empty_gzip_is_skipped_and_said_so(pg, lab, scratch_bucket,
                                                                             source_template, tmp_path):
    """The S3 procedure's dumps under database-backups/ (runbook C): backup_YYYYmmdd_HHMMSS.sql.gz is recognised,
    and a newer empty gzip (the old cron job's output when pg_dump failed) is skipped in "latest", said so."""
    import datetime as dt
    import gzip

    from restore_helpers import counts, make_legacy_backup, source_database, storage_for

    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint, prefix="database-backups")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with source_database(pg, source_template) as db:
        original = counts(pg, db)
        key = make_legacy_backup(pg, storage, db, now - dt.timedelta(hours=2))
        good = (now - dt.timedelta(hours=2)).strftime("backup_%Y%m%d_%H%M%S.sql.gz")
        storage.put_bytes(good, storage.get_bytes(key))
        storage.delete(key)
        empty = (now - dt.timedelta(hours=1)).strftime("backup_%Y%m%d_%H%M%S.sql.gz")
        storage.put_bytes(empty, gzip.compress(b""))
        with pg_conn(pg, db) as conn:
            conn.execute("DELETE FROM public.invoices")
        path = vars_file(tmp_path, {"lifeboat_restore_database": db,
                                    "lifeboat_restore_destination": f"s3://{bucket}/database-backups",
                                    "lifeboat_restore_safety_snapshot": False, "lifeboat_confirm": db})
        proc = run_playbook("playbooks/restore.yml", "-e", f"@{path}")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        flat = " ".join(out.split())
        assert f"1. backup: {good[:-len('.sql.gz')]}, taken" in flat, flat[-3000:]
        said = rf"older dump {empty[:-len('.sql.gz')]} \(\S+\) is an EMPTY gzip .*skipped"
        assert re.search(said, flat), flat[-3000:]
        assert counts(pg, db) == original


# --- 6: every column that holds a storage key ---------------------------------------------------------------------

def test_the_lab_defaults_restore_files_referenced_by_every_column(tmp_path, lab, app_dsn):
    """The lab's lifeboat_storage_missing_query covers videos.storage_path AND generated_videos.output_path (it
    covered only the first: the second column's lost files were never mentioned); a list of queries works."""
    import psycopg

    app = lab["s3"]["primary"]["buckets"][0]
    with psycopg.connect(app_dsn) as conn:
        video = conn.execute("SELECT storage_path FROM videos ORDER BY id LIMIT 1").fetchone()[0]
        output = conn.execute("SELECT output_path FROM generated_videos WHERE output_path IS NOT NULL "
                              "ORDER BY id LIMIT 1").fetchone()[0]
    with bucket(lab["s3"]["primary"]) as (prim, pc), bucket(lab["s3"]["backup"], versioned=True) as (bk, _):
        for key in (video, output):
            pc.copy_object(Bucket=prim, Key=key, CopySource={"Bucket": app, "Key": key})
        path = vars_file(tmp_path, {"lifeboat_storage_primary_url": f"s3://{prim}",
                                    "lifeboat_storage_backup_url": f"s3://{bk}/app-storage"})
        proc = run_playbook("playbooks/storage_backup.yml", "-e", f"@{path}", "--tags", "storage_backup_sync")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for key in (video, output):  # the incident: both files lost
            pc.delete_object(Bucket=prim, Key=key)
        proc = run_playbook("playbooks/storage_restore.yml", "-e", f"@{path}")  # the lab's default queries
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        for key in (video, output):
            assert pc.get_object(Bucket=prim, Key=key)["Body"].read(), key
            assert key in out


# --- 4: a printed command runs as pasted ---------------------------------------------------------------------------

def test_the_printed_restore_command_is_one_line_equal_to_the_manifests(backed_up_by_playbook, pg, tmp_path):
    """backup.yml printed the restore command folded over several lines (the callback's YAML wrapped the list's
    strings): pasted, it failed. Now the line after 'restore command: ' is the manifest's command, whole
    (test_pg_backup runs that command with bash and stock tools)."""
    from restore_helpers import backup_with_playbook

    db, bucket, storage, _manifest = backed_up_by_playbook
    out = backup_with_playbook(pg, bucket, db, tmp_path)
    lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("restore command: ")]
    assert len(lines) == 1, out[-3000:]
    from ansible.module_utils.lifeboat import manifest as mf
    newest = mf.read_manifest(storage, mf.select_backup(storage, db).manifest_key)
    assert lines[0] == "restore command: " + newest["restore"]["command"], (lines[0], out[-3000:])
    assert f"backup:          {newest['artifact']['uri']}" in out
