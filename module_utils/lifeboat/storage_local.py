"""A local directory as a store (``LocalStorage``): backup destinations, archive stores, and either side of a
bucket sync or a point-in-time restore.

One set of rules for every use:

* **Keys.** A key maps to the file of the same path below the root; a folder marker 'a/b/' to the directory
  a/b. Keys that name no file of their own are refused by name: a leading '/', an empty, '.' or '..' segment
  ('a//b', 'a/./b', '../x'), a NUL, and a key whose parent leads through a symbolic link out of the root.
* **Writes.** A writer writes ``<name>.<unique>.lifeboat-partial`` (created exclusively, never through a link
  planted at its name, mode ``file_mode``) and renames it onto the name when it commits, after an fsync; an
  ``exclusive`` writer hard-links it instead, which fails when the name exists (``AlreadyExists``). Every
  directory it creates gets ``dir_mode``. ``abort()`` removes the partial file. Two writers of one key never
  share a partial file. A writer killed mid-write leaves its partial file: the backup's sweep (leftovers) and,
  for a sync or restore target, ``remove_stale_partials`` after the next run's listing remove it when a day old.
* **Listing.** One walk, in key order (byte order, as S3 lists): regular files only (a symbolic link is not
  followed), partial files never listed; ``open_uploads()`` lists the partial files instead (a writer that was
  killed or is still writing).
"""
from __future__ import annotations

import datetime as _dt
import errno
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from ansible.module_utils.lifeboat.errors import AlreadyExists, ConditionFailed, ConfigError, NotFound, StorageError
from ansible.module_utils.lifeboat.storage_api import Entry, OpenUpload, Storage, Writer

#: the suffix of a writer's temporary file: Lifeboat's own, so a user's file is never mistaken for one
PARTIAL_SUFFIX = ".lifeboat-partial"


def is_partial(name: str) -> bool:
    return name.endswith(PARTIAL_SUFFIX)


def makedirs(path: str, mode: int = 0o700) -> None:
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


def local_error(exc: OSError, what: str, option: str, key: str | None = None) -> StorageError:
    """A clear message for a failed file operation; for a write of ``key``, names the file/folder clash when
    that is the cause."""
    if exc.errno == errno.ENOSPC:
        why = "no space left on the local destination's filesystem (ENOSPC)"
    elif exc.errno == errno.EDQUOT:
        why = "disk quota exceeded on the local destination (EDQUOT)"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    elif exc.errno == errno.ENOENT:
        return NotFound(f"{option}: {what}: no such file or directory", option)
    else:
        why = exc.strerror or str(exc)
    if key is not None and exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        why += (f" (key '{key}': a name that is both a file and a folder prefix in the bucket, such as 'a' and "
                "'a/b', cannot be represented in a directory; one of them was not written)")
    return StorageError(f"{option}: {what}: {why}", option)


def _mtime(st: os.stat_result) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.UTC)


