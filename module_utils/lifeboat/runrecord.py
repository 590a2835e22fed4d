"""Run records: a small JSON note that a storage job (bucket sync, archive) ran, read by the catalog.

A storage job has no backup set of its own to look at (a sync that finds nothing to copy writes
nothing), so each run leaves a record at the location its ``run_record`` option names
(``s3://bucket/prefix`` or an absolute directory)::

    <run_record>/last-run.json        every run, successful or not
    <run_record>/last-success.json    the last successful run (kept when a later run fails)

Schema ``lifeboat/run-record/v1``: kind (sync|archive), name, source, destination, outcome
(ok|failed), started_at, finished_at, duration_s, counts (the job's own numbers), error (the
failure's message, already free of secrets), tool. Two fixed keys: the store never grows.
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from ansible.module_utils.lifeboat import TOOL_VERSION
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.errors import IntegrityError, LifeboatError, NotFound
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import Storage, open_storage

SCHEMA = "lifeboat/run-record/v1"
LAST_RUN = "last-run.json"
LAST_SUCCESS = "last-success.json"
KINDS = ("sync", "archive")


def build(kind: str, name: str, source: str, destination: str, ok: bool, started: _dt.datetime,
          finished: _dt.datetime, duration_s: float, counts: dict[str, Any], error: str | None = None) -> dict:
    return {
        "schema": SCHEMA, "kind": kind, "name": name, "source": source, "destination": destination,
        "outcome": "ok" if ok else "failed", "started_at": mf.iso(started), "finished_at": mf.iso(finished),
        "duration_s": round(float(duration_s), 3), "counts": counts, "error": error,
        "tool": {"name": "lifeboat", "version": TOOL_VERSION},
    }


def write(location: str, settings: S3Settings | None, record: dict[str, Any]) -> str:
    """Write the record (and last-success.json when it is a success); returns where last-run.json went."""
    storage = open_storage(location, settings)
    data = mf.dumps(record)
    if record.get("outcome") == "ok":
        storage.put_bytes(LAST_SUCCESS, data, content_type="application/json")
    storage.put_bytes(LAST_RUN, data, content_type="application/json")
    return storage.uri(LAST_RUN)


def write_quietly(location: str, settings: S3Settings | None, record: dict[str, Any]) -> tuple[str | None, str | None]:
    """``write`` for a module: (uri, None) or (None, a warning naming the cause); a record never fails a job."""
    try:
        return write(location, settings, record), None
    except LifeboatError as exc:
        return None, (f"run_record: could not write the run record under {location}: {exc} "
                      "(the monitor will report this job as not run)")


def read_one(storage: Storage, key: str) -> dict[str, Any] | None:
    """One record, or None when there is none; IntegrityError when it is not a run record."""
    try:
        raw = storage.get_bytes(key)
    except NotFound:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise IntegrityError(f"run record {storage.uri(key)} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise IntegrityError(f"run record {storage.uri(key)} has schema "
                             f"{data.get('schema') if isinstance(data, dict) else None!r}, expected {SCHEMA!r}")
    return data


def read(storage: Storage) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(last run, last successful run) at the storage root; (None, None) when the job never ran."""
    return read_one(storage, LAST_RUN), read_one(storage, LAST_SUCCESS)
