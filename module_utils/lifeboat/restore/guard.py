"""A watchdog for a restore's child processes: when Lifeboat dies, its pg_restore does not live on.

``pg_restore -j`` forks its workers. When the process that started pg_restore is SIGKILLed (by an
operator, the OOM killer, a job scheduler's timeout), nothing ends them: they are adopted by init and
keep loading the staged file into the new database until the end, and the staged dump stays on disk.

The guard is a small shell process in a process group of its own; the restore's children are started
into that group (pg_restore's workers, forked from it, inherit it). It blocks reading a pipe whose only
writer is this process:

- the restore ends (its children have exited): this process writes ``done``, the guard exits;
- this process dies, or gives up on its children: the pipe closes without ``done``. The guard sends
  SIGTERM to its group (pg_restore's handler cancels its workers' queries on the server, so an index
  build stops too, and exits), waits a second, removes the directories it was given (the staging
  directory, the private PGPASSFILE's), and sends SIGKILL to the group, itself included.

A whole-group kill of Lifeboat's own process group (Ctrl-C, a scheduler ending a job's group) ends the
guard's pipe the same way. What the guard cannot cover (it was SIGKILLed itself) the next run repairs:
the new database is dropped with its sessions (pgadmin.drop_database) and the staging directory, named
with the dead PID, is swept (tmpfiles.sweep_stale).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

# HUP ignored too: when Lifeboat dies, the guard's group is orphaned, and the kernel sends SIGHUP (and SIGCONT)
# to an orphaned group that has a stopped member
_SCRIPT = """trap '' TERM HUP
IFS= read -r word
[ "$word" = done ] && exit 0
kill -TERM 0 2>/dev/null
sleep 1
for dir in "$@"; do [ -n "$dir" ] && rm -rf -- "$dir"; done
kill -KILL 0
"""


class Guard:
    """Start the guard; pass ``popen_kwargs()`` to every child it covers; end with ``release`` or ``fire``
    (``guarded`` does both)."""

    def __init__(self, *cleanup_dirs: str | None):
        self.proc = subprocess.Popen(["sh", "-c", _SCRIPT, "lifeboat-restore-guard", *(d for d in cleanup_dirs if d)],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, process_group=0)
        self._ended = False

    def popen_kwargs(self) -> dict[str, Any]:
        """Start a child in the guard's process group."""
        return {"process_group": self.proc.pid}

    def release(self) -> None:
        """The covered children have exited: the guard exits and leaves everything as it is."""
        self._end(b"done\n")

    def fire(self) -> None:
        """End every covered child (SIGTERM, a second, SIGKILL) and remove the directories; waits for it."""
        self._end(b"")

    def _end(self, word: bytes) -> None:
        if self._ended:
            return
        self._ended = True
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            if word:
                self.proc.stdin.write(word)
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - sh blocked: end it and what it covers
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextlib.contextmanager
def guarded(*cleanup_dirs: str | None) -> Iterator[Guard]:
    """A Guard for the block: released when the block ends normally (its children were waited for), fired
    when it raises (children a failure left running are ended)."""
    guard = Guard(*cleanup_dirs)
    ok = False
    try:
        yield guard
        ok = True
    finally:
        if ok:
            guard.release()
        else:
            guard.fire()
