"""Encryption and decryption as subprocess filters (OpenPGP with gpg, or age).

The engine never implements cryptography itself: it drives the stock ``gpg``
and ``age`` binaries so that every artifact can be decrypted by hand with the
same tools. Secrets never reach argv or the environment: a gpg passphrase is
written to a pipe whose read end is passed with ``--passphrase-fd N``.
Every gpg run uses a private temporary ``GNUPGHOME`` (0700) that is removed
afterwards, so the operator's keyring is never read or modified (unless a
decryptor is explicitly given an existing ``gpg_homedir``).

API (stable; used by backup, verify, restore and storage archives)::

    enc = prepare_encryptor(EncryptionSpec(method="gpg", recipients=["/k/pub.asc"]))
    # -> validates keys BEFORE any data moves; raises EncryptionError / ConfigError
    enc.manifest()        # {"method": "gpg", "mode": "public-key", "recipients": [<fingerprints>]}
    enc.extension         # ".gpg" / ".age" / ""
    enc.stock_command()   # "gpg --decrypt" / "age -d -i IDENTITY_FILE" / None (for restore notes)
    proc = enc.spawn(stdin=..., stdout=..., stderr=...)   # a subprocess.Popen filter, or None for "none"
    enc.cleanup()         # removes the temporary GNUPGHOME; also a context manager

    dec = prepare_decryptor(DecryptionSpec(method="gpg", secret_key_file="/k/sec.asc"))
    dec = prepare_decryptor(DecryptionSpec(method="gpg", passphrase="..."))
    dec = prepare_decryptor(DecryptionSpec(method="age", identity_file="/k/age.txt"))
    proc = dec.spawn(stdin=..., stdout=..., stderr=...)
    dec.cleanup()

``Filter.error_patterns`` lists stderr line prefixes that mean failure even
when the exit status is 0; the pipeline (pipeline.py) uses them.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat import tmpfiles
from ansible.module_utils.lifeboat.errors import ConfigError, EncryptionError

METHODS = ("none", "gpg", "age")
EXTENSIONS = {"none": "", "gpg": ".gpg", "age": ".age"}
AGE_RECIPIENT_RE = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
SSH_RECIPIENT_RE = re.compile(r"^(ssh-ed25519|ssh-rsa) [A-Za-z0-9+/=]+( .*)?$")
_TIMEOUT = 60


def find_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise EncryptionError(f"encryption: the '{name}' binary is not installed on this host "
                              f"(install the '{'gnupg' if name == 'gpg' else name}' package)", "encryption")
    return path


def private_gnupghome() -> str:
    """A fresh, private (0700) GnuPG home directory. Remove it with remove_gnupghome()."""
    # short base path: gpg-agent's socket path must stay under ~100 characters
    # (a killed run's home is swept here, its gpg-agent stopped first)
    base = "/tmp" if os.path.isdir("/tmp") else None
    return tmpfiles.private_dir("lifeboat-gpg-", dir=base, on_stale=remove_gnupghome)


def remove_gnupghome(home: str | None) -> None:
    if not home or not os.path.isdir(home):
        return
    gpgconf = shutil.which("gpgconf")
    if gpgconf:
        try:
            subprocess.run([gpgconf, "--homedir", home, "--kill", "all"], capture_output=True,
                           timeout=_TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError):
            pass
    shutil.rmtree(home, ignore_errors=True)


def _gpg_base(gpg: str, home: str) -> list[str]:
    return [gpg, "--homedir", home, "--batch", "--no-tty", "--no-options", "--no-auto-key-locate"]


@dataclass(frozen=True)
class KeyInfo:
    fingerprint: str            # primary key fingerprint (40 hex)
    user_ids: tuple[str, ...]
    can_encrypt: bool
    secret: bool


def inspect_key_file(path: str, option: str = "encryption_recipients", gpg: str | None = None) -> list[KeyInfo]:
    """Keys in an OpenPGP key file, read with ``--import-options show-only`` (no keyring touched)."""
    if not path or not os.path.isfile(path):
        raise EncryptionError(f"{option}: key file '{path}' does not exist", option)
    if not os.access(path, os.R_OK):
        raise EncryptionError(f"{option}: key file '{path}' is not readable", option)
    gpg = gpg or find_binary("gpg")
    home = private_gnupghome()
    try:
        proc = subprocess.run(_gpg_base(gpg, home) + ["--with-colons", "--import-options", "show-only",
                                                      "--import", path],
                              capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    finally:
        remove_gnupghome(home)
    keys: list[KeyInfo] = []
    current: dict[str, Any] | None = None
    expect_fpr = False
    for line in proc.stdout.splitlines():
        fields = line.split(":")
        kind = fields[0]
        if kind in ("pub", "sec"):
            if current:
                keys.append(_key(current))
            validity = fields[1] if len(fields) > 1 else ""
            caps = fields[11] if len(fields) > 11 else ""
            current = {"fpr": None, "uids": [], "enc": "E" in caps or "e" in caps,
                       "secret": kind == "sec", "bad": validity in ("r", "e")}
            expect_fpr = True
        elif kind in ("sub", "ssb") and current is not None:
            validity = fields[1] if len(fields) > 1 else ""
            caps = fields[11] if len(fields) > 11 else ""
            if "e" in caps and validity not in ("r", "e"):
                current["enc"] = True
            expect_fpr = False
        elif kind == "fpr" and current is not None and expect_fpr:
            current["fpr"] = fields[9]
            expect_fpr = False
        elif kind == "uid" and current is not None:
            current["uids"].append(fields[9] if len(fields) > 9 else "")
    if current:
        keys.append(_key(current))
    if not keys:
        detail = _first_error(proc.stderr)
        raise EncryptionError(f"{option}: '{path}' contains no OpenPGP key"
                              + (f" ({detail})" if detail else ""), option)
    return keys


def _key(d: dict[str, Any]) -> KeyInfo:
    return KeyInfo(d["fpr"] or "", tuple(d["uids"]), bool(d["enc"]) and not d["bad"], bool(d["secret"]))


def _first_error(stderr: str) -> str:
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("gpg:") and not line.startswith("gpg: keybox") and "created" not in line:
            return line
    return stderr.strip().splitlines()[0] if stderr.strip() else ""


# --------------------------------------------------------------------------- specs

@dataclass
class EncryptionSpec:
    """What the operator asked for.

    - ``method="gpg"`` + ``recipients`` (ASCII-armored public key files): public-key mode.
    - ``method="gpg"`` + ``passphrase``: symmetric AES256 (the passphrase goes through a pipe fd).
    - ``method="age"`` + ``recipients`` ("age1...", "ssh-ed25519 ..." or recipients files).
    """

    method: str = "none"
    recipients: list[str] = field(default_factory=list)
    passphrase: str | None = field(default=None, repr=False)


@dataclass
class DecryptionSpec:
    """How to decrypt: gpg with ``secret_key_file`` (imported into a private home), an existing
    ``gpg_homedir``, or a ``passphrase``; age with ``identity_file``.

    The one type of decryption keys: archives give the method, a restore or a drill gives the keys alone
    and takes each backup's method from its manifest (``keys.for_method(method)``). ``from_keys`` (the
    restore package's older ``DecryptKeys``) and ``age_identity_file`` keep the older names working.
    """

    method: str = "none"
    secret_key_file: str | None = None
    gpg_homedir: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    identity_file: str | None = None

    @classmethod
    def from_keys(cls, gpg_homedir: str | None = None, secret_key_file: str | None = None,
                  passphrase: str | None = None, age_identity_file: str | None = None) -> DecryptionSpec:
        """The keys a restore or a drill may need, the method left to each backup's manifest."""
        return cls(secret_key_file=secret_key_file, gpg_homedir=gpg_homedir, passphrase=passphrase,
                   identity_file=age_identity_file)

    @property
    def age_identity_file(self) -> str | None:
        return self.identity_file

    def for_method(self, method: str) -> DecryptionSpec:
        """The same keys for an artifact encrypted with ``method``."""
        return dataclasses.replace(self, method=method)


