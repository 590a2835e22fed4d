"""Directory and configuration-file archives: tar -> compress -> encrypt -> store, with a manifest.

An archive is a POSIX (pax) tar stream made by Python's tarfile (owners,
numeric ids, modes and mtimes kept), compressed and optionally encrypted by the
shared pipeline (pipeline.run_backup_stream + crypto), streamed to S3 or a
local directory. Layout, relative to the storage root::

    <name>/<name>-<YYYYmmddTHHMMSSZ>/<name>.tar.zst.gpg
    <name>/<name>-<YYYYmmddTHHMMSSZ>/manifest.json      (written last: no manifest = incomplete)

Restore by hand with stock tools::

    aws s3 cp s3://bucket/prefix/<name>/<id>/<name>.tar.zst.gpg - | gpg -d | zstd -d | \
        tar -x --numeric-owner -p -C /restore/dir

Idempotent: the manifest records a signature of the tree (paths, sizes, mtimes,
modes, owners); when the newest archive has the same signature nothing is
written (``changed: false``).
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import json
import os
import re
import stat
import copy
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.crypto import (
    DecryptionSpec,
    EncryptionSpec,
    prepare_decryptor,
    prepare_encryptor,
)
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    LifeboatError,
    NotFound,
    RestoreError,
    StorageError,
)
from ansible.module_utils.lifeboat.pipeline import Compression, open_restore_stream, run_backup_stream
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import Storage, open_storage, stock_fetch_command
from ansible.module_utils.lifeboat.storage_local import makedirs

SCHEMA = mf.ARCHIVE_SCHEMA
MANIFEST = "manifest.json"
STAMP = "%Y%m%dT%H%M%SZ"
TOOL = "lifeboat-archive"


@dataclass
class ArchiveSpec:
    name: str
    kind: str = "directory"                       # directory | files
    path: str | None = None                       # kind=directory: the directory archived
    files: list[str] = field(default_factory=list)  # kind=files: absolute paths
    exclude: list[str] = field(default_factory=list)
    compression: str = "zstd"
    compression_level: int | None = None
    encryption: EncryptionSpec = field(default_factory=EncryptionSpec)


@dataclass
class Member:
    path: str         # absolute path on this host
    arcname: str      # name inside the archive
    st: os.stat_result


def _check_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "._-" for c in name) or name.startswith("."):
        raise ConfigError(f"name: '{name}' must be letters, digits, '.', '_' or '-'", "name")
    return name


def members(spec: ArchiveSpec) -> Iterator[Member]:
    """What goes into the archive, in a stable order (directories before their contents)."""
    if spec.kind == "directory":
        if not spec.path or not os.path.isabs(spec.path):
            raise ConfigError(f"path: '{spec.path}' must be an absolute directory", "path")
        root = os.path.normpath(spec.path)
        if not os.path.isdir(root):
            raise NotFound(f"path: directory {root} does not exist", "path")
        base = os.path.basename(root) or "root"
        yield Member(root, base, os.lstat(root))
        # depth first, each directory's contents right after it (the order GNU tar writes and
        # expects: it applies a directory's mtime when the archive leaves that directory)
        yield from _walk(root, "", base, spec.exclude)
    else:
        if not spec.files:
            raise ConfigError("files: list at least one file to back up", "files")
        for path in sorted(set(spec.files)):
            if not os.path.isabs(path):
                raise ConfigError(f"files: '{path}' must be an absolute path", "files")
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                raise NotFound(f"files: {path} does not exist", "files") from None
            yield Member(path, path.lstrip("/"), st)


def _walk(path: str, rel: str, base: str, exclude: list[str]) -> Iterator[Member]:
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return  # removed while the tree was walked (a live directory): nothing to keep
    except OSError as exc:
        raise StorageError(f"path: cannot read directory {path}: {exc.strerror}", "path") from None
    for name in names:
        r = f"{rel}{name}"
        if _excluded(r, exclude):
            continue
        full = os.path.join(path, name)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue  # removed while the tree was walked
        yield Member(full, f"{base}/{r}", st)
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(full, r + "/", base, exclude)


def _excluded(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(os.path.basename(rel), p) for p in patterns)


def tree_signature(spec: ArchiveSpec) -> tuple[str, int, int]:
    """(sha256 of the tree's metadata, file count, bytes): stat only, no content read."""
    h = hashlib.sha256()
    count = size = 0
    for m in members(spec):
        st = m.st
        h.update(json.dumps([m.arcname, stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                             st.st_size if stat.S_ISREG(st.st_mode) else 0, int(st.st_mtime_ns)]).encode())
        h.update(b"\n")
        if stat.S_ISREG(st.st_mode):
            count += 1
            size += st.st_size
    return h.hexdigest(), count, size


class _TarSource:
    """A readable producing the tar stream, written by a thread into a pipe."""

    def __init__(self, spec: ArchiveSpec):
        self.spec = spec
        self.files = 0
        self.bytes = 0
        self.error: BaseException | None = None
        rfd, wfd = os.pipe()
        self._r = os.fdopen(rfd, "rb", buffering=0)
        self._w = os.fdopen(wfd, "wb", buffering=1024 * 1024)
        self._thread = threading.Thread(target=self._run, name="lifeboat-tar", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with tarfile.open(fileobj=self._w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for m in members(self.spec):
                    try:
                        info = tar.gettarinfo(m.path, arcname=m.arcname)
                        if info.isreg():
                            with open(m.path, "rb") as fh:
                                tar.addfile(info, fh)
                            self.files += 1
                            self.bytes += info.size
                        elif info.isdir() or info.issym() or info.islnk():
                            tar.addfile(info)
                        # sockets, fifos and devices are not application data: skipped
                    except FileNotFoundError:
                        continue  # removed between the walk and its read (a live directory): skipped
                    except OSError as exc:
                        # tarfile's own "unexpected end of data" (a file shrank while read) names no file
                        raise OSError(exc.errno, exc.strerror or f"{exc} (the file shrank while it was read)",
                                      m.path) from None
        except BaseException as exc:  # noqa: BLE001 - reported by read()/close()
            self.error = exc
        finally:
            try:
                self._w.close()
            except OSError:
                pass

    def fileno(self) -> int:
        return self._r.fileno()

    def read(self, n: int = -1) -> bytes:
        data = self._r.read(n) if n >= 0 else self._r.readall()
        if not data:
            self._thread.join()
            if self.error is not None:
                err = self.error
                if isinstance(err, LifeboatError):
                    raise err
                if isinstance(err, OSError):
                    raise StorageError(f"archive '{self.spec.name}': cannot read {err.filename}: "
                                       f"{err.strerror}") from None
                raise StorageError(f"archive '{self.spec.name}': {err}") from None
        return data

    def close(self) -> None:
        try:
            self._r.close()
        except OSError:
            pass
        self._thread.join(timeout=30)


def _manifests(storage: Storage, name: str) -> list[str]:
    keys = [o.key for o in storage.list(f"{name}/") if o.key.endswith("/" + MANIFEST)]
    return sorted(keys, key=_id_order)


def _id_order(key: str) -> tuple[str, int]:
    """Oldest first: by stamp, then by the same-second suffix (``-2`` sorts after no suffix)."""
    archive_id = key.split("/")[-2]
    m = re.fullmatch(r"(.*-\d{8}T\d{6}Z)-(\d+)", archive_id)
    return (m.group(1), int(m.group(2))) if m else (archive_id, 1)


def latest_manifest(storage: Storage, name: str, archive_id: str | None = None) -> mf.ArchiveManifest | None:
    """The typed manifest of the newest archive ``name`` (or of ``archive_id``), None when there is none."""
    keys = _manifests(storage, name)
    if archive_id:
        keys = [k for k in keys if k.split("/")[-2] == archive_id]
        if not keys:
            raise NotFound(f"archive_id: no archive '{archive_id}' with a manifest under "
                           f"{storage.uri(name + '/')}", "archive_id")
    if not keys:
        return None
    man = mf.read(storage, keys[-1], SCHEMA)
    assert isinstance(man, mf.ArchiveManifest)
    return man


MAX_SEQ = 99


def _free_id(storage: Storage, name: str, when: _dt.datetime, artifact: str) -> tuple[str, str, str]:
    """The first ``<name>-<stamp>[-n]`` with nothing stored under it: two archives made in the same
    second (a changed tree archived twice, two hosts) never share an id; the exclusive writes below
    refuse the rare race between this look and the upload."""
    base = f"{name}-{when.strftime(STAMP)}"
    for seq in range(1, MAX_SEQ + 1):
        archive_id = base if seq == 1 else f"{base}-{seq}"
        if next(iter(storage.list(f"{name}/{archive_id}/")), None) is None:
            return archive_id, f"{name}/{archive_id}/{artifact}", f"{name}/{archive_id}/{MANIFEST}"
    raise ConfigError(f"destination: {MAX_SEQ} archives named {base}[-n] already exist at {storage.uri(name + '/')}; "
                      "refusing to overwrite them", "destination")


@dataclass
class ArchiveResult:
    changed: bool
    archive_id: str
    artifact: str
    manifest: dict[str, Any]
    files: int
    bytes: int
    duration_s: float


def create_archive(spec: ArchiveSpec, destination: str, settings: S3Settings | None = None,
                   check_mode: bool = False, force: bool = False, part_size: int = 16 * 1024 * 1024,
                   now: _dt.datetime | None = None) -> ArchiveResult:
    t0 = time.monotonic()
    name = _check_name(spec.name)
    if spec.kind == "files" and spec.encryption.method == "none":
        raise ConfigError("encryption: configuration files are always encrypted; give gpg recipients, a "
                          "passphrase, or age recipients", "encryption")
    storage = open_storage(destination, settings, part_size=part_size)
    storage.check(write=not check_mode)
    signature, count, size = tree_signature(spec)
    last = latest_manifest(storage, name)
    if last is not None and not force and last.tree_signature == signature:
        return ArchiveResult(False, last.archive_id, storage.uri(last.artifact.key), last.doc,
                             count, size, time.monotonic() - t0)
    comp = Compression(spec.compression, level=spec.compression_level)
    when = (now or _dt.datetime.now(_dt.UTC)).replace(microsecond=0)
    enc_ext = {"none": "", "gpg": ".gpg", "age": ".age"}[spec.encryption.method or "none"]
    archive_id, artifact_key, manifest_key = _free_id(storage, name, when, f"{name}.tar{comp.extension}{enc_ext}")
    if check_mode:
        plan = {"archive_id": archive_id, "artifact": {"key": artifact_key}, "files": count, "bytes": size}
        return ArchiveResult(True, archive_id, storage.uri(artifact_key), plan, count, size, time.monotonic() - t0)
    encryptor = prepare_encryptor(spec.encryption)
    try:
        source = _TarSource(spec)
        try:
            writer = storage.open_writer(artifact_key, content_type="application/octet-stream", exclusive=True)
            result = run_backup_stream(source, writer, compression=comp, encryptor=encryptor,
                                       secrets=[spec.encryption.passphrase] if spec.encryption.passphrase else None,
                                       error_class=StorageError)
        finally:
            source.close()
        stock = [f"<fetch {storage.uri(artifact_key)}>"]
        if encryptor.active:
            stock.append(encryptor.stock_command() or "")
        if comp.stock_decompress():
            stock.append(comp.stock_decompress() or "")
        stock.append("tar -x --numeric-owner -p -C RESTORE_DIR")
        fetch = stock_fetch_command(storage, artifact_key)
        manifest = {
            "schema": SCHEMA,
            "tool": TOOL,
            "archive_id": archive_id,
            "name": name,
            "kind": spec.kind,
            "source": spec.path if spec.kind == "directory" else sorted(set(spec.files)),
            "created_at": when.isoformat().replace("+00:00", "Z"),
            "duration_s": round(time.monotonic() - t0, 3),
            "format": "tar (pax), numeric owners, modes and mtimes kept",
            "files": source.files,
            "bytes": source.bytes,
            "tar_sha256": result.source_sha256,
            "tar_size": result.source_size,
            "artifact": {"key": artifact_key, "size": result.size, "sha256": result.sha256},
            "compression": comp.manifest(),
            "encryption": encryptor.manifest(),
            "tree_signature": signature,
            "restore_command": " | ".join([fetch] + stock[1:]),
        }
        mf.write_manifest(storage, manifest_key, manifest)
    finally:
        encryptor.cleanup()
    return ArchiveResult(True, archive_id, storage.uri(artifact_key), manifest, source.files, source.bytes,
                         time.monotonic() - t0)


@dataclass
class ExtractResult:
    archive_id: str
    extracted: int
    skipped: int
    paths: list[str]
    duration_s: float
    changed: bool = True


def restore_archive(name: str, source: str, target_dir: str, settings: S3Settings | None = None,
                    decryption: DecryptionSpec | None = None, archive_id: str | None = None,
                    patterns: list[str] | None = None, file_mode: int | None = None, dir_mode: int | None = None,
                    owner: int | None = None, group: int | None = None, check_mode: bool = False,
                    part_size: int = 16 * 1024 * 1024) -> ExtractResult:
    """Extract the newest (or ``archive_id``) archive ``name`` into ``target_dir``.

    ``patterns`` (fnmatch on the member name, e.g. ``*/face-sources/*``) restricts what is
    extracted. Owners and modes come from the archive (owners only when running as root),
    unless ``file_mode``/``dir_mode``/``owner``/``group`` override them.
    """
    t0 = time.monotonic()
    _check_name(name)
    if not os.path.isabs(target_dir):
        raise ConfigError(f"destination: '{target_dir}' must be an absolute directory", "destination")
    storage = open_storage(source, settings, part_size=part_size)
    storage.check()
    man = latest_manifest(storage, name, archive_id)
    if man is None:
        raise NotFound(f"name: no archive '{name}' with a manifest under {storage.uri(name + '/')}", "name")
    art = man.artifact
    if check_mode:
        return ExtractResult(man.archive_id, man.files or 0, 0, [], time.monotonic() - t0)
    enc = man.encryption.method
    dspec = decryption or DecryptionSpec()
    if enc != "none" and dspec.method != enc:
        raise ConfigError(f"decryption: archive {man.archive_id} is encrypted with {enc}; give its key "
                          f"(decryption method is '{dspec.method}')", "decryption")
    decryptor = prepare_decryptor(dspec if enc != "none" else DecryptionSpec())
    comp = Compression(man.compression.algorithm)
    makedirs(target_dir, 0o700)
    is_root = os.geteuid() == 0
    extracted = skipped = 0
    paths: list[str] = []
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    orphans: dict[str, list[tarfile.TarInfo]] = {}

    def stream() -> Any:
        return open_restore_stream(storage, art.key, compression=comp, decryptor=decryptor,
                                   expected_sha256=art.sha256, expected_size=art.size)

    try:
        with stream() as s:
            try:
                extracted, skipped = _extract(s, target_dir, patterns, file_mode, dir_mode, owner, group,
                                              is_root, paths, dirs, orphans)
            except tarfile.TarError:
                s.close()  # the pipeline's own error (wrong key, corrupt object) explains it best
                raise
        if orphans:
            # hard links whose first name the patterns skipped: their content, in a second pass
            with stream() as s:
                extracted += _extract_orphans(s, target_dir, orphans, file_mode, owner, group, is_root, paths)
        # directories last (deepest first) so their modes do not block the extraction of their contents
        real_target = os.path.realpath(target_dir)
        for path, info in sorted(dirs, key=lambda t: t[0], reverse=True):
            # checked again now: a link extracted after the directory member may lead elsewhere
            if not _inside(real_target, path):
                raise UnsafeMember(f"{info.name!r} would be extracted to {os.path.realpath(path)!r}, which is "
                                   "outside the destination")
            if not os.path.isdir(path):
                if patterns:
                    continue  # nothing extracted below it
                makedirs(path, 0o700)
            os.chmod(path, dir_mode if dir_mode is not None else info.mode)
            if is_root:
                os.chown(path, owner if owner is not None else info.uid, group if group is not None else info.gid)
            os.utime(path, (info.mtime, info.mtime))
    except UnsafeMember as exc:
        raise RestoreError(f"archive {man.archive_id}: refused an unsafe member: {exc}") from None
    except tarfile.TarError as exc:
        raise RestoreError(f"archive {man.archive_id}: the tar stream is damaged: {exc}") from None
    finally:
        decryptor.cleanup()
    return ExtractResult(man.archive_id, extracted, skipped, paths, time.monotonic() - t0)


def _extract(stream: Any, target_dir: str, patterns: list[str] | None, file_mode: int | None,
             dir_mode: int | None, owner: int | None, group: int | None, is_root: bool, paths: list[str],
             dirs: list[tuple[str, tarfile.TarInfo]], orphans: dict[str, list[tarfile.TarInfo]]) -> tuple[int, int]:
    extracted = skipped = 0
    done: set[str] = set()  # regular files extracted, by member name (targets for hard links)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if patterns and not info.isdir() and not any(fnmatch.fnmatchcase(info.name, p) for p in patterns):
                skipped += 1
                continue
            # every member is checked before anything is created for it (parents, directories included)
            checked = _safe_filter(info, target_dir)
            dest = os.path.join(target_dir, checked.name)
            if info.isdir():
                # applied after the files (with patterns: only where something was extracted)
                dirs.append((dest, checked))
                continue
            if info.islnk() and patterns and info.linkname not in done:
                orphans.setdefault(info.linkname, []).append(checked)
                continue
            _make_parents(target_dir, checked.name, dir_mode)
            if os.path.lexists(dest) and not os.path.isdir(dest):
                os.unlink(dest)  # never write through an existing (hard or symbolic) link
            _extract_member(tar, checked, target_dir)
            if info.isreg():
                done.add(info.name)
                if file_mode is not None:
                    os.chmod(dest, file_mode)
                extracted += 1
                if len(paths) < 50:
                    paths.append(info.name)
            elif info.islnk():
                extracted += 1
            if is_root and (owner is not None or group is not None) and not info.issym():
                os.lchown(dest, owner if owner is not None else -1, group if group is not None else -1)
    return extracted, skipped


def _extract_orphans(stream: Any, target_dir: str, orphans: dict[str, list[tarfile.TarInfo]],
                     file_mode: int | None, owner: int | None, group: int | None, is_root: bool,
                     paths: list[str]) -> int:
    """Hard links selected by the patterns whose first name was not: the first link gets the content
    (re-read from the archive), the others are linked to it."""
    extracted = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            links = orphans.pop(info.name, None) if info.isreg() else None
            if not links:
                continue
            first = os.path.join(target_dir, links[0].name)
            for n, link in enumerate(links):
                dest = os.path.join(target_dir, link.name)
                _make_parents(target_dir, link.name, None)
                if os.path.lexists(dest) and not os.path.isdir(dest):
                    os.unlink(dest)
                if n == 0:
                    _extract_member(tar, _safe_filter(_with(info, name=link.name), target_dir), target_dir)
                    if file_mode is not None:
                        os.chmod(dest, file_mode)
                    if is_root and (owner is not None or group is not None):
                        os.lchown(dest, owner if owner is not None else -1, group if group is not None else -1)
                else:
                    os.link(first, dest)
                extracted += 1
                if len(paths) < 50:
                    paths.append(link.name)
            if not orphans:
                break
    if orphans:
        raise RestoreError(f"hard link(s) {sorted(t.name for ls in orphans.values() for t in ls)[:5]} point to "
                           f"members not in the archive: {sorted(orphans)[:5]}")
    return extracted


def _inside(real_root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return os.path.commonpath([real, real_root]) == real_root


class UnsafeMember(tarfile.TarError):
    """A member that would be created outside the destination (or a hard link leading out of it)."""


#: PEP 706's extraction filters (Python 3.11.4+; Debian 12's python3 is 3.11.2 and has none of them)
_HAS_FILTERS = hasattr(tarfile, "tar_filter") and hasattr(tarfile, "fully_trusted_filter")


def _with(member: tarfile.TarInfo, **changes: Any) -> tarfile.TarInfo:
    """A shallow copy of ``member`` with ``changes`` (TarInfo.replace exists only from 3.11.4)."""
    out = copy.copy(member)
    for key, value in changes.items():
        setattr(out, key, value)
    return out


def _extract_member(tar: tarfile.TarFile, checked: tarfile.TarInfo, target_dir: str) -> None:
    """Extract a member already checked by _safe_filter. Where Python has PEP 706's filters, they are told it is
    checked ('fully_trusted'): Python 3.14's default filter ('data') would refuse the symbolic links an archive of
    a directory legitimately holds."""
    if _HAS_FILTERS:
        tar.extract(checked, target_dir, set_attrs=True, numeric_owner=True, filter="fully_trusted")
    else:
        tar.extract(checked, target_dir, set_attrs=True, numeric_owner=True)


def _safe_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """What tarfile's 'tar' filter does (leading '/' stripped, nothing created outside dest), on every Python,
    but keeping group/other write bits; setuid/setgid bits are dropped. Hard links must point inside dest
    (tarfile's 'tar' filter lets them reach any file on the same filesystem, whose mode and owner extraction
    would then change). Symbolic links may point anywhere: they are kept as links, and nothing is ever written
    through one (every path is resolved and checked)."""
    real_dest = os.path.realpath(dest)
    name = member.name.lstrip("/" + os.sep)
    if not name or os.path.isabs(name):
        raise UnsafeMember(f"member {member.name!r} has no relative name")
    target = os.path.realpath(os.path.join(real_dest, name))
    if not _inside(real_dest, target):
        raise UnsafeMember(f"{member.name!r} would be extracted to {target!r}, which is outside the destination")
    changes: dict[str, Any] = {"name": name}
    if member.islnk():
        if os.path.isabs(member.linkname) or not _inside(real_dest, os.path.join(real_dest, member.linkname)):
            raise UnsafeMember(f"hard link {member.name!r} points to {member.linkname!r}, outside the destination")
    elif not member.issym() and member.mode is not None:
        changes["mode"] = member.mode & 0o1777
    return _with(member, **changes)


def _make_parents(root: str, name: str, dir_mode: int | None) -> None:
    parent = os.path.dirname(os.path.join(root, name))
    if not os.path.isdir(parent):
        makedirs(parent, dir_mode if dir_mode is not None else 0o700)
