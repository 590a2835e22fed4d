"""The local lab is up and matches its contract (docs/development.md).

Needs `make lab`. Read-only against the lab, except the idempotence test,
which re-runs playbooks/lab.yml and expects it to change nothing, and the
lab_service tests, which start and stop their own throwaway processes.
"""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import time
import uuid

import psutil
import psycopg
import pytest
from psycopg import sql

from testlib import LAB_DIR, REPO, VENV_BIN, run_playbook

PG15_PIDFILE = "/var/lib/postgresql/15/lifeboat/postmaster.pid"
SUPABASE_PIDFILE = "/var/lib/postgresql/15/supabase/postmaster.pid"
SAMPLE_COUNTS = {
    ("public", "users"): 400,
    ("public", "videos"): 1200,
    ("public", "generated_videos"): 400,
    ("public", "invoices"): 800,
    ("analytics", "events"): 3000,
    ("public", "Audit Log"): 200,
}


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def secrets_of(lab: dict) -> list[str]:
    found = [lab["postgres"][k] for k in ("admin_password", "app_password", "backup_password")]
    found.append(lab["postgres18"]["admin_password"])
    for side in ("primary", "backup"):
        found += [lab["s3"][side]["access_key"], lab["s3"][side]["secret_key"]]
    return found


def conninfo(pg: dict, user_key: str, password_key: str, dbname: str) -> str:
    return (f"host={pg['host']} port={pg['port']} user={pg[user_key]} "
            f"password={pg[password_key]} dbname={dbname} connect_timeout=5")


def first_pid(path: str) -> int:
    with open(path, encoding="ascii") as handle:
        return int(handle.readline().strip())


