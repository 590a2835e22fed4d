"""The restore path's robustness (issue 15): where the automatic jobs think the server runs, a staging disk
that is short before or fills up during the download, and a restore killed while pg_restore -j runs.

Real parts only: the lab's PostgreSQL and SeaweedFS, a real TCP forwarder, real write failures (a small
tmpfs when this user may mount one, RLIMIT_FSIZE otherwise), real signals.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from restore_helpers import (
    admin_conn,
    backup_with_engine,
    counts,
    manifest_counts,
    source_database,
    storage_for,
)
from testlib import REPO, admin_sql

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat.errors import RestoreError
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore.parallel import HERE, UNSURE, automatic_jobs, server_facts, where

MIB = 1024 * 1024
# about 40 MB of dump that zstd makes about 1 MB of: 4x the stored size underestimates it tenfold
BULK = ("CREATE TABLE public.bulk AS SELECT g AS id, repeat(chr(97 + g % 26), 120) AS pad "
        "FROM generate_series(1, 300000) g")


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
            except TimeoutError:
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


# --------------------------------------------------------------------------- the staging disk: short, or filling up


def admin(pg) -> rs.Admin:
    return rs.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"], password=pg["admin_password"],
                             database="postgres"))


def keys(lab) -> rs.DecryptKeys:
    return rs.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"])


@pytest.fixture
def bulky(pg, lab, scratch_bucket, source_template):
    """(database, storage, manifest): a private copy of the sample database plus ~40 MB of compressible rows,
    backed up by the engine with content hashes; the manifest as an older Lifeboat wrote it (no dump_size, so
    the free-space check guesses 4x the stored size: far too little for this dump)."""
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template, extra_sql=BULK) as db:
        manifest = backup_with_engine(pg, lab, storage, bucket, endpoint, db, content_hashes=True)
        # the older manifest's guess (4x the stored size, plus the margin and 4 MiB) is well short of the dump
        assert manifest["artifact"]["dump_size"] > 4 * manifest["artifact"]["size"] + 20 * MIB, manifest["artifact"]
        yield db, storage, manifest


def _without_dump_size(storage, manifest) -> dict:
    older = json.loads(json.dumps(manifest))
    for key in ("dump_size", "dump_sha256"):
        older["artifact"].pop(key, None)
    mkey = manifest["artifact"]["key"].rsplit("/", 1)[0] + "/" + mf.MANIFEST_NAME
    mf.write_manifest(storage, mkey, mf.seal(older), exclusive=False)
    return older


class _Reads:
    """Counts the artifact's reads on the real store (the data still comes from SeaweedFS)."""

    def __init__(self, storage, key: str):
        self.key, self.count, real = key, 0, storage.open_reader

        def open_reader(k):
            self.count += k == key
            return real(k)

        storage.open_reader = open_reader


