"""How many pg_restore jobs a restore (or a drill) uses when the operator did not say.

``pg_restore -j N`` loads tables and builds indexes over N connections: the server does most of the
work (COPY in, index builds), so the useful number is the server's, bounded. What the server tells us:

- on this host: the host's CPU count, which the server shares (pg_restore's workers and the server's
  backends compete for the same cores);
- on another host (a managed database): ``max_parallel_workers``, which providers and DBAs size to the
  server's cores (PostgreSQL's default is 8, so the bound below decides); this client's CPU count does
  not bound it: its pg_restore workers only read the staged file and send it;
- always: the connections left (``max_connections`` minus the reserved ones and those in use), two
  kept free for the application and Lifeboat's own checks.

Where the server runs is read from both ends of the connection, never from the address alone:

- this host: a Unix socket; or a direct TCP connection (the server's own address and port are this
  socket's peer, and the client address and port it sees are this socket's own: nothing in between)
  to an address of this host (loopback, or one this host can bind);
- another host: a direct connection to another host's address, or a connection to another host's
  address through NAT or a proxy (the managed database reached over the internet);
- unsure: a connection to an address of this host that the server does not see as direct (an SSH
  tunnel or a proxy on 127.0.0.1, a container's published port): the server may be far away or on
  this host. Its ``max_parallel_workers`` and this host's CPU count both bound the jobs, so a
  server that shares this host's cores is never given more jobs than it has; set ``jobs`` when
  the server behind the tunnel is bigger.

The result is bounded by ``MAX_AUTO_JOBS`` (4): beyond it a restore of a typical database gains
little (the largest table's load and index builds bound it) and the load on a live server grows.
``pg_restore -j`` needs a seekable archive (a local file, or a directory-format dump), so a
parallel restore stages the decoded dump on local disk first (load.py checks the free space).
"""
from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
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


def _ip(text: Any) -> Any:
    """An address as the server or the socket reports it ("127.0.0.1/32", "::ffff:10.0.0.5"), or None."""
    if text is None:
        return None
    try:
        addr = ipaddress.ip_address(str(text).split("/")[0].split("%")[0])
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


def is_own_address(addr: Any) -> bool:
    """Whether ``addr`` is an address of this host (this host can bind a socket to it)."""
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(addr), 0))
        return True
    except OSError:
        return False


HERE, ELSEWHERE, UNSURE = "this host", "another host", "unsure"


def where(facts: dict[str, Any], own_address: Callable[[Any], bool] = is_own_address) -> tuple[str, str]:
    """HERE, ELSEWHERE or UNSURE, and why (see the module's docstring for the rule)."""
    if facts.get("server_addr") is None:
        return HERE, "a Unix socket"
    server, seen_client = _ip(facts.get("server_addr")), _ip(facts.get("client_addr"))
    local, peer = facts.get("socket_local"), facts.get("socket_peer")
    if server is None or seen_client is None or not local or not peer or _ip(peer[0]) is None:
        return UNSURE, "the connection's ends could not be compared"
    target = _ip(peer[0])
    if (server == target and int(facts.get("server_port") or -1) == int(peer[1])
            and seen_client == _ip(local[0]) and int(facts.get("client_port") or -1) == int(local[1])):
        if server.is_loopback:
            return HERE, f"connected directly to the loopback address {server}"
        if own_address(server):
            return HERE, f"connected directly to {server}, an address of this host"
        return ELSEWHERE, f"connected directly to {server}"
    if target.is_loopback or own_address(target):
        return UNSURE, (f"connected to {target} port {peer[1]} on this host, which forwards elsewhere (a tunnel, "
                        f"a proxy or a container's port: the server sees {seen_client} port "
                        f"{facts.get('client_port')})")
    return ELSEWHERE, f"connected to {target}, through NAT or a proxy"


def _socket_ends(conn: Any) -> tuple[Any, Any]:
    """This connection's own and peer (address, port), or (None, None) (a Unix socket, or not readable)."""
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return None, None
            return sock.getsockname()[:2], sock.getpeername()[:2]
    except (OSError, AttributeError, ValueError):
        return None, None


def server_facts(conn: Any) -> dict[str, Any]:
    """The settings the automatic choice reads (any role may read them), and both ends of the connection."""
    row = conn.execute(
        "SELECT current_setting('max_parallel_workers')::int, current_setting('max_connections')::int, "
        "current_setting('superuser_reserved_connections')::int, "
        "coalesce(current_setting('reserved_connections', true), '0')::int, "
        "(SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'), "
        "inet_server_addr()::text, inet_server_port(), inet_client_addr()::text, inet_client_port()").fetchone()
    local, peer = _socket_ends(conn)
    return {"max_parallel_workers": int(row[0]), "max_connections": int(row[1]),
            "reserved": int(row[2]) + int(row[3]), "connections": int(row[4]), "server_addr": row[5],
            "server_port": row[6], "client_addr": row[7], "client_port": row[8],
            "socket_local": local, "socket_peer": peer}


def automatic_jobs(facts: dict[str, Any], cpu_count: int | None,
                   own_address: Callable[[Any], bool] = is_own_address) -> Parallelism:
    """The automatic choice from the server's facts (pure: unit-tested with made-up servers)."""
    bounds = [f"at most {MAX_AUTO_JOBS}"]
    jobs = MAX_AUTO_JOBS
    place, why = where(facts, own_address)
    cpus = max(1, cpu_count or 1)
    if place == HERE:
        bounds.append(f"{cpus} CPU(s) on this host, which the server shares ({why})")
        jobs = min(jobs, cpus)
    else:
        workers = max(1, int(facts["max_parallel_workers"]))
        bounds.append(f"the server's max_parallel_workers {facts['max_parallel_workers']} ({place}: {why})")
        jobs = min(jobs, workers)
        if place == UNSURE and cpus < jobs:
            bounds.append(f"{cpus} CPU(s) on this host, which the server may share (set jobs when it does not)")
            jobs = cpus
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