class _LocalWriter(Writer):
    def __init__(self, store: "LocalStorage", key: str, exclusive: bool = False, unchanged: Entry | None = None):
        self._store = store
        self._unchanged = unchanged
        self.key = key
        self.path = store.path(key)
        self._exclusive = exclusive
        self.partial = f"{self.path}.{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
        self.bytes_written = 0
        self._closed = False
        self._mtime: float | None = None
        try:
            makedirs(os.path.dirname(self.path), store.dir_mode)
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, store.file_mode)
        except OSError as exc:
            raise local_error(exc, f"write {self.path}", store.option, key) from None
        self._fh = os.fdopen(fd, "wb", buffering=1024 * 1024)

    def keep_mtime(self, when: float) -> None:
        self._mtime = when

    def write(self, data: bytes) -> int:
        try:
            self._fh.write(data)
        except OSError as exc:
            self.abort()
            raise local_error(exc, f"write {self.path}", self._store.option, self.key) from None
        self.bytes_written += len(data)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            os.fchmod(self._fh.fileno(), self._store.file_mode)  # not narrowed by the umask
            self._fh.close()
            if self._mtime is not None:
                os.utime(self.partial, (self._mtime, self._mtime))
            if self._unchanged is not None:
                self._check_unchanged()
            if self._exclusive:
                self._commit_exclusive()
            else:
                os.replace(self.partial, self.path)
        except OSError as exc:
            self.abort()
            raise local_error(exc, f"write {self.path}", self._store.option, self.key) from None
        self._closed = True

    def _commit_exclusive(self) -> None:
        """Hard-link the partial file to the name, which fails when the name exists. A filesystem without hard
        links (some network and FUSE mounts) gets a check and a rename instead: the run's lock is then the only
        guard against a writer that commits in between."""
        try:
            os.link(self.partial, self.path)  # fails with EEXIST instead of replacing
        except FileExistsError:
            self.abort()
            if os.path.isdir(self.path) and not os.path.islink(self.path):   # a folder of that name: a clash
                raise local_error(OSError(errno.EISDIR, os.strerror(errno.EISDIR)), f"write {self.path}",
                                  self._store.option, self.key) from None
            raise AlreadyExists(f"{self._store.option}: write {self.path}: the file already exists (another run "
                                "wrote it first); nothing was replaced", self._store.option) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            if os.path.lexists(self.path):
                self.abort()
                raise AlreadyExists(f"{self._store.option}: write {self.path}: the file already exists (another "
                                    "run wrote it first); nothing was replaced", self._store.option) from None
            os.replace(self.partial, self.path)
            return
        os.unlink(self.partial)

    def _check_unchanged(self) -> None:
        """The file is still the one listed (size and modification time; a directory has no compare-and-swap,
        so this narrows the window to the rename that follows)."""
        was = self._unchanged
        try:
            st = os.stat(self.path, follow_symlinks=False)
            now: tuple | None = (st.st_size, _mtime(st))
        except FileNotFoundError:
            now = None
        if was is not None and now != (was.size, was.last_modified):
            self.abort()
            raise ConditionFailed(f"{self._store.option}: write {self.path}: the file changed since it was compared "
                                  "(another writer); nothing was replaced; rerun to compare again",
                                  self._store.option)

    def abort(self) -> None:
        self._closed = True
        try:
            self._fh.close()
        except OSError:
            pass
        unlink_quiet(self.partial)


