"""Argument-spec pieces shared by the storage modules (plain dicts, no Ansible imports).

Each endpoint has a prefix (``source_``, ``destination_``, ``backup_``...):
``<p>endpoint``, ``<p>region``, ``<p>access_key``, ``<p>secret_key`` (no_log),
``<p>session_token`` (no_log), ``<p>profile``, ``<p>validate_certs``.
"""
from __future__ import annotations

from typing import Any

from ansible.module_utils.lifeboat.s3 import S3Settings


def endpoint_spec(prefix: str) -> dict[str, dict[str, Any]]:
    return {
        f"{prefix}endpoint": dict(type="str"),
        f"{prefix}region": dict(type="str"),
        f"{prefix}access_key": dict(type="str", no_log=False),
        f"{prefix}secret_key": dict(type="str", no_log=True),
        f"{prefix}session_token": dict(type="str", no_log=True),
        f"{prefix}profile": dict(type="str"),
        f"{prefix}validate_certs": dict(type="bool", default=True),
    }


def endpoint_together(prefix: str) -> list[list[str]]:
    return [[f"{prefix}access_key", f"{prefix}secret_key"]]


def settings_from(params: dict[str, Any], prefix: str, concurrency: int = 8) -> S3Settings:
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
