"""lifeboat_pg_backup against the lab: real PostgreSQL 15/18, real SeaweedFS, real gpg/age.

Happy paths restore every artifact with the stock command written in its manifest (bash, aws,
gpg/age, zstd/gzip, pg_restore/psql; the target connection comes from PGPASSFILE, never argv)
and compare the row counts with the manifest. Failure paths check the message names the cause,
no complete-looking object and no multipart upload remains, earlier backups are untouched, and
the password appears neither in the output, nor in the process list, nor in stored files.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import socket
import subprocess
import threading
import uuid

import psycopg
import pytest
from testlib import admin_sql, empty_bucket, run_playbook, s3_client, unique
from psycopg import sql

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import pgmeta

PLAYBOOK = """\
- name: lifeboat_pg_backup under test
  hosts: localhost
  gather_facts: false
  tasks:
    - name: backup
      lifeboat_pg_backup: "{{ lb_args }}"
"""


# ------------------------------------------------------------------ helpers

class PsSampler:
    """Samples `ps -eo args` every 50 ms while a run is in progress.

    Only this test's process tree counts (ansible-playbook, the module, pg_dump, gpg...): other
    engineers' processes on the shared machine are not what the test is about.
    """

    def __init__(self):
        self.lines: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True,
                                 check=False).stdout
            children: dict[int, list[int]] = {}
            args: dict[int, str] = {}
            for line in out.splitlines():
                parts = line.split(None, 2)
                if len(parts) < 2:
                    continue
                pid, ppid = int(parts[0]), int(parts[1])
                children.setdefault(ppid, []).append(pid)
                args[pid] = parts[2] if len(parts) > 2 else ""
            todo, mine = [me], []
            while todo:
                pid = todo.pop()
                for child in children.get(pid, []):
                    mine.append(child)
                    todo.append(child)
            self.lines.extend(args[p] for p in mine)
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def assert_clean(self, *secrets: str):
        assert self.samples > 3 and self.lines, "the process list was not sampled"
        for secret in secrets:
            leaks = [line for line in self.lines if secret in line]
            assert not leaks, f"secret visible in the process list: {leaks[:1]}"


def run_backup(tmp_path: pathlib.Path, args: dict, check: bool = False) -> tuple[dict, str, PsSampler]:
    """Run the module through ansible-playbook; returns (task result, raw output, ps samples)."""
    tag = uuid.uuid4().hex[:8]
    pb = tmp_path / f"pb-{tag}.yml"
    pb.write_text(PLAYBOOK)
    varsfile = tmp_path / f"args-{tag}.json"
    fd = os.open(varsfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"lb_args": args}, fh)
    with PsSampler() as ps:
        proc = run_playbook(str(pb), "-e", f"@{varsfile}", check=check,
                            env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    varsfile.unlink()
    out = proc.stdout + proc.stderr
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        pytest.fail(f"no task result in the playbook output:\n{out[-3000:]}")
    return result, out, ps


def s3_args(lab: dict, bucket: str, prefix: str = "db") -> dict:
    b = lab["s3"]["backup"]
    return {"destination": f"s3://{bucket}/{prefix}", "s3_endpoint": b["endpoint"], "s3_region": b["region"],
            "s3_access_key": b["access_key"], "s3_secret_key": b["secret_key"], "part_size_mb": 5}


def pg_args(pg: dict, database: str | None = None, admin: bool = False) -> dict:
    if admin:
        return {"host": pg["host"], "port": pg["port"], "user": pg["admin_user"], "password": pg["admin_password"],
                "database": database or "postgres"}
    return {"host": pg["host"], "port": pg["port"], "user": pg["backup_user"], "password": pg["backup_password"],
            "database": database or pg["app_database"]}


def bucket_state(client, bucket: str) -> dict[str, str]:
    objs = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []) or []:
            objs[o["Key"]] = o["ETag"]
    return objs


def uploads(client, bucket: str) -> list:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) or []


def read_s3_manifest(client, uri: str) -> dict:
    bucket, key = uri[len("s3://"):].split("/", 1)
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


@contextlib.contextmanager
def gnupg_home_with(secret_key_file: str, tmp_path: pathlib.Path):
    home = tmp_path / f"gnupg-{uuid.uuid4().hex[:6]}"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import", secret_key_file], check=True,
                   capture_output=True)
    try:
        yield str(home)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True)


def stock_restore(command: str, lab: dict, target_db: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    """Run the manifest's restore command with bash and stock tools; libpq reads PGPASSFILE."""
    pg = lab["postgres"]
    passfile = tmp_path / f"pgpass-{uuid.uuid4().hex[:6]}"
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"*:*:*:*:{pg['admin_password']}\n")
    b = lab["s3"]["backup"]
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LC_ALL": "C.UTF-8",
           "PGHOST": pg["host"], "PGPORT": str(pg["port"]), "PGUSER": pg["admin_user"], "PGPASSFILE": str(passfile),
           "TARGET_DB": target_db, "AWS_ACCESS_KEY_ID": b["access_key"], "AWS_SECRET_ACCESS_KEY": b["secret_key"],
           "AGE_IDENTITY_FILE": lab["age"]["identity_file"]}
    with gnupg_home_with(lab["gpg"]["secret_key_file"], tmp_path) as home:
        env["GNUPGHOME"] = home
        proc = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600,
                              check=False, cwd=tmp_path)
    passfile.unlink()
    return proc


