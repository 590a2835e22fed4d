"""Verification engine: prove that a backup restores.

Levels (each usable alone; ``drill`` includes the integrity checks of the stream):

- ``integrity``: the stored object's sha256 equals the manifest's; it decrypts and
  decompresses to the end (streamed, nothing written); the decoded dump's sha256
  equals the manifest's ``dump_sha256``; the archive's table of contents lists
  (``pg_restore -l``, custom format), or for plain SQL the dump starts with
  pg_dump's header and ends with its "dump complete" trailer (a truncated dump
  does not), or for the directory format the tar lists ``toc.dat``.
- ``drill``: the backup is restored into a scratch database with a unique name
  (``lifeboat_drill_<stamp>_<rand>``, ALWAYS dropped afterwards, and stale ones
  older than ``sweep_hours`` are swept first); exact per-table row counts and the
  schema hash are compared with the manifest; ``pg_amcheck`` checks the result;
  the operator's SQL assertions run (each must return ``true`` or no rows).
  Older-procedure dumps (no manifest) have their row counts reported, not compared.
- ``record``: the result is written next to the backup
  (``manifest.Layout.verification_key``: ``verify-<stamp>.json``) with the measured
  restore duration and RTO per GiB, for retention, monitoring and restore's
  "latest verified" choice.

A failed check never raises: it makes the outcome ``failed`` with a detail that
names the cause. Only configuration errors raise.

Outcomes: ``passed``; ``failed`` (the backup is bad: checksum, decode, table of
contents, row counts, schema hash, corruption, an operator's assertion);
``inconclusive`` (the drill could not run: a missing or wrong key, permissions,
the drill server): never a verdict on the backup, and restore's choice of a
"verified" backup ignores it. pg_amcheck that the drill role may not run (it
cannot create the amcheck extension) is skipped with a warning (``amcheck``
switches it off).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ansible.module_utils.lifeboat import TOOL_VERSION, verify_supabase
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.crypto import DecryptionSpec
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    LifeboatError,
    NotFound,
    environmental,
)
from ansible.module_utils.lifeboat.manifest_model import SupabaseParts
from ansible.module_utils.lifeboat.pgconn import find_client
from ansible.module_utils.lifeboat.restore.checks import (
    compare_content,
    compare_counts,
    compare_privileges,
    expected_schema_hash,
    report_counts,
    schema_hash_for,
)
from ansible.module_utils.lifeboat.restore.decoding import decode
from ansible.module_utils.lifeboat.restore.load import GIB, restore_into
from ansible.module_utils.lifeboat.restore.pgadmin import Admin, scratch_database, sweep_scratch
from ansible.module_utils.lifeboat.restore.selection import Source, recorded_locale, source_for
from ansible.module_utils.lifeboat.storage import Storage

LEVELS = ("integrity", "drill")
PLAIN_HEAD = b"-- PostgreSQL database dump"
PLAIN_TAIL = b"-- PostgreSQL database dump complete"


@dataclass
class Assertion:
    name: str
    sql: str


@dataclass
class Options:
    level: str = "drill"
    record: bool = True
    assertions: list[Assertion] = field(default_factory=list)
    amcheck: bool = True
    heapallindexed: bool = False
    sweep_hours: float = 6.0
    no_owner: bool = True
    #: the drill restores as a restore does (restore/load.py): pg_restore jobs chosen from the server when None,
    #: staged in staging_dir, streamed when that disk is short
    jobs: int | None = None
    staging_dir: str | None = None
    staging_keep_free: int = 256 * 1024 * 1024
    #: a psql script making the Supabase platform in an empty database: supabase-profile backups are then drilled
    #: in a scratch project (verify_supabase.py) on a Supabase-like drill server
    supabase_platform_sql: str | None = None


@dataclass
class Result:
    backup_id: str
    database: str | None
    artifact: str
    legacy: bool
    level: str
    started_at: _dt.datetime
    checks: list[dict[str, Any]] = field(default_factory=list)
    finished_at: _dt.datetime | None = None
    restore_duration_s: float | None = None
    restored_bytes: int | None = None
    restore_jobs: int | None = None
    restore_path: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    record_key: str | None = None
    scratch_database: str | None = None
    swept: list[str] = field(default_factory=list)

    warnings: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        found = {c["outcome"] for c in self.checks}
        return "failed" if "failed" in found else "inconclusive" if "inconclusive" in found else "passed"

    def check(self, name: str, ok: bool | None, detail: str) -> bool:
        outcome = "skipped" if ok is None else ("passed" if ok else "failed")
        self.checks.append({"name": name, "outcome": outcome, "detail": detail})
        return bool(ok)

    def could_not(self, name: str, detail: str) -> None:
        """The drill could not run this check (environment, not the backup): the outcome is inconclusive."""
        self.checks.append({"name": name, "outcome": "inconclusive",
                            "detail": f"{detail} (the drill could not run: this says nothing about the backup)"})

    def restore_failed(self, exc: LifeboatError) -> None:
        """A drill's restore raised ``exc``: a checksum mismatch fails ``sha256``, an environmental cause leaves
        ``restore`` inconclusive, anything else fails ``restore``."""
        name = "sha256" if "checksum mismatch" in str(exc) else "restore"
        if name == "restore" and environmental(exc):
            self.could_not(name, str(exc))
        else:
            self.check(name, False, str(exc))

    def failures(self) -> list[str]:
        return [f"{c['name']}: {c['detail']}" for c in self.checks if c["outcome"] == "failed"]

    def inconclusive(self) -> list[str]:
        return [f"{c['name']}: {c['detail']}" for c in self.checks if c["outcome"] == "inconclusive"]

    @property
    def rto_s_per_gib(self) -> float | None:
        if not self.restore_duration_s or not self.restored_bytes:
            return None
        return round(self.restore_duration_s / (self.restored_bytes / GIB), 1)

    def record(self) -> dict[str, Any]:
        return {
            "schema": mf.VERIFY_SCHEMA, "backup_id": self.backup_id, "database": self.database,
            "artifact_key": self.artifact, "legacy": self.legacy, "level": self.level, "outcome": self.outcome,
            "started_at": mf.iso(self.started_at), "finished_at": mf.iso(self.finished_at or mf.utcnow()),
            "checks": self.checks, "restore_duration_s": self.restore_duration_s,
            "restored_bytes": self.restored_bytes, "rto_s_per_gib": self.rto_s_per_gib,
            "restore_jobs": self.restore_jobs, "restore_path": self.restore_path,
            "row_counts": self.row_counts, "warnings": self.warnings,
            "tool": {"name": "lifeboat", "version": TOOL_VERSION},
        }


# ------------------------------------------------------------------ integrity

class _TocLister:
    """Feeds the decoded stream to ``pg_restore -l``; it may stop reading once it has the TOC."""

    def __init__(self, pg_restore: str):
        self.proc = subprocess.Popen([pg_restore, "-l"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self._threads = [threading.Thread(target=self._drain, args=(self.proc.stdout, self.out), daemon=True),
                         threading.Thread(target=self._drain, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._threads:
            t.start()
        self.open = True

    @staticmethod
    def _drain(stream, into: list[bytes]) -> None:
        for chunk in iter(lambda: stream.read(65536), b""):
            into.append(chunk)

    def write(self, data: bytes) -> None:
        if not self.open:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
        except (BrokenPipeError, ValueError):
            self.open = False

    def finish(self) -> tuple[int, int, str]:
        """(exit status, TOC entries, stderr)."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for t in self._threads:
            t.join(timeout=10)
        text = b"".join(self.out).decode("utf-8", "replace")
        entries = sum(1 for ln in text.splitlines() if ln and not ln.startswith(";"))
        return rc, entries, b"".join(self.err).decode("utf-8", "replace").strip()


