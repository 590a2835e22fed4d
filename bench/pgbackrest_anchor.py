"""The pgBackRest anchor of the backup benchmark (issue 15): what a user would pick instead of a logical backup.

A private PostgreSQL 15 cluster is started under the benchmark's 0700 scratch directory, on a free
127.0.0.1 port, holding a copy of the benchmark database (pg_dump | pg_restore, not measured); its WAL is
archived by pgBackRest itself (archive_mode on, archive-push). Then, measured like every other variant:

- ``pgbackrest backup --type=full`` into a local repository (zstd, process-max = the CPU count, as a user
  would configure it on this machine);
- ``pgbackrest restore`` into an empty data directory, and the restored cluster started until it accepts
  connections (recovery to the backup's consistency point included): the time to a usable server.

The cluster is stopped by its postmaster's PID (``pg_ctl stop`` names the data directory; a fast shutdown
that did not happen in 60 s is followed by SIGKILL of that PID only) and everything is removed with the
scratch directory. When the benchmark runs as root, PostgreSQL and pgBackRest run as the ``postgres``
account (PostgreSQL refuses root). Nothing here is asserted: figures are printed and stored.
"""
from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

import benchlib

STANZA = "bench"


def available() -> str | None:
    """None when the anchor can run here, else why not (named, with the fix)."""
    if not shutil.which("pgbackrest"):
        return "pgbackrest is not installed (bash scripts/setup.sh --test installs Debian's pgbackrest)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' account to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anchor:
    def __init__(self, work: pathlib.Path):
        self.base = work / "pgbackrest"
        self.data = self.base / "data"
        self.restored = self.base / "restored"
        self.repo = self.base / "repo"
        self.conf = self.base / "pgbackrest.conf"
        self.sock = self.base / "sock"
        self.port = _free_port()
        self.bin = pathlib.Path(benchlib.pg_bin("pg_ctl")).parent
        self.as_postgres = os.geteuid() == 0
        self.pids: list[int] = []

    # -- helpers ---------------------------------------------------------------
    def argv(self, *args: str) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] if self.as_postgres else []) + list(args)

    def run(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, check=False,
                              env=self.env())
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}
        env.update(PGBACKREST_CONFIG=str(self.conf), LC_ALL="C")
        return env

    def chown(self, path: pathlib.Path) -> None:
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def mkdir(self, path: pathlib.Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.chown(path)

    # -- lifecycle -------------------------------------------------------------
    def setup(self, source_db: str) -> dict[str, Any]:
        """Make the cluster, copy the benchmark database into it, create the stanza (not measured)."""
        t0 = time.perf_counter()
        if self.as_postgres:   # the scratch directory is root's 0700: let postgres through to its own subdir
            os.chmod(self.base.parent, 0o711)
        for d in (self.base, self.repo, self.sock):
            self.mkdir(d)
        self.conf.write_text(
            f"[global]\nrepo1-path={self.repo}\nrepo1-retention-full=1\ncompress-type=zst\n"
            f"process-max={os.cpu_count() or 1}\nstart-fast=y\narchive-timeout=600\nlog-level-console=warn\n"
            "log-level-file=off\n"
            f"lock-path={self.base}/lock\nspool-path={self.base}/spool\n\n"
            f"[{STANZA}]\npg1-path={self.data}\npg1-port={self.port}\npg1-socket-path={self.sock}\n")
        os.chmod(self.conf, 0o600)
        self.chown(self.conf)
        self.run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                 "-E", "UTF8", "--locale=C.UTF-8")
        with open(self.data / "postgresql.auto.conf", "a") as fh:
            fh.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.sock}'\n"
                     "wal_level = replica\nmax_wal_senders = 2\nshared_buffers = 128MB\n")
        self.start(self.data)
        self.run(str(self.bin / "createdb"), "-h", str(self.sock), "-p", str(self.port), "-U", "postgres", "bench")
        # the benchmark database, copied (pg_dump from the lab | pg_restore into this cluster)
        target = benchlib.admin_target(source_db)
        with target.child_env() as env:
            dump = subprocess.Popen([benchlib.pg_bin("pg_dump"), "-Fc", "-Z0", "-d", source_db],
                                    stdout=subprocess.PIPE, env=env)
            restore = subprocess.run(self.argv(benchlib.pg_bin("pg_restore"), "--no-owner", "--no-privileges",
                                               "-h", str(self.sock), "-p", str(self.port), "-U", "postgres",
                                               "-d", "bench"),
                                     stdin=dump.stdout, capture_output=True, text=True, env=self.env(), check=False)
            assert dump.stdout is not None
            dump.stdout.close()
            if dump.wait() != 0 or restore.returncode != 0:
                raise RuntimeError(f"copying {source_db} into the pgBackRest cluster failed: "
                                   f"{restore.stderr.strip()[-500:]}")
        # WAL archiving from now on (the copy's WAL is not archived: a backlog of it made 'check' time out
        # under load); a restart applies archive_mode
        self.stop(self.data)
        with open(self.data / "postgresql.auto.conf", "a") as fh:
            fh.write(f"archive_mode = on\narchive_command = 'pgbackrest --config={self.conf} --stanza={STANZA} "
                     "archive-push %p'\n")
        self.start(self.data)
        self.run("pgbackrest", f"--stanza={STANZA}", "stanza-create")
        self.run("pgbackrest", f"--stanza={STANZA}", "check")
        return {"setup_s": round(time.perf_counter() - t0, 1), "port": self.port,
                "cluster_size_bytes": _du(self.data)}

    def start(self, data: pathlib.Path) -> None:
        self.run(str(self.bin / "pg_ctl"), "-D", str(data), "-w", "-t", "600", "-l", str(self.base / "pg.log"),
                 "start", timeout=700)
        pid_file = data / "postmaster.pid"
        self.pids.append(int(pid_file.read_text().splitlines()[0]))

    def stop(self, data: pathlib.Path) -> None:
        pid_file = data / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().splitlines()[0])
        try:
            subprocess.run(self.argv(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60",
                                     "stop"), capture_output=True, timeout=90, check=False, env=self.env())
        except subprocess.TimeoutExpired:
            pass
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)   # this postmaster only, by its PID

    def backup_argv(self) -> list[str]:
        return self.argv("pgbackrest", f"--config={self.conf}", f"--stanza={STANZA}", "--type=full", "backup")

    def restore_argv(self) -> list[str]:
        """Restore into an empty directory, then start that cluster until it accepts connections."""
        script = (f"set -e; pgbackrest --config={self.conf} --stanza={STANZA} --pg1-path={self.restored} "
                  f"--type=immediate --target-action=promote restore; "
                  f"printf \"port = {self.port}\\narchive_mode = off\\n\" >> {self.restored}/postgresql.auto.conf; "
                  f"{self.bin}/pg_ctl -D {self.restored} -w -t 1200 -l {self.base}/restored.log start")
        return self.argv("bash", "-c", script)

    def repo_size(self) -> int:
        return _du(self.repo / "backup")

    def prepare_restore(self) -> None:
        self.stop(self.data)
        self.mkdir(self.restored)

    def cleanup(self) -> None:
        for d in (self.restored, self.data):
            try:
                self.stop(d)
            except Exception as exc:  # noqa: BLE001 - cleanup goes on; printed
                print(f"  WARNING: stopping the pgBackRest bench cluster in {d} failed: {exc}", flush=True)
        for pid in self.pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _du(path: pathlib.Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def measure(work: pathlib.Path, source_db: str) -> dict[str, Any]:
    """Backup and restore of the anchor, measured; {'skipped': reason} when it cannot run here."""
    why = available()
    if why:
        return {"skipped": why}
    anchor = Anchor(work)
    try:
        facts = anchor.setup(source_db)
        print(f"  pgBackRest: cluster on 127.0.0.1:{anchor.port} ready in {facts['setup_s']} s "
              f"({facts['cluster_size_bytes'] / 1e9:.2f} GB on disk)", flush=True)
        backup = benchlib.measure("pgBackRest full backup (zst, local repository)", anchor.backup_argv(),
                                  env=anchor.env())
        if backup.rc:
            return {**facts, "error": f"backup failed: {backup.extra.get('stderr', '')[-500:]}"}
        size = anchor.repo_size()
        print(f"  pgBackRest: backup {backup.wall_s:.2f} s, repository {size / 1e6:.1f} MB", flush=True)
        anchor.prepare_restore()
        restore = benchlib.measure("pgBackRest restore + start", anchor.restore_argv(), env=anchor.env())
        if restore.rc:
            return {**facts, "backup": backup.as_dict(), "repo_bytes": size,
                    "error": f"restore failed: {restore.extra.get('stderr', '')[-500:]}"}
        print(f"  pgBackRest: restore + start {restore.wall_s:.2f} s", flush=True)
        return {**facts, "backup": backup.as_dict(), "restore": restore.as_dict(), "repo_bytes": size}
    except Exception as exc:  # noqa: BLE001 - the anchor's failure is reported, the benchmark goes on
        return {"error": f"{exc.__class__.__name__}: {exc}"}
    finally:
        anchor.cleanup()
