"""Module plumbing shared by lifeboat_pg_restore and lifeboat_backup_verify: options -> engine objects.
"""
from __future__ import annotations

from typing import Any

from ansible.module_utils.lifeboat.pgconn import PgTarget
from ansible.module_utils.lifeboat.restore.decoding import DecryptKeys
from ansible.module_utils.lifeboat.restore.pgadmin import Admin
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import Storage, open_storage


SECRET_OPTIONS = ("password", "s3_secret_key", "passphrase", "dsn")


def mask_secrets(params: dict[str, Any], text: str) -> str:
    """``text`` with the value of every secret option of the common argument spec replaced by ``***``."""
    for key in SECRET_OPTIONS:
        value = params.get(key)
        if value:
            text = text.replace(str(value), "***")
    return text


def common_argument_spec() -> dict[str, dict[str, Any]]:
    """Options shared by lifeboat_pg_restore and lifeboat_backup_verify: storage, server, keys."""
    return {
        "destination": dict(type="str", required=True),
        "prefix": dict(type="str", default=""),
        "s3_endpoint": dict(type="str"),
        "s3_region": dict(type="str"),
        "s3_access_key": dict(type="str", no_log=False),
        "s3_secret_key": dict(type="str", no_log=True),
        "s3_validate_certs": dict(type="bool", default=True),
        "dsn": dict(type="str", no_log=True),
        "host": dict(type="str"),
        "port": dict(type="int"),
        "user": dict(type="str"),
        "password": dict(type="str", no_log=True),
        "maintenance_database": dict(type="str", default="postgres"),
        "pg_bin_dir": dict(type="path"),
        "gpg_homedir": dict(type="path"),
        "gpg_key_file": dict(type="path"),
        "passphrase": dict(type="str", no_log=True),
        "age_identity_file": dict(type="path"),
        "backup_id": dict(type="str"),
        "before": dict(type="str"),
    }


def s3_settings_from(params: dict[str, Any]) -> Any:
    return S3Settings(endpoint=params.get("s3_endpoint") or None, region=params.get("s3_region") or None,
                      access_key=params.get("s3_access_key") or None, secret_key=params.get("s3_secret_key") or None,
                      verify_tls=bool(params.get("s3_validate_certs", True)))


def storage_from(params: dict[str, Any]) -> Storage:
    return open_storage(params["destination"], s3_settings_from(params))


def admin_from(params: dict[str, Any]) -> Admin:
    maint = params.get("maintenance_database") or "postgres"
    target = PgTarget.from_options(dsn=params.get("dsn"), host=params.get("host"), port=params.get("port"),
                                   user=params.get("user"), password=params.get("password"), database=maint)
    target = target.with_database(maint)
    return Admin(target, maint, [params["pg_bin_dir"]] if params.get("pg_bin_dir") else None)


def keys_from(params: dict[str, Any]) -> DecryptKeys:
    return DecryptKeys(gpg_homedir=params.get("gpg_homedir"), secret_key_file=params.get("gpg_key_file"),
                       passphrase=params.get("passphrase"), age_identity_file=params.get("age_identity_file"))
