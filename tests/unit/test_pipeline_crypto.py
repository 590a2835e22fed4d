"""Pipeline and crypto pieces that need no server: real child processes, real gpg/age/zstd.

Each test uses a throwaway OpenPGP key generated in a private GNUPGHOME and an
age identity generated with age-keygen; the operator's keyring is never touched.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import time

import pytest
import zstandard

from ansible.module_utils.lifeboat import crypto, pipeline
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    DumpError,
    EncryptionError,
    IntegrityError,
    StorageError,
)
from ansible.module_utils.lifeboat.storage import LocalStorage

needs = pytest.mark.skipif(not (shutil.which("gpg") and shutil.which("age") and shutil.which("age-keygen")),
                           reason="gpg and age are required")


@pytest.fixture(scope="module")
def gpg_keys(tmp_path_factory):
    """(public key file, secret key file, fingerprint) of a fresh ed25519/cv25519 key."""
    base = tmp_path_factory.mktemp("gpgkeys")
    home = base / "home"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Unit Test <unit@example.invalid>",
                    "ed25519", "sign", "never"], env=env, check=True, capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env, check=True,
                         capture_output=True, text=True).stdout
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr", "never"],
                   env=env, check=True, capture_output=True)
    pub, sec = base / "pub.asc", base / "sec.asc"
    subprocess.run(["gpg", "--batch", "--armor", "--output", str(pub), "--export", fpr], env=env, check=True)
    subprocess.run(["gpg", "--batch", "--armor", "--output", str(sec), "--export-secret-keys", fpr], env=env,
                   check=True)
    signonly = base / "signonly.asc"
    home2 = base / "home2"
    home2.mkdir(mode=0o700)
    env2 = dict(os.environ, GNUPGHOME=str(home2))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Sign Only <s@example.invalid>",
                    "ed25519", "sign", "never"], env=env2, check=True, capture_output=True)
    subprocess.run(["gpg", "--batch", "--armor", "--output", str(signonly), "--export"], env=env2, check=True)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    subprocess.run(["gpgconf", "--homedir", str(home2), "--kill", "all"], check=False)
    return {"pub": str(pub), "sec": str(sec), "fpr": fpr, "signonly": str(signonly)}


@pytest.fixture(scope="module")
def age_keys(tmp_path_factory):
    base = tmp_path_factory.mktemp("age")
    ident = base / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(ident)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(ident)], check=True, capture_output=True,
                               text=True).stdout.strip()
    return {"identity": str(ident), "recipient": recipient}


def _data(size: int = 3 * 1024 * 1024 + 17) -> bytes:
    # mixed entropy: compressible text and random bytes
    chunk = (b"INSERT INTO t VALUES (1, 'hello world');\n" * 1000) + os.urandom(20000)
    return (chunk * (size // len(chunk) + 1))[:size]


def _source_proc(path: pathlib.Path) -> pipeline.ProcSpec:
    return pipeline.ProcSpec("pg_dump", ["cat", str(path)], error_prefixes=("pg_dump: error:",))


def _gpg_tmp_homes() -> set[str]:
    return {p for p in os.listdir("/tmp") if p.startswith("lifeboat-gpg-")}


# ------------------------------------------------------------------ crypto

@needs
def test_gpg_public_key_round_trip_and_fingerprint(gpg_keys):
    before = _gpg_tmp_homes()
    enc = crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", [gpg_keys["pub"]]))
    assert enc.manifest() == {"method": "gpg", "mode": "public-key", "recipients": [gpg_keys["fpr"]]}
    assert enc.extension == ".gpg"
    assert stat.S_IMODE(os.stat(enc.home).st_mode) == 0o700
    proc = enc.spawn(subprocess.PIPE, subprocess.PIPE)
    cipher, _ = proc.communicate(b"secret rows")
    assert proc.returncode == 0 and b"secret rows" not in cipher
    enc.cleanup()
    dec = crypto.prepare_decryptor(crypto.DecryptionSpec("gpg", secret_key_file=gpg_keys["sec"]))
    proc = dec.spawn(subprocess.PIPE, subprocess.PIPE)
    plain, _ = proc.communicate(cipher)
    dec.cleanup()
    assert plain == b"secret rows"
    assert _gpg_tmp_homes() <= before  # private homes removed


@needs
def test_gpg_passphrase_goes_through_fd_not_argv_or_env(tmp_path):
    secret = "correct horse: battery staple"
    enc = crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", passphrase=secret))
    assert enc.manifest() == {"method": "gpg", "mode": "passphrase", "recipients": []}
    proc = enc.spawn(subprocess.PIPE, subprocess.PIPE)
    try:
        for _ in range(200):  # until the child has exec'd gpg
            cmdline = pathlib.Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            if b"gpg" in cmdline:
                break
            time.sleep(0.01)
        environ = pathlib.Path(f"/proc/{proc.pid}/environ").read_bytes()
    finally:
        cipher, _ = proc.communicate(b"payload")
    enc.cleanup()
    assert secret.encode() not in cmdline and secret.encode() not in environ
    assert b"--passphrase-fd" in cmdline
    # stock gpg decrypts it with the passphrase
    good = crypto.prepare_decryptor(crypto.DecryptionSpec("gpg", passphrase=secret))
    proc = good.spawn(subprocess.PIPE, subprocess.PIPE)
    assert proc.communicate(cipher)[0] == b"payload"
    good.cleanup()
    bad = crypto.prepare_decryptor(crypto.DecryptionSpec("gpg", passphrase="wrong"))
    proc = bad.spawn(subprocess.PIPE, subprocess.PIPE)
    out, err = proc.communicate(cipher)
    bad.cleanup()
    assert proc.returncode != 0 and out == b"" and b"decryption failed" in err


@needs
def test_age_round_trip_and_refusals(age_keys, tmp_path):
    enc = crypto.prepare_encryptor(crypto.EncryptionSpec("age", [age_keys["recipient"]]))
    assert enc.manifest()["recipients"] == [age_keys["recipient"]]
    proc = enc.spawn(subprocess.PIPE, subprocess.PIPE)
    cipher, _ = proc.communicate(b"age payload")
    dec = crypto.prepare_decryptor(crypto.DecryptionSpec("age", identity_file=age_keys["identity"]))
    proc = dec.spawn(subprocess.PIPE, subprocess.PIPE)
    assert proc.communicate(cipher)[0] == b"age payload"
    # a recipients file works too
    rfile = tmp_path / "recipients.txt"
    rfile.write_text(f"# backup key\n{age_keys['recipient']}\n")
    enc2 = crypto.prepare_encryptor(crypto.EncryptionSpec("age", [str(rfile)]))
    assert enc2.manifest()["recipients"] == [age_keys["recipient"]]
    with pytest.raises(ConfigError, match="interactive"):
        crypto.prepare_encryptor(crypto.EncryptionSpec("age", passphrase="x"))
    with pytest.raises(EncryptionError, match="neither an age recipient"):
        crypto.prepare_encryptor(crypto.EncryptionSpec("age", ["age1notakey"]))
    with pytest.raises(EncryptionError, match="does not exist"):
        crypto.prepare_decryptor(crypto.DecryptionSpec("age", identity_file=str(tmp_path / "missing")))


@needs
def test_gpg_bad_keys_fail_before_any_data(gpg_keys, tmp_path):
    with pytest.raises(EncryptionError, match="does not exist"):
        crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", [str(tmp_path / "nope.asc")]))
    junk = tmp_path / "junk.asc"
    junk.write_text("not a key\n")
    with pytest.raises(EncryptionError, match="contains no OpenPGP key"):
        crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", [str(junk)]))
    with pytest.raises(EncryptionError, match="no valid encryption key"):
        crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", [gpg_keys["signonly"]]))
    with pytest.raises(EncryptionError, match="at least one recipient"):
        crypto.prepare_encryptor(crypto.EncryptionSpec("gpg"))
    with pytest.raises(ConfigError, match="not both"):
        crypto.prepare_encryptor(crypto.EncryptionSpec("gpg", [gpg_keys["pub"]], passphrase="x"))
    with pytest.raises(EncryptionError, match="holds no secret key"):
        crypto.prepare_decryptor(crypto.DecryptionSpec("gpg", secret_key_file=gpg_keys["pub"]))


# ---------------------------------------------------------------- pipeline

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
    assert not (tmp_path / "store" / "x.gz").exists() and not (tmp_path / "store" / "x.gz.partial").exists()


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
import conftest  # noqa: F401  (module_utils import path)
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


def test_compression_validation():
    with pytest.raises(ConfigError, match="compression_level"):
        pipeline.Compression("zstd", level=25)
    with pytest.raises(ConfigError, match="compression_level"):
        pipeline.Compression("gzip", level=0)
    with pytest.raises(ConfigError, match="not one of"):
        pipeline.Compression("lz4")
    assert pipeline.Compression("zstd").manifest()["algorithm"] == "zstd"
    assert pipeline.Compression("gzip").stock_decompress() == "gzip -d"
