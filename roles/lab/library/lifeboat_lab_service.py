#!/usr/bin/python
# Lifeboat: start and stop a local lab daemon by PID file (lab use only).
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: lifeboat_lab_service
short_description: Start or stop a detached lab daemon tracked by a PID file
description:
  - Starts a long-running process detached from Ansible (new session, stdin from
    C(/dev/null), output appended to a log file), writes its PID file and waits,
    with a bounded timeout, until a TCP port answers on the given host.
  - Stops a process by the PID recorded in its PID file with C(SIGTERM), waits
    up to O(timeout) seconds, then sends C(SIGKILL).
  - Idempotent; a live process whose port answers is left alone. Secrets reach
    the process only through O(env), never through its argv.
  - Meant for the local lab, where no init system runs.
options:
  name:
    description: Label for messages and the return values.
    type: str
    required: true
  state:
    description: Whether the process should be running.
    type: str
    choices: [started, stopped]
    default: started
  argv:
    description:
      - Command to run, as a list (no shell). Never put secrets here; use O(env).
      - Required when O(state=started).
    type: list
    elements: str
  env:
    description: Extra environment variables for the process (for example credentials).
    type: dict
    default: {}
  pid_file:
    description: Path of the PID file (written with mode 0600).
    type: path
    required: true
  log_file:
    description: Path of the log file that receives stdout and stderr (mode 0600). Required when O(state=started).
    type: path
  chdir:
    description: Working directory of the process.
    type: path
  host:
    description: Address whose O(port) must answer before the service counts as started.
    type: str
    default: 127.0.0.1
  port:
    description: TCP port that must answer. Required when O(state=started).
    type: int
  timeout:
    description: Seconds to wait for the port after a start, or for the process to exit after SIGTERM.
    type: int
    default: 30
author:
  - Lifeboat lab engineer
"""

EXAMPLES = r"""
- name: Start the primary SeaweedFS
  lifeboat_lab_service:
    name: seaweed-primary
    argv: ["/work/main/.venv/bin/weed", "mini", "-dir=/work/main/.lab/seaweed-primary"]
    env:
      AWS_ACCESS_KEY_ID: "{{ access_key }}"
      AWS_SECRET_ACCESS_KEY: "{{ secret_key }}"
    pid_file: /work/main/.lab/seaweed-primary.pid
    log_file: /work/main/.lab/seaweed-primary.log
    port: 40006
    timeout: 30

- name: Stop it
  lifeboat_lab_service:
    name: seaweed-primary
    state: stopped
    pid_file: /work/main/.lab/seaweed-primary.pid
"""

RETURN = r"""
pid:
  description: PID of the running process (started), or of the process that was stopped.
  returned: when a process is or was running
  type: int
  sample: 4242
state:
  description: Resulting state.
  returned: always
  type: str
  sample: started
signal:
  description: Signal that ended the process when stopping (SIGTERM or SIGKILL).
  returned: when a running process was stopped
  type: str
  sample: SIGTERM
