"""Private temporary directories: 0700, PID-tagged, and swept when a killed run left them."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

from ansible.module_utils.lifeboat import crypto, tmpfiles


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make(base, name: str, age: float = 3600.0) -> str:
    path = os.path.join(base, name)
    os.mkdir(path, 0o700)
    with open(os.path.join(path, "pgpass"), "w") as fh:
        fh.write("*:*:*:*:secret\n")
    old = time.time() - age
    os.utime(path, (old, old))
    return path


def test_private_dir_is_0700_and_names_the_pid(tmp_path):
    path = tmpfiles.private_dir("lifeboat-pg-", dir=str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert os.path.basename(path).startswith(f"lifeboat-pg-{os.getpid()}-")


def test_a_killed_runs_directory_is_swept_and_nothing_else(tmp_path):
    base = str(tmp_path)
    stale = make(base, f"lifeboat-pg-{dead_pid()}-abc")
    live = make(base, f"lifeboat-pg-{os.getpid()}-abc")                 # a running process
    fresh = make(base, f"lifeboat-pg-{dead_pid()}-new", age=0)          # too young to judge
    other_prefix = make(base, f"lifeboat-gpg-{dead_pid()}-abc")         # another kind
    no_pid = make(base, "lifeboat-pg-abc")                              # an old-style name
    target = make(base, "elsewhere")
    link = os.path.join(base, f"lifeboat-pg-{dead_pid()}-link")
    os.symlink(target, link)                                             # never followed

    new = tmpfiles.private_dir("lifeboat-pg-", dir=base)

    assert not os.path.exists(stale)
    for kept in (live, fresh, other_prefix, no_pid, target, new):
        assert os.path.isdir(kept), kept
    assert os.path.islink(link) and os.path.exists(os.path.join(target, "pgpass"))


def test_sweep_of_a_gnupg_home_runs_the_hook_first(tmp_path):
    base = str(tmp_path)
    stale = make(base, f"lifeboat-gpg-{dead_pid()}-abc")
    seen: list[str] = []
    removed = tmpfiles.sweep_stale(base, "lifeboat-gpg-", on_stale=seen.append)
    assert removed == [stale] and seen == [stale]
    assert not os.path.exists(stale)


def test_crypto_homes_are_pid_tagged_and_removed():
    home = crypto.private_gnupghome()
    try:
        assert os.path.basename(home).startswith(f"lifeboat-gpg-{os.getpid()}-")
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    finally:
        crypto.remove_gnupghome(home)
    assert not os.path.exists(home)
