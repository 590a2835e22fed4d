"""module_utils/lifeboat/pipeline.py: backup and restore streams (real child processes, gpg, age)."""
from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import stat
import subprocess
import sys

import pytest
import zstandard

from ansible.module_utils.lifeboat import crypto, pipeline
from ansible.module_utils.lifeboat.errors import (
    DumpError,
    IntegrityError,
    StorageError,
)
from ansible.module_utils.lifeboat.storage import LocalStorage


def _data(size: int = 3 * 1024 * 1024 + 17) -> bytes:
    # mixed entropy: compressible text and random bytes
    chunk = (b"INSERT INTO t VALUES (1, 'hello world');\n" * 1000) + os.urandom(20000)
    return (chunk * (size // len(chunk) + 1))[:size]

def _source_proc(path: pathlib.Path) -> pipeline.ProcSpec:
    return pipeline.ProcSpec("pg_dump", ["cat", str(path)], error_prefixes=("pg_dump: error:",))

@pytest.mark.parametrize("algorithm", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("encryption", ["none", "gpg", "age"])
def test_backup_then_restore_stream_round_trip(tmp_path, gpg_keys, age_keys, algorithm, encryption):
    data = _data()
    src = tmp_path / "dump.bin"
    src.write_bytes(data)
    store = LocalStorage(str(tmp_path / "store"))
    if encryption == "gpg":
        enc = crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", [gpg_keys["pub"]]))
        dspec = crypto.DecryptionSpec("gpg", secret_key_file=gpg_keys["sec"])
    elif encryption == "age":
        enc = crypto.prepare_encryptor(crypto.EncryptionSpec("age", [age_keys["recipient"]]))
        dspec = crypto.DecryptionSpec("age", identity_file=age_keys["identity"])
    else:
        enc = crypto.prepare_encryptor(crypto.EncryptionSpec("none"))
        dspec = crypto.DecryptionSpec("none")
    comp = pipeline.Compression(algorithm, threads=2)
    with enc:
        res = pipeline.run_backup_stream(_source_proc(src), store.open_writer("db/x.bin"), comp, enc)
    stored = (tmp_path / "store" / "db" / "x.bin").read_bytes()
    assert res.size == len(stored) and res.sha256 == hashlib.sha256(stored).hexdigest()
    assert res.source_size == len(data) and res.source_sha256 == hashlib.sha256(data).hexdigest()
    assert stat.S_IMODE(os.stat(tmp_path / "store" / "db").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "store" / "db" / "x.bin").st_mode) == 0o600
    if encryption == "none" and algorithm == "zstd":
        assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == data  # stock format
    if encryption == "none" and algorithm == "gzip":
        assert gzip.decompress(stored) == data
    # push API
    out = bytearray()
    dec = crypto.prepare_decryptor(dspec)
    with dec:
        rr = pipeline.run_restore_stream(store, "db/x.bin", out.extend, algorithm, dec, res.sha256, res.size)
    assert bytes(out) == data and rr.output_sha256 == res.source_sha256
    # pull API feeding a child process through its stdin
    dec = crypto.prepare_decryptor(dspec)
    with dec, pipeline.open_restore_stream(store, "db/x.bin", algorithm, dec, res.sha256) as stream:
        digest = subprocess.run(["sha256sum"], stdin=stream, capture_output=True, check=True).stdout.split()[0]
    assert digest.decode() == res.source_sha256
    assert stream.result.output_size == len(data)

def test_stock_tools_read_the_artifact(tmp_path, gpg_keys):
    """zstd -d and gpg --decrypt (stock binaries) restore what the pipeline wrote."""
    data = _data(500_000)
    src = tmp_path / "dump.bin"
    src.write_bytes(data)
    store = LocalStorage(str(tmp_path / "store"))
    with crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", [gpg_keys["pub"]])) as enc:
        pipeline.run_backup_stream(_source_proc(src), store.open_writer("a.zst.gpg"),
                                   pipeline.Compression("zstd", level=5, threads=2), enc)
    home = tmp_path / "gh"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--import", gpg_keys["sec"]], env=env, check=True, capture_output=True)
    cmd = f"gpg --batch --decrypt {tmp_path}/store/a.zst.gpg | zstd -d"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=env, check=True, capture_output=True).stdout
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    assert out == data

def test_source_killed_mid_stream_aborts_writer(tmp_path):
    store = LocalStorage(str(tmp_path / "store"))
    script = "head -c 3000000 /dev/urandom; kill -9 $$"
    src = pipeline.ProcSpec("pg_dump", ["sh", "-c", script])
    with pytest.raises(DumpError, match=r"pg_dump failed \(killed by SIGKILL\)"):
        pipeline.run_backup_stream(src, store.open_writer("k/x.zst"), pipeline.Compression("zstd"))
    assert list((tmp_path / "store").rglob("*")) == [tmp_path / "store" / "k"]  # no artifact, no .partial

def test_stderr_error_line_fails_even_with_rc_0(tmp_path):
    store = LocalStorage(str(tmp_path / "store"))
    script = "echo 'some data'; echo 'pg_dump: error: query failed: ERROR:  permission denied for table x' >&2"
    src = pipeline.ProcSpec("pg_dump", ["sh", "-c", script], error_prefixes=("pg_dump: error:",))
    with pytest.raises(DumpError, match="permission denied for table x"):
        pipeline.run_backup_stream(src, store.open_writer("x.gz"), pipeline.Compression("gzip"))
    assert not (tmp_path / "store" / "x.gz").exists() and not list((tmp_path / "store").rglob("*partial"))

def test_nonzero_exit_names_stderr_and_masks_secrets(tmp_path):
    store = LocalStorage(str(tmp_path / "store"))
    script = "echo 'pg_dump: error: connection failed: password hunter2 rejected' >&2; exit 1"
    src = pipeline.ProcSpec("pg_dump", ["sh", "-c", script], error_prefixes=("pg_dump: error:",))
    with pytest.raises(DumpError) as info:
        pipeline.run_backup_stream(src, store.open_writer("x"), None, secrets=["hunter2"])
    assert "exit status 1" in str(info.value) and "hunter2" not in str(info.value) and "***" in str(info.value)

def test_sink_failure_kills_children_and_is_the_reported_cause(tmp_path):
    class FullDisk:
        def __init__(self):
            self.n = 0
            self.aborted = False
            self.closed = False

        def write(self, data):
            self.n += len(data)
            if self.n > 2 * 1024 * 1024:
                raise StorageError("write /x: no space left on the local destination's filesystem (ENOSPC)")

        def close(self):
            self.closed = True

        def abort(self):
            self.aborted = True

    w = FullDisk()
    src = pipeline.ProcSpec("pg_dump", ["sh", "-c", "exec cat /dev/zero"])
    with pytest.raises(StorageError, match="ENOSPC"):
        pipeline.run_backup_stream(src, w, pipeline.Compression("none"))
    assert w.aborted and not w.closed

def test_restore_detects_tampering(tmp_path):
    data = _data(200_000)
    src = tmp_path / "d"
    src.write_bytes(data)
    store = LocalStorage(str(tmp_path / "s"))
    res = pipeline.run_backup_stream(_source_proc(src), store.open_writer("o.zst"), pipeline.Compression("zstd"))
    with pytest.raises(IntegrityError, match="sha256"):
        pipeline.run_restore_stream(store, "o.zst", lambda b: None, "zstd", None, "0" * 64)
    with pytest.raises(IntegrityError, match="size"):
        pipeline.run_restore_stream(store, "o.zst", lambda b: None, "zstd", None, res.sha256, res.size + 1)
    raw = bytearray((tmp_path / "s" / "o.zst").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "s" / "o.zst").write_bytes(bytes(raw))
    with pytest.raises((StorageError, IntegrityError)):
        pipeline.run_restore_stream(store, "o.zst", lambda b: None, "zstd", None, res.sha256)

def test_memory_stays_flat(tmp_path):
    """200 MiB through zstd + sha256 into a discarding writer: peak RSS grows by far less than the data."""
    code = r"""
import resource, sys
sys.path.insert(0, TESTS_DIR)
import testlib  # noqa: F401 - makes ansible.module_utils.lifeboat importable
from ansible.module_utils.lifeboat import pipeline
class Null:
    def write(self, d): return len(d)
    def close(self): pass
    def abort(self): pass
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
src = pipeline.ProcSpec("src", ["sh", "-c", "head -c 209715200 /dev/urandom"])
r = pipeline.run_backup_stream(src, Null(), pipeline.Compression("zstd", level=1, threads=2))
assert r.source_size == 209715200
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
""".replace("TESTS_DIR", repr(str(pathlib.Path(__file__).resolve().parent.parent)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(tmp_path))
    grown_kib = int(out.stdout.strip().splitlines()[-1])
    assert grown_kib < 80 * 1024, f"RSS grew by {grown_kib} KiB"


# ----------------------------------------------------------------- process to process (issue 15)

def _zstd_frame_has_checksum(stored: bytes) -> bool:
    assert stored[:4] == b"\x28\xb5\x2f\xfd"
    return bool(stored[4] & 0x04)   # Frame_Header_Descriptor: Content_Checksum_flag


def test_frame_mode_connects_dump_to_zstd_process_to_process(tmp_path, gpg_keys):
    """source_check='frame': pg_dump -> zstd -> gpg are child processes connected by OS pipes; Python counts the
    dump's bytes (os.splice) but never reads them, so it has no sha256 of them: the zstd frame's checksum checks
    them at restore instead. The stored bytes' sha256 is still computed."""
    data = _data(6 * 1024 * 1024 + 5)
    src = tmp_path / "dump.bin"
    src.write_bytes(data)
    store = LocalStorage(str(tmp_path / "store"))
    seen = []
    orig = pipeline.Tap.__call__

    def spy(self, chunk):
        seen.append(self.name)
        return orig(self, chunk)

    pipeline.Tap.__call__ = spy
    try:
        with crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", [gpg_keys["pub"]])) as enc:
            res = pipeline.run_backup_stream(_source_proc(src), store.open_writer("f.zst.gpg"),
                                             pipeline.Compression("zstd", threads=2), enc, source_check="frame")
    finally:
        pipeline.Tap.__call__ = orig
    assert set(seen) == {"stored"}   # Python touched the stored (encrypted) bytes only
    assert res.source_size == len(data) and res.source_sha256 is None
    assert res.source_check == "zstd-frame-checksum"
    stored = (tmp_path / "store" / "f.zst.gpg").read_bytes()
    assert res.sha256 == hashlib.sha256(stored).hexdigest() and res.size == len(stored)
    home = tmp_path / "gh"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--import", gpg_keys["sec"]], env=env, check=True, capture_output=True)
    plain = subprocess.run(["gpg", "--batch", "--decrypt", str(tmp_path / "store" / "f.zst.gpg")], env=env,
                           check=True, capture_output=True).stdout
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    assert _zstd_frame_has_checksum(plain)
    assert subprocess.run(["zstd", "-d", "-c"], input=plain, capture_output=True, check=True).stdout == data


def test_frame_checksum_catches_altered_dump_bytes(tmp_path):
    """A frame whose content no longer matches its checksum fails the restore (and stock zstd -d)."""
    data = _data(300_000)
    src = tmp_path / "d"
    src.write_bytes(data)
    store = LocalStorage(str(tmp_path / "s"))
    pipeline.run_backup_stream(_source_proc(src), store.open_writer("o.zst"), pipeline.Compression("zstd"),
                               source_check="frame")
    raw = bytearray((tmp_path / "s" / "o.zst").read_bytes())
    raw[-1] ^= 0xFF   # the frame's checksum of the dump's bytes
    (tmp_path / "s" / "o.zst").write_bytes(bytes(raw))
    with pytest.raises(Exception, match="checksum"):
        pipeline.run_restore_stream(store, "o.zst", lambda b: None, "zstd", None)
    assert subprocess.run(["zstd", "-d", "-c"], input=bytes(raw), capture_output=True).returncode != 0


@pytest.mark.parametrize("stage", ["zstd", "gpg"])
def test_frame_mode_a_killed_stage_fails_with_its_own_name(tmp_path, gpg_keys, stage):
    """Every stage's exit status is checked: zstd or gpg killed mid-stream fails the backup naming it, and the
    writer is aborted (nothing stored)."""
    import signal
    import threading
    import time

    store = LocalStorage(str(tmp_path / "store"))
    src = pipeline.ProcSpec("pg_dump", ["sh", "-c", "head -c 400000000 /dev/urandom"])
    real_spawn = pipeline.Pipeline._spawn

    def spawn(self, spec, stdin):
        child = real_spawn(self, spec, stdin)
        if spec.name == stage:
            def later():
                time.sleep(0.5)
                child.popen.send_signal(signal.SIGKILL)
            threading.Thread(target=later, daemon=True).start()
        return child

    pipeline.Pipeline._spawn = spawn
    try:
        with crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", [gpg_keys["pub"]])) as enc:
            with pytest.raises(Exception, match=rf"{stage} failed \(killed by SIGKILL\)"):
                pipeline.run_backup_stream(src, store.open_writer("k.zst.gpg"), pipeline.Compression("zstd"),
                                           enc, source_check="frame")
    finally:
        pipeline.Pipeline._spawn = real_spawn
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


def test_frame_mode_zstd_error_fails_the_backup(tmp_path, monkeypatch):
    """A compressor that exits non-zero (here: an option it refuses) fails the backup with zstd's own message."""
    store = LocalStorage(str(tmp_path / "store"))
    comp = pipeline.Compression("zstd")
    real = comp.compressor_proc

    def broken(prefer_process=False):
        spec = real(prefer_process)
        spec.argv.append("--no-such-option")
        return spec

    monkeypatch.setattr(comp, "compressor_proc", broken)
    src = pipeline.ProcSpec("pg_dump", ["sh", "-c", "head -c 1000000 /dev/urandom"])
    with pytest.raises(DumpError, match=r"zstd failed \(exit status 1\)"):
        pipeline.run_backup_stream(src, store.open_writer("e.zst"), comp, source_check="frame")
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
