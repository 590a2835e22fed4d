"""Restore a decoded backup into one database: a staged local copy for a parallel pg_restore -j (the
default where the server is worth it, after checking the free space), or pg_restore/psql fed by the
decoder (jobs: 1, plain SQL, or a short staging disk).
"""
from __future__ import annotations

import collections
import contextlib
import errno
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
from ansible.module_utils.lifeboat.restore.parallel import Parallelism, choose_jobs
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
    #: pg_restore's jobs (1: streamed, or psql) and how they were chosen
    jobs: int = 1
    jobs_reason: str = ""
    #: "staged" (decoded into a local file, then pg_restore [-j]) or "streamed" (piped into pg_restore/psql)
    path: str = "streamed"

    def describe(self) -> str:
        how = (f"pg_restore -j {self.jobs} from a staged local copy" if self.path == "staged" and self.jobs > 1
               else "pg_restore from a staged local copy" if self.path == "staged" else "streamed")
        how = f"{how} ({self.jobs_reason})" if self.jobs_reason else how
        if self.path == "staged":  # where a staged restore's time goes: the decode runs before pg_restore starts
            how += (f"; staged in {self.decode.seconds:.1f}s, pg_restore "
                    f"{max(0.0, self.seconds - self.decode.seconds):.1f}s")
        return how


class _StagingFull(Exception):
    """The staging filesystem filled up while the dump was being written (another run took the space)."""


def restore_into(storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, database: str, *,
                 no_owner: bool = False, schema_only: bool = False, data_only: bool = False,
                 jobs: int | None = None, staging_dir: str | None = None, staging_keep_free: int = 0,
                 app_name: str = APP_NAME) -> RestoreRun:
    """Decode the backup and restore it into the existing (normally empty) ``database``.

    ``jobs`` None: parallel.choose_jobs picks from the server's facts, and when the staging disk is short
    (checked against the manifest's dump size before anything is fetched, or filled up while staging) the
    restore streams instead, saying why. An explicit ``jobs`` above 1 is refused on a short disk.
    """
    started = time.monotonic()
    par = choose_jobs(admin, jobs, src.fmt)
    notes: list[str] = []
    if par.jobs > 1 or src.fmt == "directory":  # pg_restore -j and the directory format need local files
        directory = staging_dir or tempfile.gettempdir()
        needed = int(src.dump_size or (src.size or 0) * 4)
        tmpfiles.sweep_stale(directory, "lifeboat-restore-")  # before measuring
        try:
            check_free_space(directory, needed, staging_keep_free)
            run_ = _staged(storage, src, keys, admin, database, directory, par.jobs, no_owner=no_owner,
                           schema_only=schema_only, data_only=data_only, app_name=app_name)
            run_.seconds, run_.jobs, run_.jobs_reason = time.monotonic() - started, par.jobs, par.reason
            return run_
        except (RestoreError, _StagingFull) as exc:
            short = isinstance(exc, _StagingFull) or "not enough disk" in str(exc)
            if not short or par.explicit or src.fmt == "directory":
                if isinstance(exc, _StagingFull):
                    raise RestoreError(f"staging_dir: {exc}; free some space, point staging_dir elsewhere, or "
                                       "use jobs: 1 to stream without a local file", "staging_dir") from None
                raise
            notes.append(f"restored streamed, without pg_restore -j {par.jobs}: {exc} (the parallel restore needs "
                         "the decoded dump on local disk; with jobs unset a short disk means streaming)")
            par = Parallelism(1, False, f"streamed: not enough disk in {directory} for the staged copy")
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
    notes += guards[0].notes(database) if guards else []
    if no_owner and src.fmt == "plain":
        notes.append(f"no_owner: true does not apply to {src.backup_id}, a plain SQL dump: psql runs its OWNER TO "
                     "and GRANT statements as written (the roles they name must exist on this server)")
    return RestoreRun(holder["dec"], time.monotonic() - started, notes=notes, jobs=1, jobs_reason=par.reason)


def _staged(storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, database: str, directory: str,
            jobs: int, *, no_owner: bool, schema_only: bool, data_only: bool, app_name: str) -> RestoreRun:
    """Decode into a private directory under ``directory`` (0700, a 0600 file), run pg_restore [-j] on it,
    remove it. ENOSPC while writing raises _StagingFull before pg_restore has touched the database."""
    tmpdir = tmpfiles.private_dir("lifeboat-restore-", dir=directory)
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
            full: list[OSError] = []
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                def sink(chunk: bytes) -> None:
                    try:
                        fh.write(chunk)
                    except OSError as exc:
                        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                            raise
                        full.append(exc)
                        raise BrokenPipeError from None  # decode reads and hashes the rest, then returns

                dec = decode(storage, src, keys, sink)
                if not full:
                    try:
                        fh.flush()
                    except OSError as exc:
                        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                            raise
                        full.append(exc)
            if full:
                raise _StagingFull(f"not enough disk for a parallel restore: {directory} filled up while the "
                                   f"decoded dump was written ({full[0].strerror})")
        _run_restore_process(admin, src, database, restore_argv(
            admin, src, database, no_owner=no_owner, schema_only=schema_only, data_only=data_only,
            jobs=jobs, file=path), None, app_name)
        return RestoreRun(dec, 0.0, staged_file=path, path="staged")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


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
