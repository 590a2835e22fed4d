"""Option groups shared by the modules: one argument spec per group, and the builders that turn a
module's params into engine objects.

This is the module layer (it imports ``ansible.module_utils.basic`` for ``env_fallback``): the
engine below never imports it. Each group is documented once, by the doc fragment of the same
name in ``doc_fragments/`` (``extends_documentation_fragment``); tests/unit/test_module_docs.py
checks every module's rendered documentation against its spec.

===================  ==============================================  ==========================
group                options                                         doc fragment
===================  ==============================================  ==========================
``s3_spec()``        s3_endpoint, s3_region, s3_access_key,          lifeboat_s3
                     s3_secret_key, s3_session_token, s3_profile,
                     s3_validate_certs (unprefixed names are
                     aliases; AWS_* environment fallbacks)
``s3_spec(p)``       the same for a side ``p``: source_, destination_, lifeboat_s3.source / .destination
                     backup_                                          / .backup
``pg_spec()``        dsn, host, port, user, password, sslmode,        lifeboat_postgres
                     pg_bin_dir
``pg_admin_spec()``  maintenance_database                            lifeboat_postgres.admin
``encryption_spec``  encryption, encryption_recipients,              lifeboat_encryption
                     encryption_passphrase
``decryption_spec``  gpg_homedir, gpg_key_file,                      lifeboat_decryption
                     decryption_passphrase, age_identity_file
``file_modes_spec``  file_mode, dir_mode                             lifeboat_file_modes
===================  ==============================================  ==========================
"""
from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.lifeboat.crypto import DecryptionSpec, EncryptionSpec
from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.s3 import S3Settings

S3_FIELDS = ("endpoint", "region", "access_key", "secret_key", "session_token", "profile", "validate_certs")
#: environment fallbacks of the module's own store (prefix ``s3_``), the variables boto3 itself reads
S3_ENV = {
    "endpoint": ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
    "region": ["AWS_REGION", "AWS_DEFAULT_REGION"],
    "access_key": ["AWS_ACCESS_KEY_ID"],
    "secret_key": ["AWS_SECRET_ACCESS_KEY"],
    "session_token": ["AWS_SESSION_TOKEN"],
    "profile": ["AWS_PROFILE"],
}
SSLMODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


# ------------------------------------------------------------------ S3 endpoint and credentials

def s3_spec(prefix: str = "s3_") -> dict[str, dict[str, Any]]:
    """The S3 options of one store.

    ``s3_`` (the default): the module's own store; the unprefixed names (``endpoint``, ``access_key``...)
    are aliases and the ``AWS_*`` variables are fallbacks. Another prefix (``source_``, ``destination_``,
    ``backup_``) names one side of a transfer, without aliases or fallbacks (boto3 reads the environment
    itself for each side).
    """
    spec: dict[str, dict[str, Any]] = {}
    for name in S3_FIELDS:
        opt: dict[str, Any] = dict(type="bool", default=True) if name == "validate_certs" else dict(type="str")
        if name == "access_key":
            opt["no_log"] = False
        if name in ("secret_key", "session_token"):
            opt["no_log"] = True
        if prefix == "s3_":
            opt["aliases"] = [name]
            if name in S3_ENV:
                opt["fallback"] = (env_fallback, S3_ENV[name])
        spec[prefix + name] = opt
    return spec


def s3_together(prefix: str = "s3_") -> list[list[str]]:
    """``required_together`` of a store: the access key and the secret key."""
    return [[f"{prefix}access_key", f"{prefix}secret_key"]]


def s3_settings(params: dict[str, Any], prefix: str = "s3_", concurrency: int = 4) -> S3Settings:
    """The engine's S3Settings from a module's params (see :func:`s3_spec`)."""
    return S3Settings(
        endpoint=params.get(f"{prefix}endpoint") or None,
        region=params.get(f"{prefix}region") or None,
        access_key=params.get(f"{prefix}access_key") or None,
        secret_key=params.get(f"{prefix}secret_key") or None,
        session_token=params.get(f"{prefix}session_token") or None,
        profile=params.get(f"{prefix}profile") or None,
        verify_tls=bool(params.get(f"{prefix}validate_certs", True)),
        concurrency=concurrency,
    )


# ------------------------------------------------------------------ PostgreSQL connection

def pg_spec() -> dict[str, dict[str, Any]]:
    """How to reach the PostgreSQL server (a DSN and/or its parts) and which client binaries to use."""
    return {
        "dsn": dict(type="str", no_log=True, fallback=(env_fallback, ["LIFEBOAT_PG_DSN"])),
        "host": dict(type="str"),
        "port": dict(type="int"),
        "user": dict(type="str"),
        "password": dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
        "sslmode": dict(type="str", choices=list(SSLMODES)),
        "pg_bin_dir": dict(type="path"),
    }


