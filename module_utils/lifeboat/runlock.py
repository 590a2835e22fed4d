"""Locks between concurrent Lifeboat runs, held in PostgreSQL itself.

A backup of one database to one destination takes a session-level advisory
lock on the source server (``pg_try_advisory_lock(CLASS_BACKUP, key)``, key =
a hash of the destination URI and the database). It holds across hosts (every
host talks to the same server), needs no privilege, and needs no expiry: the
server releases it the moment the holder's session ends, including when the
holder was killed (SIGKILL, OOM) or its host vanished (TCP keepalive).
A second run waits ``lock_wait_s`` seconds, then refuses with a message naming
the holder (its ``application_name`` carries the host and PID).

Scratch databases (drill, stage, ``<db>_lifeboat_new_*``) are owned the same
way: the run that creates one holds ``pg_advisory_lock(CLASS_SCRATCH,
hash(name))`` on the maintenance database for as long as it uses it, and the
database's comment names the owner run. A sweep drops a scratch database only
when it can take that lock: its owner is gone, whatever host it ran on.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from dataclasses import replace
from collections.abc import Iterator
from typing import Any

from ansible.module_utils.lifeboat.errors import LockHeld
from ansible.module_utils.lifeboat.manifest import safe_name

CLASS_BACKUP = 0x4C42      # 'LB'
CLASS_SCRATCH = 0x4C43


def key_for(*parts: str) -> int:
    """A stable non-negative int4 for the text (pg_locks shows it unchanged as objid)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def owner_tag(kind: str) -> str:
    """Who holds a lock or owns a database: ``lifeboat-<kind> host=<host> pid=<pid>`` (an application_name)."""
    return f"lifeboat-{kind} host={socket.gethostname()[:30]} pid={os.getpid()}"[:63]


def try_lock(conn: Any, classid: int, key: int) -> bool:
    return bool(conn.execute("SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", (classid, key)).fetchone()[0])


def holder(conn: Any, classid: int, key: int) -> str:
    """'<application_name> from <client address> since <backend start>' of the session holding the lock."""
    row = conn.execute(
        "SELECT a.application_name, host(a.client_addr), a.backend_start FROM pg_catalog.pg_locks l "
        "JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 2 AND l.database = "
        "(SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
        (classid, key)).fetchone()
    if row is None:
        return "another session (not visible to this role)"
    name, addr, since = row
    return f"'{name or '(no application_name)'}' from {addr or 'a local socket'} since {since:%Y-%m-%d %H:%M:%S%z}"


@contextlib.contextmanager
def backup_lock(target: Any, destination: str, database: str, wait_s: float = 0.0) -> Iterator[Any]:
    """Hold the backup lock of ``database`` -> ``destination`` on its server, or raise LockHeld.

    Its own autocommit connection (the dump's transaction stays untouched); closed on exit,
    which releases the lock (and so does the death of this process).
    """
    # keyed by the folder the backup writes to (manifest.safe_name): two names that share a folder ('a b' and
    # 'a_b') share ids and the sweep of what dead runs left (leftovers.py), so they never run at once either
    key = key_for("backup", destination.rstrip("/"), safe_name(database))
    target = replace(target, extra={**target.extra, "application_name": owner_tag("backup")})
    conn = target.connect(autocommit=True)
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        while not try_lock(conn, CLASS_BACKUP, key):
            if time.monotonic() >= deadline:
                who = holder(conn, CLASS_BACKUP, key)
                raise LockHeld(
                    f"another Lifeboat backup of database '{database}' to {destination} is running: the lock is "
                    f"held by {who}"
                    + (f"; waited {wait_s:.0f}s" if wait_s else "")
                    + ". Two runs of one database and destination never run at once; let the other one finish "
                    "(or set lock_wait_s to wait for it)", "lock_wait_s")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()
