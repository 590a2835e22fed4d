#!/usr/bin/env python3
"""Lab helper: are the ports a lab server needs free, or held by that server itself?

Reads a JSON request on stdin: {"service": "PostgreSQL 18", "ports": [55433],
"pid_files": ["/path/postmaster.pid"]} and prints {"failed": bool, "msg": str,
"busy": [{"port", "pid", "process"}]}. A port counts as busy when something
listens on it on 127.0.0.1 or on every address (0.0.0.0, ::) and that listener
is not a process whose PID is the first line of one of pid_files (the lab's
own server, already running). Sockets and processes are read from /proc (no `ss`
needed on a minimal Debian). Exit 0 either way; the role fails on "failed".
"""
from __future__ import annotations

import json
import os
import pwd
import socket
import sys

LOOPBACK_OR_ANY = {"127.0.0.1", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1", "::ffff:0.0.0.0"} # noqa: S104 (addresses compared, nothing binds)
TCP_LISTEN = "0A"


def decode_address(hex_addr: str) -> str:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listeners(ports: set[int]) -> dict[str, tuple[int, int]]:
    """Socket inode -> (port, owner uid), for the listening TCP sockets on the given ports."""
    found: dict[str, tuple[int, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                lines = handle.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, uid, inode = fields[1], fields[3], fields[7], fields[9]
            addr_hex, port_hex = local.split(":")
            port = int(port_hex, 16)
            if state == TCP_LISTEN and port in ports and decode_address(addr_hex) in LOOPBACK_OR_ANY:
                found[inode] = (port, int(uid))
    return found


def holders(inodes: set[str]) -> dict[str, set[int]]:
    """Socket inode -> PIDs that hold it open (the processes this user can see)."""
    held: dict[str, set[int]] = {inode: set() for inode in inodes}
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target in wanted:
                held[wanted[target]].add(int(entry))
    return held


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        argv = []
    text = " ".join(argv) or "?"
    return text if len(text) <= 120 else text[:117] + "..."


def uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def own_pids(pid_files: list[str]) -> set[int]:
    found = set()
    for pid_file in pid_files:
        try:
            with open(pid_file, encoding="ascii") as handle:
                found.add(int(handle.readline().strip()))
        except (OSError, ValueError):
            continue  # no server of the lab yet, or a stale file: nothing is ours
    return found


def check(req: dict) -> dict:
    ports = {int(p) for p in req["ports"]}
    service = req["service"]
    ours = own_pids(req.get("pid_files", []))
    inodes = listeners(ports)
    # Without CAP_SYS_PTRACE (a container's root) the open files of another user's process
    # cannot be read: a listener nobody visibly holds is the lab's own server when that
    # server runs (its PID file) as the socket's owner.
    our_uids = {uid for uid in map(uid_of, ours) if uid is not None}
    busy: list[dict] = []
    for inode, pids in sorted(holders(set(inodes)).items(), key=lambda item: inodes[item[0]]):
        port, uid = inodes[inode]
        if ours & pids or (not pids and uid in our_uids):
            continue
        pid = min(pids) if pids else None
        busy.append({"port": port, "pid": pid,
                     "process": describe(pid) if pid else
                     f"a process of user {user_name(uid)} whose open files this user cannot read"})
    if not busy:
        return {"failed": False, "msg": f"{service}: ports {sorted(ports)} free or held by the lab", "busy": []}
    by_holder: dict[tuple, list[int]] = {}
    for b in busy:
        by_holder.setdefault((b["pid"], b["process"]), []).append(b["port"])
    taken = "; ".join(
        ("port " if len(ports_) == 1 else "ports ") + ", ".join(map(str, ports_))
        + (" is" if len(ports_) == 1 else " are") + " in use by "
        + (f"pid {pid} ({process})" if pid else process)
        for (pid, process), ports_ in by_holder.items())
    return {"failed": True, "busy": busy,
            "msg": (f"{service} cannot start: {taken}. The lab needs these ports on 127.0.0.1; stop that "
                    f"process (`ss -ltnp` lists the listeners), or if it is another Lifeboat lab, run make "
                    f"with its LIFEBOAT_LAB_DIR")}


def main() -> int:
    print(json.dumps(check(json.load(sys.stdin))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
