"""Shared helpers for the Lifeboat benchmarks (bench/*.py).

- lab settings from ``.lab/lab.json`` (``LIFEBOAT_LAB_DIR`` overrides the directory);
- the engine import (``ansible.module_utils.lifeboat.<name>``) outside Ansible;
- a private 0700 scratch directory removed on exit;
- ``measure()``: run one variant as a child process tree and report its wall
  time and memory (kernel high-water marks via ``wait4`` plus a sampled sum of
  the RSS of every process in the tree);
- machine facts and the JSON result files under ``bench/results/``.

Benchmarks only print and write results; they never assert on timings.
Secrets are never put in argv or printed: PostgreSQL clients get a private
PGPASSFILE (``PgTarget.child_env``) and child Python processes read the lab
file themselves.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
LAB_DIR = pathlib.Path(os.environ.get("LIFEBOAT_LAB_DIR", REPO / ".lab"))
BENCH_DB = os.environ.get("LIFEBOAT_BENCH_DB", "lifeboat_bench")


def bench_db_for(scale: float) -> str:
    """The benchmark database of a scale: ``lifeboat_bench`` for 1.0, ``lifeboat_bench_0_05`` for 0.05, ...
    (so a quick run does not replace the 1 GB database); ``LIFEBOAT_BENCH_DB`` overrides."""
    if "LIFEBOAT_BENCH_DB" in os.environ:
        return os.environ["LIFEBOAT_BENCH_DB"]
    # LIFEBOAT_BENCH_DB_PREFIX: a set of databases of one's own (two benchmarks sharing a lab never rebuild
    # each other's database)
    base = os.environ.get("LIFEBOAT_BENCH_DB_PREFIX") or "lifeboat_bench"
    if abs(scale - 1.0) < 1e-9 and base == "lifeboat_bench":
        return base
    return f"{base}_" + f"{scale:g}".replace(".", "_").replace("-", "_")
BENCH_BUCKET = "lifeboat-backups"
BENCH_PREFIX = "bench"          # every benchmark object lives under s3://lifeboat-backups/bench/...
MIB = 1024 * 1024
GIB = 1024 * MIB
MEMORY_NOTE = ("tree_peak_sampled_mb (compared with the 200 MB target) = the largest sum of the RSS of every live "
               "process of the variant's tree (Python, pg_dump, gpg, pg_restore, psql, ...), sampled at 20 Hz, a "
               "child running its parent's program (fork before exec, pg_restore -j worker) counting only its "
               "private pages; largest_process_mb = the largest own peak RSS (VmHWM) of one process; "
               "tree_rss_sum_peak_mb = plain sum of RSS (counts shared pages, e.g. a forked child before exec, "
               "repeatedly); maxrss_single_mb (wait4) includes the parent's pages at fork and is not used; the "
               "PostgreSQL server backends doing the work are not part of the tree")


def engine_path() -> None:
    """Make ``ansible.module_utils.lifeboat`` importable exactly as modules import it."""
    import ansible.module_utils

    path = str(REPO / "module_utils")
    if path not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(path)


def lab() -> dict[str, Any]:
    path = LAB_DIR / "lab.json"
    if not path.exists():
        sys.exit(f"{path} is missing: the benchmarks need the local lab, run `make lab` first")
    return json.loads(path.read_text())


def admin_target(database: str = "postgres"):
    """PgTarget for the lab's PostgreSQL 15 as its admin role."""
    engine_path()
    from ansible.module_utils.lifeboat.pgconn import PgTarget

    pg = lab()["postgres"]
    return PgTarget(host=pg["host"], port=int(pg["port"]), user=pg["admin_user"],
                    password=pg["admin_password"], database=database)


def pg_bin(name: str) -> str:
    return os.path.join(lab()["postgres"]["bin_dir"], name)


def s3_settings():
    engine_path()
    from ansible.module_utils.lifeboat.s3 import S3Settings

    cfg = lab()["s3"]["backup"]
    return S3Settings(endpoint=cfg["endpoint"], region=cfg["region"], access_key=cfg["access_key"],
                      secret_key=cfg["secret_key"])


def s3_client():
    engine_path()
    from ansible.module_utils.lifeboat.s3 import make_client

    return make_client(s3_settings())