def restored_counts(pg: dict, database: str, tables: list[dict]) -> list[dict]:
    dsn = (f"host={pg['host']} port={pg['port']} user={pg['admin_user']} password={pg['admin_password']} "
           f"dbname={database}")
    with psycopg.connect(dsn) as conn:
        return pgmeta.row_counts(conn, [(t["schema"], t["name"]) for t in tables])


def assert_no_secret_in(out: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in out, "a secret appears in the module output"


def assert_restores(lab: dict, doc: dict, scratch_db: dict, tmp_path: pathlib.Path) -> None:
    proc = stock_restore(doc["restore"]["command"], lab, scratch_db["name"], tmp_path)
    assert proc.returncode == 0, f"stock restore failed: {proc.stderr[-2000:]}"
    assert doc["tables"], "the manifest lists no table"
    assert restored_counts(lab["postgres"], scratch_db["name"], doc["tables"]) == doc["tables"]


@pytest.fixture(scope="module")
def seeded(lab):
    """A bucket holding one earlier, complete backup; failure tests must leave it exactly as it is."""
    client = s3_client(lab["s3"]["backup"])
    bucket = unique("lbfail")
    client.create_bucket(Bucket=bucket)
    from ansible.module_utils.lifeboat import backup
    from ansible.module_utils.lifeboat.pgconn import PgTarget
    from ansible.module_utils.lifeboat.s3 import S3Settings

    pg, b = lab["postgres"], lab["s3"]["backup"]
    req = backup.BackupRequest(
        target=PgTarget(host=pg["host"], port=pg["port"], user=pg["backup_user"], password=pg["backup_password"],
                        database=pg["app_database"]),
        destination=f"s3://{bucket}/db",
        s3=S3Settings(endpoint=b["endpoint"], region=b["region"], access_key=b["access_key"],
                      secret_key=b["secret_key"]))
    earlier = backup.run(req)
    state = bucket_state(client, bucket)
    assert len(state) == 3  # the dump, the roles file beside it, the manifest
    # the non-superuser backup role may run pg_dumpall --roles-only --no-role-passwords
    assert earlier["manifest"]["roles"]["method"] == "pg_dumpall"
    assert pg["app_user"] in earlier["manifest"]["roles"]["required"]
    try:
        yield {"bucket": bucket, "client": client, "state": state, "earlier": earlier}
    finally:
        empty_bucket(client, bucket)


def assert_untouched(seeded: dict) -> None:
    client, bucket = seeded["client"], seeded["bucket"]
    assert bucket_state(client, bucket) == seeded["state"], "earlier backups changed or a new object appeared"
    assert uploads(client, bucket) == [], "a multipart upload was left behind"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------- round trip: make backup

def test_make_backup_restores_with_the_manifest_command(lab, scratch_db, tmp_path):
    """`make backup` runs playbooks/backup.yml; its manifest's stock command restores it exactly."""
    pg = lab["postgres"]
    with PsSampler() as ps:
        proc = run_playbook("playbooks/backup.yml", env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    ps.assert_clean(pg["backup_password"], lab["s3"]["backup"]["secret_key"])
    assert_no_secret_in(out, pg["backup_password"], lab["s3"]["backup"]["secret_key"])
    tasks = {t["task"]["name"]: t for t in json.loads(proc.stdout)["plays"][0]["tasks"]}
    results = tasks["Back up each database"]["hosts"]["localhost"]["results"]
    summary = json.dumps(tasks["Where each backup landed and how to restore it"]["hosts"]["localhost"])
    assert len(results) == 1
    res = results[0]
    assert res["changed"] is True and res["uri"].startswith("s3://lifeboat-backups/db/appdb/")
    for field in (res["uri"], res["sha256"], str(res["size"]), "restore command", "duration"):
        assert field in summary, f"the summary does not print {field}"

    client = s3_client(lab["s3"]["backup"])
    doc = read_s3_manifest(client, res["manifest_uri"])
    assert doc["schema"] == mf.SCHEMA and doc["database"] == pg["app_database"]
    assert doc["encryption"] == {"method": "gpg", "mode": "public-key", "recipients": [lab["gpg"]["fingerprint"]]}
    assert doc["compression"]["algorithm"] == "zstd" and doc["format"] == "custom"
    assert doc["pg_dump"]["major"] >= doc["server"]["version_num"] // 10000
    assert doc["restore"]["command"] == res["restore_command"]
    bucket, key = res["uri"][len("s3://"):].split("/", 1)
    stored = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == doc["artifact"]["sha256"] == res["sha256"]
    assert len(stored) == doc["artifact"]["size"]
    assert pg["backup_password"].encode() not in stored
    assert pg["backup_password"] not in json.dumps(doc)

    # the source's own counts in the manifest are those of the lab data
    names = {(t["schema"], t["name"]) for t in doc["tables"]}
    assert ("public", "users") in names and ("analytics", "events") in names
    assert_restores(lab, doc, scratch_db, tmp_path)
    # same server major: the restored catalog hashes like the source
    with psycopg.connect(scratch_db["dsn"]) as conn:
        assert pgmeta.schema_hash(conn) == doc["schema_hash"]


# ------------------------------------------------------------- happy paths, module

@pytest.mark.parametrize("variant", ["custom-zstd-gpg-s3", "plain-gzip-legacy-s3", "directory-zstd-age-s3",
                                     "custom-none-local", "plain-zstd-gpgpass-local"])
def test_backup_variants_restore(lab, scratch_db, scratch_bucket, tmp_path, variant):
    pg = lab["postgres"]
    bucket, _ = scratch_bucket
    args = pg_args(pg)
    args["tags"] = {"test": variant}
    local = tmp_path / "backups"
    passphrase = None
    if variant == "custom-zstd-gpg-s3":
        args |= s3_args(lab, bucket) | {"encryption": "gpg", "encryption_recipients": [lab["gpg"]["public_key_file"]],
                                         "compression_level": 5, "compression_threads": 2}
    elif variant == "plain-gzip-legacy-s3":
        args |= s3_args(lab, bucket, "legacy") | {"format": "plain", "compression": "gzip", "naming": "legacy"}
    elif variant == "directory-zstd-age-s3":
        args |= s3_args(lab, bucket) | {"format": "directory", "jobs": 2, "encryption": "age",
                                         "encryption_recipients": [lab["age"]["recipient"]]}
    elif variant == "custom-none-local":
        args |= {"destination": str(local), "compression": "none"}
    else:
        passphrase = "pass: " + uuid.uuid4().hex
        args |= {"destination": str(local), "format": "plain", "encryption": "gpg",
                 "encryption_passphrase": passphrase}
    res, out, ps = run_backup(tmp_path, args)
    assert res.get("failed") is not True, res.get("msg")
    secrets = [pg["backup_password"], lab["s3"]["backup"]["secret_key"]] + ([passphrase] if passphrase else [])
    assert_no_secret_in(out, *secrets)
    ps.assert_clean(*secrets)

    if args["destination"].startswith("s3://"):
        client = s3_client(lab["s3"]["backup"])
        doc = read_s3_manifest(client, res["manifest_uri"])
        assert uploads(client, bucket) == []
        stored = client.get_object(Bucket=bucket, Key=res["uri"].split("/", 3)[3])["Body"].read()
    else:
        doc = json.loads(pathlib.Path(res["manifest_uri"]).read_text())
        stored = pathlib.Path(res["uri"]).read_bytes()
        for path in local.rglob("*"):
            mode = path.stat().st_mode & 0o777
            assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {oct(mode)}"
            if path.is_file():
                data = path.read_bytes()
                for s in secrets:
                    assert s.encode() not in data, f"a secret is stored in {path}"
        assert not list(local.rglob("*partial"))
    assert hashlib.sha256(stored).hexdigest() == doc["artifact"]["sha256"] == res["sha256"]
    assert doc["tags"] == {"test": variant}
    assert res["tables"] == len(doc["tables"]) and res["total_rows"] == sum(t["rows"] for t in doc["tables"])

    if variant == "plain-gzip-legacy-s3":
        assert re.fullmatch(r"s3://[^/]+/legacy/db-backup-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.sql\.gz", res["uri"])
        assert res["manifest_uri"] == res["uri"] + ".manifest.json"
        assert stored[:2] == b"\x1f\x8b"  # gunzip-able as the older procedure's files
    if variant == "directory-zstd-age-s3":
        assert res["uri"].endswith(".tar.zst.age") and doc["encryption"]["method"] == "age"
    if variant == "custom-none-local":
        assert stored[:5] == b"PGDMP"
    if variant == "plain-zstd-gpgpass-local":
        assert doc["encryption"] == {"method": "gpg", "mode": "passphrase", "recipients": []}
        # the operator types the passphrase; the test feeds it to gpg through a file descriptor
        cmd = doc["restore"]["command"].replace("gpg --decrypt",
                                                "gpg --batch --pinentry-mode loopback --passphrase-fd 3 --decrypt")
        rfd, wfd = os.pipe()
        os.write(wfd, passphrase.encode() + b"\n")
        os.close(wfd)
        cmd = f"exec 3<&{rfd}; " + cmd
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"*:*:*:*:{pg['admin_password']}\n")
        pgpass.chmod(0o600)
        home = tmp_path / "gh"
        home.mkdir(mode=0o700)
        env = {"PATH": os.environ["PATH"], "PGHOST": pg["host"], "PGPORT": str(pg["port"]),
               "PGUSER": pg["admin_user"], "PGPASSFILE": str(pgpass), "TARGET_DB": scratch_db["name"],
               "GNUPGHOME": str(home)}
        proc = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, pass_fds=(rfd,),
                              check=False)
        os.close(rfd)
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert restored_counts(pg, scratch_db["name"], doc["tables"]) == doc["tables"]
        return
    assert_restores(lab, doc, scratch_db, tmp_path)


