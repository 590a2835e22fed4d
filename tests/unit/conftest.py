"""Fixtures shared by the unit tests (no servers): keys made with the real gpg and age, a local backup store."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.memstore import MemoryStorage
from ansible.module_utils.lifeboat.storage import LocalStorage


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


@pytest.fixture(params=["directory", "memory"])
def store(request, tmp_path):
    """A backup store: every test using it runs against a temporary directory and against the in-memory store."""
    if request.param == "memory":
        return MemoryStorage()
    return LocalStorage(str(tmp_path / "store"))


@pytest.fixture
def add_backup():
    """``add_backup(storage, db, when, verified=None)``: a minimal complete backup (and its verification record)."""
    return _add_backup


def _add_backup(storage: LocalStorage | MemoryStorage, db: str, when: dt.datetime,
                verified: str | None = None) -> mf.Layout:
    layout = mf.layout_for(db, when, "custom", "zstd", "gpg")
    storage.put_bytes(layout.artifact_key, b"x")
    mf.write_manifest(storage, layout.manifest_key, {
        "schema": mf.SCHEMA, "backup_id": layout.backup_id, "database": db, "started_at": mf.iso(when),
        "format": "custom", "compression": {"algorithm": "zstd"}, "encryption": {"method": "gpg"},
        "artifact": {"key": layout.artifact_key, "size": 1, "sha256": "0" * 64}, "tables": []})
    if verified:
        storage.put_bytes(layout.verification_key(when + dt.timedelta(hours=1)), json.dumps(
            {"schema": mf.VERIFY_SCHEMA, "outcome": verified,
             "finished_at": mf.iso(when + dt.timedelta(hours=1))}).encode())
    return layout