def _values(doc):
    if isinstance(doc, dict):
        for v in doc.values():
            yield from _values(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _values(v)
    else:
        yield doc


# --- contract and permissions ---------------------------------------------------------

def test_lab_json_contract(lab):
    assert mode(LAB_DIR) == 0o700
    assert mode(LAB_DIR / "lab.json") == 0o600
    pg = lab["postgres"]
    assert (pg["host"], pg["port"], pg["version"]) == ("127.0.0.1", 55432, 15)
    assert pg["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert (pg["admin_user"], pg["app_database"], pg["app_user"], pg["backup_user"]) == (
        "lifeboat_admin", "appdb", "app_owner", "lifeboat_backup")
    pg18 = lab["postgres18"]
    assert (pg18["host"], pg18["port"], pg18["version"], pg18["admin_user"]) == (
        "127.0.0.1", 55433, 18, "lifeboat_admin")
    assert os.access(os.path.join(pg18["bin_dir"], "pg_dump"), os.X_OK)
    assert lab["s3"]["primary"]["endpoint"] == "http://127.0.0.1:40006"
    assert lab["s3"]["backup"]["endpoint"] == "http://127.0.0.1:40106"
    assert lab["s3"]["primary"]["buckets"] == ["app-storage"]
    # what pytest prints about the lab (a failing assertion's values, kept in CI logs) shows none of its secrets
    secrets = [v for v in _values(lab) if isinstance(v, str) and len(v) >= 8 and v in {
        pg["admin_password"], pg["backup_password"], lab["s3"]["backup"]["secret_key"],
        lab["s3"]["backup"]["access_key"], lab["supabase"]["app_password"]}]
    assert len(secrets) == 5 and not [s for s in secrets if s in repr(lab)]
    assert lab["s3"]["backup"]["buckets"] == ["lifeboat-backups", "app-storage-backup"]
    assert re.fullmatch(r"[0-9A-F]{40}", lab["gpg"]["fingerprint"])
    assert lab["age"]["recipient"].startswith("age1")
    for path in (lab["gpg"]["homedir"], lab["gpg"]["public_key_file"], lab["gpg"]["secret_key_file"],
                 lab["age"]["identity_file"], pg["bin_dir"], pg18["bin_dir"]):
        assert os.path.isabs(path) and os.path.exists(path), path
    # Secrets are distinct, long and not placeholders.
    values = secrets_of(lab)
    assert len(set(values)) == len(values)
    assert all(len(v) >= 20 for v in values)


def test_secret_and_key_files_are_private(lab):
    assert mode(LAB_DIR / "secrets") == 0o700
    names = os.listdir(LAB_DIR / "secrets")
    assert len(names) >= 8
    for name in names:
        assert mode(LAB_DIR / "secrets" / name) == 0o600, name
    assert mode(lab["gpg"]["homedir"]) == 0o700
    for key in (lab["gpg"]["secret_key_file"], lab["age"]["identity_file"]):
        assert mode(key) == 0o600, key
    for pid_file in ("seaweed-primary.pid", "seaweed-backup.pid"):
        assert mode(LAB_DIR / pid_file) == 0o600


# --- servers: up, loopback only --------------------------------------------------------

def lab_pids(lab) -> dict[str, int]:
    return {
        "postgres15": first_pid(PG15_PIDFILE),
        "supabase": first_pid(SUPABASE_PIDFILE),
        "postgres18": first_pid(os.path.join(lab["postgres18"]["data_dir"], "postmaster.pid")),
        "seaweed-primary": first_pid(LAB_DIR / "seaweed-primary.pid"),
        "seaweed-backup": first_pid(LAB_DIR / "seaweed-backup.pid"),
    }


def test_every_lab_listener_binds_loopback_only(lab):
    pids = lab_pids(lab)
    listeners: dict[str, list[tuple[str, int]]] = {name: [] for name in pids}
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or conn.pid is None:
            continue
        for name, pid in pids.items():
            if conn.pid == pid:
                listeners[name].append((conn.laddr.ip, conn.laddr.port))
    for name, socks in listeners.items():
        assert socks, f"{name} (pid {pids[name]}) listens on nothing"
        assert all(ip == "127.0.0.1" for ip, _ in socks), f"{name} binds {socks}"
    assert ("127.0.0.1", 55432) in listeners["postgres15"]
    assert ("127.0.0.1", 55433) in listeners["postgres18"]
    assert ("127.0.0.1", 55434) in listeners["supabase"]
    for name, base in (("seaweed-primary", 40000), ("seaweed-backup", 40100)):
        ports = {port for _, port in listeners[name]}
        expected = {base + n for n in (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12)} | {base + 10008}
        assert expected <= ports, f"{name} is missing {sorted(expected - ports)}"
        assert base + 9 not in ports  # webdav is off


def test_postgres_rejects_a_wrong_password(lab):
    pg = dict(lab["postgres"], admin_password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(conninfo(pg, "admin_user", "admin_password", "postgres"))


# --- sample data -------------------------------------------------------------------------

def test_sample_database_objects_and_counts(lab):
    pg = lab["postgres"]
    with psycopg.connect(conninfo(pg, "backup_user", "backup_password", pg["app_database"])) as conn:
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        assert owner.fetchone()[0] == "app_owner"
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pgcrypto'").fetchone()
        for (schema, table), expected in SAMPLE_COUNTS.items():
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            assert conn.execute(query).fetchone()[0] == expected, (schema, table)
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'analytics')").fetchall()
        assert owners == [("app_owner",)]
        assert conn.execute("SELECT count(*) FROM public.video_summary").fetchone()[0] == 400
        assert conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace IN "
            "('public'::regnamespace, 'analytics'::regnamespace)").fetchone()[0] >= 4
        seq = conn.execute("SELECT 1 FROM pg_class c LEFT JOIN pg_depend d ON d.objid = c.oid AND d.deptype = 'a' "
                           "WHERE c.relname = 'invoice_number_seq' AND c.relkind = 'S' AND d.objid IS NULL")
        assert seq.fetchone(), "invoice_number_seq should be a standalone sequence"
        path = conn.execute("SELECT storage_path, user_id FROM public.videos ORDER BY id LIMIT 1").fetchone()
        assert re.fullmatch(rf"videos/{path[1]}/\d+\.mp4", path[0])
        # The backup role is not a superuser: it reads through pg_read_all_data.
        role = conn.execute("SELECT rolsuper, pg_has_role(current_user, 'pg_read_all_data', 'MEMBER') "
                            "FROM pg_roles WHERE rolname = current_user").fetchone()
        assert role == (False, True)


