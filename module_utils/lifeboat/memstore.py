"""An in-memory store: the Storage interface without a server or a directory, for the unit tests of the logic
built on stores (selection, retention, catalog records, sweeps) and for dry runs.

It behaves like S3Storage where the interface leaves room: ETags are the MD5 of the content (what S3 gives a
single PUT), a writer's object appears only when it is closed, a writer not yet closed is an open upload, an
``exclusive`` writer never replaces an object (``AlreadyExists``), nor an ``unchanged`` one that changed
(``ConditionFailed``), keys are plain strings (no directories, so 'a' and 'a/b' may both exist). ``versioned=True``
keeps every write and delete as a versioned bucket does (versions, delete markers, newest first), so the restores
from a versioned store run on it too. Thread-safe. ``fail`` maps a key prefix to an exception raised by every
operation on such keys (fault injection for error paths, not a stand-in for a server's behaviour).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import itertools
import threading
from collections.abc import Iterator
from typing import BinaryIO

from ansible.module_utils.lifeboat.errors import AlreadyExists, ConditionFailed, ConfigError, NotFound, StorageError
from ansible.module_utils.lifeboat.storage_api import Entry, OpenUpload, Storage, Version, Writer


class _Object:
    __slots__ = ("data", "etag", "when", "content_type", "metadata")

    def __init__(self, data: bytes, when: _dt.datetime, content_type: str, metadata: dict[str, str]):
        self.data = data
        self.etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        self.when = when
        self.content_type = content_type
        self.metadata = dict(metadata)


class _MemoryWriter(Writer):
    def __init__(self, store: "MemoryStorage", key: str, content_type: str, metadata: dict[str, str] | None,
                 exclusive: bool, unchanged: Entry | None = None):
        self._store, self._key, self._exclusive, self._unchanged = store, key, exclusive, unchanged
        self._content_type, self._metadata = content_type, metadata or {}
        self._buf = bytearray()
        self._closed = False
        self.bytes_written = 0
        self.upload = OpenUpload(key, f"mem-{next(store._ids)}", store.now())
        with store._lock:
            store._uploads[self.upload.upload_id] = self.upload  # type: ignore[index]

    def write(self, data: bytes) -> int:
        if self._closed:
            raise StorageError(f"upload {self._store.uri(self._key)}: write after close")
        self._buf += data
        self.bytes_written += len(data)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        s = self._store
        with s._lock:
            if self.upload.upload_id not in s._uploads:
                self._closed = True
                raise StorageError(f"upload {s.uri(self._key)}: the upload was aborted (NoSuchUpload)")
            if self._exclusive and self._key in s._objects:
                self._closed = True
                self._buf = bytearray()
                s._uploads.pop(self.upload.upload_id, None)  # type: ignore[arg-type]
                raise AlreadyExists(f"upload {s.uri(self._key)}: the object already exists (another run wrote it "
                                    "first); nothing was replaced")
            if self._unchanged is not None:
                now = s._objects.get(self._key)
                if now is None or now.etag != self._unchanged.etag:
                    self._closed = True
                    self._buf = bytearray()
                    s._uploads.pop(self.upload.upload_id, None)  # type: ignore[arg-type]
                    raise ConditionFailed(f"upload {s.uri(self._key)}: the object changed since it was compared "
                                          "(another writer); nothing was replaced")
            s._objects[self._key] = obj = _Object(bytes(self._buf), s.now(), self._content_type, self._metadata)
            if s.versioned:
                s._history.setdefault(self._key, []).append((f"v{next(s._ids)}", obj, obj.when))
            s._uploads.pop(self.upload.upload_id, None)  # type: ignore[arg-type]
        self._closed = True

    def abort(self) -> None:
        self._closed = True
        self._buf = bytearray()
        with self._store._lock:
            self._store._uploads.pop(self.upload.upload_id, None)  # type: ignore[arg-type]


class MemoryStorage(Storage):
    kind_name = "the in-memory store"

    def __init__(self, name: str = "memory", clock: "_Clock | None" = None, versioned: bool = False):
        self.url = f"mem://{name}"
        self._objects: dict[str, _Object] = {}
        #: versioned: every write and delete of a key, oldest first: (version id, object or None for a delete marker,
        #: when)
        self.versioned = versioned
        self._history: dict[str, list[tuple[str, _Object | None, _dt.datetime]]] = {}
        self._uploads: dict[str, OpenUpload] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.clock = clock
        self.fail: dict[str, BaseException] = {}

    def now(self) -> _dt.datetime:
        return self.clock() if self.clock is not None else _dt.datetime.now(_dt.UTC)

    def _check_key(self, key: str, what: str) -> None:
        if not key or key.startswith("/") or any(seg in (".", "..") for seg in key.split("/")):
            raise ConfigError(f"key '{key}' is not a plain key below {self.url} ({what})")
        for prefix, exc in self.fail.items():
            if key.startswith(prefix):
                raise exc

    def uri(self, key: str) -> str:
        return f"{self.url}/{key}"

    def check(self, write: bool = False) -> None:
        for prefix, exc in self.fail.items():
            if prefix == "":
                raise exc

    def open_writer(self, key: str, content_type: str = "application/octet-stream",
                    metadata: dict[str, str] | None = None, exclusive: bool = False,
                    unchanged: Entry | None = None) -> Writer:
        self._check_key(key, "write")
        return _MemoryWriter(self, key, content_type, metadata, exclusive, unchanged)

    def open_reader(self, key: str) -> BinaryIO:
        self._check_key(key, "read")
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            raise NotFound(f"read {self.uri(key)}: not found (NoSuchKey)")
        return io.BytesIO(obj.data)

    def list(self, prefix: str = "") -> Iterator[Entry]:
        with self._lock:
            items = sorted((k, o) for k, o in self._objects.items() if k.startswith(prefix))
        for key, obj in items:
            yield Entry(key, len(obj.data), etag=obj.etag, last_modified=obj.when)

    def stat(self, key: str) -> Entry:
        self._check_key(key, "stat")
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            raise NotFound(f"stat {self.uri(key)}: not found (NoSuchKey)")
        return Entry(key, len(obj.data), etag=obj.etag, last_modified=obj.when)

    def metadata(self, key: str) -> dict[str, str]:
        self._check_key(key, "stat")
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            raise NotFound(f"stat {self.uri(key)}: not found (NoSuchKey)")
        return dict(obj.metadata)

    def delete(self, key: str) -> None:
        self._check_key(key, "delete")
        with self._lock:
            if self._objects.pop(key, None) is not None and self.versioned:
                self._history[key].append((f"v{next(self._ids)}", None, self.now()))

    # -- versions (versioned=True), as a versioned bucket keeps them
    def versioning(self) -> str:
        return "Enabled" if self.versioned else ""

    def list_versions(self, prefix: str = "") -> Iterator[Version]:
        if not self.versioned:
            raise self.no_versions("list versions")
        with self._lock:
            items = sorted((k, list(h)) for k, h in self._history.items() if k.startswith(prefix))
        for key, history in items:
            for rank, (vid, obj, when) in enumerate(reversed(history)):   # newest first, as S3 lists them
                yield Version(key, vid, (obj.when if obj else when).timestamp(), rank == 0, obj is None,
                              len(obj.data) if obj else 0, obj.etag if obj else None, rank)

    def newest_version(self, key: str) -> Version | None:
        return next((v for v in self.list_versions(key) if v.key == key and not v.delete_marker), None)

    def open_version(self, v: Version) -> BinaryIO:
        if not self.versioned:
            raise self.no_versions(f"read {v.key} version {v.version_id}")
        with self._lock:
            obj = next((o for vid, o, _w in self._history.get(v.key, []) if vid == v.version_id), None)
        if obj is None:
            raise NotFound(f"read {self.uri(v.key)}?versionId={v.version_id}: not found (NoSuchVersion)")
        return io.BytesIO(obj.data)

    def open_uploads(self) -> list[OpenUpload]:
        with self._lock:
            return sorted(self._uploads.values(), key=lambda u: (u.key, u.upload_id or ""))

    def abort_upload(self, upload: OpenUpload) -> None:
        with self._lock:
            self._uploads.pop(upload.upload_id or "", None)

    def touch(self, key: str, when: _dt.datetime) -> None:
        """Set an object's last-modified time (tests of age-based rules)."""
        with self._lock:
            self._objects[key].when = when


_Clock = type(lambda: None)
