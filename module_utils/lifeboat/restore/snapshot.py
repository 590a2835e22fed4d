"""The safety snapshot: a normal Lifeboat backup of the current database before it is changed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from ansible.module_utils.lifeboat import backup, crypto, tmpfiles
from ansible.module_utils.lifeboat.manifest_model import Encryption
from ansible.module_utils.lifeboat.crypto import DecryptionSpec
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
)
from ansible.module_utils.lifeboat.restore.pgadmin import Admin
from ansible.module_utils.lifeboat.restore.selection import Source


SNAPSHOT_PREFIX = "safety-snapshots"


def snapshot_destination(destination: str, options: dict[str, Any]) -> str:
    """Safety snapshots live apart from the regular backups (never picked as 'latest' by mistake)."""
    if options.get("destination"):
        return str(options["destination"])
    return destination.rstrip("/") + "/" + SNAPSHOT_PREFIX


def _export_gpg_keys(homedir: str, fingerprints: list[str], directory: str) -> list[str]:
    """Public keys of the manifest's recipients, exported from ``homedir`` into armored files."""
    paths = []
    for fpr in fingerprints:
        proc = subprocess.run([shutil.which("gpg") or "gpg", "--homedir", homedir, "--batch", "--armor",
                               "--export", fpr], capture_output=True, check=False, timeout=60)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise ConfigError(f"snapshot_options: the public key {fpr} of the backup's recipients is not in "
                              f"gpg_homedir {homedir}; give snapshot_options.encryption_recipients",
                              "snapshot_options")
        path = os.path.join(directory, f"{fpr}.asc")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(proc.stdout)
        paths.append(path)
    return paths


def safety_snapshot(admin: Admin, settings: Any, destination: str, database: str, src: Source, keys: DecryptionSpec,
                    options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Back up the current ``database`` with the backup engine before it is changed.

    Encryption defaults to the restored backup's: the same gpg recipients (public keys exported from
    gpg_homedir), the same age recipients, or the same passphrase. ``options`` may set destination,
    format, compression, encryption, encryption_recipients, encryption_passphrase.
    """
    options = dict(options or {})
    enc_meta = src.manifest.encryption if src.manifest else Encryption()
    method = options.get("encryption") or enc_meta.method
    tmp = tmpfiles.private_dir("lifeboat-snap-")
    try:
        recipients = list(options.get("encryption_recipients") or [])
        passphrase = options.get("encryption_passphrase")
        if method == "gpg" and not recipients and not passphrase:
            if enc_meta.mode == "public-key" and enc_meta.recipients and keys.gpg_homedir:
                recipients = _export_gpg_keys(keys.gpg_homedir, list(enc_meta.recipients), tmp)
            elif keys.passphrase:
                passphrase = keys.passphrase
            else:
                raise ConfigError("snapshot_options: cannot tell how to encrypt the safety snapshot; give "
                                  "snapshot_options.encryption_recipients (public key files)", "snapshot_options")
        if method == "age" and not recipients:
            recipients = list(enc_meta.recipients)
        req = backup.BackupRequest(
            target=admin.target.with_database(database), destination=snapshot_destination(destination, options),
            format=options.get("format", "custom"), compression=options.get("compression", "zstd"),
            encryption=crypto.EncryptionSpec(method=method, recipients=recipients, passphrase=passphrase),
            s3=settings, pg_bin_dir=(admin.bin_dirs or [None])[0], tags={"lifeboat": "safety-snapshot"})
        out = backup.run(req)
        return {"backup_id": out.get("backup_id"), "uri": out.get("uri"), "destination": req.destination,
                "size": out.get("size"), "sha256": out.get("sha256")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