def delete_prefix(prefix: str) -> int:
    """Delete every object (and pending multipart upload) under ``prefix`` in the bench bucket.

    Never raises: a failure is printed (with what is left behind) and -1 returned.
    """
    try:
        return _delete_prefix(prefix)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the results
        print(f"  WARNING: cleanup of s3://{BENCH_BUCKET}/{prefix} failed ({exc.__class__.__name__}: {exc}); "
              "objects may remain there", flush=True)
        return -1


def _delete_prefix(prefix: str) -> int:
    client = s3_client()
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BENCH_BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []) or []:
            client.delete_object(Bucket=BENCH_BUCKET, Key=obj["Key"])
            n += 1
    with contextlib.suppress(Exception):
        ups = client.list_multipart_uploads(Bucket=BENCH_BUCKET, Prefix=prefix).get("Uploads", []) or []
        for up in ups:
            client.abort_multipart_upload(Bucket=BENCH_BUCKET, Key=up["Key"], UploadId=up["UploadId"])
    return n


@contextlib.contextmanager
def private_dir(prefix: str = "lifeboat-bench-") -> Iterator[pathlib.Path]:
    """A 0700 scratch directory, removed on exit whatever happens."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def database_size(name: str) -> int | None:
    with admin_target().connect() as conn:
        row = conn.execute("SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s",
                           (name,)).fetchone()
    return int(row[0]) if row else None


def drop_database(name: str, quiet: bool = False) -> None:
    """DROP DATABASE IF EXISTS ... WITH (FORCE); with ``quiet`` a failure is printed, not raised (cleanup)."""
    from psycopg import sql

    try:
        with admin_target().connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except Exception as exc:  # noqa: BLE001
        if not quiet:
            raise
        print(f"  WARNING: could not drop scratch database {name} ({exc.__class__.__name__}: {exc})", flush=True)


def create_database(name: str) -> None:
    from psycopg import sql

    with admin_target().connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# --------------------------------------------------------------------------- measuring

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2:].split()
        tree.setdefault(int(rest[1]), []).append(int(entry.name))
    return tree


def _tree(root: int) -> list[tuple[int, int | None]]:
    """(pid, parent pid) of ``root`` and its descendants: /proc/PID/task/TID/children when the kernel has
    it (cheap), else a scan of /proc."""
    out: list[tuple[int, int | None]] = []
    todo: list[tuple[int, int | None]] = [(root, None)]
    try:
        while todo:
            pid, parent = todo.pop()
            out.append((pid, parent))
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except FileNotFoundError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children") as fh:
                        todo.extend((int(x), pid) for x in fh.read().split())
                except FileNotFoundError:
                    continue
        return out
    except OSError:  # no children files: scan /proc
        tree = _children()
        out, todo = [], [(root, None)]
        while todo:
            pid, parent = todo.pop()
            out.append((pid, parent))
            todo.extend((c, pid) for c in tree.get(pid, []))
        return out


def _status_kib(pid: int) -> tuple[int, int, str]:
    """(VmRSS, VmHWM, Name) in KiB of one process; zeros when it is gone."""
    rss = hwm = 0
    name = "?"
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("Name:"):
                    name = line.split(None, 1)[1].strip()
    except OSError:
        pass
    return rss, hwm, name


@dataclass
class Measurement:
    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0                  # user + system CPU of the whole tree (kernel rusage of reaped processes)
    server_cpu_s: float | None = None   # CPU of the PostgreSQL backends serving the variant (sampled at 20 Hz)
    load_1m: float = 0.0                # 1-minute load average when the variant ended (machine contention)
    rc: int = 0
    maxrss_single_mb: float = 0.0      # kernel (wait4): inflated by the parent's pages at fork; not used
    tree_peak_sampled_mb: float = 0.0  # sampled: largest RSS of the tree at one instant (THE number)
    tree_rss_sum_peak_mb: float = 0.0  # sampled: largest plain sum of RSS (counts shared pages repeatedly)
    largest_process_mb: float = 0.0    # the largest own peak RSS (VmHWM) of any one process of the tree
    per_process_hwm_mb: dict[str, float] = field(default_factory=dict)
    #: CPU seconds per program name (all its processes), sampled at 20 Hz: where the tree's CPU went
    per_process_cpu_s: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _private_kib(pid: int) -> int | None:
    """Pages only this process maps (Private_Clean + Private_Dirty), KiB."""
    total = None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total = (total or 0) + int(line.split()[1])
    except OSError:
        return None
    return total


def postmaster_pid() -> int | None:
    """PID of the lab's PostgreSQL 15 postmaster (to attribute server CPU to a variant)."""
    pg = lab()["postgres"]
    for path in (f"/var/lib/postgresql/{pg.get('version', 15)}/{pg.get('cluster', 'lifeboat')}/postmaster.pid",
                 f"/var/run/postgresql/{pg.get('version', 15)}-{pg.get('cluster', 'lifeboat')}.pid"):
        try:
            with open(path) as fh:
                return int(fh.readline().strip())
        except (OSError, ValueError):
            continue
    return None


