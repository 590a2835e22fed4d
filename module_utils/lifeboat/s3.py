"""S3 plumbing shared by every Lifeboat module: clients, URLs, errors.

Credentials are passed explicitly (or left to boto3's default chain) and are
never part of a message. Endpoints may be AWS or any S3-compatible service
(SeaweedFS, MinIO, Supabase Storage); custom endpoints use path-style
addressing.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ansible.module_utils.lifeboat.errors import (
    AuthError,
    ConfigError,
    ConnectionFailed,
    DeadlineExceeded,
    LifeboatError,
    NotFound,
    StorageError,
)

try:  # boto3 is a runtime requirement of every S3 code path
    import boto3
    import botocore.exceptions
    from botocore.config import Config as BotoConfig

    HAS_BOTO3 = True
except ImportError:  # pragma: no cover - reported by require_boto3()
    HAS_BOTO3 = False

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")


def require_boto3() -> None:
    if not HAS_BOTO3:
        raise ConfigError("boto3 and botocore are required on the host running this module (pip install boto3)")


@dataclass(frozen=True)
class S3Url:
    bucket: str
    prefix: str = ""

    def key(self, *parts: str) -> str:
        items = [p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/")]
        return "/".join(items)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_s3_url(url: str, option: str = "destination") -> S3Url:
    """Parse ``s3://bucket[/prefix]``; the prefix never starts or ends with '/'."""
    if not url.startswith("s3://"):
        raise ConfigError(f"{option}: '{url}' is not an s3:// URL", option)
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket or ""):
        raise ConfigError(f"{option}: '{bucket}' is not a valid bucket name (3-63 characters a-z 0-9 . - _)", option)
    return S3Url(bucket=bucket, prefix=prefix.strip("/"))


def mask_url(url: str) -> str:
    """Hide a password embedded in a URL (postgresql://u:secret@h/db -> u:***@h)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


@dataclass
class S3Settings:
    """Where and how to reach an S3 endpoint. ``secret_key`` is a secret."""

    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    concurrency: int = 4
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_attempts: int = 5
    verify_tls: bool = True

    def describe(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region or 'default region'})"


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client; path-style addressing for custom endpoints."""
    require_boto3()
    if (settings.access_key is None) != (settings.secret_key is None):
        raise ConfigError("S3 credentials: access key and secret key must be given together", "s3_access_key")
    cfg = BotoConfig(
        region_name=settings.region,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        max_pool_connections=max(10, settings.concurrency * 2),
        s3={"addressing_style": "path" if settings.endpoint else "auto"},
        # SeaweedFS and other S3-compatible services predate the flexible checksums
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    with _SESSION_LOCK:  # boto3 sessions are not thread-safe; creating a client is quick once cached
        return session_for(settings.profile).client(
            "s3",
            endpoint_url=settings.endpoint or None,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            aws_session_token=settings.session_token,
            region_name=settings.region,
            verify=settings.verify_tls,
            config=cfg,
        )


# One boto3 session per profile, reused: a new session reloads the service models (about 0.3 s each).
# Credentials are passed to each client explicitly, so clients never share them through the session.
_SESSIONS: dict[str, Any] = {}
_SESSION_LOCK = threading.RLock()


def session_for(profile: str | None) -> Any:
    """The boto3 session of ``profile`` (None: the default chain), made once."""
    require_boto3()
    with _SESSION_LOCK:
        session = _SESSIONS.get(profile or "")
        if session is None:
            session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
            _SESSIONS[profile or ""] = session
        return session


_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
               "ExpiredToken", "AuthorizationHeaderMalformed", "403", "Forbidden"}
_NOT_FOUND_BUCKET = {"NoSuchBucket"}
_NOT_FOUND_KEY = {"NoSuchKey", "NoSuchVersion", "NoSuchUpload"}


def translate(exc: BaseException, what: str, settings: S3Settings | None = None,
              bucket: str | None = None) -> LifeboatError:
    """Turn a botocore exception into a typed error naming the cause.

    ``what`` says what we were doing ("upload s3://b/k"). The message names the
    endpoint, never a credential.
    """
    where = settings.describe() if settings else "the S3 endpoint"
    if HAS_BOTO3 and isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = err.get("Message") or code
        if code in _NOT_FOUND_BUCKET or (code in {"404", "NotFound"} and what.startswith("bucket")):
            return NotFound(f"{what}: bucket '{bucket}' does not exist at {where} ({code})")
        if code in _NOT_FOUND_KEY or code in {"404", "NotFound"}:
            return NotFound(f"{what}: not found at {where} ({code})")
        if code in _AUTH_CODES or status == 403:
            return AuthError(f"{what}: access denied by {where}: {code}: {message} "
                             "(check the access key, secret key and the IAM policy)")
        return StorageError(f"{what}: {where} answered {code or status}: {message}")
    if HAS_BOTO3 and isinstance(exc, (botocore.exceptions.EndpointConnectionError,
                                      botocore.exceptions.ConnectTimeoutError,
                                      botocore.exceptions.ConnectionClosedError)):
        return ConnectionFailed(f"{what}: cannot reach {where}: {exc.__class__.__name__}")
    if HAS_BOTO3 and isinstance(exc, botocore.exceptions.NoCredentialsError):
        return AuthError(f"{what}: no S3 credentials were given and none were found in the environment")
    if HAS_BOTO3 and isinstance(exc, botocore.exceptions.BotoCoreError):
        return StorageError(f"{what}: {where}: {exc.__class__.__name__}: {exc}")
    if isinstance(exc, LifeboatError):
        return exc
    return StorageError(f"{what}: {exc.__class__.__name__}: {exc}")


def check_bucket(client: Any, bucket: str, settings: S3Settings | None = None, prefix: str = "",
                 call: Any = None) -> None:
    """Fail clearly when the bucket is missing or the credentials are wrong: the one bucket check of every store.

    A one-key listing of ``prefix`` (not HeadBucket): a least-privilege IAM policy grants s3:ListBucket only
    with an ``s3:prefix`` condition, which HeadBucket cannot satisfy. ``call(what, fn, **kw)`` runs the
    request (a store's deadline-bounded call); by default it is made directly.
    """
    what = f"bucket s3://{bucket}"
    try:
        if call is None:
            client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        else:
            call(what, client.list_objects_v2, Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except DeadlineExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - translated below
        raise translate(exc, what, settings, bucket) from None


def bucket_versioning(client: Any, bucket: str, settings: S3Settings | None = None) -> str:
    """'Enabled', 'Suspended' or '' (never enabled)."""
    try:
        return client.get_bucket_versioning(Bucket=bucket).get("Status", "") or ""
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, f"bucket s3://{bucket} versioning", settings, bucket) from None