def test_check_mode_reports_the_plan_and_writes_nothing(lab, scratch_bucket, tmp_path):
    bucket, _ = scratch_bucket
    client = s3_client(lab["s3"]["backup"])
    args = pg_args(lab["postgres"]) | s3_args(lab, bucket) | {
        "encryption": "gpg", "encryption_recipients": [lab["gpg"]["public_key_file"]]}
    res, out, _ = run_backup(tmp_path, args, check=True)
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is True
    plan = res["plan"]
    assert plan["format"] == "custom" and plan["estimated_size"] > 100_000
    assert re.fullmatch(r"appdb/appdb-\d{8}T\d{6}Z/appdb\.dump\.zst\.gpg", plan["key"])
    assert bucket_state(client, bucket) == {} and uploads(client, bucket) == []
    local = tmp_path / "not-created"
    res, _, _ = run_backup(tmp_path, pg_args(lab["postgres"]) | {"destination": str(local)}, check=True)
    assert res.get("failed") is not True, res.get("msg")
    assert not local.exists()


# --------------------------------------------------------------------- failures

def _fail(tmp_path, args, *secrets):
    res, out, ps = run_backup(tmp_path, args)
    assert res.get("failed") is True, f"expected a failure, got {res}"
    assert_no_secret_in(out, *secrets)
    ps.assert_clean(*secrets)
    return res["msg"]


