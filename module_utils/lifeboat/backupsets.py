"""One listing of a backup root, grouped into backup sets: what the catalog, retention and the sweep read.

Under a root (an S3 prefix or a directory, storage.py) Lifeboat writes::

    <folder>/<folder>-<YYYYmmddTHHMMSSZ>[-n]/manifest.json   a set: a database's backup (folder = its safe
    <folder>/<folder>-<YYYYmmddTHHMMSSZ>[-n]/<artifact>...   name) or an archive (folder = its name)
    <folder>/<folder>-<YYYYmmddTHHMMSSZ>[-n]/verify-*.json   the set's verification records
    db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz[.manifest.json|.verify-*.json]   the older procedure's flat dumps
    backup_YYYYmmdd_HHMMSS.sql.gz[...]                                   (time from the name)

``list_sets(storage, folder)`` lists the root once (or one folder and the flat dumps) and groups every
object: :class:`SetObjects` per set (objects, open uploads, manifest and verification keys) and
:class:`OlderDump` per flat dump (with its side files). Anything else (a run record, a stray file, a
folder whose name does not follow the layout) belongs to no set and is left out: nothing here decides
what a set *is* (complete, damaged, verified): its readers do, with manifest.py's rules.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.storage import Entry, OpenUpload, Storage

SET_RE = re.compile(r"^(?P<folder>[^/]+)/(?P<id>(?P=folder)-(?P<stamp>\d{8}T\d{6}Z)(?:-\d+)?)/(?P<rest>.+)$")
#: the start of each older-procedure name (flat at the root)
OLDER_PREFIXES = ("db-backup-", "backup_")


@dataclass
class SetObjects:
    """The objects of one set ``<folder>/<backup_id>/`` (keys relative to the storage root)."""

    folder: str
    backup_id: str
    stamp: str
    objects: list[Entry] = field(default_factory=list)
    uploads: list[OpenUpload] = field(default_factory=list)   # only when listed with uploads=True

    @property
    def set_dir(self) -> str:
        return f"{self.folder}/{self.backup_id}"

    @property
    def time(self) -> _dt.datetime:
        """The time in the set's id (its manifest's own time is the better one where there is a manifest)."""
        return _dt.datetime.strptime(self.stamp, mf.STAMP_FORMAT).replace(tzinfo=_dt.UTC)

    @property
    def keys(self) -> list[str]:
        return sorted(o.key for o in self.objects)

    @property
    def manifest_key(self) -> str | None:
        key = f"{self.set_dir}/{mf.MANIFEST_NAME}"
        return key if any(o.key == key for o in self.objects) else None

    @property
    def verify_keys(self) -> list[str]:
        return sorted(o.key for o in self.objects if _is_verify(o.key[len(self.set_dir) + 1:]))

    @property
    def artifacts(self) -> list[Entry]:
        """Every object but the manifest and the verification records."""
        return [o for o in self.objects
                if o.key != f"{self.set_dir}/{mf.MANIFEST_NAME}" and not _is_verify(o.key[len(self.set_dir) + 1:])]

    @property
    def size(self) -> int:
        return sum(o.size or 0 for o in self.objects)

    @property
    def last_modified(self) -> _dt.datetime | None:
        """The newest object's time (None when the store gives none)."""
        return max((o.last_modified for o in self.objects if o.last_modified is not None), default=None)


@dataclass
class OlderDump:
    """A flat dump of the older procedure (or Lifeboat's ``naming: legacy``) and the files beside it."""

    key: str                                   # the dump's key, e.g. db-backup-2026-11-18_02-00-00.sql.gz
    when: _dt.datetime
    dump: Entry | None = None                  # None: side files whose dump is gone
    manifest_key: str | None = None            # Lifeboat's <dump>.manifest.json (naming: legacy)
    verify_keys: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def backup_id(self) -> str:
        return self.key[: -len(".sql.gz")]


@dataclass
class Listing:
    sets: dict[tuple[str, str], SetObjects] = field(default_factory=dict)   # (folder, backup_id) -> set
    older: dict[str, OlderDump] = field(default_factory=dict)               # dump key -> dump

    def ordered_sets(self) -> list[SetObjects]:
        return [self.sets[k] for k in sorted(self.sets)]

    def ordered_older(self) -> list[OlderDump]:
        return [self.older[k] for k in sorted(self.older)]


def _is_verify(name: str) -> bool:
    return name.startswith("verify-") and name.endswith(".json")


def older_base(name: str) -> str | None:
    """The dump a flat name belongs to (the dump itself, its ``.manifest.json``, a ``.verify-*.json``), else None."""
    if name.endswith(".sql.gz"):
        base = name
    elif ".sql.gz." in name:
        base = name[: name.index(".sql.gz.") + len(".sql.gz")]
    else:
        return None
    return base if mf.legacy_time(base) is not None else None


def _add(listing: Listing, obj: Entry, folder: str | None, older: bool) -> None:
    m = SET_RE.match(obj.key)
    if m:
        if folder is None or m.group("folder") == folder:
            listing.sets.setdefault((m.group("folder"), m.group("id")),
                                    SetObjects(m.group("folder"), m.group("id"), m.group("stamp"))).objects.append(obj)
        return
    if not older or "/" in obj.key:
        return
    base = older_base(obj.key)
    if base is None:
        return
    when = mf.legacy_time(base)
    assert when is not None
    dump = listing.older.setdefault(base, OlderDump(base, when))
    dump.keys.append(obj.key)
    if obj.key == base:
        dump.dump = obj
    elif obj.key == base + ".manifest.json":
        dump.manifest_key = obj.key
    elif obj.key.startswith(base + ".verify-") and obj.key.endswith(".json"):
        dump.verify_keys.append(obj.key)


def list_sets(storage: Storage, folder: str | None = None, older: bool = True, uploads: bool = False) -> Listing:
    """The root's objects grouped into sets (see the module docstring).

    ``folder``: only that folder's sets (a database's safe name, an archive's name), plus the flat dumps
    (listed by their own prefixes) when ``older``. ``uploads``: open multipart uploads (S3) or ``*.lifeboat-partial``
    files (a directory) are attached to their set too (a set with only uploads is listed). Storage errors
    propagate: a listing that fails half way gives nothing to act on.
    """
    listing = Listing()
    prefixes = [folder + "/"] + (list(OLDER_PREFIXES) if older else []) if folder else [""]
    for prefix in prefixes:
        for obj in storage.list(prefix):
            _add(listing, obj, folder, older)
    for dump in listing.older.values():
        dump.keys.sort()
        dump.verify_keys.sort()
    if uploads:
        for up in storage.open_uploads():
            m = SET_RE.match(up.key)
            if m and (folder is None or m.group("folder") == folder):
                found = listing.sets.setdefault((m.group("folder"), m.group("id")),
                                                SetObjects(m.group("folder"), m.group("id"), m.group("stamp")))
                found.uploads.append(up)
    return listing
