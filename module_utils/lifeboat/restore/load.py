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
from ansible.module_utils.lifeboat.restore.guard import Guard, guarded
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
    """pg_restore / psql command line (no secret: the password is in PGPASSFILE; ``-w``: never a prompt, which
    would read the dump's pipe or stop a child outside the terminal's foreground group)."""
    if src.fmt == "plain":
        if schema_only or data_only:
            raise ConfigError("schema_only/data_only: a plain SQL dump is restored as a whole (psql); use a "
                              "custom-format backup for schema-only or data-only", "schema_only")
        return [admin.client("psql"), "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", dbname_arg(database), "-o",
                os.devnull, "-f", file or "-"]
    argv = [admin.client("pg_restore"), "--exit-on-error", "-w", "-d", dbname_arg(database)]
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


#: room kept beyond the decoded dump's size on the staging filesystem (its own blocks and metadata): 1%, and
#: at least this much
STAGING_MARGIN = 16 * 1024 * 1024
#: a write that fails with one of these means the staging disk (or the file size allowed) is too small
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def staging_needed(src: Source) -> tuple[int, int]:
    """The decoded dump's size (the manifest's; for a manifest without it, 4x the stored size, a guess that a
    fill-up while staging corrects) and the margin kept beyond it."""
    size = int(src.dump_size or (src.size or 0) * 4)
    return size, max(size // 100, STAGING_MARGIN)


def check_free_space(directory: str, needed: int, keep_free: int, margin: int = 0) -> dict[str, int]:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free - needed - margin < keep_free:
        raise RestoreError(
            f"staging_dir: not enough disk for a parallel restore: the decoded dump needs {needed} bytes in "
            f"{directory} (and {margin} bytes of margin), {free} bytes are free and staging_keep_free asks to keep "
            f"{keep_free} free; free some space, point staging_dir elsewhere, or use jobs: 1 to stream without a "
            "local file", "staging_dir")
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
    """The staging disk filled up while the dump was staged and the restore must not stream (jobs was set):
    not a LifeboatError, so that decode does not read the artifact again to name a cause."""


def restore_into(storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, database: str, *,
                 no_owner: bool = False, schema_only: bool = False, data_only: bool = False,
                 jobs: int | None = None, staging_dir: str | None = None, staging_keep_free: int = 0,
                 app_name: str = APP_NAME) -> RestoreRun:
    """Decode the backup and restore it into the existing (normally empty) ``database``.

    ``jobs`` None: parallel.choose_jobs picks from the server's facts. When the staging disk is short for
    the manifest's dump size (checked before anything is fetched), the restore streams instead; when it
    fills up while staging, the staged part is fed to a streaming pg_restore and the rest follows it (the
    artifact is fetched once). Either way a note says why. An explicit ``jobs`` above 1 is refused on a
    short disk. Every child runs under a guard (guard.py): a killed Lifeboat leaves no pg_restore running.
    """
    started = time.monotonic()
    par = choose_jobs(admin, jobs, src.fmt)
    notes: list[str] = []
    opts = {"no_owner": no_owner, "schema_only": schema_only, "data_only": data_only}
    if par.jobs > 1 or src.fmt == "directory":  # pg_restore -j and the directory format need local files
        directory = staging_dir or tempfile.gettempdir()
        needed, margin = staging_needed(src)
        tmpfiles.sweep_stale(directory, "lifeboat-restore-")  # before measuring
        try:
            check_free_space(directory, needed, staging_keep_free, margin)
        except RestoreError as exc:
            if par.explicit or src.fmt == "directory":
                raise
            notes.append(f"restored streamed, without pg_restore -j {par.jobs}: {exc} (the parallel restore needs "
                         "the decoded dump on local disk; with jobs unset a short disk means streaming)")
            par = Parallelism(1, False, f"streamed: not enough disk in {directory} for the staged copy")
        else:
            run_ = _staged(storage, src, keys, admin, database, directory, par, opts, app_name)
            run_.seconds = time.monotonic() - started
            if run_.path == "staged":
                run_.jobs, run_.jobs_reason = par.jobs, par.reason
            return run_
    argv = restore_argv(admin, src, database, **opts)
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

    with admin.target.child_env(database) as env, guarded(_passfile_dir(env)) as watch:
        child = _Child(src, database, argv, env, app_name, watch, feed=True)
        child.finish(_produced(produce, child))
    notes += guards[0].notes(database) if guards else []
    if no_owner and src.fmt == "plain":
        notes.append(f"no_owner: true does not apply to {src.backup_id}, a plain SQL dump: psql runs its OWNER TO "
                     "and GRANT statements as written (the roles they name must exist on this server)")
    return RestoreRun(holder["dec"], time.monotonic() - started, notes=notes, jobs=1, jobs_reason=par.reason)


def _produced(produce: Callable[[Callable[[bytes], None]], None], child: "_Child") -> BaseException | None:
    """Run ``produce`` into the child's stdin; what it raised (judged by _Child.finish with the child's status)."""
    try:
        produce(child.write)
    except BaseException as exc:  # noqa: BLE001 - decided by finish, with the child's status
        return exc
    return None


def _passfile_dir(env: dict[str, str]) -> str | None:
    passfile = env.get("PGPASSFILE")
    return os.path.dirname(passfile) if passfile else None


class _Stager:
    """The decoded dump's sink while staging. When a write fails because the disk is full (ENOSPC, EDQUOT) or
    the file reached the size allowed (EFBIG), ``on_full`` gives a streaming pg_restore (or raises): the part
    already staged is fed to it and removed, then the rest of the stream follows. Nothing is fetched twice."""

    def __init__(self, path: str, on_full: Callable[[OSError, int], "_Child"]):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.on_full = on_full
        self.staged = 0
        self.child: _Child | None = None
        self.full: OSError | None = None

    def write(self, chunk: bytes) -> None:
        if self.child is not None:
            self.child.write(chunk)
            return
        view = memoryview(chunk)
        while view:
            try:
                n = os.write(self.fd, view)
            except OSError as exc:
                if exc.errno not in _FULL:
                    raise
                self._switch(exc, view)
                return
            self.staged += n
            view = view[n:]

    def _switch(self, exc: OSError, rest: memoryview) -> None:
        self.full = exc
        self.close()
        self.child = self.on_full(exc, self.staged)
        with open(self.path, "rb") as staged:
            os.unlink(self.path)  # its space comes back when this copy is read
            while True:
                data = staged.read(1024 * 1024)
                if not data:
                    break
                self.child.write(data)
        self.child.write(bytes(rest))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _staged(storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, database: str, directory: str,
            par: Parallelism, opts: dict[str, bool], app_name: str) -> RestoreRun:
    """Decode into a private directory under ``directory`` (0700, a 0600 file), run pg_restore -j on it, remove
    it. When the disk fills up while staging: streamed instead from where it stopped (jobs unset), or stopped."""
    tmpdir = tmpfiles.private_dir("lifeboat-restore-", dir=directory)
    try:
        with admin.target.child_env(database) as env, guarded(tmpdir, _passfile_dir(env)) as watch:
            path = os.path.join(tmpdir, "dump")
            if src.fmt == "directory":
                dec, path = _unpacked(storage, src, keys, path, tmpdir, watch)
            else:
                def on_full(exc: OSError, staged: int) -> _Child:
                    what = (f"{directory} filled up after {staged} of {src.dump_size or 'an unknown number of'} "
                            f"bytes of the decoded dump were staged ({exc.strerror})")
                    if par.explicit:
                        raise _StagingFull(what)
                    return _Child(src, database, restore_argv(admin, src, database, **opts), env, app_name, watch,
                                  feed=True)

                stager = _Stager(path, on_full)
                try:
                    dec = decode(storage, src, keys, stager.write)
                except _StagingFull as exc:
                    raise RestoreError(f"staging_dir: not enough disk for a parallel restore: {exc}; free some "
                                       "space, point staging_dir elsewhere, or use jobs: 1 to stream without a "
                                       "local file (with jobs unset a short disk means streaming)",
                                       "staging_dir") from None
                except BaseException as exc:
                    if stager.child is not None:
                        with contextlib.suppress(BaseException):
                            stager.child.finish(exc)
                    raise
                finally:
                    stager.close()
                if stager.child is not None and stager.full is not None:
                    stager.child.finish(None)
                    return RestoreRun(dec, 0.0, jobs=1, path="streamed",
                                      jobs_reason=f"streamed: {directory} filled up while staging", notes=[
                        f"restored streamed, without pg_restore -j {par.jobs}: {directory} filled up after "
                        f"{stager.staged} bytes of the decoded dump were staged ({stager.full.strerror}); the "
                        "staged part was fed to pg_restore and removed and the rest streamed after it, the artifact "
                        "fetched once (the parallel restore needs the decoded dump on local disk; with jobs unset "
                        "a short disk means streaming)"])
            _Child(src, database, restore_argv(admin, src, database, jobs=par.jobs, file=path, **opts), env,
                   app_name, watch, feed=False).finish(None)
            return RestoreRun(dec, 0.0, staged_file=path, path="staged")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _unpacked(storage: Storage, src: Source, keys: DecryptionSpec, path: str, tmpdir: str,
              watch: Guard) -> tuple[DecodeResult, str]:
    """A directory-format backup (a tar stream) unpacked under ``path``; its decode and the toc.dat folder."""
    os.makedirs(path, mode=0o700)
    tar = subprocess.Popen(["tar", "-x", "-C", path, "-f", "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                           **watch.popen_kwargs())
    assert tar.stdin is not None
    dec = decode(storage, src, keys, tar.stdin.write)
    tar.stdin.close()
    err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
    if tar.wait() != 0:
        raise RestoreError(f"unpacking {src.backup_id} into {tmpdir} failed: {err.strip()}")
    tocs = [d for d, _s, files in os.walk(path) if "toc.dat" in files]
    if not tocs:
        raise IntegrityError(f"the directory-format backup {src.backup_id} has no toc.dat")
    return dec, tocs[0]


class _Child:
    """pg_restore or psql restoring into ``database``, started in the guard's process group, its stderr kept."""

    def __init__(self, src: Source, database: str, argv: list[str], env: dict[str, str], app_name: str,
                 watch: Guard, *, feed: bool):
        self.src, self.database, self.label = src, database, os.path.basename(argv[0])
        env = dict(env, PGAPPNAME=app_name)
        # session settings of the restore only: the target is new (or being rebuilt) and is checked
        # before use, so commits need not wait for the WAL flush; bigger index builds
        env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " " + RESTORE_PGOPTIONS).strip()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                     **watch.popen_kwargs())
        self.tail = _Tail(self.proc.stderr, self.label)

    def write(self, chunk: bytes) -> None:
        self.proc.stdin.write(chunk)  # type: ignore[union-attr]

    def finish(self, decode_error: BaseException | None) -> None:
        """Close its stdin, wait for it and judge; ``decode_error`` (what feeding it raised) ends it first."""
        try:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            if decode_error is not None and self.proc.poll() is None:
                self.proc.kill()
            rc = self.proc.wait()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.tail.join()
        self._judge(rc, decode_error)

    def _judge(self, rc: int, decode_error: BaseException | None) -> None:
        src, database, label = self.src, self.database, self.label
        errors = [ln for ln in self.tail.lines if _ERROR_LINE.search(ln)]
        if decode_error is not None and not isinstance(decode_error, BrokenPipeError):
            raise decode_error
        if rc != 0 or errors:
            detail = " | ".join(errors[-4:]) or self.tail.text()
            low = detail.lower()
            if any(s in low for s in ("terminating connection", "server closed the connection",
                                      "connection to server", "could not connect", "no connection to the server",
                                      "ssl connection has been closed unexpectedly", "ssl syscall error")):
                raise ConnectionFailed(f"connection lost while restoring {src.backup_id} into '{database}' "
                                       f"({label} exit {rc}): {detail}")
            role = re.search(r'role "([^"]+)" does not exist', detail)
            if role:
                detail += (f" - the dump names role '{role.group(1)}' (owner or GRANT), which this server lacks: "
                           "create the dump's roles first (pg_dumpall --globals-only of the old server, or CREATE "
                           "ROLE ... NOLOGIN), then rerun" + ("" if src.fmt == "plain" else
                                                            "; or restore with no_owner: true (the restoring user "
                                                            "owns everything, GRANTs are not restored)"))
            raise RestoreError(f"{label} restoring {src.backup_id} into '{database}' failed (exit {rc}): {detail}")
        if isinstance(decode_error, BrokenPipeError):
            raise RestoreError(f"{label} stopped reading the dump of {src.backup_id} early (exit {rc})")