def _cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    rest = stat[stat.rfind(b")") + 2:].split()
    return int(rest[11]) + int(rest[12])  # utime + stime


def _backends(postmaster: int, databases: tuple[str, ...]) -> list[int]:
    """Backends of ``postmaster`` connected to a database whose name starts with one of ``databases``."""
    out = []
    try:
        kids = open(f"/proc/{postmaster}/task/{postmaster}/children").read().split()
    except OSError:
        return out
    for kid in kids:
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as fh:
                title = fh.read().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            continue
        # "postgres: 15/lifeboat: USER DATABASE HOST(PORT) STATE"
        if len(title) >= 4 and title[2] != "checkpointer" and title[3].startswith(databases):
            out.append(int(kid))
    return out


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


class _Sampler(threading.Thread):
    """Samples the memory of a process tree every ``interval`` seconds.

    The tree's RSS at one instant is the sum of every process's RSS, except
    that a child running the same program as its parent (a fork not yet
    exec'd, or a fork-only worker such as pg_restore -j's) counts only its
    private pages: the pages it shares copy-on-write with its parent are
    already in the parent's RSS. Each process's own peak RSS (VmHWM) is kept too.
    """

    def __init__(self, root: int, interval: float = 0.05, server_dbs: tuple[str, ...] = ()):
        super().__init__(daemon=True)
        self.root = root
        self.server_dbs = server_dbs
        self.postmaster = postmaster_pid() if server_dbs else None
        self.server_ticks: dict[int, list[int]] = {}  # backend pid -> [first seen, last seen]
        self.first = True
        self.interval = interval
        self.stop = threading.Event()
        self.peak_kib = 0
        self.peak_rss_sum_kib = 0
        self.hwm: dict[tuple[int, str], int] = {}
        self.cpu_ticks: dict[tuple[int, str], int] = {}

    def run(self) -> None:
        exes: dict[int, str | None] = {}
        while not self.stop.is_set():
            total = rss_total = 0
            for pid, parent in _tree(self.root):
                rss, hwm, name = _status_kib(pid)
                ticks = _cpu_ticks(pid)
                if ticks is not None:   # per-stage CPU: each process's last reading (within one interval)
                    self.cpu_ticks[(pid, name)] = ticks
                rss_total += rss
                exes[pid] = _exe(pid)
                forked = parent is not None and exes[pid] is not None and exes[pid] == exes.get(parent)
                if forked:
                    private = _private_kib(pid)
                    total += rss if private is None else private
                else:
                    total += rss
                    if hwm and hwm > self.hwm.get((pid, name), 0):
                        self.hwm[(pid, name)] = hwm
            self.peak_kib = max(self.peak_kib, total)
            self.peak_rss_sum_kib = max(self.peak_rss_sum_kib, rss_total)
            if self.postmaster:
                for pid in _backends(self.postmaster, self.server_dbs):
                    ticks = _cpu_ticks(pid)
                    if ticks is None:
                        continue
                    seen = self.server_ticks.setdefault(pid, [ticks if self.first else 0, ticks])
                    seen[1] = ticks
            self.first = False
            self.stop.wait(self.interval)

    def server_cpu_s(self) -> float | None:
        if not self.postmaster:
            return None
        return sum(last - first for first, last in self.server_ticks.values()) / os.sysconf("SC_CLK_TCK")