def test_wrong_password(lab, seeded, tmp_path):
    wrong = "wrong-" + uuid.uuid4().hex
    args = pg_args(lab["postgres"]) | s3_args(lab, seeded["bucket"]) | {"password": wrong}
    msg = _fail(tmp_path, args, wrong, lab["postgres"]["backup_password"])
    assert "authentication failed" in msg and "lifeboat_backup" in msg and "127.0.0.1:" in msg
    assert_untouched(seeded)


def test_unreachable_host(lab, seeded, tmp_path):
    port = free_port()
    args = pg_args(lab["postgres"]) | s3_args(lab, seeded["bucket"]) | {"port": port}
    msg = _fail(tmp_path, args, lab["postgres"]["backup_password"])
    assert "unreachable" in msg and f"127.0.0.1:{port}" in msg
    assert_untouched(seeded)


def test_database_does_not_exist(lab, seeded, tmp_path):
    args = pg_args(lab["postgres"], database="no_such_db_lb") | s3_args(lab, seeded["bucket"])
    msg = _fail(tmp_path, args, lab["postgres"]["backup_password"])
    assert "database 'no_such_db_lb' does not exist" in msg
    assert_untouched(seeded)


def test_bucket_does_not_exist(lab, seeded, tmp_path):
    missing = unique("lbnone")
    args = pg_args(lab["postgres"]) | s3_args(lab, missing)
    msg = _fail(tmp_path, args, lab["postgres"]["backup_password"], lab["s3"]["backup"]["secret_key"])
    assert f"bucket '{missing}' does not exist" in msg
    assert_untouched(seeded)


