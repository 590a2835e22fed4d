"""module_utils/lifeboat/restore/parallel.py: how many pg_restore jobs when the operator did not say."""
from __future__ import annotations

import pytest

from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.restore.parallel import MAX_AUTO_JOBS, automatic_jobs, choose_jobs


def facts(addr, workers=8, max_conn=100, reserved=3, used=5):
    return {"server_addr": addr, "max_parallel_workers": workers, "max_connections": max_conn,
            "reserved": reserved, "connections": used}


@pytest.mark.parametrize("addr", [None, "127.0.0.1/32", "::1/128"])
def test_a_server_on_this_host_gets_this_hosts_cpus(addr):
    got = automatic_jobs(facts(addr), 2)
    assert got.jobs == 2 and not got.explicit
    assert "2 CPU(s) on this host" in got.reason
    assert automatic_jobs(facts(addr), 16).jobs == MAX_AUTO_JOBS == 4
    assert automatic_jobs(facts(addr), 1).jobs == 1
    assert automatic_jobs(facts(addr), None).jobs == 1


def test_a_remote_server_gets_its_max_parallel_workers_bounded():
    # a managed database with more cores than this 1-CPU client: the server's figure counts, not ours
    assert automatic_jobs(facts("10.0.0.5/32", workers=2), 1).jobs == 2
    assert automatic_jobs(facts("10.0.0.5/32", workers=8), 1).jobs == 4
    got = automatic_jobs(facts("db.example.com", workers=0), 8)
    assert got.jobs == 1 and "max_parallel_workers 0" in got.reason


def test_the_connections_left_bound_the_jobs():
    got = automatic_jobs(facts("10.0.0.5/32", max_conn=20, reserved=3, used=13), 1)
    assert got.jobs == 2 and "4 connection(s) left" in got.reason
    assert automatic_jobs(facts(None, max_conn=20, reserved=3, used=17), 4).jobs == 1


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
