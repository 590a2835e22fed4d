"""What killed backups left in a destination, swept by the next backup of the same database.

A backup killed with SIGKILL (or by the OOM killer, or whose host vanished) cannot run its
``finally``: its multipart upload stays open (S3 keeps the parts, and bills them, for ever),
or the artifact is complete but no manifest was written after it. Nothing lists such a set as a
backup (no manifest = incomplete), but it takes space and the catalog reports it.

``sweep(storage, database, grace_s)`` runs at the start of every backup, while the run holds the
backup lock of this database and destination (runlock.py): no other lock-holding run can be
writing under ``<database>/`` at that moment, so what is there without a manifest was left by a
dead run. The grace period is a second guard (an older Lifeboat without the lock, clocks that
disagree): only what is older than ``grace_s`` is touched.

- open multipart uploads under ``<database>/`` (S3) initiated more than ``grace_s`` ago are aborted;
- ``*.lifeboat-partial`` files (killed writers) under ``<database>/`` (a directory) older than ``grace_s`` are removed;
- backup sets ``<database>/<backup_id>/`` without a ``manifest.json`` whose newest object is older
  than ``grace_s`` are removed; where the backup's credentials may not delete (a least-privilege
  policy without s3:DeleteObject), they are *reported* instead, with the cause.

The sets are backupsets.list_sets' grouping, the one the catalog and retention read.
Sets with a manifest (sound or damaged) are never touched here: a damaged manifest is reported by
the catalog, verify and restore, left alone by retention, and removed by hand.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat import backupsets
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.errors import LifeboatError
from ansible.module_utils.lifeboat.storage import Storage

#: what a backup run leaves alone: younger than this, a set without a manifest may belong to a live run
DEFAULT_GRACE_S = 3600.0


@dataclass
class Swept:
    """What one sweep did (keys relative to the storage root) and what it could not do (with the cause)."""

    aborted_uploads: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"aborted_uploads": self.aborted_uploads, "removed": self.removed, "reported": self.reported}

    def lines(self) -> list[str]:
        out = [f"aborted the open multipart upload of {k} (a killed run's)" for k in self.aborted_uploads]
        out += [f"removed {k} (a set without manifest, left by a killed run)" for k in self.removed]
        return out + self.reported


def _older(when: _dt.datetime | None, now: _dt.datetime, grace_s: float) -> bool:
    if when is None:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return (now - when).total_seconds() >= grace_s


def _abort_uploads(storage: Storage, folder: str, now: _dt.datetime, grace_s: float, out: Swept) -> None:
    """Open uploads under ``<folder>/`` (S3 multipart uploads, a directory's ``*.lifeboat-partial`` files)."""
    try:
        uploads = [u for u in storage.open_uploads() if u.key.startswith(folder + "/")]
    except LifeboatError as exc:  # reported, never fatal: the backup itself can still be made
        out.reported.append(f"open uploads under {storage.uri(folder)}/ not checked: {exc}")
        return
    for up in uploads:
        if not _older(up.initiated, now, grace_s):
            continue
        try:
            storage.abort_upload(up)
        except LifeboatError as exc:
            out.reported.append(f"the open upload of {storage.uri(up.key)} (a killed run's) was left: {exc}; the "
                                "bucket's lifecycle rule (abort incomplete multipart uploads) ends it")
            continue
        (out.aborted_uploads if up.upload_id else out.removed).append(up.key)


def sweep(storage: Storage, database: str, grace_s: float = DEFAULT_GRACE_S,
          now: _dt.datetime | None = None) -> Swept:
    """Abort/remove what dead runs of ``database`` left in ``storage`` (see the module docstring).

    Never raises for what it cannot do: each such thing is a line in ``reported``.
    """
    now = now or mf.utcnow()
    folder = mf.safe_name(database)
    out = Swept()
    _abort_uploads(storage, folder, now, grace_s, out)
    try:
        listing = backupsets.list_sets(storage, folder, older=False)
    except LifeboatError as exc:
        out.reported.append(f"sets without manifest under {storage.uri(folder)}/ not checked: {exc}")
        return out
    for found in listing.ordered_sets():
        backup_id, objs = found.backup_id, found.objects
        if found.manifest_key is not None:
            continue
        if not _older(found.last_modified, now, grace_s):
            continue
        for obj in sorted(objs, key=lambda o: o.key):
            try:
                storage.delete(obj.key)
                out.removed.append(obj.key)
            except LifeboatError as exc:
                out.reported.append(f"{storage.uri(obj.key)} has no manifest (backup {backup_id} was killed "
                                    f"before it finished) and could not be removed: {exc}; remove it by hand or "
                                    "let retention do it")
    return out