class Filter:
    """A prepared encryption or decryption step: spawn() starts it as a subprocess filter."""

    name = "none"
    method = "none"
    #: stderr line prefixes that mean failure even when the exit status is 0
    error_patterns: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.home: str | None = None
        self.argv: list[str] = []
        self._passphrase: str | None = None

    @property
    def active(self) -> bool:
        return self.method != "none"

    def spawn(self, stdin: Any, stdout: Any, stderr: Any = subprocess.PIPE) -> subprocess.Popen | None:
        """Start the filter reading ``stdin`` and writing ``stdout``; None when method is none."""
        if not self.active:
            return None
        argv = list(self.argv)
        pass_fds: tuple[int, ...] = ()
        rfd = wfd = None
        if self._passphrase is not None:
            rfd, wfd = os.pipe()
            # the passphrase is short: it fits in the pipe buffer, no writer thread needed
            os.write(wfd, self._passphrase.encode() + b"\n")
            os.close(wfd)
            pass_fds = (rfd,)
            argv = argv[:1] + ["--passphrase-fd", str(rfd), "--pinentry-mode", "loopback"] + argv[1:]
        try:
            return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=pass_fds,
                                    env=self.env(), close_fds=True)
        except OSError as exc:
            raise EncryptionError(f"encryption: cannot start {argv[0]}: {exc.strerror}", "encryption") from None
        finally:
            if rfd is not None:
                os.close(rfd)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("GNUPGHOME", "GPG_AGENT_INFO")}
        env["LC_ALL"] = "C"
        if self.home:
            env["GNUPGHOME"] = self.home
        return env

    def cleanup(self) -> None:
        if self.home and getattr(self, "_own_home", True):
            remove_gnupghome(self.home)
        self.home = None

    def __enter__(self) -> "Filter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


