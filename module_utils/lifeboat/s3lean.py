"""A lean request path for the per-object hot loop of a transfer: one signed GetObject or PutObject.

Why: a sync of many small objects is bound by the client's CPU. botocore's per-call pipeline (events, user
agent, serialisation, parsing, retry handlers) costs about 3.5 ms of CPU per small GET or PUT on a 2-vCPU
host, against about 1.1 ms for the same request signed here (AWS Signature Version 4) and sent on a urllib3
connection pool; with the GIL that is the difference between trailing ``rclone sync`` and beating it
(bench/bench_s3_sync.py). Everything else (listings, multipart, HEAD, deletes) stays on boto3.

``LeanS3.for_client(settings, client)`` returns None, and the caller keeps boto3, whenever this path might
behave differently from boto3: no credentials to sign with (anonymous), a proxy in the environment, an AWS
endpoint this module does not address itself (only ``https://s3[.<region>].amazonaws.com`` with a bucket
name usable as a host name) or a key with dot segments. Errors are raised as botocore ``ClientError`` /
connection errors, so ``s3.translate`` names the cause the same way; retries follow boto3's standard mode
(``max_attempts``, exponential backoff with jitter, on 5xx, 429, throttling and connection failures).
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import os
import random
import re
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

from ansible.module_utils.lifeboat.s3 import S3Settings, session_for

try:
    import botocore.exceptions as _bce
    import urllib3
    from botocore.httpsession import get_cert_path
except ImportError:  # pragma: no cover - boto3 is required wherever an S3 side exists
    urllib3 = None  # type: ignore[assignment]

_RETRY_STATUS = {500, 502, 503, 504, 429}
_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                "ServiceUnavailable", "RequestTimeTooSkewed"}
_AWS_HOST = re.compile(r"^s3(\.(?P<region>[a-z0-9-]+))?\.amazonaws\.com$")
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _error_field(body: bytes, name: str) -> str:
    m = re.search(rb"<" + name.encode() + rb">(.*?)</" + name.encode() + rb">", body or b"", re.S)
    return m.group(1).decode("utf-8", "replace") if m else ""


class LeanS3:
    """Signed single-object requests on one connection pool (thread-safe)."""

    def __init__(self, endpoint: str, region: str, credentials: Any, settings: S3Settings, virtual_host: bool):
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.credentials = credentials
        self.settings = settings
        self.virtual_host = virtual_host
        self.max_attempts = max(1, int(settings.max_attempts))
        parts = urlsplit(self.endpoint)
        self._scheme, self._netloc = parts.scheme, parts.netloc
        self._base_path = parts.path.rstrip("/")
        tls: dict[str, Any] = {}
        if self._scheme == "https":
            tls = ({"cert_reqs": "CERT_REQUIRED", "ca_certs": os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)}
                   if settings.verify_tls else {"cert_reqs": "CERT_NONE"})
        self._pool_args = dict(maxsize=max(10, int(settings.concurrency) * 2), block=False, retries=False,
                               timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
                               **tls)
        self._pools: dict[str, Any] = {}  # host -> connection pool (one host unless virtual-hosted)
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], bytes] = {}

    @classmethod
    def for_client(cls, settings: S3Settings, client: Any) -> "LeanS3 | None":
        """The lean path for ``client``'s endpoint and credentials, or None where boto3 must be kept."""
        if urllib3 is None or any(os.environ.get(v) for v in _PROXY_VARS):
            return None
        endpoint = getattr(client.meta, "endpoint_url", None) or ""
        region = client.meta.region_name or "us-east-1"
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or parts.query:
            return None
        virtual = False
        if not settings.endpoint:  # AWS: only its plain regional endpoints, virtual-hosted like boto3
            m = _AWS_HOST.match(parts.hostname or "")
            if not m or parts.scheme != "https" or parts.port:
                return None
            virtual = True
            region = m.group("region") or region
        if settings.access_key and settings.secret_key:
            creds: Any = _Static(settings.access_key, settings.secret_key, settings.session_token)
        else:
            creds = session_for(settings.profile).get_credentials()
            if creds is None:
                return None
        return cls(endpoint, region, creds, settings, virtual)

    # -- addressing and signing
    def _target(self, bucket: str, key: str) -> tuple[str, str] | None:
        """(host, path) of an object; None when boto3 should send it (dot segments, odd bucket names)."""
        if any(seg in (".", "..") for seg in key.split("/")):
            return None
        if self.virtual_host:
            if not _DNS_BUCKET.match(bucket):
                return None
            return f"{bucket}.{self._netloc}", f"{self._base_path}/{quote(key, safe='/~')}"
        return self._netloc, f"{self._base_path}/{quote(bucket, safe='~')}/{quote(key, safe='/~')}"

    def handles(self, bucket: str, key: str) -> bool:
        return self._target(bucket, key) is not None

    def _signing_key(self, secret: str, day: str) -> bytes:
        k = self._keys.get((secret, day))
        if k is None:
            k = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._keys = {(secret, day): k}
        return k

    def _sign(self, method: str, host: str, path: str, headers: dict[str, str], payload_hash: str) -> dict[str, str]:
        frozen = self.credentials.get_frozen_credentials()
        amzdate = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        day = amzdate[:8]
        out = {k.lower(): str(v) for k, v in headers.items()}
        out.update({"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amzdate})
        if frozen.token:
            out["x-amz-security-token"] = frozen.token
        names = sorted(out)
        canonical = "\n".join([method, path, "", "".join(f"{k}:{' '.join(out[k].split())}\n" for k in names),
                               ";".join(names), payload_hash])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amzdate}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        sig = hmac.new(self._signing_key(frozen.secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        out["authorization"] = (f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={sig}")
        return out

    # -- requests
    def _request(self, op: str, method: str, bucket: str, key: str, body: bytes | None,
                 headers: dict[str, str]) -> Any:
        target = self._target(bucket, key)
        if target is None:  # pragma: no cover - callers ask handles() first
            raise ValueError(f"{op}: key '{key}' must be sent through boto3")
        host, path = target
        # a body is covered by its Content-MD5 (checked by the store) rather than by a signed SHA-256
        payload_hash = "UNSIGNED-PAYLOAD" if body else _EMPTY_SHA256
        url = f"{self._scheme}://{host}{path}"
        pool = self._pools.get(host)
        if pool is None:
            with self._lock:
                pool = self._pools.get(host) or urllib3.connection_from_url(f"{self._scheme}://{host}",
                                                                            **self._pool_args)
                self._pools[host] = pool
        for attempt in range(1, self.max_attempts + 1):
            signed = self._sign(method, host, path, headers, payload_hash)
            signed.pop("host")
            try:
                resp = pool.urlopen(method, path, body=body, headers=signed, redirect=False,
                                    preload_content=True, assert_same_host=False)
            except urllib3.exceptions.ReadTimeoutError as exc:
                if attempt == self.max_attempts:
                    raise _bce.ReadTimeoutError(endpoint_url=url, error=str(exc)) from None
            except urllib3.exceptions.HTTPError as exc:
                if attempt == self.max_attempts:
                    raise _bce.EndpointConnectionError(endpoint_url=url, error=str(exc)) from None
            else:
                if resp.status < 300:
                    return resp
                code = _error_field(resp.data, "Code") or str(resp.status)
                if attempt == self.max_attempts or (resp.status not in _RETRY_STATUS and code not in _RETRY_CODES):
                    raise _bce.ClientError({"Error": {"Code": code, "Message": _error_field(resp.data, "Message")},
                                            "ResponseMetadata": {"HTTPStatusCode": resp.status}}, op)
            time.sleep(random.random() * min(20.0, 2.0 ** attempt * 0.5))  # noqa: S311 - jitter, not security
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, bucket: str, key: str, if_match: str | None = None) -> tuple[bytes, Any]:
        """(body, response headers) of an object; conditional on the ETag ``if_match`` (quoted by us)."""
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        resp = self._request("GetObject", "GET", bucket, key, None, headers)
        return resp.data, resp.headers

    def put(self, bucket: str, key: str, body: bytes, headers: dict[str, str]) -> Any:
        """PutObject with Content-MD5 (the store checks the bytes it received); the response headers."""
        headers = dict(headers)
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        headers["Content-Length"] = str(len(body))
        return self._request("PutObject", "PUT", bucket, key, body, headers).headers


class _Static:
    """Credentials given as options (what botocore's get_frozen_credentials returns)."""

    def __init__(self, access_key: str, secret_key: str, token: str | None):
        self.access_key, self.secret_key, self.token = access_key, secret_key, token

    def get_frozen_credentials(self) -> "_Static":
        return self


#: what a copy carries over from a GET's headers to the PUT (content headers and user metadata)
_CARRIED = ("content-type", "content-encoding", "content-disposition", "content-language", "cache-control",
            "expires")


def carried_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in _CARRIED or k.lower().startswith("x-amz-meta-")}
