"""roles/lab/files/lab_ports.py: decoding /proc/net/tcp{,6} addresses and the message it gives."""
from __future__ import annotations

import importlib.util
import os
import socket

import pytest

from testlib import REPO

spec = importlib.util.spec_from_file_location("lab_ports", REPO / "roles/lab/files/lab_ports.py")
lab_ports = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab_ports)


@pytest.mark.parametrize(("hex_addr", "expected"), [
    ("0100007F", "127.0.0.1"),
    ("00000000", "0.0.0.0"),
    ("0500000A", "10.0.0.5"),
    ("00000000000000000000000000000000", "::"),
    ("00000000000000000000000001000000", "::1"),
    ("0000000000000000FFFF00000100007F", "::ffff:127.0.0.1"),
])
def test_decode_address(hex_addr, expected):
    assert lab_ports.decode_address(hex_addr) == expected


def test_a_free_port_and_a_taken_one(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]   # bound, not listening: not a listener
            result = lab_ports.check({"service": "Thing", "ports": [free, taken], "pid_files": []})
        assert result["failed"] is True
        assert result["busy"] == [{"port": taken, "pid": os.getpid(), "process": lab_ports.describe(os.getpid())}]
        assert f"Thing cannot start: port {taken} is in use by pid {os.getpid()} (" in result["msg"]
        assert str(free) not in result["msg"]
        # The same listener is the service's own when its PID file names this process.
        pid_file = tmp_path / "svc.pid"
        pid_file.write_text(f"{os.getpid()}\n/some/dir\n")
        ours = lab_ports.check({"service": "Thing", "ports": [taken], "pid_files": [str(pid_file)]})
        assert ours["failed"] is False and ours["busy"] == []
    # Closed again: free; a stale or unreadable PID file changes nothing.
    pid_file.write_text("not-a-pid\n")
    again = lab_ports.check({"service": "Thing", "ports": [taken], "pid_files": [str(pid_file), "/nonexistent"]})
    assert again["failed"] is False


def test_a_listener_whose_holder_cannot_be_read(tmp_path, monkeypatch):
    """A container's root cannot read another user's /proc/PID/fd: the lab's own server is then
    recognised by its PID file and the socket's owner; anything else is still refused."""
    monkeypatch.setattr(lab_ports, "holders", lambda inodes: {inode: set() for inode in inodes})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        refused = lab_ports.check({"service": "Thing", "ports": [port], "pid_files": []})
        assert refused["failed"] is True
        assert refused["busy"][0]["pid"] is None
        assert f"port {port} is in use by a process of user root whose open files this user cannot read" in \
            refused["msg"]
        pid_file = tmp_path / "svc.pid"
        pid_file.write_text(f"{os.getpid()}\n")
        assert lab_ports.check({"service": "Thing", "ports": [port], "pid_files": [str(pid_file)]})["failed"] is False
        # A PID file naming a dead process proves nothing.
        pid_file.write_text("999999999\n")
        assert lab_ports.check({"service": "Thing", "ports": [port], "pid_files": [str(pid_file)]})["failed"] is True
