"""The store interface every part of the engine uses: what a store is (``Storage``), what it lists (``Entry``), a
streaming ``Writer``, open uploads, and the arithmetic of S3 ETags computed from content.

Implementations: ``storage_s3.S3Storage`` (an S3 prefix), ``storage_local.LocalStorage`` (a directory),
``memstore.MemoryStorage`` (in memory, for unit tests and dry runs); ``storage.open_storage`` opens one by its
location. Keys are relative to the store's root and always use '/'.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ansible.module_utils.lifeboat.errors import ConfigError, LifeboatError, NotFound
from ansible.module_utils.lifeboat.extsort import external_sort

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
#: metadata a streamed copy writes: the source object's ETag (the copy's own differs with other part sizes)
SOURCE_ETAG_META = "lifeboat-source-etag"


@dataclass(frozen=True)
class Entry:
    """One stored object of any store, and one file of either side of a transfer (sides.py, s3sync): the one
    listing type of the engine."""

    key: str                  # relative to the store's root, '/' separated
    size: int
    etag: str | None = None   # S3 ETag without quotes; None for local files
    last_modified: _dt.datetime | None = None


#: the older name of Entry (storage listings)
ObjectInfo = Entry


@dataclass(frozen=True)
class Version:
    """One version (or delete marker) of an object in a versioned store."""

    key: str                  # relative to the store's root
    version_id: str
    last_modified: float      # epoch seconds
    is_latest: bool
    delete_marker: bool
    size: int = 0
    etag: str | None = None
    rank: int = 0             # position in the server's listing (newest first within a key): breaks LastModified ties


def dump_version(v: Version) -> list:
    return [v.key, v.version_id, v.last_modified, v.is_latest, v.delete_marker, v.size, v.etag, v.rank]


def load_version(x: list) -> Version:
    return Version(*x)


@dataclass(frozen=True)
class OpenUpload:
    """An upload a writer began and never committed: an S3 multipart upload (``upload_id``) or a local
    partial file (``upload_id`` None; storage_local)."""

    key: str            # relative to the storage root (for a local one, the partial file itself)
    upload_id: str | None = None
    initiated: _dt.datetime | None = None


class Writer:
    """A streaming sink. ``close()`` commits, ``abort()`` discards."""

    bytes_written: int = 0

    def keep_mtime(self, when: float) -> None:
        """Give the committed object this modification time (epoch seconds): a directory's file takes it (a
        mirror keeps the source's times); a bucket sets its own."""

    def write(self, data: bytes) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Storage:
    """Common interface; see S3Storage, LocalStorage and MemoryStorage."""

    url: str
    #: the module option this store was given as: its errors start with it
    option: str = "destination"
    #: a directory: a folder marker is a directory, a name cannot be both a file and a folder prefix, and a deleted
    #: file is gone (no versions)
    directories: bool = False
    #: its listing carries each object's ETag (a directory's does not: it is computed from content when needed)
    lists_etags: bool = True

    def describe(self) -> str:
        """The store for a message (an S3 store adds its endpoint)."""
        return self.url

    def identity(self) -> tuple[str, str]:
        """Two stores with the same identity can copy between themselves server-side."""
        return (self.url, "")

    def uri(self, key: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, write: bool = False) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def versioning(self) -> str:
        """'Enabled', 'Suspended' or '' (a store without versions)."""
        return ""

    def open_writer(self, key: str, content_type: str = "application/octet-stream",
                    metadata: dict[str, str] | None = None, exclusive: bool = False,
                    unchanged: Entry | None = None) -> Writer:  # pragma: no cover - interface
        """A writer of ``key``. ``exclusive``: commits only if the object does not exist (``AlreadyExists``);
        ``unchanged``: only if the object is still the one listed (``ConditionFailed``); nothing replaced."""
        raise NotImplementedError

    def open_reader(self, key: str) -> BinaryIO:  # pragma: no cover - interface
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[Entry]:  # pragma: no cover
        raise NotImplementedError

    def stat(self, key: str) -> Entry:  # pragma: no cover - interface
        raise NotImplementedError

    def delete(self, key: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def open_uploads(self) -> list[OpenUpload]:  # pragma: no cover - interface
        raise NotImplementedError

    def abort_upload(self, upload: OpenUpload) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    # versions (a versioned bucket); a store without them says so
    kind_name = "a store without versions"

    def no_versions(self, what: str) -> ConfigError:
        return ConfigError(f"{self.option}: {what}: not supported by {self.kind_name} ({self.url}): it keeps no "
                           "versions; use a versioned bucket", self.option)

    def list_versions(self, prefix: str = "") -> Iterator[Version]:
        """Every version and delete marker under ``prefix`` (no order promised: sort them)."""
        raise self.no_versions("list versions")

    def newest_version(self, key: str) -> Version | None:
        """The newest version of exactly ``key`` that is not a delete marker; None when there is none."""
        raise self.no_versions(f"versions of {key}")

    def open_version(self, v: Version) -> BinaryIO:
        raise self.no_versions(f"read {v.key} version {v.version_id}")

    def copy_version(self, source: "Storage", v: Version, unchanged: Entry | None = None,
                     conditional: bool = True) -> None:
        """Make ``v.key`` hold version ``v`` of ``source`` (the conditional copy). ``conditional``: only if the
        object here is still ``unchanged`` (the entry that was compared), or, ``unchanged`` None, still does not
        exist; otherwise ``ConditionFailed`` / ``AlreadyExists`` and nothing is replaced. A folder marker into a
        directory store is its directory. Streamed here; S3 copies server-side where it can."""
        if self.directories and is_marker(v.key, v.size):
            self.make_marker(v.key)
            return
        with source.open_version(v) as fin, self.open_writer(
                v.key, exclusive=conditional and unchanged is None,
                unchanged=unchanged if conditional else None) as w:
            for chunk in iter(lambda: fin.read(MIB), b""):
                w.write(chunk)
            w.keep_mtime(v.last_modified)

    def make_marker(self, key: str) -> None:
        """A folder marker: an empty object (a directory store makes the directory)."""
        self.put_bytes(key, b"")

    def has_marker(self, key: str) -> bool:
        return self.exists(key)

    def entries(self, markers: bool = False) -> Iterator[Entry]:
        """Everything under the root, as a transfer sees it: 0-byte "folder" placeholders (keys ending in '/') only
        with ``markers``."""
        return (e for e in self.list() if markers or not is_marker(e.key, e.size))

    def metadata(self, key: str) -> dict[str, str]:
        """The user metadata stored with an object ({} for a store that keeps none)."""
        return {}

    def first_part_size(self, entry: Entry) -> int:
        """The size of part 1 of a multipart object (stores with parts only)."""
        raise NotImplementedError(f"{self.url} stores no parts")

    # helpers built on the primitives
    def get_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object stored at ``key``; None when it is missing, unreadable or not an object."""
        try:
            data = json.loads(self.get_bytes(key))
        except (ValueError, LifeboatError):
            return None
        return data if isinstance(data, dict) else None

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
            return True
        except NotFound:
            return False

    def get_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as fh:
            return fh.read()

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream",
                  exclusive: bool = False) -> None:
        writer = self.open_writer(key, content_type=content_type, exclusive=exclusive)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.close()


# ------------------------------------------------------------------- listings

def is_marker(key: str, size: int) -> bool:
    """A 0-byte "folder" placeholder (key ending in '/'), as consoles and other tools create them."""
    return size == 0 and key.endswith("/")


def dump_entry(e: Entry) -> list:
    return [e.key, e.size, e.etag, e.last_modified.isoformat() if e.last_modified else None]


def load_entry(v: list) -> Entry:
    return Entry(v[0], v[1], v[2], _dt.datetime.fromisoformat(v[3]) if v[3] else None)


def entry_key(e: Entry) -> str:
    return e.key


def sorted_entries(entries: Iterable[Entry], tmp: str, name: str, chunk: int) -> Iterator[Entry]:
    """``entries`` in key order, sorted externally (chunks of ``chunk`` spilled under ``tmp``)."""
    return external_sort(entries, entry_key, dump_entry, load_entry, tmp, name, chunk)


# ---------------------------------------------------------------------- ETags

def etag_is_multipart(etag: str | None) -> bool:
    return bool(etag) and "-" in (etag or "")


def md5_etag(fh: BinaryIO, size: int, part_size: int | None) -> str:
    """The ETag S3 gives the content read from ``fh`` uploaded in one PUT (part_size None) or in parts."""
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


def md5_etag_of_file(path: str, size: int, part_size: int | None) -> str:
    with open(path, "rb") as fh:
        return md5_etag(fh, size, part_size)


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


def etag_like(opener: Callable[[], BinaryIO], size: int, like: str | None, part_size: int = 16 * MIB,
              multipart_threshold: int = 64 * MIB, part_size_of: Callable[[], int] | None = None) -> str:
    """The ETag of the content ``opener()`` reads, computed the way ``like`` was (single PUT or N parts).

    ``like`` None: the ETag Lifeboat's own upload would produce. For a multipart ``like``, whole-MiB part sizes
    are tried first; when none gives ``like``, ``part_size_of`` (the object's real first part size, one HEAD)
    covers other tools' part sizes (e.g. 6,000,000 bytes). '' when the content cannot be ``like``.
    """
    def of(ps: int | None) -> str:
        with opener() as fh:
            return md5_etag(fh, size, ps)

    if like and etag_is_multipart(like):
        parts = int(like.rsplit("-", 1)[1])
        tried = candidate_part_sizes(size, parts)
        for ps in tried:
            if of(ps) == like:
                return like
        if part_size_of is not None:
            try:
                ps = part_size_of()
            except Exception:  # noqa: BLE001 - no part information: the content counts as different
                return ""
            if ps > 0 and ps not in tried and -(-size // ps) == parts and of(ps) == like:
                return like
        return ""
    if like is not None:
        return of(None)
    return of(part_size if size > multipart_threshold else None)