def test_sample_objects_match_the_database(lab, s3_primary):
    pg = lab["postgres"]
    with psycopg.connect(conninfo(pg, "backup_user", "backup_password", pg["app_database"])) as conn:
        keys = {r[0] for r in conn.execute(
            "SELECT storage_path FROM public.videos UNION "
            "SELECT output_path FROM public.generated_videos WHERE output_path IS NOT NULL")}
    present = set()
    for page in s3_primary.get_paginator("list_objects_v2").paginate(Bucket="app-storage"):
        present.update(o["Key"] for o in page.get("Contents", []))
    assert keys and keys <= present, f"{len(keys - present)} objects missing"
    key = sorted(keys)[0]
    body = s3_primary.get_object(Bucket="app-storage", Key=key)["Body"].read()
    assert body == f"lifeboat lab sample object\nkey={key}\n".encode()


def test_backup_buckets_exist_and_are_versioned(s3_backup):
    names = {b["Name"] for b in s3_backup.list_buckets()["Buckets"]}
    for bucket in ("lifeboat-backups", "app-storage-backup"):
        assert bucket in names
        assert s3_backup.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"


def test_backup_buckets_abort_incomplete_multipart_uploads_after_a_day(s3_backup):
    """The lab's backup buckets carry the lifecycle rule docs/deploy.md asks of a production bucket: multipart
    uploads a killed run or a vanished endpoint left open are aborted after a day (the second net behind each
    backup's own sweep)."""
    for bucket in ("lifeboat-backups", "app-storage-backup"):
        rules = s3_backup.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        abort = [r for r in rules if r.get("Status") == "Enabled" and "AbortIncompleteMultipartUpload" in r]
        assert abort and abort[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1, (bucket, rules)


def test_postgres18_server_and_sample_db(lab):
    pg18 = lab["postgres18"]
    with psycopg.connect(conninfo(pg18, "admin_user", "admin_password", pg18["database"])) as conn:
        assert conn.info.server_version >= 180000
        assert conn.execute("SELECT count(*) FROM public.accounts").fetchone()[0] == 50
        assert conn.execute("SELECT count(*) FROM public.notes").fetchone()[0] == 200


def recap_of(output: str) -> tuple[int, int, int, int]:
    found = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert found, output[-2000:]
    return tuple(map(int, found.groups()))


def test_postgres18_first_run_on_a_never_started_data_directory(lab, tmp_path):
    """A fresh machine: initdb has just made the data directory, the configuration tasks
    notify the restart handler, and the server was never started (no postmaster.opts)."""
    data_dir = f"/var/lib/postgresql/lifeboat-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    args = ("--tags", "postgres18", "-e", f"lab_pg18_data_dir={data_dir}", "-e", f"lab_pg18_port={port}")
    env = {"LIFEBOAT_LAB_DIR": str(tmp_path / "lab")}
    pg_ctl = os.path.join(lab["postgres18"]["bin_dir"], "pg_ctl")
    try:
        first = run_playbook("playbooks/lab.yml", *args, env=env)
        output = first.stdout + first.stderr
        assert first.returncode == 0, output[-3000:]
        assert "postmaster.opts" not in output
        assert os.path.exists(os.path.join(data_dir, "postmaster.pid"))
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        again = run_playbook("playbooks/lab.yml", *args, env=env)
        assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
        assert recap_of(again.stdout)[1:] == (0, 0, 0), again.stdout[-3000:]
    finally:
        if os.path.exists(os.path.join(data_dir, "postmaster.pid")):
            subprocess.run(["runuser", "-u", "postgres", "--", pg_ctl, "stop", "-D", data_dir, "-m", "immediate",
                            "-t", "30"], capture_output=True, timeout=60, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", data_dir], check=True)


def test_lab_names_the_port_and_the_process_that_took_it(lab, tmp_path):
    """Something else listens on the PostgreSQL 18 port: the lab stops before initdb and names both."""
    port = free_port()
    data_dir = f"/var/lib/postgresql/lifeboat-test-{uuid.uuid4().hex[:8]}"
    squatter = subprocess.Popen(["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the squatter did not listen"
                time.sleep(0.2)
        proc = run_playbook("playbooks/lab.yml", "--tags", "postgres18", "-e", f"lab_pg18_port={port}",
                            "-e", f"lab_pg18_data_dir={data_dir}", env={"LIFEBOAT_LAB_DIR": str(tmp_path / "lab")})
        output = " ".join((proc.stdout + proc.stderr).split())
        assert proc.returncode != 0
        assert f"PostgreSQL 18 cannot start: port {port} is in use by pid {squatter.pid}" in output, output[-3000:]
        assert "http.server" in output
        assert not os.path.exists(data_dir)
    finally:
        squatter.terminate()
        squatter.wait(timeout=10)
        subprocess.run(["rm", "-rf", "--one-file-system", data_dir], check=True)


def test_a_second_lab_directory_does_not_take_over_the_running_lab(lab, tmp_path):
    """A lab started from another checkout (another LIFEBOAT_LAB_DIR) finds this lab's SeaweedFS on
    its ports and stops, naming them, instead of starting beside it or sharing it."""
    weed_pid = first_pid(LAB_DIR / "seaweed-primary.pid")
    proc = run_playbook("playbooks/lab.yml", "--tags", "seaweedfs", env={"LIFEBOAT_LAB_DIR": str(tmp_path / "other")})
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert "SeaweedFS cannot start: ports 40000, 40001" in output, output[-3000:]
    assert f"in use by pid {weed_pid} (" in output and "weed mini" in output
    assert not (tmp_path / "other" / "seaweed-primary.pid").exists()
    assert first_pid(LAB_DIR / "seaweed-primary.pid") == weed_pid


# --- keys: stock tools round-trip ---------------------------------------------------------

def test_gpg_and_age_keys_round_trip(lab, tmp_path):
    gpg = lab["gpg"]
    listed = subprocess.run(["gpg", "--homedir", gpg["homedir"], "--batch", "--with-colons", "--list-secret-keys"],
                            capture_output=True, text=True, check=True).stdout
    assert f"fpr:::::::::{gpg['fingerprint']}:" in listed
    plain = b"lifeboat lab round trip\n"
    enc = subprocess.run(["gpg", "--homedir", gpg["homedir"], "--batch", "--trust-model", "always",
                          "--encrypt", "--recipient", gpg["fingerprint"]],
                         input=plain, capture_output=True, check=True).stdout
    dec = subprocess.run(["gpg", "--homedir", gpg["homedir"], "--batch", "--decrypt"],
                         input=enc, capture_output=True, check=True).stdout
    assert dec == plain
    age = lab["age"]
    enc = subprocess.run(["age", "--encrypt", "--recipient", age["recipient"]],
                         input=plain, capture_output=True, check=True).stdout
    dec = subprocess.run(["age", "--decrypt", "--identity", age["identity_file"]],
                         input=enc, capture_output=True, check=True).stdout
    assert dec == plain


# --- idempotence, and no secret in the output ----------------------------------------------

def test_lab_second_run_changes_nothing_and_prints_no_secret(lab):
    proc = run_playbook("playbooks/lab.yml", "-v")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert recap, output[-2000:]
    ok, changed, unreachable, failed = map(int, recap.groups())
    assert (changed, unreachable, failed) == (0, 0, 0), output[-3000:]
    assert ok > 20
    for secret in secrets_of(lab):
        assert secret not in output


# --- the lifeboat_lab_service module: failure paths -----------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_service(tmp_path, **params) -> dict:
    """Run the module through `ansible localhost -m` and return its JSON result."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible"), "localhost", "-M", str(REPO / "roles" / "lab" / "library"), "-m",
         "lifeboat_lab_service", "-a", json.dumps(params)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    data = json.loads(proc.stdout)
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_lab_service_times_out_and_kills_what_it_started(tmp_path):
    port = free_port()
    pid_file, log_file = tmp_path / "svc.pid", tmp_path / "svc.log"
    result = run_service(tmp_path, name="sleeper", argv=["/bin/sleep", "300"], env={"SECRET_X": "hunter2-xyz"},
                         pid_file=str(pid_file), log_file=str(log_file), port=port, timeout=2)
    assert result.get("failed") is True
    assert f"127.0.0.1:{port} did not answer within 2 s" in result["msg"]
    assert "sleeper" in result["msg"]
    assert "hunter2-xyz" not in json.dumps(result)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"pid {pid} still running after a failed start"
        time.sleep(0.1)


def test_lab_service_reports_a_process_that_exits(tmp_path):
    port = free_port()
    result = run_service(tmp_path, name="quitter", argv=["/bin/sh", "-c", "echo boom-marker; exit 3"],
                         pid_file=str(tmp_path / "q.pid"), log_file=str(tmp_path / "q.log"), port=port, timeout=10)
    assert result.get("failed") is True
    assert "exited before" in result["msg"] and "boom-marker" in result["msg"]


def test_lab_service_start_is_idempotent_and_stop_by_pid(tmp_path):
    port = free_port()
    server = ["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    params = {"name": "web", "argv": server, "pid_file": str(tmp_path / "w.pid"),
              "log_file": str(tmp_path / "w.log"), "port": port, "timeout": 20}
    first = run_service(tmp_path, **params)
    try:
        assert first["changed"] is True and first["state"] == "started", first
        assert mode(tmp_path / "w.pid") == 0o600 and mode(tmp_path / "w.log") == 0o600
        again = run_service(tmp_path, **params)
        assert again["changed"] is False and again["pid"] == first["pid"]
    finally:
        stopped = run_service(tmp_path, name="web", state="stopped", argv=server[:1], pid_file=params["pid_file"])
    assert stopped["changed"] is True and stopped["signal"] == "SIGTERM"
    assert not (tmp_path / "w.pid").exists()
    assert not psutil.pid_exists(first["pid"]) or psutil.Process(first["pid"]).status() == psutil.STATUS_ZOMBIE
    assert run_service(tmp_path, name="web", state="stopped", pid_file=params["pid_file"])["changed"] is False


# --- the lab's S3 helper: failure paths name the cause and change nothing ---------------------

def run_lab_s3(command: str, request: dict) -> tuple[int, dict]:
    proc = subprocess.run([str(VENV_BIN / "python"), str(REPO / "roles/lab/files/lab_s3.py"), command],
                          input=json.dumps(request), capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_lab_s3_seed_with_a_wrong_database_password_fails_clearly(lab, s3_primary, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    before = s3_primary.list_objects_v2(Bucket="app-storage", MaxKeys=1)["KeyCount"]
    primary = lab["s3"]["primary"]
    rc, result = run_lab_s3("seed", {
        "endpoint": primary["endpoint"], "region": primary["region"],
        "access_key_file": str(LAB_DIR / "secrets/s3_primary_access_key"),
        "secret_key_file": str(LAB_DIR / "secrets/s3_primary_secret_key"),
        "bucket": "app-storage",
        "pg": {"host": "127.0.0.1", "port": lab["postgres"]["port"], "dbname": "appdb",
               "user": "lifeboat_admin", "password_file": str(wrong)}})
    assert rc == 1 and result["failed"] is True
    assert "PostgreSQL 127.0.0.1:55432" in result["msg"] and "password authentication failed" in result["msg"]
    assert s3_primary.list_objects_v2(Bucket="app-storage", MaxKeys=1)["KeyCount"] == before


def test_lab_s3_buckets_with_a_wrong_secret_key_fails_clearly(lab, s3_backup, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-secret\n")
    backup = lab["s3"]["backup"]
    name = f"lbtest-never-{os.getpid()}"
    rc, result = run_lab_s3("buckets", {
        "endpoint": backup["endpoint"], "region": backup["region"],
        "access_key_file": str(LAB_DIR / "secrets/s3_backup_access_key"), "secret_key_file": str(wrong),
        "buckets": [{"name": name, "versioning": True}]})
    assert rc == 1 and result["failed"] is True
    assert backup["endpoint"] in result["msg"] and "SignatureDoesNotMatch" in result["msg"]
    assert name not in {b["Name"] for b in s3_backup.list_buckets()["Buckets"]}
    assert backup["secret_key"] not in result["msg"]