def test_wrong_s3_credentials(lab, seeded, tmp_path):
    bad = "bad" + uuid.uuid4().hex
    args = pg_args(lab["postgres"]) | s3_args(lab, seeded["bucket"]) | {"s3_secret_key": bad}
    msg = _fail(tmp_path, args, lab["postgres"]["backup_password"], bad)
    assert "access denied" in msg and "40106" in msg
    assert_untouched(seeded)


def test_unreachable_endpoint(lab, seeded, tmp_path):
    port = free_port()
    args = pg_args(lab["postgres"]) | s3_args(lab, seeded["bucket"]) | {"s3_endpoint": f"http://127.0.0.1:{port}"}
    msg = _fail(tmp_path, args, lab["postgres"]["backup_password"], lab["s3"]["backup"]["secret_key"])
    assert "cannot reach" in msg and f"127.0.0.1:{port}" in msg
    assert_untouched(seeded)


def test_missing_encryption_key(lab, seeded, tmp_path):
    missing = str(tmp_path / "gone.pub.asc")
    args = pg_args(lab["postgres"]) | s3_args(lab, seeded["bucket"]) | {
        "encryption": "gpg", "encryption_recipients": [missing]}
    msg = _fail(tmp_path, args, lab["postgres"]["backup_password"])
    assert f"key file '{missing}' does not exist" in msg and "encryption_recipients" in msg
    assert_untouched(seeded)


@pytest.fixture
def big_db(lab, scratch_db):
    """scratch_db with ~24 MB of poorly compressible rows (enough for several 5 MiB parts)."""
    admin_sql(lab["postgres"], "CREATE TABLE bulk AS SELECT i, "
              "(SELECT string_agg(md5((i * 100 + j)::text), '') FROM generate_series(1, 20) j) AS payload "
              "FROM generate_series(1, 36000) i", database=scratch_db["name"])
    return scratch_db


def _killer_bin_dir(tmp_path: pathlib.Path, real_dir: str, after_bytes: int) -> str:
    """A pg_bin_dir whose pg_dump runs the real one, passes `after_bytes` on, then dies by SIGKILL."""
    d = tmp_path / "killer-bin"
    d.mkdir()
    script = d / "pg_dump"
    script.write_text(f"""#!/bin/bash
if [ "$1" = "--version" ]; then exec {real_dir}/pg_dump --version; fi
{real_dir}/pg_dump "$@" | head -c {after_bytes}
kill -KILL $$
""")
    script.chmod(0o700)
    return str(d)


