"""Decoding a stored artifact: fetch -> sha256 -> decrypt -> decompress, streamed into a sink.

A failure names its cause: a tampered or truncated artifact (the stored sha256 differs from the
manifest's), a wrong key, a damaged stream.
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from ansible.module_utils.lifeboat import crypto, pipeline
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    EncryptionError,
    IntegrityError,
    LifeboatError,
    NotFound,
    StorageError,
)
from ansible.module_utils.lifeboat.restore.selection import Source
from ansible.module_utils.lifeboat.storage import Storage


CHUNK = 1024 * 1024


#: the keys are crypto.DecryptionSpec (one type); ``DecryptKeys(gpg_homedir=..., age_identity_file=...)`` keeps
#: building them under the older name
DecryptKeys = crypto.DecryptionSpec.from_keys


@dataclass
class DecodeResult:
    stored_size: int = 0
    stored_sha256: str = ""
    dump_size: int = 0
    dump_sha256: str = ""
    seconds: float = 0.0


def decryptor(src: Source, keys: crypto.DecryptionSpec):
    """The prepared decryption step for ``src`` (None when it is not encrypted); a missing key names its option."""
    if src.encryption == "none":
        return None
    if src.encryption == "age" and not keys.identity_file:
        raise ConfigError("age_identity_file: the backup is encrypted with age; give the identity file that "
                          "decrypts it", "age_identity_file")
    if src.encryption == "gpg" and not (keys.gpg_homedir or keys.secret_key_file or keys.passphrase):
        raise ConfigError("gpg_homedir: the backup is encrypted with gpg; give gpg_homedir or gpg_key_file "
                          "(public-key mode) or passphrase (symmetric mode)", "gpg_homedir")
    return crypto.prepare_decryptor(keys.for_method(src.encryption))


def stored_sha256(storage: Storage, key: str) -> tuple[str, int]:
    """sha256 and size of a stored object, read to the end (used to name the cause of a failure)."""
    digest = hashlib.sha256()
    size = 0
    with contextlib.closing(storage.open_reader(key)) as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def decode(storage: Storage, src: Source, keys: crypto.DecryptionSpec, sink: Callable[[bytes], None],
           check_sha256: bool = True) -> DecodeResult:
    """Stream the stored artifact through sha256 -> decrypt -> decompress into ``sink`` (pipeline.py).

    Nothing is written locally. When decoding fails, the stored object's sha256
    is compared with the manifest's so that a tampered or truncated artifact is
    reported as such (a decryption or decompression error is then only its
    consequence), and a wrong key is named as the cause. ``sink`` may raise
    BrokenPipeError to say it has seen enough: the rest is still read and hashed.
    Anything else ``sink`` raises stops the stream and is raised as it is.
    """
    started = time.monotonic()
    if not storage.exists(src.ref.artifact_key):
        raise NotFound(f"artifact {storage.uri(src.ref.artifact_key)} of backup {src.backup_id} is missing")
    dec = decryptor(src, keys)
    sink_state: dict[str, object] = {"open": True, "error": None}

    def safe_sink(data: bytes) -> None:
        if sink_state["open"]:
            try:
                sink(data)
            except BrokenPipeError:
                sink_state["open"] = False
            except BaseException as exc:
                sink_state["error"] = exc
                raise

    try:
        res = pipeline.run_restore_stream(
            storage, src.ref.artifact_key, safe_sink, compression=src.compression, decryptor=dec,
            expected_sha256=src.sha256 if check_sha256 else None, expected_size=None)
    except LifeboatError as exc:
        own = sink_state["error"]
        if isinstance(own, BaseException):
            # the sink's own failure (a full disk, a dump refused by its reader), not the artifact's: the artifact
            # is not read again to name a cause
            if isinstance(own, LifeboatError):
                raise type(own)(f"backup {src.backup_id}: {own}", own.option) from None
            if isinstance(own, OSError):
                raise StorageError(f"backup {src.backup_id}: the decoded dump could not be written: {own}") from None
            raise own from None
        if check_sha256 and src.sha256 and not isinstance(exc, IntegrityError):
            try:
                got, size = stored_sha256(storage, src.ref.artifact_key)
            except LifeboatError:
                got, size = "", 0
            if got and got != src.sha256:
                raise _mismatch(storage, src, got, size) from None
        if isinstance(exc, IntegrityError) and "sha256" in str(exc) and src.sha256:
            got, size = stored_sha256(storage, src.ref.artifact_key)
            raise _mismatch(storage, src, got, size) from None
        text = str(exc)
        low = text.lower()
        if isinstance(exc, EncryptionError) and any(s in low for s in ("no secret key", "bad session key",
                                                                       "bad passphrase", "no identity matched",
                                                                       "incorrect passphrase")):
            option = "age_identity_file" if src.encryption == "age" else "gpg_homedir"
            raise EncryptionError(f"decryption of backup {src.backup_id} failed: wrong decryption key ({text}); "
                                  f"check {option} / passphrase", option) from None
        if src.legacy or not isinstance(exc, EncryptionError):
            raise type(exc)(f"backup {src.backup_id}: {text} - the artifact is damaged or truncated"
                            if "decompress" in low or "zstd" in low or "gzip" in low or "unexpected end" in low
                            else f"backup {src.backup_id}: {text}", exc.option) from None
        raise
    finally:
        if dec is not None:
            dec.cleanup()
    result = DecodeResult(res.size, res.sha256, res.output_size, res.output_sha256, time.monotonic() - started)
    if check_sha256 and src.dump_size and result.dump_size != int(src.dump_size):
        raise IntegrityError(f"the decoded dump of {src.backup_id} is {result.dump_size} bytes, the manifest says "
                             f"{src.dump_size}")
    if check_sha256 and src.dump_sha256 and result.dump_sha256 != src.dump_sha256:
        raise IntegrityError(f"the decoded dump of {src.backup_id} has sha256 {result.dump_sha256}, the manifest "
                             f"says {src.dump_sha256}")
    return result


def _mismatch(storage: Storage, src: Source, got: str, size: int) -> IntegrityError:
    return IntegrityError(
        f"checksum mismatch for {storage.uri(src.ref.artifact_key)}: the stored object's sha256 is {got} "
        f"({size} bytes), the manifest says {src.sha256} ({src.size} bytes); the artifact was altered or "
        "truncated - do not restore it")