def _restored_equal(pg, db: str, manifest: dict) -> None:
    """The restored database holds the backed-up rows: per-table content hashes and counts equal the manifest's."""
    with admin_conn(pg, db) as conn:
        got = pgmeta.content_hashes(conn, pgmeta.list_tables(conn))
    want = manifest["content_hashes"]["tables"]
    key = lambda t: (t["schema"], t["name"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)
    assert counts(pg, db) == manifest_counts(manifest)


def _two_cpus() -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("jobs unset on this 1-CPU host is 1: nothing is staged")


def _damage(pg, db: str) -> None:
    with admin_conn(pg, db) as conn:
        conn.execute("DELETE FROM public.bulk WHERE id % 7 = 0")
        conn.execute("UPDATE public.invoices SET amount_cents = amount_cents + 1")


@contextlib.contextmanager
def _small_tmpfs(path, size: int):
    """A tmpfs of ``size`` bytes mounted at ``path`` (skips when this user may not mount one: the file-size
    limit test below makes the same write fail for any user)."""
    path.mkdir(mode=0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the RLIMIT_FSIZE test covers the fill-up")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """RLIMIT_FSIZE for this process (and what it starts) meanwhile: a write past ``limit`` bytes fails with
    EFBIG (Python ignores SIGXFSZ), as a file-size-limited filesystem or quota would."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _streamed_after_filling(out: dict, staging, staged: int | None = None) -> None:
    assert out["jobs"] == 1 and out["restore_path"] == "streamed", out
    why = [w for w in out["warnings"] if "filled up after" in w]
    assert len(why) == 1, out["warnings"]
    assert str(staging) in why[0] and "fed to pg_restore and removed" in why[0] and "fetched once" in why[0]
    if staged is not None:
        assert f"after {staged} bytes" in why[0], why[0]
    assert os.listdir(staging) == []  # nothing staged is left


def test_a_short_staging_disk_streams_before_fetching_anything(pg, lab, bulky, tmp_path):
    """A real 8 MiB filesystem against the manifest's 40 MB dump: decided before the download, fetched once."""
    _two_cpus()
    db, storage, manifest = bulky
    _damage(pg, db)
    reads = _Reads(storage, manifest["artifact"]["key"])
    with _small_tmpfs(tmp_path / "small", 8 * MIB) as staging:
        out = rs.run(rs.Request(database=db, confirm=db, jobs=None, staging_dir=str(staging), staging_keep_free=0,
                                safety_snapshot=False), storage, admin(pg), keys(lab))
        assert os.listdir(staging) == []
    assert out["restore_path"] == "streamed", out
    why = [w for w in out["warnings"] if w.startswith("restored streamed, without pg_restore -j")]
    assert why and "not enough disk for a parallel restore" in why[0] and "margin" in why[0], out["warnings"]
    assert reads.count == 1
    _restored_equal(pg, db, manifest)


def test_a_staging_disk_that_fills_up_streams_the_rest_without_a_second_download(pg, lab, bulky, tmp_path):
    """The free-space check passes on an older manifest's guess, then the real filesystem fills up (ENOSPC):
    the staged part is fed to pg_restore, removed, the rest follows; one download, the database equal."""
    _two_cpus()
    db, storage, manifest = bulky
    _without_dump_size(storage, manifest)
    _damage(pg, db)
    reads = _Reads(storage, manifest["artifact"]["key"])
    needed = 4 * manifest["artifact"]["size"] + max(manifest["artifact"]["size"] // 25, 16 * MIB)
    with _small_tmpfs(tmp_path / "small", needed + 2 * MIB) as staging:
        out = rs.run(rs.Request(database=db, confirm=db, jobs=None, staging_dir=str(staging), staging_keep_free=0,
                                safety_snapshot=False), storage, admin(pg), keys(lab))
        _streamed_after_filling(out, staging)
        assert "No space left on device" in [w for w in out["warnings"] if "filled up" in w][0]
    assert reads.count == 1
    _restored_equal(pg, db, manifest)


def test_a_file_size_limit_while_staging_streams_the_rest_or_stops_when_jobs_was_set(pg, lab, bulky, tmp_path):
    """The same fill-up for any user: the staged file may not grow past 3 MiB (EFBIG). jobs unset: streamed from
    where it stopped, one download, equal. jobs: 2: stopped there, naming the cure, the database untouched."""
    _two_cpus()
    db, storage, manifest = bulky
    staging = tmp_path / "staging"
    _damage(pg, db)
    damaged = counts(pg, db)
    reads = _Reads(storage, manifest["artifact"]["key"])
    with _file_size_limit(3 * MIB):
        with pytest.raises(RestoreError, match=r"staging_dir: not enough disk for a parallel restore: .* filled "
                                                  r"up after 3145728 of \d+ bytes .*File too large.*jobs: 1"):
            rs.run(rs.Request(database=db, confirm=db, jobs=2, staging_dir=str(staging), staging_keep_free=0,
                              safety_snapshot=False), storage, admin(pg), keys(lab))
        assert reads.count == 1 and os.listdir(staging) == []
        assert counts(pg, db) == damaged
        out = rs.run(rs.Request(database=db, confirm=db, jobs=None, staging_dir=str(staging), staging_keep_free=0,
                                safety_snapshot=False), storage, admin(pg), keys(lab))
    _streamed_after_filling(out, staging, staged=3 * MIB)
    assert reads.count == 2  # one per run
    _restored_equal(pg, db, manifest)


# --------------------------------------------------------------------------- killed while pg_restore -j runs

DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
import testlib  # noqa: F401 - makes ansible.module_utils.lifeboat importable
from ansible.module_utils.lifeboat import restore as rs, storage as st
from ansible.module_utils.lifeboat.errors import RestoreError
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings
cfg = json.load(open(sys.argv[1]))
pg, ep = cfg["pg"], cfg["endpoint"]
s3 = S3Settings(endpoint=ep["endpoint"], region=ep["region"], access_key=ep["access_key"], secret_key=ep["secret_key"])
rs.run(rs.Request(database=cfg["db"], confirm=cfg["db"], jobs=2, staging_dir=cfg["staging"], safety_snapshot=False),
       st.S3Storage(cfg["prefix"], s3),
       rs.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"], password=pg["admin_password"],
                         database="postgres")),
       rs.DecryptKeys(gpg_homedir=cfg["gpg"]))
print("finished without being killed")
"""


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def _is_parallel_pg_restore(cmd: list[str]) -> bool:
    return bool(cmd) and os.path.basename(cmd[0]) == "pg_restore" and "-j" in cmd


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _until(what: str, check, seconds: float = 120.0, detail=lambda: "") -> None:
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"{what}: still not so after {seconds:.0f}s {detail()}")
        time.sleep(0.05)


def test_killed_during_a_parallel_restore_leaves_no_pg_restore_and_no_staged_file(pg, lab, bulky, scratch_bucket,
                                                                                  tmp_path):
    """SIGKILL of the Lifeboat process while pg_restore -j 2's workers load the new database. Frozen first
    (SIGSTOP of Lifeboat, then of pg_restore and its workers, so that nothing can finish by itself), then
    killed: every pg_restore ends, their sessions leave the new database, the staged dump and the PGPASSFILE
    are removed, and the next run repairs (drops the new database) and restores an equal database."""
    db, storage, manifest = bulky
    staging = tmp_path / "staging"
    cfg = tmp_path / "cfg.json"  # the lab's throwaway passwords: 0600, removed with tmp_path
    with os.fdopen(os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        json.dump({"pg": pg, "endpoint": scratch_bucket[1], "prefix": f"s3://{scratch_bucket[0]}/db", "db": db,
                   "gpg": lab["gpg"]["homedir"], "staging": str(staging)}, fh)
    _damage(pg, db)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(cfg), str(REPO / "tests")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    frozen: list[int] = []
    new_like = db.replace("_", "\\_") + "\\_lifeboat\\_new\\_%"
    try:
        leader: list[int] = []

        def workers_run() -> bool:
            if proc.poll() is not None:
                pytest.fail("the restore ended before its workers were seen: " + proc.stdout.read().decode()[-3000:])
            leader[:] = [c for c in _children(proc.pid) if _is_parallel_pg_restore(_cmdline(c))]
            return bool(leader) and bool(_children(leader[0]))

        _until("pg_restore -j 2 with its workers", workers_run)
        os.kill(proc.pid, signal.SIGSTOP)  # Lifeboat frozen: it can neither finish nor clean up
        os.kill(leader[0], signal.SIGSTOP)  # pg_restore frozen: it forks no more, finishes nothing
        workers = _children(leader[0])
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        frozen = [leader[0], *workers]
        assert len(workers) >= 1, workers
        assert os.listdir(staging), "nothing was staged"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # judged after the kill, never on timing: what the old code left stays frozen forever
        _until("every pg_restore of the killed run has ended", lambda: not any(_alive(p) for p in frozen), 60)
        _until("no session of the killed run left in its new database", lambda: admin_sql(
            pg, "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE '" + new_like + "' "
                "AND application_name = 'lifeboat-restore'")[0][0] == 0, 60)
        _until("the staged dump removed", lambda: os.listdir(staging) == [], 60,
               lambda: [(d, os.listdir(staging / d)) for d in os.listdir(staging)])
        base = tempfile.gettempdir()
        assert [n for n in os.listdir(base) if n.startswith(f"lifeboat-pg-{proc.pid}-")] == []
        left = [r[0] for r in admin_sql(pg, f"SELECT datname FROM pg_database WHERE datname LIKE '{new_like}'")]
        assert left, "the killed run left no new database (it was not killed while loading)"
        # the next run repairs and succeeds
        out = rs.run(rs.Request(database=db, confirm=db, jobs=2, staging_dir=str(staging), safety_snapshot=False),
                     storage, admin(pg), keys(lab))
        assert all(any(f"dropped '{name}'" in line for line in out.get("repaired", [])) for name in left), out
        assert admin_sql(pg, f"SELECT datname FROM pg_database WHERE datname LIKE '{new_like}'") == []
        _restored_equal(pg, db, manifest)
        assert os.listdir(staging) == []
    finally:
        for pid in frozen:  # the old code's orphans: not left behind by a failing test
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