"""


def read_pid(pid_file: str) -> int | None:
    try:
        with open(pid_file, encoding="ascii") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def pid_alive(pid: int | None, expected_exe: str | None = None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            if handle.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
    except OSError:
        return False
    if expected_exe:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                first = handle.read().split(b"\0", 1)[0].decode("utf-8", "replace")
        except OSError:
            return False
        if os.path.basename(first) != os.path.basename(expected_exe):
            return False
    return True


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def log_tail(path: str | None, lines: int = 15) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def wait_port(proc_pid: int, host: str, port: int, timeout: int, exe: str | None) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return None
        if not pid_alive(proc_pid, exe):
            return f"exited before {host}:{port} answered"
        time.sleep(0.2)
    return f"{host}:{port} did not answer within {timeout} s (timeout)"


def start(module: AnsibleModule) -> None:
    p = module.params
    name, pid_file, log_file = p["name"], p["pid_file"], p["log_file"]
    argv, host, port, timeout = p["argv"], p["host"], p["port"], p["timeout"]
    pid = read_pid(pid_file)
    if pid_alive(pid, argv[0]):
        if port_open(host, port):
            module.exit_json(changed=False, pid=pid, state="started")
        if module.check_mode:
            module.exit_json(changed=False, pid=pid, state="started")
        problem = wait_port(pid, host, port, timeout, argv[0])
        if problem:
            module.fail_json(msg=f"service '{name}' (pid {pid} from pid_file {pid_file}) is running but {problem}; "
                             f"log {log_file}:\n{log_tail(log_file)}")
        module.exit_json(changed=False, pid=pid, state="started")
    if port_open(host, port):
        module.fail_json(msg=f"service '{name}': port {host}:{port} is already in use by another process "
                             f"(pid_file {pid_file} has no live process)")
    if module.check_mode:
        module.exit_json(changed=True, state="started")
    exe = module.get_bin_path(argv[0], required=True) if os.sep not in argv[0] else argv[0]
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (p["env"] or {}).items()})
    old_umask = os.umask(0o077)
    try:
        log = open(log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen(
                [exe] + list(argv[1:]), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=p["chdir"], env=env,
                start_new_session=True, close_fds=True)
        except OSError as exc:
            module.fail_json(msg=f"service '{name}': cannot start argv[0] {exe}: {exc}")
        finally:
            log.close()
        with open(pid_file, "w", encoding="ascii") as handle:
            handle.write(f"{proc.pid}\n")
    finally:
        os.umask(old_umask)
    # Our own child: liveness by PID and zombie state only. Its /proc cmdline can read
    # empty for a moment right after exec (the kernel fills it in after the exec's
    # point of no return), which an argv[0] check would mistake for an exit.
    problem = wait_port(proc.pid, host, port, timeout, None)
    if problem:
        if proc.poll() is None:
            stop_pid(proc.pid, 10)
        module.fail_json(msg=f"service '{name}' {problem}; log {log_file}:\n{log_tail(log_file)}")
    module.exit_json(changed=True, pid=proc.pid, state="started")


def stop_pid(pid: int, timeout: int) -> str:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "SIGTERM"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it if it is our own child (when stopping after a failed start).
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not pid_alive(pid):
            return "SIGTERM"
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return "SIGKILL"


def stop(module: AnsibleModule) -> None:
    p = module.params
    pid_file = p["pid_file"]
    pid = read_pid(pid_file)
    expected = p["argv"][0] if p["argv"] else None
    if not pid_alive(pid, expected):
        if os.path.exists(pid_file) and not module.check_mode:
            os.unlink(pid_file)
            module.exit_json(changed=True, state="stopped", msg=f"removed stale pid_file {pid_file}")
        module.exit_json(changed=False, state="stopped")
    if module.check_mode:
        module.exit_json(changed=True, pid=pid, state="stopped")
    sig = stop_pid(pid, p["timeout"])
    if sig == "SIGKILL":
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            module.fail_json(msg=f"service '{p['name']}' (pid {pid}) survived SIGKILL")
    os.unlink(pid_file)
    module.exit_json(changed=True, pid=pid, state="stopped", signal=sig)


def argument_spec() -> dict:
    """The module's argument_spec (tests/unit/test_module_docs.py compares it with DOCUMENTATION)."""
    return {
        "name": {"type": "str", "required": True},
        "state": {"type": "str", "default": "started", "choices": ["started", "stopped"]},
        "argv": {"type": "list", "elements": "str"},
        "env": {"type": "dict", "default": {}, "no_log": True},
        "pid_file": {"type": "path", "required": True},
        "log_file": {"type": "path"},
        "chdir": {"type": "path"},
        "host": {"type": "str", "default": "127.0.0.1"},
        "port": {"type": "int"},
        "timeout": {"type": "int", "default": 30},
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[("state", "started", ("argv", "log_file", "port"))],
        supports_check_mode=True,
    )
    if module.params["timeout"] < 1:
        module.fail_json(msg=f"timeout must be at least 1 second, got {module.params['timeout']}")
    if module.params["state"] == "started":
        start(module)
    else:
        stop(module)


if __name__ == "__main__":
    main()
