"""lifeboat-run's dead man's switch: /start before the job, the bare URL after a success, /fail (with the log's
tail) after a failure; the URL comes from the env file (never argv); a ping service that is down never changes
the job's exit code. The wrapper is rendered from the role's template into a scratch directory and run as cron
runs it (no cron daemon here)."""
from __future__ import annotations

import os
import subprocess

import pytest
from testlib import REPO, run_playbook
from monitor_helpers import forgetting, free_port, http_receiver, vars_file


@pytest.fixture(autouse=True)
def forget_secrets(tmp_path):
    """The vars files carry the lab's secrets: removed after each test."""
    with forgetting(tmp_path):
        yield


def render_wrapper(tmp_path, commands: dict) -> str:
    book = tmp_path / "render.yml"
    role = REPO / "roles" / "backup_schedule"
    book.write_text(f"""---
- name: Render lifeboat-run
  hosts: localhost
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  tasks:
    - name: Template the wrapper
      ansible.builtin.template:
        src: "{role}/templates/lifeboat-run.sh.j2"
        dest: "{tmp_path}/lifeboat-run"
        mode: "0755"
""")
    for d in ("log", "status", "lock"):
        (tmp_path / d).mkdir(mode=0o700)
    ev = vars_file(tmp_path, {"backup_schedule_log_dir": str(tmp_path / "log"),
                              "backup_schedule_status_dir": str(tmp_path / "status"),
                              "backup_schedule_lock_dir": str(tmp_path / "lock"),
                              "backup_schedule_env_file": str(tmp_path / "lifeboat.env"),
                              "backup_schedule_commands": commands})
    proc = run_playbook(str(book), *ev)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(tmp_path / "lifeboat-run")


def run_job(wrapper: str, job: str, env_file, url: str) -> subprocess.CompletedProcess:
    env_file.write_text(f"LIFEBOAT_PING_URL_{job.upper().replace('-', '_')}='{url}'\n")
    os.chmod(env_file, 0o600)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(env_file.parent)}
    return subprocess.run([wrapper, job], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_pings_start_success_and_fail(tmp_path):
    wrapper = render_wrapper(tmp_path, {"monitor": "echo all good", "database-backup": "echo broken; exit 3"})
    env_file = tmp_path / "lifeboat.env"
    with http_receiver() as (url, requests):
        ok = run_job(wrapper, "monitor", env_file, url + "/ping/abc-monitor")
        assert ok.returncode == 0, ok.stderr
        assert [(r["method"], r["path"]) for r in requests] == [("GET", "/ping/abc-monitor/start"),
                                                                ("GET", "/ping/abc-monitor")]
        requests.clear()
        bad = run_job(wrapper, "database-backup", env_file, url + "/ping/abc-db/")
        assert bad.returncode == 3
        assert [(r["method"], r["path"]) for r in requests] == [("GET", "/ping/abc-db/start"),
                                                                ("POST", "/ping/abc-db/fail")]
        body = requests[1]["body"].decode()
        assert "database-backup failed (failed, exit code 3)" in body and "broken" in body
    # the URL never reaches argv or the log; the job's environment does not print it either
    log = (tmp_path / "log" / "database-backup.log").read_text()
    assert "abc-db" not in log and "abc-db" not in bad.stderr


def test_a_dead_ping_service_does_not_change_the_outcome(tmp_path):
    wrapper = render_wrapper(tmp_path, {"monitor": "echo all good"})
    dead = f"http://127.0.0.1:{free_port()}/ping/x"
    proc = run_job(wrapper, "monitor", tmp_path / "lifeboat.env", dead)
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "log" / "monitor.log").read_text()
    assert "dead man's switch ping /start failed: URLError" in log
    assert "dead man's switch ping (success) failed" in log
    assert '"status": "ok"' in (tmp_path / "status" / "monitor.json").read_text()
