"""How many pg_restore jobs a restore (or a drill) uses when the operator did not say.

``pg_restore -j N`` loads tables and builds indexes over N connections: the server does most of the
work (COPY in, index builds), so the useful number is the server's, bounded. What the server tells us:

- on this host (a Unix socket or a loopback address): the host's CPU count, which the server shares;
- elsewhere (a managed database): ``max_parallel_workers``, which providers and DBAs size to the
  server's cores (PostgreSQL's default is 8, so the bound below decides);
- always: the connections left (``max_connections`` minus the reserved ones and those in use), two
  kept free for the application and Lifeboat's own checks.

The result is bounded by ``MAX_AUTO_JOBS`` (4): beyond it a restore of a typical database gains
little (the largest table's load and index builds bound it) and the load on a live server grows.
``pg_restore -j`` needs a seekable archive (a local file, or a directory-format dump), so a
parallel restore stages the decoded dump on local disk first (load.py checks the free space).
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.lifeboat.errors import ConfigError

MAX_AUTO_JOBS = 4


@dataclass
class Parallelism:
    jobs: int
    explicit: bool
    reason: str

    def describe(self) -> str:
        return f"jobs: {self.jobs} ({self.reason})"


def _is_local(server_addr: Any) -> bool:
    if server_addr is None:  # a Unix socket
        return True
    try:
        return ipaddress.ip_address(str(server_addr).split("/")[0]).is_loopback
    except ValueError:
        return False


def server_facts(conn: Any) -> dict[str, Any]:
    """The settings the automatic choice reads (any role may read them)."""
    row = conn.execute(
        "SELECT current_setting('max_parallel_workers')::int, current_setting('max_connections')::int, "
        "current_setting('superuser_reserved_connections')::int, "
        "coalesce(current_setting('reserved_connections', true), '0')::int, "
        "(SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'), "
        "inet_server_addr()::text").fetchone()
    return {"max_parallel_workers": int(row[0]), "max_connections": int(row[1]),
            "reserved": int(row[2]) + int(row[3]), "connections": int(row[4]), "server_addr": row[5]}


def automatic_jobs(facts: dict[str, Any], cpu_count: int | None) -> Parallelism:
    """The automatic choice from the server's facts (pure: unit-tested with made-up servers)."""
    bounds = [f"at most {MAX_AUTO_JOBS}"]
    jobs = MAX_AUTO_JOBS
    if _is_local(facts.get("server_addr")):
        cpus = max(1, cpu_count or 1)
        bounds.append(f"{cpus} CPU(s) on this host, which the server shares")
        jobs = min(jobs, cpus)
    else:
        workers = max(1, int(facts["max_parallel_workers"]))
        bounds.append(f"the server's max_parallel_workers {facts['max_parallel_workers']}")
        jobs = min(jobs, workers)
    left = int(facts["max_connections"]) - int(facts["reserved"]) - int(facts["connections"]) - 2
    if left < jobs:
        bounds.append(f"{max(left, 0) + 2} connection(s) left on the server, two kept free")
        jobs = min(jobs, left)
    return Parallelism(max(1, jobs), False, "automatic: " + ", ".join(bounds))


def choose_jobs(admin: Any, requested: int | None, fmt: str) -> Parallelism:
    """The operator's ``jobs`` when given; else the automatic choice. A plain SQL dump is always 1 (psql)."""
    if fmt == "plain":
        return Parallelism(1, requested is not None, "a plain SQL dump is restored by psql, which has no parallel mode")
    if requested is not None and requested < 1:
        raise ConfigError(f"jobs: must be 1 or more (got {requested}); leave it unset to choose from the server",
                          "jobs")
    if requested is not None:
        return Parallelism(requested, True, "as requested")
    with admin.connect() as conn:
        facts = server_facts(conn)
    return automatic_jobs(facts, os.cpu_count())
