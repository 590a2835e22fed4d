#!/usr/bin/env python3
"""Can USER log in to HOST:PORT with the password read from stdin?

Usage: pg_login_probe.py HOST PORT USER DBNAME < password
Exit 0: login works; 2: authentication failed; 1: any other failure.
The password comes on stdin so that it never appears in a process's argv or
environment (Ansible's `environment:` is visible in `ps` as `sh -c 'VAR=...'`).
"""
import sys

import psycopg


def main() -> int:
    host, port, user, dbname = sys.argv[1:5]
    password = sys.stdin.read().rstrip("\n")
    try:
        with psycopg.connect(host=host, port=int(port), user=user, dbname=dbname, password=password,
                             connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        text = str(exc).replace(password, "***") if password else str(exc)
        if "authentication failed" in text or "does not exist" in text:
            print(f"login refused for {user}", file=sys.stderr)
            return 2
        print(f"cannot connect to {host}:{port}: {text.strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
