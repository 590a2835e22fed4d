"""Private temporary directories that do not outlive a killed run.

Lifeboat keeps secrets and clear data in temporary directories for the life of
one run: the private PGPASSFILE, a private GnuPG home, pg_dump's directory
format before it is archived and encrypted, a decoded dump staged for
``pg_restore -j``. Each is 0700 and removed in a ``finally``. A run killed with
SIGKILL (or by the OOM killer) cannot run its ``finally``, so every directory's
name carries the PID of the process that made it (``lifeboat-pg-<pid>-XXXX``)
and the next run sweeps the ones whose process is gone::

    path = private_dir("lifeboat-pg-")            # sweeps stale lifeboat-pg-* first
    path = private_dir("lifeboat-restore-", dir=staging_dir)

A directory is stale only when all of these hold: its name has the prefix and
a PID, it is a real directory (not a symlink) owned by the current user, no
process with that PID exists, and it has not been modified for
``STALE_AFTER`` seconds (a guard against a PID from another PID namespace that
shares the same temporary directory).
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable

STALE_AFTER = 60.0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never guess about PID 0 or negative values
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def sweep_stale(base: str, prefix: str, on_stale: Callable[[str], None] | None = None,
                stale_after: float = STALE_AFTER) -> list[str]:
    """Remove ``base/<prefix><pid>-*`` directories left by processes that no longer exist."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    uid = os.getuid()
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid_text, sep, _rest = entry.name[len(prefix):].partition("-")
        if not sep or not pid_text.isdigit():
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or now - st.st_mtime < stale_after:
            continue
        if _alive(int(pid_text)):
            continue
        if on_stale is not None:
            try:
                on_stale(entry.path)
            except Exception:  # noqa: BLE001 - best effort; the directory is removed anyway
                pass
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed.append(entry.path)
    return removed


def private_dir(prefix: str, dir: str | None = None,  # noqa: A002 - mirrors tempfile.mkdtemp
                on_stale: Callable[[str], None] | None = None) -> str:
    """A new 0700 directory ``<dir>/<prefix><pid>-XXXXXXXX``, after sweeping stale siblings."""
    base = dir or tempfile.gettempdir()
    sweep_stale(base, prefix, on_stale)
    path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base)
    os.chmod(path, 0o700)
    return path
