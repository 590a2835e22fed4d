"""The sides of a transfer (bucket sync, point-in-time and recovery-point restores): an S3 prefix (``S3Side``, an
S3Storage) or a local directory (a ``storage_local.LocalStorage``), each named by its option in errors.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from typing import Any

from ansible.module_utils.lifeboat.errors import ConfigError, LifeboatError
from ansible.module_utils.lifeboat.s3 import S3Settings, make_client, parse_s3_url, translate
from ansible.module_utils.lifeboat.s3lean import LeanS3
from ansible.module_utils.lifeboat.storage_api import Entry, Storage, is_marker
from ansible.module_utils.lifeboat.storage_local import LocalStorage
from ansible.module_utils.lifeboat.storage_s3 import S3Storage

try:  # botocore is present whenever an S3 side is used (make_client requires it)
    from botocore.utils import parse_timestamp as _default_timestamp
except ImportError:  # pragma: no cover
    _default_timestamp = None  # type: ignore[assignment]


def _fast_timestamp(value: str) -> Any:
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return _default_timestamp(value)


def fast_timestamps(client: Any) -> Any:
    """Parse listing timestamps (ISO 8601) with datetime.fromisoformat instead of dateutil.

    botocore's default parser costs about half a millisecond per object on a listing page; on a
    two-core host that dominates a nothing-to-do sync. Best effort: a botocore without the hook
    keeps its default parser.
    """
    try:
        client._endpoint._response_parser_factory.set_parser_defaults(timestamp_parser=_fast_timestamp)
    except AttributeError:  # pragma: no cover - internal layout changed
        pass
    return client


class S3Side(S3Storage):
    """An S3 prefix as one side of a transfer: the store (storage.S3Storage: its client, the least-privilege
    bucket check, listing, deletes, versioning) with the transfer's needs on top: errors naming the option
    (``source``/``destination``/``backup``), exact keys (a folder marker keeps its trailing '/'), raw HEADs,
    markers filtered from listings, and the lean per-object path (s3lean)."""

    def __init__(self, url: str, settings: S3Settings, option: str, client: Any = None):
        super().__init__(parse_s3_url(url, option), settings,
                         client=client if client is not None else fast_timestamps(make_client(settings)))
        self.option = option
        #: single GETs and PUTs of small objects without botocore's per-call cost (s3lean); None: boto3 only
        self.lean = LeanS3.for_client(settings, self.client)

    def lean_for(self, rel: str) -> LeanS3 | None:
        return self.lean if self.lean is not None and self.lean.handles(self.bucket, self.full(rel)) else None

    @property
    def prefix(self) -> str:
        return self.loc.prefix

    def full(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def full_key(self, key: str) -> str:
        return self.full(key)

    def uri(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.full(rel)}"

    def describe(self) -> str:
        return f"{self.loc} at {self.settings.describe()}"

    def error(self, exc: BaseException, what: str) -> LifeboatError:
        err = translate(exc, what, self.settings, self.bucket)
        return type(err)(f"{self.option}: {err}", self.option)

    def _named(self, exc: LifeboatError) -> LifeboatError:
        return type(exc)(f"{self.option}: {exc}", self.option)

    def check(self, write: bool = False) -> None:
        try:
            super().check(write)
        except LifeboatError as exc:
            raise self._named(exc) from None

    def versioning(self) -> str:
        try:
            return super().versioning()
        except LifeboatError as exc:
            raise self._named(exc) from None

    def list(self, prefix: str = "", markers: bool = False) -> Iterator[Entry]:  # type: ignore[override]
        """The objects under the prefix; 0-byte "folder" placeholders (keys ending in '/') only with
        ``markers``, never the prefix's own placeholder."""
        try:
            for e in super().list(prefix):
                if e.key == "" or (is_marker(e.key, e.size) and not markers):
                    continue  # a "folder" placeholder, not a file
                yield e
        except LifeboatError as exc:
            raise self._named(exc) from None

    def entries(self, markers: bool = False) -> Iterator[Entry]:
        return self.list(markers=markers)

    def head(self, rel: str, **kw: Any) -> dict[str, Any]:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.full(rel), **kw)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"stat {self.uri(rel)}") from None

    def delete(self, rel: str) -> None:
        try:
            super().delete(rel)
        except LifeboatError as exc:
            raise self._named(exc) from None


def open_side(location: str, settings: S3Settings | None, option: str, file_mode: int = 0o600,
              dir_mode: int = 0o700) -> Storage:
    """``s3://bucket/prefix`` -> S3Side; an absolute directory -> LocalStorage; errors name ``option``."""
    if location.startswith("s3://"):
        return S3Side(location, settings or S3Settings(), option)
    if "://" in location:
        raise ConfigError(f"{option}: unsupported scheme in '{location}' (use s3://bucket/prefix or an absolute "
                          "directory)", option)
    return LocalStorage(location, option, file_mode=file_mode, dir_mode=dir_mode)
