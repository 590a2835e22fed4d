"""module_utils/lifeboat/restore/parallel.py: how many pg_restore jobs when the operator did not say."""
from __future__ import annotations

import pytest

from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.restore.parallel import (
    ELSEWHERE,
    HERE,
    MAX_AUTO_JOBS,
    UNSURE,
    is_own_address,
    automatic_jobs,
    choose_jobs,
    where,
)


def facts(addr, workers=8, max_conn=100, reserved=3, used=5, *, port=5432, seen=None, local=None, peer=None):
    """A server's facts as server_facts reads them. By default the connection is direct: the server sees this
    socket's own end (client 127.0.0.1 or ::1 port 40000) and is this socket's peer."""
    host = None if addr is None else addr.split("/")[0]
    loop = "::1" if host and ":" in host else "127.0.0.1"
    seen = seen or (loop if host and _ip(host).is_loopback else "192.0.2.10", 40000)
    return {"server_addr": addr, "max_parallel_workers": workers, "max_connections": max_conn,
            "reserved": reserved, "connections": used, "server_port": None if addr is None else port,
            "client_addr": None if addr is None else seen[0], "client_port": None if addr is None else seen[1],
            "socket_local": None if addr is None else (local or seen),
            "socket_peer": None if addr is None else (peer or (host, port))}


def _ip(text):
    import ipaddress

    return ipaddress.ip_address(text)


def nowhere(_addr) -> bool:
    return False


@pytest.mark.parametrize("addr", [None, "127.0.0.1/32", "::1/128"])
def test_a_server_on_this_host_gets_this_hosts_cpus(addr):
    got = automatic_jobs(facts(addr), 2, nowhere)
    assert got.jobs == 2 and not got.explicit
    assert "2 CPU(s) on this host" in got.reason
    assert automatic_jobs(facts(addr), 16, nowhere).jobs == MAX_AUTO_JOBS == 4
    assert automatic_jobs(facts(addr), 1, nowhere).jobs == 1
    assert automatic_jobs(facts(addr), None, nowhere).jobs == 1


def test_a_direct_connection_to_an_address_of_this_host_is_this_host():
    # the client connects to the host's own LAN address 192.0.2.10 (this host can bind it)
    f = facts("192.0.2.10/32", seen=("192.0.2.10", 40000))
    assert where(f, lambda a: str(a) == "192.0.2.10") == (HERE, "connected directly to 192.0.2.10, an address of "
                                                                 "this host")
    assert automatic_jobs(f, 2, lambda a: str(a) == "192.0.2.10").jobs == 2
    # and IPv4-mapped IPv6 as the socket may report it
    f = facts("127.0.0.1/32", peer=("::ffff:127.0.0.1", 5432), local=("::ffff:127.0.0.1", 40000),
              seen=("127.0.0.1", 40000))
    assert where(f, nowhere)[0] == HERE


def test_a_remote_server_gets_its_max_parallel_workers_bounded():
    # a managed database with more cores than this 1-CPU client: the server's figure counts, not ours
    assert automatic_jobs(facts("10.0.0.5/32", workers=2), 1, nowhere).jobs == 2
    assert automatic_jobs(facts("10.0.0.5/32", workers=8), 1, nowhere).jobs == 4
    got = automatic_jobs(facts("10.0.0.5/32", workers=0), 8, nowhere)
    assert got.jobs == 1 and "max_parallel_workers 0" in got.reason


def test_a_managed_server_behind_nat_is_another_host():
    # this client is 192.168.1.20 behind a NAT; the server sees the NAT's public address and its own private one
    f = facts("10.1.2.3/32", seen=("198.51.100.7", 61000), local=("192.168.1.20", 40000), peer=("203.0.113.9", 5432))
    assert where(f, nowhere) == (ELSEWHERE, "connected to 203.0.113.9, through NAT or a proxy")
    assert automatic_jobs(f, 2, nowhere).jobs == 4


def test_an_ssh_tunnel_on_loopback_is_not_taken_for_this_host():
    # ssh -L 15432:localhost:5432 far-host: this client talks to 127.0.0.1:15432; far-host's sshd connects to its
    # own 127.0.0.1:5432 from port 51234. Both ends look like loopback; they are not the same connection.
    f = facts("127.0.0.1/32", workers=8, seen=("127.0.0.1", 51234), local=("127.0.0.1", 40000),
              peer=("127.0.0.1", 15432))
    place, why = where(f, nowhere)
    assert place == UNSURE and "127.0.0.1 port 15432" in why and "51234" in why
    # a 2-core client: the server may share its cores (a local proxy, a container), so 2, not 4 and not more
    got = automatic_jobs(f, 2, nowhere)
    assert got.jobs == 2 and "may share" in got.reason and "set jobs" in got.reason
    # a bigger client: the server's own figure bounds it
    assert automatic_jobs(facts("127.0.0.1/32", workers=3, seen=("127.0.0.1", 51234), peer=("127.0.0.1", 15432)),
                          16, nowhere).jobs == 3
    # the same port on both hosts by chance: the client ports still differ
    f = facts("127.0.0.1/32", seen=("127.0.0.1", 51234), local=("127.0.0.1", 40000), peer=("127.0.0.1", 5432))
    assert where(f, nowhere)[0] == UNSURE


def test_a_container_published_on_this_host_is_unsure():
    # docker run -p 5432:5432: the server sees the bridge's gateway and its own container address
    f = facts("172.17.0.2/32", seen=("172.17.0.1", 33000), local=("127.0.0.1", 40000), peer=("127.0.0.1", 5432))
    assert where(f, nowhere)[0] == UNSURE
    assert automatic_jobs(f, 2, nowhere).jobs == 2


def test_unreadable_socket_ends_are_unsure():
    f = facts("10.0.0.5/32")
    f["socket_local"] = f["socket_peer"] = None
    assert where(f, nowhere) == (UNSURE, "the connection's ends could not be compared")
    assert automatic_jobs(f, 1, nowhere).jobs == 1


def test_own_address_probe_binds_loopback_and_refuses_a_foreign_address():
    assert is_own_address(_ip("127.0.0.1"))
    assert not is_own_address(_ip("192.0.2.77"))  # TEST-NET-1: never configured here


def test_the_connections_left_bound_the_jobs():
    got = automatic_jobs(facts("10.0.0.5/32", max_conn=20, reserved=3, used=13), 1, nowhere)
    assert got.jobs == 2 and "4 connection(s) left" in got.reason
    assert automatic_jobs(facts(None, max_conn=20, reserved=3, used=17), 4, nowhere).jobs == 1


class _Never:
    def connect(self):  # pragma: no cover - an explicit jobs or a plain dump asks the server nothing
        raise AssertionError("the server was asked")


def test_explicit_jobs_win_and_a_plain_dump_is_psql():
    assert choose_jobs(_Never(), 3, "custom").jobs == 3 and choose_jobs(_Never(), 3, "custom").explicit
    assert choose_jobs(_Never(), 1, "custom").jobs == 1
    assert choose_jobs(_Never(), None, "plain").jobs == 1
    assert choose_jobs(_Never(), 4, "plain").jobs == 1
    with pytest.raises(ConfigError, match="jobs: must be 1 or more"):
        choose_jobs(_Never(), 0, "custom")
