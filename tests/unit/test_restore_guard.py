"""module_utils/lifeboat/restore/guard.py: a restore's children do not outlive a killed Lifeboat (real processes)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ansible.module_utils.lifeboat.restore.guard import Guard, guarded

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gone(pid: int, seconds: float = 30.0) -> bool:
    """Whether ``pid`` is gone (or a zombie nobody reaped yet), waiting up to ``seconds`` for it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_released_guard_leaves_children_and_directory(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    with guarded(str(staged)) as watch:
        child = subprocess.Popen(["sleep", "60"], **watch.popen_kwargs())
        assert os.getpgid(child.pid) == watch.proc.pid
        child.kill()
        child.wait()
    assert watch.proc.returncode == 0 and staged.exists()


def test_fired_guard_ends_its_group_and_removes_the_directories(tmp_path):
    staged, passdir = tmp_path / "staged", tmp_path / "pg"
    staged.mkdir()
    passdir.mkdir()
    (staged / "dump").write_bytes(b"x" * 1000)
    watch = Guard(str(staged), str(passdir))
    # a child that ignores SIGTERM and forks a worker (as pg_restore -j does): both end
    child = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60 & echo $!; wait"], stdout=subprocess.PIPE,
                             **watch.popen_kwargs())
    worker = int(child.stdout.readline())  # the trap is set, the worker runs
    watch.fire()
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert _gone(worker)
    assert not staged.exists() and not passdir.exists()


DRIVER = r"""
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import testlib  # noqa: F401 - makes ansible.module_utils.lifeboat importable
from ansible.module_utils.lifeboat.restore.guard import Guard
watch = Guard(sys.argv[2])
child = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, **watch.popen_kwargs())
worker = child.stdout.readline().decode().strip()
print(child.pid, worker, watch.proc.pid, flush=True)
sys.stdin.read()  # until killed
"""


def test_a_sigkilled_parent_leaves_no_child_running_and_no_staged_file(tmp_path):
    staged = tmp_path / "lifeboat-restore-1-x"
    staged.mkdir()
    (staged / "dump").write_bytes(b"x" * 1000)
    parent = subprocess.Popen([sys.executable, "-c", DRIVER, os.path.join(REPO, "tests"), str(staged)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        leader, worker, guard = (int(x) for x in parent.stdout.readline().split())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        for pid in (leader, worker, guard):
            assert _gone(pid), f"process {pid} outlived the killed parent"
        assert not staged.exists()
    finally:
        parent.kill()