def _pg_restore_for(src: Source, admin: Admin | None, bin_dirs: list[str] | None) -> str:
    if admin is not None:
        return admin.client("pg_restore")
    major = (src.manifest.pg_dump_major if src.manifest else None) or 10
    return find_client("pg_restore", major, bin_dirs)[0]


def check_integrity(storage: Storage, src: Source, keys: DecryptionSpec, result: Result,
                    admin: Admin | None = None, bin_dirs: list[str] | None = None) -> bool:
    """Level 1: checksum, full decode, TOC / plain-SQL shape. Adds checks to ``result``."""
    lister = None
    tar = None
    head = bytearray()
    tail = bytearray()
    if src.fmt == "custom":
        try:
            lister = _TocLister(_pg_restore_for(src, admin, bin_dirs))
        except LifeboatError as exc:
            result.check("toc", False, str(exc))
    elif src.fmt == "directory":
        tar = subprocess.Popen(["tar", "-t", "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        tar_out: list[bytes] = []
        tar_thread = threading.Thread(target=lambda: tar_out.append(tar.stdout.read()), daemon=True)
        tar_thread.start()

    def sink(data: bytes) -> None:
        if len(head) < 4096:
            head.extend(data[: 4096 - len(head)])
        tail.extend(data[-4096:])
        del tail[:-4096]
        if lister is not None:
            lister.write(data)
        if tar is not None and tar.stdin is not None:
            try:
                tar.stdin.write(data)
            except BrokenPipeError:
                pass

    started = time.monotonic()
    try:
        dec = decode(storage, src, keys, sink)
    except LifeboatError as exc:
        name = "sha256" if "checksum mismatch" in str(exc) or "sha256" in str(exc) else "decode"
        if name == "decode" and environmental(exc):
            result.could_not(name, str(exc))
        else:
            result.check(name, False, str(exc))
        if lister is not None:
            lister.finish()
        if tar is not None:
            tar.kill()
            tar.wait()
        return False
    seconds = time.monotonic() - started
    if src.sha256:
        result.check("sha256", True, f"stored object sha256 {dec.stored_sha256} ({dec.stored_size} bytes) "
                                     "matches the manifest")
    else:
        result.check("sha256", None, "older-procedure dump: no manifest checksum to compare with "
                                     f"(sha256 {dec.stored_sha256}, {dec.stored_size} bytes)")
    steps = " -> ".join(x for x in (src.encryption if src.encryption != "none" else "",
                                     src.compression if src.compression != "none" else "") if x) or "none"
    result.check("decode", True, f"decrypted/decompressed to the end ({steps}): {dec.dump_size} bytes in "
                                 f"{seconds:.1f}s" + (", dump sha256 matches" if src.dump_sha256 else ""))
    ok = True
    if lister is not None:
        rc, entries, err = lister.finish()
        ok &= result.check("toc", rc == 0 and entries > 0,
                           f"pg_restore -l listed {entries} TOC entries" if rc == 0 and entries > 0
                           else f"pg_restore -l failed (exit {rc}): {err[-300:]}")
    elif src.fmt == "plain":
        good_head = bytes(head).lstrip().startswith(b"--") and PLAIN_HEAD in bytes(head)
        good_tail = PLAIN_TAIL in bytes(tail)
        ok &= result.check("sql", good_head and good_tail,
                           "plain SQL dump with pg_dump's header and 'dump complete' trailer" if good_head
                           and good_tail else ("the dump is empty (0 bytes of SQL)" if not head else
                                               "the dump does not start like a pg_dump SQL script" if not
                                               good_head else "the dump has no 'PostgreSQL database dump "
                                               "complete' trailer: it is truncated"))
    elif tar is not None:
        if tar.stdin:
            tar.stdin.close()
        rc = tar.wait()
        tar_thread.join(timeout=10)
        names = b"".join(tar_out).decode(errors="replace").split()
        ok &= result.check("toc", rc == 0 and any(n.endswith("toc.dat") for n in names),
                           f"tar lists {len(names)} files including toc.dat" if rc == 0 else f"tar failed ({rc})")
    return ok


# ------------------------------------------------------------------ drill

def _run_amcheck(admin: Admin, database: str, heapallindexed: bool) -> tuple[bool | None, str]:
    with admin.connect(database) as conn:
        if conn.execute("SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'amcheck'").fetchone() \
                is None:
            return None, "the amcheck extension is not available on the drill server (install postgresql-contrib)"
    try:
        binary = admin.client("pg_amcheck")
    except LifeboatError as exc:
        return None, f"pg_amcheck not found: {exc}"
    jobs = max(1, min(4, os.cpu_count() or 1))
    argv = [binary, "--install-missing", "--no-strict-names", "--jobs", str(jobs), "-d", database]
    if heapallindexed:
        argv.append("--heapallindexed")
    with admin.target.child_env(database) as env:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=7200)
    if proc.returncode == 0:
        return True, "pg_amcheck found no corruption" + (" (heapallindexed)" if heapallindexed else "")
    out = (proc.stdout + proc.stderr).strip().splitlines()
    text = " ".join(out).lower()
    if "permission denied" in text or "must be superuser" in text or "must be owner" in text:
        return None, ("not permitted for the drill role (" + " | ".join(out[:2])[:300] + "): grant it the "
                      "rights to create the amcheck extension, or switch the check off (amcheck: false, "
                      "lifeboat_verify_amcheck: false in verify.yml)")
    return False, f"pg_amcheck exit {proc.returncode}: " + " | ".join(out[:5])


def _run_assertion(conn: Any, assertion: Assertion) -> tuple[bool, str]:
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            cur = conn.execute(assertion.sql)
            rows = cur.fetchall() if cur.description else []
    except Exception as exc:  # noqa: BLE001 - the operator's SQL: any error fails the assertion, named
        return False, f"query failed: {str(exc).strip().splitlines()[0][:300]}"
    if len(rows) == 1 and len(rows[0]) == 1 and isinstance(rows[0][0], bool):
        return rows[0][0], "returned true" if rows[0][0] else "returned false"
    if not rows:
        return True, "returned no rows"
    return False, f"returned {len(rows)} row(s), e.g. {str(rows[0])[:200]}"


def drill(storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, options: Options,
          result: Result) -> None:
    """Level 2: restore into a scratch database, compare, check, assert; the scratch database is always dropped."""
    with admin.connect() as conn:
        result.swept = sweep_scratch(conn, options.sweep_hours)
    try:
        with scratch_database(admin, "drill", locale=recorded_locale(src)) as scratch:
            result.scratch_database = scratch
            started = time.monotonic()
            try:
                run = restore_into(storage, src, keys, admin, scratch, no_owner=options.no_owner,
                                   jobs=options.jobs, staging_dir=options.staging_dir,
                                   staging_keep_free=options.staging_keep_free, app_name="lifeboat-drill")
            except LifeboatError as exc:
                result.restore_failed(exc)
                return
            result.restore_duration_s = round(time.monotonic() - started, 3)
            result.restored_bytes = run.decode.dump_size
            result.restore_jobs, result.restore_path = run.jobs, run.path
            result.check("sha256", True if src.sha256 else None,
                         f"stored object sha256 {run.decode.stored_sha256} "
                         + ("matches the manifest" if src.sha256 else "(older-procedure dump: nothing to compare)"))
            result.check("restore", True, f"restored into scratch database {scratch}: {run.decode.dump_size} "
                                          f"bytes in {result.restore_duration_s:.1f}s, {run.describe()}"
                         + "".join(f"; {note}" for note in run.notes))
            # the schema hash first (pg_amcheck --install-missing adds an extension), then pg_amcheck runs in
            # parallel with the exact row counts and the assertions (all read the freshly restored tables)
            hash_check: tuple[bool | None, str] | None = None
            if not src.legacy:
                if src.manifest is not None and src.manifest.schema_hash:
                    with admin.connect(scratch) as conn:
                        got = schema_hash_for(conn, src)
                        expected = expected_schema_hash(conn, src)
                    hash_check = (got == expected, "schema hash matches the manifest" if got == expected
                                  else f"schema hash {got} != manifest {expected}")
                else:
                    hash_check = (None, "the manifest has no schema hash")
            amcheck_out: list[tuple[bool | None, str]] = []
            amcheck_thread = None
            if options.amcheck:
                def amcheck_job() -> None:
                    try:
                        amcheck_out.append(_run_amcheck(admin, scratch, options.heapallindexed))
                    except Exception as exc:  # noqa: BLE001 - the drill could not run it: inconclusive, named
                        amcheck_out.append(("inconclusive", f"pg_amcheck could not run: "
                                                            f"{exc.__class__.__name__}: {exc}"))

                amcheck_thread = threading.Thread(target=amcheck_job, name="lifeboat-amcheck", daemon=True)
                amcheck_thread.start()
            try:
                with admin.connect(scratch) as conn:
                    if src.legacy:
                        result.row_counts = report_counts(conn)
                        result.check("row_counts", None, f"older-procedure dump: {len(result.row_counts)} tables, "
                                                         f"{sum(result.row_counts.values())} rows (reported, no "
                                                         "manifest to compare with)")
                    else:
                        cmp = compare_counts(conn, src)
                        result.row_counts = cmp["counts"]
                        result.check("row_counts", cmp["ok"],
                                     f"{cmp['tables']} tables match the manifest's exact row counts" if cmp["ok"]
                                     else "; ".join(cmp["mismatches"]
                                                    + [f"missing table {m}" for m in cmp["missing"]]))
                    if hash_check is not None:
                        result.check("schema_hash", *hash_check)
                    if not src.legacy:
                        result.check("privileges", *compare_privileges(conn, src, no_owner=options.no_owner))
                        if src.manifest is not None and src.manifest.content_hashes.tables:
                            result.check("content_hashes", *compare_content(conn, src))
                    asserted = [(a.name, *_run_assertion(conn, a)) for a in options.assertions]
            finally:
                if amcheck_thread is not None:
                    amcheck_thread.join()
            if amcheck_out:
                ok, detail = amcheck_out[0]
                if ok == "inconclusive":
                    result.could_not("amcheck", detail)
                else:
                    result.check("amcheck", ok, detail)  # type: ignore[arg-type]
                    if ok is None and "not permitted" in detail:
                        result.warnings.append(f"{result.backup_id}: amcheck skipped: {detail}")
            for name, ok, detail in asserted:
                result.check(f"assert: {name}", ok, detail)
    except LifeboatError as exc:
        result.could_not("scratch database", str(exc))


# ------------------------------------------------------------------ supabase profile

def supabase_parts(src: Source) -> SupabaseParts | None:
    """The ``supabase`` section of a backup made with the supabase profile (None for any other backup)."""
    sb = src.manifest.supabase if src.manifest else None
    return sb if sb is not None and sb.platform_data is not None else None


def check_supabase(storage: Storage, src: Source, keys: DecryptionSpec, result: Result, admin: Admin | None,
                   bin_dirs: list[str] | None, options: Options) -> None:
    """A supabase-profile backup: both dumps of its one snapshot (the user's schemas, the platform's user data) are
    checked to the end (sha256, decode, TOC); at level drill it is then restored into a scratch Supabase-like
    project and compared with the manifest (verify_supabase.py), or, where the drill has no way to make one, the
    restore step is recorded as inconclusive (never failed), naming what it needs (docs/supabase.md)."""
    check_integrity(storage, src, keys, result, admin, bin_dirs)
    part = supabase_parts(src)
    assert part is not None and part.platform_data is not None
    data = part.platform_data
    platform = replace(src, ref=replace(src.ref, artifact_key=data.key), sha256=data.sha256,
                       size=data.size, dump_sha256=None, dump_size=None)
    checks = Result(result.backup_id, result.database, data.key, False, result.level, result.started_at)
    check_integrity(storage, platform, keys, checks, admin, bin_dirs)
    for check in checks.checks:
        result.checks.append(dict(check, name=f"platform_data {check['name']}"))
    if options.level != "integrity" and result.outcome == "passed":
        verify_supabase.drill(storage, src, keys, admin, options.supabase_platform_sql, options.sweep_hours, result)


# ------------------------------------------------------------------ orchestration

def targets(storage: Storage, databases: list[str], backup_id: str | None, prefix: str = "") -> list[mf.BackupRef]:
    """The backups to verify: the given id, else the latest of each database (all found when none given).

    A backup whose manifest is damaged (manifest.damaged_manifests) is a target too when it is the one asked
    for or newer than the latest intact one: its verification fails on the manifest check, naming it.
    """
    one_db = databases[0] if len(databases) == 1 else None
    damaged = mf.damaged_manifests(storage, one_db, prefix)
    if backup_id:
        for d in damaged:
            if d.backup_id == backup_id:
                return [mf.damaged_ref(d, one_db)]
        return [mf.select_backup(storage, one_db, backup_id=backup_id, prefix=prefix)]
    latest: dict[str, mf.BackupRef] = {}
    if databases:
        for db in databases:
            try:
                latest[db] = mf.select_backup(storage, db, prefix=prefix)
            except NotFound:
                if not any(d.manifest_key.split("/")[-3:-2] == [mf.safe_name(db)] for d in damaged):
                    raise
    else:
        for ref in mf.iter_backups(storage, None, prefix):
            key = ref.database or "(older-procedure dumps)"
            if key not in latest or (ref.created_at, ref.backup_id) > (latest[key].created_at, latest[key].backup_id):
                latest[key] = ref
    out = [latest[k] for k in sorted(latest)]
    for d in damaged:
        folder = d.manifest_key.split("/")[-3] if d.manifest_key.endswith("/" + mf.MANIFEST_NAME) else None
        db = next((k for k in latest if mf.safe_name(k) == folder), None)
        ref = mf.damaged_ref(d, db)
        if databases and folder not in {mf.safe_name(x) for x in databases}:
            continue
        if db is None or ref.created_at >= latest[db].created_at:
            out.append(ref)
    if not out:
        raise NotFound(f"no complete backup under {storage.url}")
    return out


def verify_one(storage: Storage, ref: mf.BackupRef, keys: DecryptionSpec, admin: Admin | None,
               options: Options, bin_dirs: list[str] | None = None) -> Result:
    if options.level not in LEVELS:
        raise ConfigError(f"level: must be one of {', '.join(LEVELS)}", "level")
    result = Result(ref.backup_id, ref.database, ref.artifact_key, ref.legacy, options.level, mf.utcnow())
    try:
        src = source_for(storage, ref)
    except LifeboatError as exc:
        result.check("manifest", False, str(exc))
        src = None
    if src is not None and supabase_parts(src):
        check_supabase(storage, src, keys, result, admin, bin_dirs, options)
    elif src is not None:
        if options.level == "integrity":
            check_integrity(storage, src, keys, result, admin, bin_dirs)
        else:
            if admin is None:
                raise ConfigError("level drill needs a PostgreSQL server to restore into (host/user/password)",
                                  "host")
            drill(storage, src, keys, admin, options, result)
    result.finished_at = mf.utcnow()
    if options.record:
        key = ref.layout().verification_key(result.finished_at)
        try:
            storage.put_bytes(key, mf.dumps(result.record()), content_type="application/json", exclusive=True)
            result.record_key = key
        except LifeboatError as exc:
            result.check("record", False, f"could not write the verification record {storage.uri(key)}: {exc}")
    return result


# ------------------------------------------------------------------ reports

def overall(results: list[Result]) -> str:
    found = {r.outcome for r in results}
    return "failed" if "failed" in found else "inconclusive" if "inconclusive" in found else "passed"


def render_markdown(results: list[Result], storage_url: str) -> str:
    lines = ["# Lifeboat backup verification", "",
             f"- store: `{storage_url}`", f"- generated: {mf.iso(mf.utcnow())}",
             f"- outcome: **{overall(results).upper()}**", ""]
    for r in results:
        lines += [f"## {r.database or 'older-procedure dump'}: `{r.backup_id}` - {r.outcome.upper()}", "",
                  f"- artifact: `{r.artifact}`" + (" (older procedure, no manifest)" if r.legacy else ""),
                  f"- level: {r.level}", f"- started: {mf.iso(r.started_at)}, finished: "
                  f"{mf.iso(r.finished_at or mf.utcnow())}"]
        if r.restore_duration_s is not None:
            lines.append(f"- restore: {r.restore_duration_s:.1f}s for {r.restored_bytes} bytes"
                         + (f" (RTO {r.rto_s_per_gib} s/GiB)" if r.rto_s_per_gib else ""))
        if r.scratch_database:
            lines.append(f"- scratch database: `{r.scratch_database}` (dropped)")
        if r.swept:
            lines.append(f"- stale scratch databases dropped: {', '.join(r.swept)}")
        if r.record_key:
            lines.append(f"- verification record: `{r.record_key}`")
        lines += ["", "| check | outcome | detail |", "|---|---|---|"]
        for c in r.checks:
            detail = str(c["detail"]).replace("|", "\\|").replace("\n", " ")
            shown = c["outcome"].upper() if c["outcome"] in ("failed", "inconclusive") else c["outcome"]
            lines.append(f"| {c['name']} | {shown} | {detail} |")
        if r.row_counts:
            lines += ["", "| table | rows |", "|---|---:|"]
            lines += [f"| {t} | {n} |" for t, n in sorted(r.row_counts.items())]
        lines.append("")
    return "\n".join(lines)


def write_reports(results: list[Result], report_dir: str, storage_url: str) -> dict[str, str]:
    """Markdown and JSON reports in ``report_dir`` (directory 0700, files 0600)."""
    os.makedirs(report_dir, mode=0o700, exist_ok=True)
    os.chmod(report_dir, 0o700)
    stamp = mf.stamp(mf.utcnow())
    # a random part: two runs of the same second (one process or two) never overwrite each other's report
    base = os.path.join(report_dir, f"verify-{stamp}-{os.getpid()}-{secrets.token_hex(3)}")
    paths = {"markdown": base + ".md", "json": base + ".json"}
    payload = {"store": storage_url, "outcome": overall(results), "results": [r.record() for r in results]}
    for kind, data in (("markdown", render_markdown(results, storage_url)),
                       ("json", json.dumps(payload, indent=2, sort_keys=True) + "\n")):
        fd = os.open(paths[kind], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
        os.chmod(paths[kind], 0o600)
    return paths
