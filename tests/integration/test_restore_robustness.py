"""The restore path's robustness (issue 15): where the automatic jobs think the server runs, a staging disk
that is short before or fills up during the download, and a restore killed while pg_restore -j runs.

Real parts only: the lab's PostgreSQL and SeaweedFS, a real TCP forwarder, real write failures (a small
tmpfs when this user may mount one, RLIMIT_FSIZE otherwise), real signals.
"""
from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading

from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore.parallel import HERE, UNSURE, automatic_jobs, server_facts, where


@contextlib.contextmanager
def forwarder(port: int):
    """A TCP forwarder on 127.0.0.1 (an SSH tunnel's shape): each connection is relayed to 127.0.0.1:port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def relay(a: socket.socket) -> None:
        b = socket.create_connection(("127.0.0.1", port))
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        with a, b:
            while not stop.is_set():
                for key, _ in sel.select(0.2):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            threading.Thread(target=relay, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def _facts(pg: dict, port: int) -> dict:
    target = PgTarget(host="127.0.0.1", port=port, user=pg["admin_user"], password=pg["admin_password"],
                      database="postgres")
    with target.connect() as conn:
        return server_facts(conn)


def test_the_server_is_placed_from_both_ends_of_a_real_connection(pg):
    direct = _facts(pg, pg["port"])
    assert where(direct)[0] == HERE, direct
    with forwarder(pg["port"]) as port:
        tunnelled = _facts(pg, port)
    place, why = where(tunnelled)
    # the server sees the forwarder's end, not this connection's: not taken for this host
    assert place == UNSURE and f"127.0.0.1 port {port}" in why, (tunnelled, why)
    # a 2-core client is never given more jobs than its cores for a server that may share them
    assert automatic_jobs(tunnelled, 2).jobs <= 2
    assert automatic_jobs(direct, 2).jobs <= 2