def test_pg_dump_killed_mid_stream_s3(lab, seeded, big_db, tmp_path):
    pg = lab["postgres"]
    bin_dir = _killer_bin_dir(tmp_path, pg["bin_dir"], 12 * 1024 * 1024)
    args = pg_args(pg, big_db["name"], admin=True) | s3_args(lab, seeded["bucket"]) | {
        "pg_bin_dir": bin_dir, "compression": "none"}
    msg = _fail(tmp_path, args, pg["admin_password"], lab["s3"]["backup"]["secret_key"])
    assert "pg_dump failed (killed by SIGKILL)" in msg
    assert_untouched(seeded)  # two 5 MiB parts were uploaded, then aborted


def test_pg_dump_killed_mid_stream_local(lab, big_db, tmp_path):
    pg = lab["postgres"]
    dest = tmp_path / "dest"
    earlier, _, _ = run_backup(tmp_path, pg_args(pg) | {"destination": str(dest)})
    assert earlier.get("failed") is not True, earlier.get("msg")
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    bin_dir = _killer_bin_dir(tmp_path, pg["bin_dir"], 3 * 1024 * 1024)
    args = pg_args(pg, big_db["name"], admin=True) | {"destination": str(dest), "pg_bin_dir": bin_dir}
    msg = _fail(tmp_path, args, pg["admin_password"])
    assert "pg_dump failed (killed by SIGKILL)" in msg
    after = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == before, "the failed run left files or changed the earlier backup"


def test_pg_dump_error_on_stderr_fails(lab, seeded, tmp_path):
    """A pg_dump that prints 'pg_dump: error:' yet exits 0 still fails the task."""
    pg = lab["postgres"]
    d = tmp_path / "liar-bin"
    d.mkdir()
    (d / "pg_dump").write_text(f"""#!/bin/bash
if [ "$1" = "--version" ]; then exec {pg['bin_dir']}/pg_dump --version; fi
{pg['bin_dir']}/pg_dump "$@"
echo "pg_dump: error: simulated failure after the data" >&2
exit 0
""")
    (d / "pg_dump").chmod(0o700)
    args = pg_args(pg) | s3_args(lab, seeded["bucket"]) | {"pg_bin_dir": str(d)}
    msg = _fail(tmp_path, args, pg["backup_password"])
    assert "pg_dump: error: simulated failure after the data" in msg
    assert_untouched(seeded)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 512 KiB tmpfs mounted for the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_on_local_destination(lab, tiny_fs, tmp_path):
    pg = lab["postgres"]
    dest = tiny_fs / "backups"
    earlier, _, _ = run_backup(tmp_path, pg_args(pg) | {"destination": str(dest), "schema_only": True})
    assert earlier.get("failed") is not True, earlier.get("msg")
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert len(before) == 3  # the dump, the roles file, the manifest
    msg = _fail(tmp_path, pg_args(pg) | {"destination": str(dest), "compression": "none"}, pg["backup_password"])
    assert "no space left" in msg and "ENOSPC" in msg
    after = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == before
    assert not list(dest.rglob("*partial"))


# ------------------------------------------------------------- server versions

@pytest.fixture(scope="module")
def pg18(lab):
    p = lab.get("postgres18")
    if not p:
        pytest.skip("the lab has no PostgreSQL 18")
    return p


def test_pg_dump_too_old_for_the_server(lab, pg18, tmp_path):
    args = {"host": pg18["host"], "port": pg18["port"], "user": pg18["admin_user"],
            "password": pg18["admin_password"], "database": pg18["database"],
            "pg_bin_dir": lab["postgres"]["bin_dir"], "destination": str(tmp_path / "d18")}
    msg = _fail(tmp_path, args, pg18["admin_password"])
    assert "older than the server" in msg and "18 or newer is needed" in msg
    assert not (tmp_path / "d18").exists() or not any((tmp_path / "d18").rglob("*.*"))


def test_pg18_server_picks_a_new_enough_pg_dump(lab, pg18, tmp_path):
    args = {"host": pg18["host"], "port": pg18["port"], "user": pg18["admin_user"],
            "password": pg18["admin_password"], "database": pg18["database"], "destination": str(tmp_path / "d18")}
    res, out, ps = run_backup(tmp_path, args)
    assert res.get("failed") is not True, res.get("msg")
    ps.assert_clean(pg18["admin_password"])
    assert_no_secret_in(out, pg18["admin_password"])
    doc = json.loads(pathlib.Path(res["manifest_uri"]).read_text())
    assert doc["server"]["version_num"] >= 180000 and doc["pg_dump"]["major"] >= 18
    assert doc["tables"] and res["total_rows"] > 0
    # the counts match the server's own, taken outside the dump
    dsn = (f"host={pg18['host']} port={pg18['port']} user={pg18['admin_user']} password={pg18['admin_password']} "
           f"dbname={pg18['database']}")
    with psycopg.connect(dsn) as conn:
        assert pgmeta.row_counts(conn, [(t["schema"], t["name"]) for t in doc["tables"]]) == doc["tables"]