class LocalStorage(Storage):
    """A directory (see the module docstring). ``option`` names it in errors; ``file_mode``/``dir_mode`` are
    the modes of the files and directories it creates."""

    directories = True
    lists_etags = False
    kind_name = "a directory store"

    def __init__(self, root: str, option: str = "destination", file_mode: int = 0o600, dir_mode: int = 0o700):
        if not os.path.isabs(root):
            raise ConfigError(f"{option}: local directory '{root}' must be an absolute path", option)
        self.root = os.path.normpath(root)
        self.url = self.root
        self.option = option
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        #: partial files the last listing passed (key, entry): a killed writer's, or a live one's
        self.partials_seen: list[tuple[str, os.DirEntry]] = []

    def path(self, key: str) -> str:
        """The file for ``key`` (a folder marker 'a/b/' maps to the directory a/b); see the module docstring
        for the keys refused."""
        segments = (key[:-1] if key.endswith("/") else key).split("/")
        if "\x00" in key or any(seg in ("", ".", "..") for seg in segments):
            why = "escapes" if ".." in segments else "is not a plain path below"
            raise ConfigError(f"{self.option}: key '{key}' {why} the directory {self.root} (a leading '/' or an "
                              "empty, '.' or '..' segment); not written there", self.option)
        norm = os.path.normpath(os.path.join(self.root, key))
        if not norm.startswith(os.path.join(self.root, "")):
            raise ConfigError(f"{self.option}: key '{key}' escapes the directory {self.root}", self.option)
        # a symbolic link inside the directory (planted, or an old layout) must not lead a write elsewhere
        parent, real_root = os.path.realpath(os.path.dirname(norm)), os.path.realpath(self.root)
        if parent != real_root and not parent.startswith(os.path.join(real_root, "")):
            raise ConfigError(f"{self.option}: key '{key}' leads through a symbolic link out of the directory "
                              f"{self.root} (to {parent}); not written there", self.option)
        return norm

    def uri(self, key: str) -> str:
        return self.path(key)

    def identity(self) -> tuple[str, str]:
        return ("local", self.root)

    def check(self, write: bool = False) -> None:
        """The directory exists (created with ``dir_mode`` when ``write``) and, for a write, is writable."""
        if not os.path.isdir(self.root):
            if not write:
                raise NotFound(f"{self.option}: directory {self.root} does not exist", self.option)
            try:
                makedirs(self.root, self.dir_mode)
            except OSError as exc:
                raise local_error(exc, f"directory {self.root}", self.option) from None
        if write and not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.option}: directory {self.root} is not writable", self.option)

    def open_writer(self, key: str, content_type: str = "application/octet-stream",
                    metadata: dict[str, str] | None = None, exclusive: bool = False,
                    unchanged: Entry | None = None) -> Writer:
        return _LocalWriter(self, key, exclusive, unchanged)

    def open_reader(self, key: str) -> BinaryIO:
        path = self.path(key)
        try:
            return open(path, "rb")  # noqa: SIM115 - caller closes
        except OSError as exc:
            raise local_error(exc, f"read {path}", self.option) from None

    # -- the one walk
    def _walk(self, path: str, rel: str, prefix: str, partials: bool) -> Iterator[tuple[str, os.DirEntry]]:
        """(key, entry) of the regular files below ``path`` whose key starts with ``prefix``, in key order;
        partial files only (``partials``) or never. A directory removed meanwhile is skipped; one that cannot
        be read is an error (a listing that silently misses files would mislead retention and the sync)."""
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"{self.option}: cannot read directory {path}: {exc.strerror or exc}",
                               self.option) from None
        items = []
        for e in entries:
            r = rel + e.name
            try:
                if e.is_dir(follow_symlinks=False):
                    if prefix.startswith(r + "/") or (r + "/").startswith(prefix):
                        items.append((r + "/", e, True))
                elif e.is_file(follow_symlinks=False) and r.startswith(prefix):
                    if is_partial(e.name) == partials:
                        items.append((r, e, False))
                    elif not partials:
                        self.partials_seen.append((r, e))
            except OSError:
                continue  # removed meanwhile
        items.sort(key=lambda t: t[0])
        for r, e, is_dir in items:
            if is_dir:
                yield from self._walk(e.path, r, prefix, partials)
            else:
                yield r, e

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """The files under the root whose key starts with ``prefix``, streamed, in key order. The partial files
        passed on the way are kept in ``partials_seen`` (remove_stale_partials)."""
        self.partials_seen = []
        for key, e in self._walk(self.root, "", prefix, partials=False):
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile (retention, a concurrent sync)
            yield Entry(key, st.st_size, None, _mtime(st))

    def stat(self, key: str) -> Entry:
        path = self.path(key)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise local_error(exc, f"stat {path}", self.option) from None
        return Entry(key, st.st_size, last_modified=_mtime(st))

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise local_error(exc, f"delete {path}", self.option) from None

    def open_uploads(self) -> list[OpenUpload]:
        """The partial files under the root (a writer that was killed, or is still writing)."""
        out: list[OpenUpload] = []
        for key, e in self._walk(self.root, "", "", partials=True):
            try:
                out.append(OpenUpload(key, None, _mtime(e.stat(follow_symlinks=False))))
            except FileNotFoundError:
                continue  # committed or removed meanwhile
        return out

    def abort_upload(self, upload: OpenUpload) -> None:
        self.delete(upload.key)

    def remove_stale_partials(self, max_age_s: float = 86400.0) -> list[str]:
        """Remove the partial files the last listing passed that are older than ``max_age_s`` (writers killed in
        an earlier run: a live writer's file is younger); the keys removed. Costs no walk of its own."""
        removed = []
        now = time.time()
        for key, e in self.partials_seen:
            try:
                if now - e.stat(follow_symlinks=False).st_mtime >= max_age_s:
                    self.delete(key)
                    removed.append(key)
            except (OSError, StorageError):
                continue  # committed, removed or unreadable meanwhile: left for the next run
        self.partials_seen = []
        return removed

    # -- folder markers (a directory holds them as directories)
    def has_marker(self, key: str) -> bool:
        try:
            return os.path.isdir(self.path(key))
        except ConfigError:
            return False

    def make_marker(self, key: str) -> None:
        """A folder marker 'a/b/': the (possibly empty) directory a/b."""
        path = self.path(key)
        try:
            makedirs(path, self.dir_mode)
        except OSError as exc:
            raise local_error(exc, f"write {path}", self.option, key) from None
