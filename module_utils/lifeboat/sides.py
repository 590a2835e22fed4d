"""The two sides of a transfer: an S3 prefix (``S3Side``) and a local directory (``LocalSide``).

Also the pieces sync, point-in-time restore and archives share: listing entries (``Entry``, sorted
externally), ETags computed locally the way S3 computes them, and safe local writes (private partial
files, directories created with the asked mode, folder markers).
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    LifeboatError,
    NotFound,
    StorageError,
)
from ansible.module_utils.lifeboat.s3 import (
    S3Settings,
    make_client,
    parse_s3_url,
    translate,
)
from ansible.module_utils.lifeboat.extsort import external_sort
from ansible.module_utils.lifeboat.s3lean import LeanS3
from ansible.module_utils.lifeboat.storage import Entry, S3Storage  # Entry: the one listing type

MIB = 1024 * 1024
#: metadata a streamed copy writes: the source object's ETag (the copy's own differs with other part sizes)
SOURCE_ETAG_META = "lifeboat-source-etag"

try:  # botocore is present whenever an S3 side is used (make_client requires it)
    import botocore.exceptions as _bce
    from botocore.utils import parse_timestamp as _default_timestamp
except ImportError:  # pragma: no cover
    _bce = None  # type: ignore[assignment]
    _default_timestamp = None  # type: ignore[assignment]


def is_marker(key: str, size: int) -> bool:
    """A 0-byte "folder" placeholder (key ending in '/'), as consoles and other tools create them."""
    return size == 0 and key.endswith("/")


def etag_is_multipart(etag: str | None) -> bool:
    return bool(etag) and "-" in (etag or "")


def md5_etag_of_file(path: str, size: int, part_size: int | None) -> str:
    """The ETag S3 gives this file's content uploaded in one PUT (part_size None) or in parts."""
    with open(path, "rb") as fh:
        if part_size is None:
            h = hashlib.md5(usedforsecurity=False)
            for chunk in iter(lambda: fh.read(MIB), b""):
                h.update(chunk)
            return h.hexdigest()
        digests = []
        remaining = size
        while remaining > 0:
            n = min(part_size, remaining)
            h = hashlib.md5(usedforsecurity=False)
            left = n
            while left:
                chunk = fh.read(min(MIB, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            digests.append(h.digest())
            remaining -= n
        return hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest() + f"-{len(digests)}"


def first_part_size(client: Any, bucket: str, key: str, etag: str | None, **kw: Any) -> int:
    """The size of part 1 of a multipart object (HEAD with PartNumber=1, conditional on ``etag``)."""
    h = client.head_object(Bucket=bucket, Key=key, PartNumber=1, IfMatch=f'"{etag}"', **kw)
    return int(h["ContentLength"])


def candidate_part_sizes(size: int, parts: int) -> list[int]:
    """Part sizes (whole MiB) that split ``size`` bytes into exactly ``parts`` parts."""
    out = []
    lo = -(-size // parts)  # ceil
    hi = size // (parts - 1) if parts > 1 else size
    mib = -(-lo // MIB) * MIB
    while mib <= hi and len(out) < 4:
        if -(-size // mib) == parts:
            out.append(mib)
        mib += MIB
    if not out and parts > 1:
        out.append(lo)
    return out



def err_code(exc: BaseException) -> str:
    if _bce is not None and isinstance(exc, _bce.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_precondition_failed(exc: BaseException) -> bool:
    if _bce is not None and isinstance(exc, _bce.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return err_code(exc) in {"PreconditionFailed", "412"} or status == 412
    return False


# ------------------------------------------------------------------------ sides

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

    kind = "s3"

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

    def identity(self) -> tuple[str, str]:
        return (self.settings.endpoint or f"aws:{self.settings.region}", self.settings.access_key or "")

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


class LocalSide:
    kind = "local"

    def __init__(self, root: str, option: str, file_mode: int = 0o600, dir_mode: int = 0o700):
        if not os.path.isabs(root):
            raise ConfigError(f"{option}: local directory '{root}' must be an absolute path", option)
        self.root = os.path.normpath(root)
        self.option = option
        self.file_mode = file_mode
        self.dir_mode = dir_mode

    def path(self, rel: str) -> str:
        """The file for key ``rel`` (a folder marker 'a/b/' maps to the directory a/b).

        Keys that name no file of their own are refused: a leading '/', an empty, '.' or '..' segment
        ('a//b', 'a/./b', 'a/../b', '../x' - escaping the directory or aliasing another key), a NUL.
        """
        segments = (rel[:-1] if rel.endswith("/") else rel).split("/")
        if "\x00" in rel or any(seg in ("", ".", "..") for seg in segments):
            why = "escapes" if ".." in segments else "is not a plain path below"
            raise ConfigError(f"{self.option}: key '{rel}' {why} the directory {self.root} (a leading '/' or an "
                              "empty, '.' or '..' segment); not written there", self.option)
        norm = os.path.normpath(os.path.join(self.root, rel))
        if not norm.startswith(os.path.join(self.root, "")):
            raise ConfigError(f"{self.option}: key '{rel}' escapes the directory {self.root}", self.option)
        # a symbolic link inside the directory (planted, or an old layout) must not lead a write elsewhere
        parent, real_root = os.path.realpath(os.path.dirname(norm)), os.path.realpath(self.root)
        if parent != real_root and not parent.startswith(os.path.join(real_root, "")):
            raise ConfigError(f"{self.option}: key '{rel}' leads through a symbolic link out of the directory "
                              f"{self.root} (to {parent}); not written there", self.option)
        return norm

    def uri(self, rel: str) -> str:
        return self.path(rel)

    def describe(self) -> str:
        return self.root

    def identity(self) -> tuple[str, str]:
        return ("local", self.root)

    def check(self, create: bool = False) -> None:
        if os.path.isdir(self.root):
            return
        if create:
            os.makedirs(self.root, mode=self.dir_mode, exist_ok=True)
            return
        raise NotFound(f"{self.option}: directory {self.root} does not exist", self.option)

    def list(self) -> Iterator[Entry]:
        """Files under root, streamed (no full listing held)."""
        if not os.path.isdir(self.root):
            return
        yield from self._walk(self.root, "")

    def _walk(self, path: str, rel: str) -> Iterator[Entry]:
        try:
            entries = list(os.scandir(path))
        except OSError as exc:
            raise StorageError(f"{self.option}: cannot read directory {path}: {exc.strerror}", self.option) from None
        items = []
        for e in entries:
            name = e.name
            if name.endswith(".lifeboat-partial"):
                continue
            r = f"{rel}{name}"
            if e.is_dir(follow_symlinks=False):
                items.append((r + "/", r, e, True))
            elif e.is_file(follow_symlinks=False):
                items.append((r, r, e, False))
        items.sort(key=lambda t: t[0])
        for _, r, e, is_dir in items:
            if is_dir:
                yield from self._walk(e.path, r + "/")
            else:
                st = e.stat(follow_symlinks=False)
                yield Entry(r, st.st_size, None, _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.UTC))

    def delete(self, rel: str) -> None:
        try:
            os.unlink(self.path(rel))
        except FileNotFoundError:
            pass


Side = S3Side | LocalSide


def open_side(location: str, settings: S3Settings | None, option: str, **local_kw: Any) -> Side:
    if location.startswith("s3://"):
        return S3Side(location, settings or S3Settings(), option)
    if "://" in location:
        raise ConfigError(f"{option}: unsupported scheme in '{location}' (use s3://bucket/prefix or an absolute "
                          "directory)", option)
    return LocalSide(location, option, **local_kw)


def dump_entry(e: "Entry") -> list:
    return [e.key, e.size, e.etag, e.last_modified.isoformat() if e.last_modified else None]


def load_entry(v: list) -> "Entry":
    return Entry(v[0], v[1], v[2], _dt.datetime.fromisoformat(v[3]) if v[3] else None)


def entry_key(e: "Entry") -> str:
    return e.key


def sorted_entries(entries: Iterable["Entry"], tmp: str, name: str, chunk: int) -> Iterator["Entry"]:
    return external_sort(entries, entry_key, dump_entry, load_entry, tmp, name, chunk)


def local_etag(path: str, size: int, like: str | None, part_size: int = 16 * MIB,
               multipart_threshold: int = 64 * MIB, part_size_of: Callable[[], int] | None = None) -> str:
    """This file's ETag computed the way ``like`` was (single PUT or N parts).

    ``like`` None: the ETag this module's own upload would produce. For a multipart ``like``, whole-MiB
    part sizes are tried first; when none gives ``like``, ``part_size_of`` (the object's real first part
    size, one HEAD) covers other tools' part sizes (e.g. 6,000,000 bytes).
    """
    if like and etag_is_multipart(like):
        parts = int(like.rsplit("-", 1)[1])
        tried = candidate_part_sizes(size, parts)
        for ps in tried:
            got = md5_etag_of_file(path, size, ps)
            if got == like:
                return got
        if part_size_of is not None:
            try:
                ps = part_size_of()
            except Exception:  # noqa: BLE001 - no part information: the file counts as different
                return ""
            if ps > 0 and ps not in tried and -(-size // ps) == parts:
                got = md5_etag_of_file(path, size, ps)
                if got == like:
                    return got
        return ""
    if like is not None:
        return md5_etag_of_file(path, size, None)
    return md5_etag_of_file(path, size, part_size if size > multipart_threshold else None)


def content_args(resp: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name in ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl"):
        if resp.get(name):
            out[name] = resp[name]
    return out


def abort_upload(side: S3Side, rel: str, upload_id: str) -> None:
    try:
        side.client.abort_multipart_upload(Bucket=side.bucket, Key=side.full(rel), UploadId=upload_id)
    except Exception:  # noqa: BLE001 - best effort; lifecycle rules abort the rest
        pass


def open_partial(partial: str, mode: int) -> int:
    """A fresh temporary file (never an existing one, never through a link planted at its name)."""
    unlink_quiet(partial)
    return os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)


def marker_dir_exists(side: LocalSide, key: str) -> bool:
    try:
        return os.path.isdir(side.path(key))
    except ConfigError:
        return False


def make_marker_dir(side: LocalSide, key: str) -> None:
    """A folder marker 'a/b/' in a directory: the (possibly empty) directory a/b."""
    path = side.path(key)
    try:
        makedirs(path, side.dir_mode)
    except OSError as exc:
        raise local_write_error(side, key, path, exc) from None


def local_write_error(side: LocalSide, key: str, path: str, exc: OSError) -> StorageError:
    """A clear message for a failed write of ``key``, naming the file/folder clash when that is the cause."""
    msg = f"{side.option}: write {path}: {exc.strerror or exc}"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        msg += (f" (key '{key}': a name that is both a file and a folder prefix in the bucket, such as 'a' and "
                "'a/b', cannot be represented in a directory; one of them was not written)")
    return StorageError(msg, side.option)


def makedirs(path: str, mode: int) -> None:
    """os.makedirs giving ``mode`` to every directory it creates (os.makedirs gives the intermediate
    ones the umask's default, typically 0755)."""
    if not path or os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        makedirs(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    os.chmod(path, mode)  # not narrowed by the umask


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):  # not there (a file where a parent directory should be)
        pass
