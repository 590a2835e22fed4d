"""Restore a decoded backup into one database: pg_restore or psql fed by the decoder, or a staged
local copy for a parallel restore (after checking the free space).
"""
from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ansible.module_utils.lifeboat import tmpfiles
from ansible.module_utils.lifeboat.crypto import DecryptionSpec
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    ConnectionFailed,
    IntegrityError,
    RestoreError,
)
from ansible.module_utils.lifeboat.restore.decoding import DecodeResult, decode
from ansible.module_utils.lifeboat.restore.pgadmin import Admin, dbname_arg
from ansible.module_utils.lifeboat.restore.plainsql import PlainDumpGuard
from ansible.module_utils.lifeboat.restore.selection import Source
from ansible.module_utils.lifeboat.storage import Storage


GIB = 1024 ** 3
APP_NAME = "lifeboat-restore"
RESTORE_PGOPTIONS = "-c synchronous_commit=off -c maintenance_work_mem=256MB"
# pg_restore: error: ... / psql:<stdin>:12: ERROR: ... / FATAL: ... (not NOTICE lines naming an "error_log" table)
_ERROR_LINE = re.compile(r"(^|:\s*)(error|ERROR|FATAL|fatal|PANIC):")


class _Tail:
    """Keep the last lines a child process wrote on stderr (bounded)."""

    def __init__(self, stream, name: str, limit: int = 50):
        self.name = name
        self.lines: collections.deque[str] = collections.deque(maxlen=limit)
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip())
        stream.close()

    def join(self) -> None:
        self._thread.join(timeout=30)

    def text(self, n: int = 6) -> str:
        return " | ".join(list(self.lines)[-n:])