def measure(name: str, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
            stdout: Any = None, timeout: float = 7200, server_dbs: tuple[str, ...] = ()) -> Measurement:
    """Run ``argv`` as a child process tree; wall time and memory of the whole tree.

    ``tree_peak_sampled`` is the largest RSS of the whole tree seen by a 20 Hz
    sampler (see _Sampler: pages a fork shares with its parent counted once);
    ``largest_process`` is the largest own peak RSS (VmHWM) of any one process,
    a lower bound of the tree's peak. ``maxrss_single`` (``wait4``) is kept for reference only: Linux
    counts the parent's pages at fork in it.
    """
    err_fd, err_path = tempfile.mkstemp(prefix="lifeboat-bench-err-")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout if stdout is not None else subprocess.DEVNULL,
                            stderr=err_fd, stdin=subprocess.DEVNULL)
    sampler = _Sampler(proc.pid, server_dbs=server_dbs)
    sampler.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop.set()
    sampler.join()
    os.close(err_fd)
    err = pathlib.Path(err_path).read_text(errors="replace")
    os.unlink(err_path)
    per: dict[str, float] = {}
    for (_pid, pname), hwm in sampler.hwm.items():
        per[pname] = max(per.get(pname, 0.0), hwm * 1024 / 1e6)
    m = Measurement(name=name, wall_s=wall, rc=proc.returncode, cpu_s=usage.ru_utime + usage.ru_stime,
                    load_1m=os.getloadavg()[0],
                    maxrss_single_mb=usage.ru_maxrss * 1024 / 1e6,
                    tree_peak_sampled_mb=sampler.peak_kib * 1024 / 1e6,
                    tree_rss_sum_peak_mb=sampler.peak_rss_sum_kib * 1024 / 1e6,
                    largest_process_mb=max(sampler.hwm.values(), default=0) * 1024 / 1e6,
                    per_process_hwm_mb={k: round(v, 1) for k, v in sorted(per.items())})
    tck = os.sysconf("SC_CLK_TCK")
    for (_pid, pname), ticks in sampler.cpu_ticks.items():
        m.per_process_cpu_s[pname] = round(m.per_process_cpu_s.get(pname, 0.0) + ticks / tck, 2)
    server = sampler.server_cpu_s()
    if server is not None:
        m.server_cpu_s = server
    if proc.returncode != 0:
        m.extra["stderr"] = err[-4000:]
    return m


def combine(name: str, parts: list[Measurement]) -> Measurement:
    """Sequential steps: times add up, memory peaks are the largest step's."""
    out = Measurement(name=name, wall_s=sum(p.wall_s for p in parts), rc=max((p.rc for p in parts), default=0),
                      cpu_s=sum(p.cpu_s for p in parts), load_1m=max(p.load_1m for p in parts),
                      server_cpu_s=sum(p.server_cpu_s or 0.0 for p in parts),
                      maxrss_single_mb=max(p.maxrss_single_mb for p in parts),
                      tree_peak_sampled_mb=max(p.tree_peak_sampled_mb for p in parts),
                      tree_rss_sum_peak_mb=max(p.tree_rss_sum_peak_mb for p in parts),
                      largest_process_mb=max(p.largest_process_mb for p in parts))
    out.extra["steps"] = {p.name: round(p.wall_s, 3) for p in parts}
    for p in parts:
        for k, v in p.per_process_hwm_mb.items():
            out.per_process_hwm_mb[k] = max(out.per_process_hwm_mb.get(k, 0.0), v)
        if "stderr" in p.extra:
            out.extra.setdefault("stderr", p.extra["stderr"])
    return out


# --------------------------------------------------------------------------- reporting

def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    load = os.getloadavg()
    versions: dict[str, str] = {}
    for tool in (pg_bin("pg_dump"), "gzip", "zstd", "gpg"):
        with contextlib.suppress(Exception):
            out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10).stdout
            versions[os.path.basename(tool)] = out.splitlines()[0].strip()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(), "cpu_model": cpu, "memory_gib": round(mem / GIB, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load], "tools": versions,
        "note": "shared machine: other engineers' tests may run during the benchmark; ratios come from one run",
    }


def write_result(kind: str, payload: dict[str, Any]) -> pathlib.Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    scale = payload.get("scale")
    path = RESULTS / f"{kind}-scale{scale}-{stamp}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    latest = RESULTS / f"{kind}-scale{scale}-latest.json"
    latest.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def fmt_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(out)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")
