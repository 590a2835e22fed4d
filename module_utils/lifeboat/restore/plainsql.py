"""The plain-SQL guard: a plain ``pg_dump`` script checked and filtered on its way to psql.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from ansible.module_utils.lifeboat.errors import (
    IntegrityError,
    VersionMismatch,
)


_DUMPED_FROM = re.compile(rb"^-- Dumped from database version (\d+)")
_DUMPED_BY = re.compile(rb"^-- Dumped by pg_dump version (\d+)")
# database-level statements of a ``pg_dump --create [--clean]`` dump and its \connect to the dumped database
_DB_LEVEL = re.compile(rb"^(?:DROP DATABASE|CREATE DATABASE|ALTER DATABASE|COMMENT ON DATABASE|\\connect\b|\\c\s"
                       rb"|(?:GRANT|REVOKE) [^;]* ON DATABASE )")
_CONNECT = b"\n\\connect"
_PREAMBLE_LIMIT = 1024 * 1024
_PLAIN_TAIL = b"-- PostgreSQL database dump complete"


class PlainDumpGuard:
    r"""Guard a plain SQL dump on its way to psql: the body passes through untouched.

    A preamble is what pg_dump writes before the first object, and again after each
    ``\connect``: comments, ``SET``, ``set_config``, ``\restrict``/``\unrestrict``
    and, for ``--create [--clean]`` dumps, ``DROP DATABASE``/``CREATE DATABASE``/
    ``ALTER DATABASE``/``COMMENT ON DATABASE``/``GRANT ... ON DATABASE`` and
    ``\connect``. Those database-level statements name the DUMPED database: run as
    they are, they would drop and recreate the live database and restore into it
    instead of the new one (or fail on a server where it does not exist). They are
    skipped: the target is the database Lifeboat created, whose owner, settings and
    privileges are copied from the current database.

    ``SET transaction_timeout`` (written by pg_dump 17 and newer whatever the
    server) is skipped on servers older than 17, which do not know it. A dump of
    a server newer than the target is refused: pg_dump's output is only meant to
    load into the same or a newer major version. At the end, the dump must have
    had pg_dump's header and its "dump complete" trailer (else it is not a dump, or
    pg_dump did not finish); the caller then stops psql before it sees the end.
    """

    def __init__(self, write: Callable[[bytes], None], server_major: int, backup_id: str):
        self._write = write
        self.server_major = server_major
        self.backup_id = backup_id
        self._buf = b""      # line mode: the incomplete last line
        self._carry = b""    # pass-through: the last bytes, in case a "\n\connect" spans two chunks
        self._lines_mode = True
        self.source_major: int | None = None
        self.pg_dump_major: int | None = None
        self.skipped: list[str] = []
        self._head_ok = False
        self._size = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        self._tail = (self._tail + chunk[-4096:])[-4096:]  # the trailer, then \unrestrict and blank lines
        pending = chunk
        while pending:
            pending = self._lines(pending) if self._lines_mode else self._pass(pending)

    def _pass(self, data: bytes) -> bytes:
        data, self._carry = self._carry + data, b""
        at = data.find(_CONNECT)
        if at >= 0:  # a \connect in the body: what follows is database-level again
            self._write(data[: at + 1])
            self._lines_mode = True
            return data[at + 1:]
        keep = len(_CONNECT) - 1
        self._write(data[:-keep])
        self._carry = data[-keep:]
        return b""

    def _lines(self, data: bytes) -> bytes:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) <= _PREAMBLE_LIMIT:
                    return b""
                rest, self._buf = self._buf, b""  # not pg_dump's preamble: pass everything through
                self._lines_mode = False
                return rest
            line, self._buf = self._buf[: nl + 1], self._buf[nl + 1:]
            if not self._line(line):
                rest, self._buf = line + self._buf, b""
                self._lines_mode = False
                return rest

    def close(self) -> None:
        """End of the dump: it must be pg_dump's, and complete."""
        if self._lines_mode and self._buf:
            line, self._buf = self._buf, b""
            if not self._line(line):
                self._write(line)
        if self._carry:
            self._write(self._carry)
            self._carry = b""
        if self._size == 0:
            raise IntegrityError(f"backup {self.backup_id}: the dump is empty (0 bytes of SQL): nothing to restore")
        if not self._head_ok:
            raise IntegrityError(f"backup {self.backup_id}: the dump does not start like a pg_dump SQL script "
                                 "(no '-- PostgreSQL database dump' header): not restoring it")
        if _PLAIN_TAIL not in self._tail:
            raise IntegrityError(f"backup {self.backup_id}: the dump has no '-- PostgreSQL database dump complete' "
                                 "trailer: it is truncated (pg_dump did not finish); not restoring it")

    def _line(self, line: bytes) -> bool:
        """Handle one preamble line; False when ``line`` is not preamble (the body starts with it)."""
        text = line.rstrip(b"\r\n")
        if not text.strip() or text.startswith(b"--"):
            if text.startswith(b"-- PostgreSQL database dump"):
                self._head_ok = True
            m = _DUMPED_FROM.match(text)
            if m:
                self.source_major = int(m.group(1))  # 9.6 -> 9
                if self.source_major > self.server_major:
                    raise VersionMismatch(
                        f"this is a dump of PostgreSQL {self.source_major} "
                        f"({text.decode(errors='replace')[3:].strip()}) and the target server is PostgreSQL "
                        f"{self.server_major}: pg_dump's output only loads into the same or a newer major version. "
                        f"Restore it onto a PostgreSQL {self.source_major} (or newer) server", "backup_id")
            m = _DUMPED_BY.match(text)
            if m:
                self.pg_dump_major = int(m.group(1))
            self._write(line)
        elif text.startswith(b"SET transaction_timeout") and self.server_major < 17:
            self.skipped.append(text.decode(errors="replace"))
        elif text.startswith((b"SET ", b"SELECT pg_catalog.set_config(", b"\\restrict ", b"\\unrestrict ")):
            self._write(line)
        elif _DB_LEVEL.match(text):
            self.skipped.append(text.decode(errors="replace"))
        else:
            return False
        return True

    def notes(self, database: str) -> list[str]:
        if not self.skipped:
            return []
        skipped = list(dict.fromkeys(self.skipped))
        return [f"plain dump {self.backup_id}: skipped statement(s) naming the dumped database or not known to "
                f"PostgreSQL {self.server_major} (restored into '{database}' instead): "
                + "; ".join(s[:120] for s in skipped)]