# --------------------------------------------------------------- consistency

def test_row_counts_come_from_the_dump_snapshot(lab, scratch_db, tmp_path):
    """Rows inserted while pg_dump runs are neither in the dump nor in the manifest's counts."""
    pg = lab["postgres"]
    name = scratch_db["name"]
    admin_sql(pg, "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 1000); "
                  "CREATE TABLE slow AS SELECT i, repeat(md5(i::text), 30) AS p FROM generate_series(1, 60000) i",
              database=name)
    stop = threading.Event()

    def writer():
        with psycopg.connect(scratch_db["dsn"], autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(sql.SQL("INSERT INTO t SELECT generate_series(1, 100)"))
                stop.wait(0.02)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        res, _, ps = run_backup(tmp_path, pg_args(pg, name, admin=True) | {"destination": str(tmp_path / "c"),
                                                                           "compression": "none"})
    finally:
        stop.set()
        t.join()
    assert res.get("failed") is not True, res.get("msg")
    # the sampler saw pg_dump running (so the password checks above/elsewhere are meaningful)
    assert any("pg_dump" in line and "--snapshot" in line for line in ps.lines)
    ps.assert_clean(pg["admin_password"])
    doc = json.loads(pathlib.Path(res["manifest_uri"]).read_text())
    counted = {t["name"]: t["rows"] for t in doc["tables"]}
    now = admin_sql(pg, "SELECT count(*) FROM t", database=name)[0][0]
    assert counted["t"] < now, "the writer did not run during the dump"
    # the dump holds exactly the counted rows: restore it and count
    target = unique("lbsnap").replace("-", "_")
    admin_sql(pg, f'CREATE DATABASE "{target}"')
    try:
        proc = stock_restore(doc["restore"]["command"], lab, target, tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert restored_counts(pg, target, doc["tables"]) == doc["tables"]
    finally:
        admin_sql(pg, f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def test_pg_dump_backend_terminated_by_the_server(lab, seeded, big_db, tmp_path):
    """The server kills pg_dump's session (pg_terminate_backend) while it runs: the cause is in the message.

    Deterministic: the test holds an ACCESS EXCLUSIVE lock on the table, so pg_dump waits on it; the test
    terminates that waiting backend, then releases the lock.
    """
    pg = lab["postgres"]
    name = big_db["name"]
    holder = psycopg.connect(big_db["dsn"])
    holder.execute("LOCK TABLE bulk IN ACCESS EXCLUSIVE MODE")
    box: dict = {}

    def backup():
        box["res"] = run_backup(tmp_path, pg_args(pg, name, admin=True) | s3_args(lab, seeded["bucket"]))

    t = threading.Thread(target=backup, daemon=True)
    t.start()
    terminated = []
    try:
        with psycopg.connect(big_db["dsn"], autocommit=True) as watcher:
            for _ in range(1200):  # pg_dump's session: waiting for its LOCK TABLE (its name is the run's tag)
                rows = watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                    "AND query LIKE 'LOCK TABLE %%' AND pid <> pg_backend_pid()", (name,)).fetchall()
                if rows:
                    terminated = [watcher.execute("SELECT pg_terminate_backend(%s)", (r[0],)).fetchone()[0]
                                  for r in rows]
                    break
                t.join(0.05)
                if not t.is_alive():
                    break
    finally:
        t.join(300)
        holder.rollback()
        holder.close()
    assert terminated == [True], "pg_dump never waited on the lock"
    res, out, ps = box["res"]
    assert res.get("failed") is True
    assert "pg_dump failed" in res["msg"] and "terminating connection due to administrator command" in res["msg"]
    assert_no_secret_in(out, pg["admin_password"])
    ps.assert_clean(pg["admin_password"])
    assert_untouched(seeded)