def restore_argv(admin: Admin, src: Source, database: str, *, no_owner: bool, schema_only: bool = False,
                 data_only: bool = False, jobs: int = 1, file: str | None = None, clean: bool = False) -> list[str]:
    """pg_restore / psql command line (no secret: the password is in PGPASSFILE)."""
    if src.fmt == "plain":
        if schema_only or data_only:
            raise ConfigError("schema_only/data_only: a plain SQL dump is restored as a whole (psql); use a "
                              "custom-format backup for schema-only or data-only", "schema_only")
        return [admin.client("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname_arg(database), "-o",
                os.devnull, "-f", file or "-"]
    argv = [admin.client("pg_restore"), "--exit-on-error", "-d", dbname_arg(database)]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    if schema_only:
        argv.append("--schema-only")
    if data_only:
        argv += ["--data-only", "--disable-triggers"]
    if clean:
        argv += ["--clean", "--if-exists"]
    if src.fmt == "directory":
        argv += ["-F", "d"]
    if jobs > 1:
        argv += ["-j", str(jobs)]
    if file:
        argv.append(file)
    return argv


def check_free_space(directory: str, needed: int, keep_free: int) -> dict[str, int]:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free - needed < keep_free:
        raise RestoreError(
            f"staging_dir: not enough disk for a parallel restore: the decoded dump needs {needed} bytes in "
            f"{directory}, {free} bytes are free and staging_keep_free asks to keep {keep_free} free; free some "
            "space, point staging_dir elsewhere, or use jobs: 1 to stream without a local file", "staging_dir")
    return {"needed": needed, "free": free}


@dataclass
class RestoreRun:
    decode: DecodeResult
    seconds: float
    staged_file: str | None = None
    notes: list[str] = field(default_factory=list)


def restore_into(storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, database: str, *,
                 no_owner: bool = False, schema_only: bool = False, data_only: bool = False, jobs: int = 1,
                 staging_dir: str | None = None, staging_keep_free: int = 0,
                 app_name: str = APP_NAME) -> RestoreRun:
    """Decode the backup and restore it into the existing (normally empty) ``database``."""
    started = time.monotonic()
    if jobs > 1 and src.fmt == "plain":
        jobs = 1  # psql has no parallel mode
    if jobs > 1 or src.fmt == "directory":  # pg_restore -j and the directory format need local files
        needed = int(src.dump_size or (src.size or 0) * 4)
        tmpfiles.sweep_stale(staging_dir or tempfile.gettempdir(), "lifeboat-restore-")  # before measuring
        check_free_space(staging_dir or tempfile.gettempdir(), needed, staging_keep_free)
        tmpdir = tmpfiles.private_dir("lifeboat-restore-", dir=staging_dir)
        try:
            path = os.path.join(tmpdir, "dump")
            if src.fmt == "directory":
                os.makedirs(path, mode=0o700)
                tar = subprocess.Popen(["tar", "-x", "-C", path, "-f", "-"], stdin=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
                assert tar.stdin is not None
                dec = decode(storage, src, keys, tar.stdin.write)
                tar.stdin.close()
                err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
                if tar.wait() != 0:
                    raise RestoreError(f"unpacking {src.backup_id} into {tmpdir} failed: {err.strip()}")
                tocs = [d for d, _s, files in os.walk(path) if "toc.dat" in files]
                if not tocs:
                    raise IntegrityError(f"the directory-format backup {src.backup_id} has no toc.dat")
                path = tocs[0]
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    dec = decode(storage, src, keys, fh.write)
            _run_restore_process(admin, src, database, restore_argv(
                admin, src, database, no_owner=no_owner, schema_only=schema_only, data_only=data_only,
                jobs=jobs, file=path), None, app_name)
            return RestoreRun(dec, time.monotonic() - started, staged_file=path)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    argv = restore_argv(admin, src, database, no_owner=no_owner, schema_only=schema_only, data_only=data_only)
    holder: dict[str, DecodeResult] = {}
    guards: list[PlainDumpGuard] = []

    def produce(write: Callable[[bytes], None]) -> None:
        if src.fmt != "plain":
            holder["dec"] = decode(storage, src, keys, write)
            return
        guard = PlainDumpGuard(write, admin.server_major(), src.backup_id)
        guards.append(guard)
        holder["dec"] = decode(storage, src, keys, guard.feed)
        guard.close()

    _run_restore_process(admin, src, database, argv, produce, app_name)
    notes = guards[0].notes(database) if guards else []
    if no_owner and src.fmt == "plain":
        notes.append(f"no_owner: true does not apply to {src.backup_id}, a plain SQL dump: psql runs its OWNER TO "
                     "and GRANT statements as written (the roles they name must exist on this server)")
    return RestoreRun(holder["dec"], time.monotonic() - started, notes=notes)


def _run_restore_process(admin: Admin, src: Source, database: str, argv: list[str],
                         produce: Callable[[Callable[[bytes], None]], None] | None, app_name: str) -> None:
    label = os.path.basename(argv[0])
    with admin.target.child_env(database) as env:
        env["PGAPPNAME"] = app_name
        # session settings of the restore only: the target is new (or being rebuilt) and is checked
        # before use, so commits need not wait for the WAL flush; bigger index builds
        env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " " + RESTORE_PGOPTIONS).strip()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if produce else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        tail = _Tail(proc.stderr, label)
        decode_error: BaseException | None = None
        try:
            if produce is not None:
                assert proc.stdin is not None

                def write(chunk: bytes) -> None:
                    proc.stdin.write(chunk)  # type: ignore[union-attr]

                try:
                    produce(write)
                except BaseException as exc:  # noqa: BLE001 - decided below, with the child's status
                    decode_error = exc
                finally:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
                    if decode_error is not None and proc.poll() is None:
                        proc.kill()
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            tail.join()
    errors = [ln for ln in tail.lines if _ERROR_LINE.search(ln)]
    if decode_error is not None and not isinstance(decode_error, BrokenPipeError):
        raise decode_error
    if rc != 0 or errors:
        detail = " | ".join(errors[-4:]) or tail.text()
        low = detail.lower()
        if any(s in low for s in ("terminating connection", "server closed the connection", "connection to server",
                                  "could not connect", "no connection to the server",
                                  "ssl connection has been closed unexpectedly", "ssl syscall error")):
            raise ConnectionFailed(f"connection lost while restoring {src.backup_id} into '{database}' "
                                   f"({label} exit {rc}): {detail}")
        role = re.search(r'role "([^"]+)" does not exist', detail)
        if role:
            detail += (f" - the dump names role '{role.group(1)}' (owner or GRANT), which this server lacks: create "
                       "the dump's roles first (pg_dumpall --globals-only of the old server, or CREATE ROLE ... "
                       "NOLOGIN), then rerun" + ("" if src.fmt == "plain" else "; or restore with no_owner: true "
                                                 "(the restoring user owns everything, GRANTs are not restored)"))
        raise RestoreError(f"{label} restoring {src.backup_id} into '{database}' failed (exit {rc}): {detail}")
    if isinstance(decode_error, BrokenPipeError):
        raise RestoreError(f"{label} stopped reading the dump of {src.backup_id} early (exit {rc})")