def pg_admin_spec() -> dict[str, dict[str, Any]]:
    """The database an administrative connection (restore, drill) opens."""
    return {"maintenance_database": dict(type="str", default="postgres")}


def pg_target(params: dict[str, Any], database: str | None = None) -> PgTarget:
    """The engine's PgTarget from a module's params (see :func:`pg_spec`)."""
    return PgTarget.from_options(dsn=params.get("dsn"), host=params.get("host"), port=params.get("port"),
                                 user=params.get("user"), password=params.get("password"),
                                 database=database, sslmode=params.get("sslmode"))


def restore_admin(params: dict[str, Any]) -> Any:
    """The administrative connection of a restore or a drill (:func:`pg_spec` + :func:`pg_admin_spec`)."""
    # imported here: the restore package needs psycopg, which only the modules that connect to PostgreSQL need
    from ansible.module_utils.lifeboat.restore.pgadmin import Admin

    maint = params.get("maintenance_database") or "postgres"
    return Admin(pg_target(params, maint), maint, [params["pg_bin_dir"]] if params.get("pg_bin_dir") else None)


# ------------------------------------------------------------------ encryption / decryption

def encryption_spec(default: str = "none") -> dict[str, dict[str, Any]]:
    """How an artifact is encrypted (``default``: the module's default method)."""
    return {
        "encryption": dict(type="str", default=default, choices=["none", "gpg", "age"]),
        "encryption_recipients": dict(type="list", elements="str", default=[]),
        "encryption_passphrase": dict(type="str", no_log=True),
    }


def encryption(params: dict[str, Any]) -> EncryptionSpec:
    return EncryptionSpec(method=params["encryption"], recipients=list(params.get("encryption_recipients") or []),
                          passphrase=params.get("encryption_passphrase"))


def decryption_spec() -> dict[str, dict[str, Any]]:
    """What decrypts an artifact. The names lifeboat_archive used are aliases."""
    return {
        "gpg_homedir": dict(type="path"),
        "gpg_key_file": dict(type="path", aliases=["secret_key_file"]),
        "decryption_passphrase": dict(type="str", no_log=True, aliases=["passphrase"]),
        "age_identity_file": dict(type="path", aliases=["identity_file"]),
    }


def decryption(params: dict[str, Any], method: str | None = None) -> DecryptionSpec:
    """The engine's DecryptionSpec; ``method`` None: age with an identity file, gpg with a gpg key, home
    or passphrase, else none (a restore reads the method from the manifest instead)."""
    if method is None:
        method = "age" if params.get("age_identity_file") else (
            "gpg" if (params.get("gpg_key_file") or params.get("gpg_homedir") or params.get("decryption_passphrase"))
            else "none")
    return DecryptionSpec(method=method, secret_key_file=params.get("gpg_key_file"),
                          gpg_homedir=params.get("gpg_homedir"), passphrase=params.get("decryption_passphrase"),
                          identity_file=params.get("age_identity_file"))


def decrypt_keys(params: dict[str, Any]) -> DecryptionSpec:
    """The keys a restore or a drill may need (the method comes from each backup's manifest)."""
    return DecryptionSpec.from_keys(gpg_homedir=params.get("gpg_homedir"), secret_key_file=params.get("gpg_key_file"),
                                    passphrase=params.get("decryption_passphrase"),
                                    age_identity_file=params.get("age_identity_file"))


# ------------------------------------------------------------------ file modes

def file_modes_spec(file_mode: str | None = "0600", dir_mode: str | None = "0700") -> dict[str, dict[str, Any]]:
    """Modes of the files and directories a module writes (octal strings, quoted in YAML)."""
    return {"file_mode": dict(type="str", default=file_mode), "dir_mode": dict(type="str", default=dir_mode)}


def parse_mode(value: Any, option: str) -> int | None:
    """``"0640"`` -> 0o640; None stays None. The one octal-mode parser of the modules."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(f"{option}: '{value}' is not an octal mode such as \"0600\" (quote it in YAML)",
                          option) from None
    if not 0 <= mode <= 0o7777:
        raise ConfigError(f"{option}: '{value}' is not a file mode (0000-7777)", option)
    return mode


def file_modes(params: dict[str, Any]) -> dict[str, int]:
    """``{"file_mode": 0o600, "dir_mode": 0o700}`` for the modes given (None ones left out)."""
    out = {}
    for option in ("file_mode", "dir_mode"):
        mode = parse_mode(params.get(option), option)
        if mode is not None:
            out[option] = mode
    return out