# ----------------------------------------------------------------------- encrypt

class Encryptor(Filter):
    mode: str | None = None
    recipients: list[str]
    extension = ""

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``encryption`` object: never a secret."""
        if not self.active:
            return {"method": "none"}
        return {"method": self.method, "mode": self.mode, "recipients": list(self.recipients)}

    def stock_command(self) -> str | None:
        """The stock decryption command an operator runs (key placeholders in capitals)."""
        if self.method == "gpg":
            return "gpg --decrypt"
        if self.method == "age":
            return "age -d -i AGE_IDENTITY_FILE"
        return None


def prepare_encryptor(spec: EncryptionSpec) -> Encryptor:
    """Validate the keys and return a ready Encryptor. Nothing is encrypted yet."""
    method = spec.method or "none"
    if method not in METHODS:
        raise ConfigError(f"encryption: '{method}' is not one of {', '.join(METHODS)}", "encryption")
    enc = Encryptor()
    enc.method = method
    enc.recipients = []
    enc.extension = EXTENSIONS[method]
    if method == "none":
        if spec.recipients or spec.passphrase:
            raise ConfigError("encryption: recipients or a passphrase were given but encryption is 'none'",
                              "encryption")
        return enc
    if method == "gpg":
        return _prepare_gpg(enc, spec)
    return _prepare_age(enc, spec)


def _prepare_gpg(enc: Encryptor, spec: EncryptionSpec) -> Encryptor:
    gpg = find_binary("gpg")
    enc.name = "gpg"
    enc.error_patterns = ("gpg: encryption failed", "gpg: [stdin]: encryption failed", "gpg: fatal",
                          "gpg: error")
    if spec.recipients and spec.passphrase:
        raise ConfigError("encryption_passphrase: give either gpg recipients or a passphrase, not both",
                          "encryption_passphrase")
    if not spec.recipients and not spec.passphrase:
        raise EncryptionError("encryption_recipients: gpg encryption needs at least one recipient public key "
                              "file (or encryption_passphrase for symmetric mode)", "encryption_recipients")
    enc.home = private_gnupghome()
    base = _gpg_base(gpg, enc.home)
    if spec.passphrase is not None:
        if not spec.passphrase:
            enc.cleanup()
            raise EncryptionError("encryption_passphrase: the passphrase is empty", "encryption_passphrase")
        enc.mode = "passphrase"
        enc._passphrase = spec.passphrase
        enc.argv = base + ["--symmetric", "--cipher-algo", "AES256", "--s2k-digest-algo", "SHA512",
                           "--compress-algo", "none", "--output", "-"]
        return enc
    enc.mode = "public-key"
    argv = base + ["--trust-model", "always", "--compress-algo", "none", "--encrypt"]
    try:
        for path in spec.recipients:
            keys = inspect_key_file(path, "encryption_recipients", gpg)
            usable = [k for k in keys if k.can_encrypt]
            if not usable:
                raise EncryptionError(f"encryption_recipients: key file '{path}' has no valid encryption key "
                                      "(revoked, expired or sign-only)", "encryption_recipients")
            enc.recipients.extend(k.fingerprint for k in usable)
            argv += ["--recipient-file", os.path.abspath(path)]
        enc.argv = argv + ["--output", "-"]
        _probe(enc)
    except BaseException:
        enc.cleanup()
        raise
    return enc


def _prepare_age(enc: Encryptor, spec: EncryptionSpec) -> Encryptor:
    enc.name = "age"
    if spec.passphrase:
        raise ConfigError("encryption_passphrase: age supports passphrases only interactively; use gpg with a "
                          "passphrase, or age recipients", "encryption_passphrase")
    if not spec.recipients:
        raise EncryptionError("encryption_recipients: age encryption needs at least one recipient "
                              "(age1... or a recipients file)", "encryption_recipients")
    age = find_binary("age")
    argv = [age, "--encrypt"]
    enc.mode = "public-key"
    for item in spec.recipients:
        item = item.strip()
        if AGE_RECIPIENT_RE.match(item) or SSH_RECIPIENT_RE.match(item):
            argv += ["-r", item]
            enc.recipients.append(item)
        elif item.startswith("/") or os.path.exists(item):
            if not os.path.isfile(item):
                raise EncryptionError(f"encryption_recipients: age recipients file '{item}' does not exist",
                                      "encryption_recipients")
            argv += ["-R", os.path.abspath(item)]
            with open(item, encoding="utf-8", errors="replace") as fh:
                enc.recipients.extend(line.strip() for line in fh
                                      if line.strip() and not line.startswith("#"))
        else:
            raise EncryptionError(f"encryption_recipients: '{item}' is neither an age recipient (age1...) nor an "
                                  "existing recipients file", "encryption_recipients")
    enc.argv = argv
    enc.error_patterns = ("age: error",)
    _probe(enc)
    return enc


def _probe(enc: Filter) -> None:
    """Encrypt an empty input once: proves the binary and every key work before any data moves."""
    proc = enc.spawn(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc is not None
    try:
        _, err = proc.communicate(timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise EncryptionError(f"encryption: {enc.name} did not answer within {_TIMEOUT}s", "encryption") from None
    text = err.decode(errors="replace")
    if proc.returncode != 0 or any(line.startswith(enc.error_patterns) for line in text.splitlines()):
        raise EncryptionError(f"encryption: {enc.name} cannot encrypt with the given keys: "
                              f"{_first_error(text) or 'exit status ' + str(proc.returncode)}", "encryption")


# ----------------------------------------------------------------------- decrypt

class Decryptor(Filter):
    pass


def prepare_decryptor(spec: DecryptionSpec) -> Decryptor:
    """Check the key material and return a ready Decryptor (method 'none' passes data through)."""
    method = spec.method or "none"
    if method not in METHODS:
        raise ConfigError(f"decryption: '{method}' is not one of {', '.join(METHODS)}", "encryption")
    dec = Decryptor()
    dec.method = method
    dec.name = method
    if method == "none":
        return dec
    if method == "age":
        if spec.passphrase:
            raise ConfigError("age passphrases are interactive-only; give an identity file", "identity_file")
        if not spec.identity_file or not os.path.isfile(spec.identity_file):
            raise EncryptionError(f"identity_file: age identity file '{spec.identity_file}' does not exist",
                                  "identity_file")
        dec.argv = [find_binary("age"), "--decrypt", "-i", os.path.abspath(spec.identity_file)]
        dec.error_patterns = ("age: error",)
        return dec
    gpg = find_binary("gpg")
    dec.error_patterns = ("gpg: decryption failed", "gpg: fatal", "gpg: error", "gpg: WARNING: message was not "
                          "integrity protected", "gpg: BAD")
    if spec.gpg_homedir:
        if not os.path.isdir(spec.gpg_homedir):
            raise EncryptionError(f"gpg_homedir: '{spec.gpg_homedir}' is not a directory", "gpg_homedir")
        dec.home = spec.gpg_homedir
        dec._own_home = False  # type: ignore[attr-defined]
    else:
        dec.home = private_gnupghome()
    try:
        if spec.secret_key_file:
            keys = inspect_key_file(spec.secret_key_file, "secret_key_file", gpg)
            if not any(k.secret for k in keys):
                raise EncryptionError(f"secret_key_file: '{spec.secret_key_file}' holds no secret key",
                                      "secret_key_file")
            proc = subprocess.run(_gpg_base(gpg, dec.home) + ["--import", spec.secret_key_file],
                                  capture_output=True, text=True, timeout=_TIMEOUT, check=False,
                                  env=dec.env())
            if proc.returncode != 0:
                raise EncryptionError(f"secret_key_file: gpg could not import '{spec.secret_key_file}': "
                                      f"{_first_error(proc.stderr)}", "secret_key_file")
        elif not spec.passphrase and not spec.gpg_homedir:
            raise EncryptionError("decryption: gpg needs a secret key file, a gpg home directory or a passphrase",
                                  "secret_key_file")
        if spec.passphrase is not None:
            dec._passphrase = spec.passphrase
        dec.argv = _gpg_base(gpg, dec.home) + ["--decrypt", "--output", "-"]
    except BaseException:
        dec.cleanup()
        raise
    return dec
