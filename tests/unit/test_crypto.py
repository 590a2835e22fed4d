"""module_utils/lifeboat/crypto.py: gpg and age filters (real gpg and age binaries)."""
from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import time

import pytest

from ansible.module_utils.lifeboat import crypto
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    EncryptionError,
)


needs = pytest.mark.skipif(not (shutil.which("gpg") and shutil.which("age") and shutil.which("age-keygen")),
                           reason="gpg and age are required")

def _gpg_tmp_homes() -> set[str]:
    return {p for p in os.listdir("/tmp") if p.startswith("lifeboat-gpg-")}

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


@needs
def test_one_type_of_decryption_keys(age_keys):
    """Archives (method given) and restores/drills (method from each manifest) share crypto.DecryptionSpec: the
    module options build it once, the restore package's older DecryptKeys name builds the same type."""
    import types

    from ansible.module_utils.lifeboat import options
    from ansible.module_utils.lifeboat import restore as rs
    from ansible.module_utils.lifeboat.restore import decoding

    keys = options.decrypt_keys({"age_identity_file": age_keys["identity"], "gpg_homedir": None})
    assert type(keys) is crypto.DecryptionSpec and type(rs.DecryptKeys(age_identity_file="x")) is crypto.DecryptionSpec
    assert keys.identity_file == keys.age_identity_file == age_keys["identity"]
    assert "s3cret" not in repr(options.decrypt_keys({"decryption_passphrase": "s3cret"}))
    assert keys.for_method("age").method == "age" and keys.method == "none"      # a copy, the keys unchanged
    enc = crypto.prepare_encryptor(crypto.EncryptionSpec("age", [age_keys["recipient"]]))
    cipher, _ = enc.spawn(subprocess.PIPE, subprocess.PIPE).communicate(b"one type")
    dec = decoding.decryptor(types.SimpleNamespace(encryption="age"), keys)
    try:
        assert dec.spawn(subprocess.PIPE, subprocess.PIPE).communicate(cipher)[0] == b"one type"
    finally:
        dec.cleanup()
    with pytest.raises(ConfigError, match="age_identity_file"):
        decoding.decryptor(types.SimpleNamespace(encryption="age"), options.decrypt_keys({}))
