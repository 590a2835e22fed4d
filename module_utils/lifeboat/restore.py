"""Restore engine: choose a backup, decode it, restore it safely, check it.

The incident runbook as code (docs/runbook-restore.md):

1. choose the backup: latest *verified* by default (newest backup with a passed
   verification record; when a newer unverified one exists, a warning names it;
   when none is verified, the latest complete backup with a warning, or an error
   with ``require_verified``), by id, or the latest strictly before a time;
2. maintenance hook on (command argv / HTTP call / nothing); the resume hook
   ALWAYS runs at the end, also when a step failed;
3. safety snapshot of the current database, a normal Lifeboat backup
   (skipped only with ``safety_snapshot: false``);
4. fetch -> sha256 -> decrypt -> decompress, streamed into pg_restore/psql; a
   parallel restore (``jobs > 1``) stages the decoded dump in a local file
   after checking the free space;
5. restore: ``swap`` (default: into ``<db>_lifeboat_new_<stamp>``, checked, then
   sessions terminated and both renames in ONE transaction; the previous
   database is kept as ``<db>_lifeboat_old_<stamp>``), ``in_place`` (drop and
   recreate: NOT atomic), ``partial`` (selected tables or schemas: the backup is
   restored into a staging database, then the tables' rows are replaced in the
   existing database in ONE transaction, owned sequences set, foreign keys that
   involve them checked before commit), or ``side_schema`` (the tables copied
   into a new schema of the existing database); schema-only / data-only;
6. row counts of the restored tables checked against the manifest, post-restore
   hooks run;
7. a summary with the duration of each step.

The swap path only terminates the application's sessions after the new
database is fully restored and checked, so an interrupted restore never leaves
the original database half-restored. Scratch databases (drills, staging) are
named ``lifeboat_drill_<stamp>_<rand>`` / ``lifeboat_stage_<stamp>_<rand>``,
always dropped in ``finally`` and swept when stale.
"""
from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterator

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import tmpfiles
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    ConnectionFailed,
    EncryptionError,
    IntegrityError,
    LifeboatError,
    NotFound,
    RestoreError,
    SafetyError,
    VersionMismatch,
)
from ansible.module_utils.lifeboat.s3 import mask_url
from ansible.module_utils.lifeboat.storage import Storage

CHUNK = 1024 * 1024
GIB = 1024 ** 3
SCRATCH_PREFIXES = ("lifeboat_drill_", "lifeboat_stage_")
APP_NAME = "lifeboat-restore"
RESTORE_PGOPTIONS = "-c synchronous_commit=off -c maintenance_work_mem=256MB"
_SCRATCH_RE = re.compile(r"^lifeboat_(?:drill|stage)_(\d{8}t\d{6}z)_[0-9a-f]+$")
MODES = ("swap", "in_place", "partial", "side_schema")
# pg_restore: error: ... / psql:<stdin>:12: ERROR: ... / FATAL: ... (not NOTICE lines naming an "error_log" table)
_ERROR_LINE = re.compile(r"(^|:\s*)(error|ERROR|FATAL|fatal|PANIC):")


# ------------------------------------------------------------------ names

def _stamp(when: _dt.datetime) -> str:
    return mf.stamp(when).lower()


def _fit(base: str, suffix: str) -> str:
    """``base + suffix`` within PostgreSQL's 63-byte identifier limit (base shortened)."""
    room = 63 - len(suffix.encode())
    raw = base.encode()[:room].decode("utf-8", "ignore")
    return raw + suffix


def new_db_name(database: str, when: _dt.datetime) -> str:
    return _fit(database, f"_lifeboat_new_{_stamp(when)}")


def old_db_name(database: str, when: _dt.datetime) -> str:
    return _fit(database, f"_lifeboat_old_{_stamp(when)}")


def scratch_name(kind: str, when: _dt.datetime, rand: str | None = None) -> str:
    """``lifeboat_drill_<stamp>_<rand>``: unique, and its age is readable from the name."""
    if kind not in ("drill", "stage"):
        raise ValueError(kind)
    return f"lifeboat_{kind}_{_stamp(when)}_{rand or secrets.token_hex(4)}"


def scratch_age(name: str, now: _dt.datetime) -> _dt.timedelta | None:
    m = _SCRATCH_RE.match(name)
    if not m:
        return None
    when = _dt.datetime.strptime(m.group(1).upper(), mf.STAMP_FORMAT).replace(tzinfo=_dt.UTC)
    return now - when


# ------------------------------------------------------------------ keys

@dataclass
class DecryptKeys:
    """What decrypts an artifact. ``passphrase`` is a secret (handed to gpg through a pipe fd)."""

    gpg_homedir: str | None = None
    secret_key_file: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    age_identity_file: str | None = None


# ------------------------------------------------------------------ sources

@dataclass
class Source:
    """A backup ready to be decoded: where it is and how it was written."""

    ref: mf.BackupRef
    manifest: dict[str, Any] | None
    fmt: str               # custom | plain | directory
    compression: str       # zstd | gzip | none
    encryption: str        # gpg | age | none
    sha256: str | None
    size: int | None
    dump_sha256: str | None
    dump_size: int | None

    @property
    def legacy(self) -> bool:
        return self.manifest is None

    @property
    def backup_id(self) -> str:
        return self.ref.backup_id

    @property
    def database(self) -> str | None:
        return self.ref.database


def source_for(storage: Storage, ref: mf.BackupRef) -> Source:
    """Read the manifest (a Lifeboat backup) or describe an older-procedure dump."""
    if ref.legacy or ref.manifest_key is None:
        return Source(ref, None, "plain", "gzip", "none", None, None, None, None)
    man = mf.read_manifest(storage, ref.manifest_key)
    art = man.get("artifact", {})
    return Source(ref, man, man.get("format", "custom"), (man.get("compression") or {}).get("algorithm", "none"),
                  (man.get("encryption") or {}).get("method", "none"), art.get("sha256"), art.get("size"),
                  art.get("dump_sha256"), art.get("dump_size"))


def verification_records(storage: Storage, ref: mf.BackupRef) -> list[dict[str, Any]]:
    """The verification records written next to a backup, oldest first."""
    prefix = ref.layout().verification_prefix
    records = []
    for obj in storage.list(prefix):
        if not obj.key.endswith(".json"):
            continue
        try:
            rec = json.loads(storage.get_bytes(obj.key))
        except (ValueError, LifeboatError):
            continue
        if rec.get("schema") == mf.VERIFY_SCHEMA:
            records.append(rec)
    return sorted(records, key=lambda r: r.get("finished_at", ""))


def is_verified(records: list[dict[str, Any]]) -> bool:
    """Verified = the most recent record passed."""
    return bool(records) and records[-1].get("outcome") == "passed"


@dataclass
class Choice:
    ref: mf.BackupRef
    reason: str
    warnings: list[str]


def choose_backup(storage: Storage, database: str | None, backup_id: str | None = None,
                  before: str | _dt.datetime | None = None, prefix: str = "",
                  require_verified: bool = False, include_legacy: bool = True) -> Choice:
    """Pick the backup to restore (see the module docstring for the rule)."""
    if backup_id:
        ref = mf.select_backup(storage, database, backup_id=backup_id, prefix=prefix, include_legacy=True)
        if ref.legacy is False and ref.manifest_key and not storage.exists(ref.manifest_key):
            raise NotFound(f"backup_id: backup '{backup_id}' has no manifest", "backup_id")
        return Choice(ref, f"backup id {backup_id}", [])
    when = mf.parse_time(before) if isinstance(before, str) else before
    refs = [r for r in mf.iter_backups(storage, database, prefix, include_legacy)
            if when is None or r.created_at < when]
    if not refs:
        # the shared selector words the error consistently
        mf.select_backup(storage, database, before=when, prefix=prefix, include_legacy=include_legacy)
    refs.sort(key=lambda r: (r.created_at, r.backup_id), reverse=True)
    when_txt = f" before {mf.iso(when)}" if when else ""
    skipped: list[str] = []
    for ref in refs:
        if is_verified(verification_records(storage, ref)):
            warnings = []
            if skipped:
                warnings.append(f"newer backups exist that are not verified ({', '.join(skipped)}); the latest "
                                f"verified one, {ref.backup_id}, was chosen. Pass backup_id to use a newer one")
            return Choice(ref, f"latest verified backup{when_txt}", warnings)
        skipped.append(ref.backup_id)
    if require_verified:
        raise NotFound(f"require_verified: no backup{when_txt} under {storage.url} has a passed verification "
                       f"record (unverified: {', '.join(skipped)}); run verify.yml or pass backup_id",
                       "require_verified")
    return Choice(refs[0], f"latest complete backup{when_txt}",
                  [f"no backup{when_txt} has a passed verification record; using the latest complete backup "
                   f"{refs[0].backup_id} (run verify.yml to verify backups)"])


# ------------------------------------------------------------------ decoding

class _Tail:
    """Keep the last lines a child process wrote on stderr (bounded)."""

    def __init__(self, stream, name: str, limit: int = 50):
        self.name = name
        self.lines: collections.deque[str] = collections.deque(maxlen=limit)
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip())
        stream.close()

    def join(self) -> None:
        self._thread.join(timeout=30)

    def text(self, n: int = 6) -> str:
        return " | ".join(list(self.lines)[-n:])


@dataclass
class DecodeResult:
    stored_size: int = 0
    stored_sha256: str = ""
    dump_size: int = 0
    dump_sha256: str = ""
    seconds: float = 0.0


def _decryptor(src: Source, keys: DecryptKeys):
    from ansible.module_utils.lifeboat import crypto

    if src.encryption == "none":
        return None
    if src.encryption == "age" and not keys.age_identity_file:
        raise ConfigError("age_identity_file: the backup is encrypted with age; give the identity file that "
                          "decrypts it", "age_identity_file")
    if src.encryption == "gpg" and not (keys.gpg_homedir or keys.secret_key_file or keys.passphrase):
        raise ConfigError("gpg_homedir: the backup is encrypted with gpg; give gpg_homedir or gpg_key_file "
                          "(public-key mode) or passphrase (symmetric mode)", "gpg_homedir")
    return crypto.prepare_decryptor(crypto.DecryptionSpec(
        method=src.encryption, secret_key_file=keys.secret_key_file, gpg_homedir=keys.gpg_homedir,
        passphrase=keys.passphrase, identity_file=keys.age_identity_file))


def stored_sha256(storage: Storage, key: str) -> tuple[str, int]:
    """sha256 and size of a stored object, read to the end (used to name the cause of a failure)."""
    digest = hashlib.sha256()
    size = 0
    with contextlib.closing(storage.open_reader(key)) as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def decode(storage: Storage, src: Source, keys: DecryptKeys, sink: Callable[[bytes], None],
           check_sha256: bool = True) -> DecodeResult:
    """Stream the stored artifact through sha256 -> decrypt -> decompress into ``sink`` (pipeline.py).

    Nothing is written locally. When decoding fails, the stored object's sha256
    is compared with the manifest's so that a tampered or truncated artifact is
    reported as such (a decryption or decompression error is then only its
    consequence), and a wrong key is named as the cause. ``sink`` may raise
    BrokenPipeError to say it has seen enough: the rest is still read and hashed.
    """
    from ansible.module_utils.lifeboat import pipeline

    started = time.monotonic()
    if not storage.exists(src.ref.artifact_key):
        raise NotFound(f"artifact {storage.uri(src.ref.artifact_key)} of backup {src.backup_id} is missing")
    dec = _decryptor(src, keys)
    sink_state = {"open": True}

    def safe_sink(data: bytes) -> None:
        if sink_state["open"]:
            try:
                sink(data)
            except BrokenPipeError:
                sink_state["open"] = False

    try:
        res = pipeline.run_restore_stream(
            storage, src.ref.artifact_key, safe_sink, compression=src.compression, decryptor=dec,
            expected_sha256=src.sha256 if check_sha256 else None, expected_size=None)
    except LifeboatError as exc:
        if check_sha256 and src.sha256 and not isinstance(exc, IntegrityError):
            try:
                got, size = stored_sha256(storage, src.ref.artifact_key)
            except LifeboatError:
                got, size = "", 0
            if got and got != src.sha256:
                raise _mismatch(storage, src, got, size) from None
        if isinstance(exc, IntegrityError) and "sha256" in str(exc) and src.sha256:
            got, size = stored_sha256(storage, src.ref.artifact_key)
            raise _mismatch(storage, src, got, size) from None
        text = str(exc)
        low = text.lower()
        if isinstance(exc, EncryptionError) and any(s in low for s in ("no secret key", "bad session key",
                                                                       "bad passphrase", "no identity matched",
                                                                       "incorrect passphrase")):
            option = "age_identity_file" if src.encryption == "age" else "gpg_homedir"
            raise EncryptionError(f"decryption of backup {src.backup_id} failed: wrong decryption key ({text}); "
                                  f"check {option} / passphrase", option) from None
        if src.legacy or not isinstance(exc, EncryptionError):
            raise type(exc)(f"backup {src.backup_id}: {text} - the artifact is damaged or truncated"
                            if "decompress" in low or "zstd" in low or "gzip" in low or "unexpected end" in low
                            else f"backup {src.backup_id}: {text}", exc.option) from None
        raise
    finally:
        if dec is not None:
            dec.cleanup()
    result = DecodeResult(res.size, res.sha256, res.output_size, res.output_sha256, time.monotonic() - started)
    if check_sha256 and src.dump_sha256 and result.dump_sha256 != src.dump_sha256:
        raise IntegrityError(f"the decoded dump of {src.backup_id} has sha256 {result.dump_sha256}, the manifest "
                             f"says {src.dump_sha256}")
    return result


def _mismatch(storage: Storage, src: Source, got: str, size: int) -> IntegrityError:
    return IntegrityError(
        f"checksum mismatch for {storage.uri(src.ref.artifact_key)}: the stored object's sha256 is {got} "
        f"({size} bytes), the manifest says {src.sha256} ({src.size} bytes); the artifact was altered or "
        "truncated - do not restore it")


# ------------------------------------------------------------------ PostgreSQL helpers

def _ident(name: str):
    from psycopg import sql

    return sql.Identifier(name)


def database_exists(conn: Any, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)).fetchone() is not None


def other_sessions(conn: Any, name: str) -> list[dict[str, Any]]:
    """Other sessions on ``name`` that would block a restore into it.

    Autovacuum workers are left out: the server cancels them itself for DROP and
    RENAME, and one often starts right after an incident deleted rows.
    """
    rows = conn.execute(
        "SELECT pid, usename, application_name, client_addr::text FROM pg_catalog.pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid() "
        "AND backend_type IS DISTINCT FROM 'autovacuum worker'", (name,)).fetchall()
    return [{"pid": r[0], "user": r[1], "application": r[2], "client": r[3]} for r in rows]


def create_database(conn: Any, name: str, owner: str | None = None) -> None:
    from psycopg import sql

    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(_ident(name))
    if owner:
        query = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(_ident(name), _ident(owner))
    conn.execute(query)


def drop_database(conn: Any, name: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name)))


def database_properties(conn: Any, name: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(d.datdba), d.datacl IS NULL FROM pg_catalog.pg_database d "
        "WHERE d.datname = %s", (name,)).fetchone()
    if row is None:
        raise NotFound(f"database '{name}' does not exist", "database")
    acl = conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, "
        "a.privilege_type, a.is_grantable FROM pg_catalog.pg_database d, "
        "LATERAL pg_catalog.aclexplode(d.datacl) a WHERE d.datname = %s ORDER BY 1, 2", (name,)).fetchall()
    settings = conn.execute(
        "SELECT unnest(s.setconfig) FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d "
        "ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0", (name,)).fetchall()
    # ALTER ROLE ... IN DATABASE ... SET: tied to the database's oid, they would stay with the old one
    role_settings = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(s.setrole), unnest(s.setconfig) FROM pg_catalog.pg_db_role_setting s "
        "JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole <> 0 "
        "ORDER BY 1", (name,)).fetchall()
    return {"owner": row[0], "default_acl": bool(row[1]), "acl": [list(r) for r in acl],
            "settings": [r[0] for r in settings], "role_settings": [list(r) for r in role_settings]}


# settings whose value is a list of names, each double-quoted when needed (pg_dump's variable_is_guc_list_quote):
# their stored text is a list, to be set back as one literal per element
_GUC_LIST_QUOTE = frozenset(("local_preload_libraries", "search_path", "session_preload_libraries",
                             "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"))


def split_guc_list(value: str) -> list[str]:
    """``"UPPER", public`` -> ['UPPER', 'public'] (the server's SplitGUCList: "" inside quotes is one ")."""
    items: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            buf: list[str] = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(value[i])
                i += 1
            items.append("".join(buf))
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            items.append(value[start:i].rstrip())
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == ",":
            i += 1
            continue
        return items


def _setting(item: str):
    """``name=value`` from pg_db_role_setting -> ``name = 'value'`` (a list setting: one literal per element)."""
    from psycopg import sql

    key, _, value = item.partition("=")
    if key.lower() in _GUC_LIST_QUOTE:
        return sql.SQL("{} = {}").format(_ident(key), sql.SQL(", ").join(sql.Literal(v)
                                                                          for v in split_guc_list(value)))
    return sql.SQL("{} = {}").format(_ident(key), sql.Literal(value))


def apply_database_properties(conn: Any, name: str, props: dict[str, Any]) -> None:
    """Give database ``name`` the owner, ACL and settings captured from another database."""
    from psycopg import sql

    db = _ident(name)
    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, _ident(props["owner"])))
    if not props["default_acl"]:
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        for grantee, priv, grantable in props["acl"]:
            who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else _ident(grantee)
            conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(priv), db, who, sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    for item in props["settings"]:
        conn.execute(sql.SQL("ALTER DATABASE {} SET {}").format(db, _setting(item)))
    for role, item in props.get("role_settings", []):
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET {}").format(_ident(role), db, _setting(item)))


def terminate_sessions(conn: Any, name: str, timeout: float = 30.0) -> int:
    """Terminate every other session on ``name`` and wait until they are gone."""
    rows = conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()", (name,)).fetchall()
    deadline = time.monotonic() + timeout
    while other_sessions(conn, name):
        if time.monotonic() > deadline:
            raise SafetyError(f"sessions on database '{name}' did not end within {timeout:.0f}s after "
                              "pg_terminate_backend")
        time.sleep(0.1)
    return len(rows)


def swap_databases(conn: Any, database: str, new_name: str, old_name: str) -> int:
    """Put ``new_name`` in place of ``database``; the previous one becomes ``old_name``.

    New connections to the original are refused first (ALLOW_CONNECTIONS false),
    its sessions terminated, then both renames happen in one transaction: either
    both or none. Returns the number of sessions terminated.
    """
    from psycopg import sql

    if database_exists(conn, old_name):
        raise SafetyError(f"cannot swap: database '{old_name}' already exists")
    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(_ident(database)))
    try:
        terminated = terminate_sessions(conn, database)
        with conn.transaction():
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(database), _ident(old_name)))
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(new_name), _ident(database)))
    finally:
        # whichever name the previous database has now, let the operator in again
        for name in (old_name, database):
            if database_exists(conn, name):
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_ident(name)))
    return terminated


def reopen_connections(admin: "Admin", *names: str) -> None:
    """Best effort, on a fresh connection: ALLOW_CONNECTIONS true for the databases that exist."""
    from psycopg import sql

    with contextlib.suppress(Exception), admin.connect() as conn:
        for name in names:
            if database_exists(conn, name):
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_ident(name)))


def sweep_scratch(conn: Any, older_than_hours: float, now: _dt.datetime | None = None) -> list[str]:
    """Drop scratch databases (drill/staging) older than the given age and not in use; returns their names."""
    now = now or mf.utcnow()
    dropped = []
    names = [r[0] for r in conn.execute(
        "SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE 'lifeboat\\_drill\\_%' "
        "OR datname LIKE 'lifeboat\\_stage\\_%'").fetchall()]
    for name in names:
        age = scratch_age(name, now)
        # a scratch database still in use (a long drill or partial restore) is left alone
        if age is not None and age >= _dt.timedelta(hours=older_than_hours) and not other_sessions(conn, name):
            drop_database(conn, name)
            dropped.append(name)
    return dropped


@contextlib.contextmanager
def scratch_database(admin, kind: str = "drill", owner: str | None = None) -> Iterator[str]:
    """A database with a unique scratch name, ALWAYS dropped on exit (also on failure)."""
    name = scratch_name(kind, mf.utcnow())
    with admin.connect("postgres" if not admin.maintenance_db else admin.maintenance_db) as conn:
        create_database(conn, name, owner)
    try:
        yield name
    finally:
        with admin.connect(admin.maintenance_db or "postgres") as conn:
            drop_database(conn, name)


# ------------------------------------------------------------------ restore into a database

@dataclass
class Admin:
    """An administrative connection target (PgTarget) plus the maintenance database and client binaries."""

    target: Any                     # pgconn.PgTarget
    maintenance_db: str = "postgres"
    bin_dirs: list[str] | None = None
    _major: int | None = None

    def connect(self, database: str | None = None):
        return self.target.connect(database or self.maintenance_db)

    def server_major(self) -> int:
        if self._major is None:
            from ansible.module_utils.lifeboat.pgconn import server_major

            with self.connect() as conn:
                num = int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0])
            self._major = server_major(num)
        return self._major

    def client(self, name: str) -> str:
        from ansible.module_utils.lifeboat.pgconn import find_client

        return find_client(name, self.server_major(), self.bin_dirs)[0]


def dbname_arg(database: str) -> str:
    """``-d`` value naming exactly this database: a conninfo string, so that a name holding ``=`` or
    starting with ``postgresql://`` is never parsed as connection options by pg_restore/psql/pg_dump."""
    return "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"


def restore_argv(admin: Admin, src: Source, database: str, *, no_owner: bool, schema_only: bool = False,
                 data_only: bool = False, jobs: int = 1, file: str | None = None, clean: bool = False) -> list[str]:
    """pg_restore / psql command line (no secret: the password is in PGPASSFILE)."""
    if src.fmt == "plain":
        if schema_only or data_only:
            raise ConfigError("schema_only/data_only: a plain SQL dump is restored as a whole (psql); use a "
                              "custom-format backup for schema-only or data-only", "schema_only")
        return [admin.client("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname_arg(database), "-o",
                os.devnull, "-f", file or "-"]
    argv = [admin.client("pg_restore"), "--exit-on-error", "-d", dbname_arg(database)]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    if schema_only:
        argv.append("--schema-only")
    if data_only:
        argv += ["--data-only", "--disable-triggers"]
    if clean:
        argv += ["--clean", "--if-exists"]
    if src.fmt == "directory":
        argv += ["-F", "d"]
    if jobs > 1:
        argv += ["-j", str(jobs)]
    if file:
        argv.append(file)
    return argv


def check_free_space(directory: str, needed: int, keep_free: int) -> dict[str, int]:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free - needed < keep_free:
        raise RestoreError(
            f"staging_dir: not enough disk for a parallel restore: the decoded dump needs {needed} bytes in "
            f"{directory}, {free} bytes are free and staging_keep_free asks to keep {keep_free} free; free some "
            "space, point staging_dir elsewhere, or use jobs: 1 to stream without a local file", "staging_dir")
    return {"needed": needed, "free": free}


# ------------------------------------------------------------------ plain SQL dumps (older procedure)

_DUMPED_FROM = re.compile(rb"^-- Dumped from database version (\d+)")
_DUMPED_BY = re.compile(rb"^-- Dumped by pg_dump version (\d+)")
# database-level statements of a ``pg_dump --create [--clean]`` dump and its \connect to the dumped database
_DB_LEVEL = re.compile(rb"^(?:DROP DATABASE|CREATE DATABASE|ALTER DATABASE|COMMENT ON DATABASE|\\connect\b|\\c\s"
                       rb"|(?:GRANT|REVOKE) [^;]* ON DATABASE )")
_CONNECT = b"\n\\connect"
_PREAMBLE_LIMIT = 1024 * 1024
_PLAIN_TAIL = b"-- PostgreSQL database dump complete"


class PlainDumpGuard:
    r"""Guard a plain SQL dump on its way to psql: the body passes through untouched.

    A preamble is what pg_dump writes before the first object, and again after each
    ``\connect``: comments, ``SET``, ``set_config``, ``\restrict``/``\unrestrict``
    and, for ``--create [--clean]`` dumps, ``DROP DATABASE``/``CREATE DATABASE``/
    ``ALTER DATABASE``/``COMMENT ON DATABASE``/``GRANT ... ON DATABASE`` and
    ``\connect``. Those database-level statements name the DUMPED database: run as
    they are, they would drop and recreate the live database and restore into it
    instead of the new one (or fail on a server where it does not exist). They are
    skipped: the target is the database Lifeboat created, whose owner, settings and
    privileges are copied from the current database.

    ``SET transaction_timeout`` (written by pg_dump 17 and newer whatever the
    server) is skipped on servers older than 17, which do not know it. A dump of
    a server newer than the target is refused: pg_dump's output is only meant to
    load into the same or a newer major version. At the end, the dump must have
    had pg_dump's header and its "dump complete" trailer (else it is not a dump, or
    pg_dump did not finish); the caller then stops psql before it sees the end.
    """

    def __init__(self, write: Callable[[bytes], None], server_major: int, backup_id: str):
        self._write = write
        self.server_major = server_major
        self.backup_id = backup_id
        self._buf = b""      # line mode: the incomplete last line
        self._carry = b""    # pass-through: the last bytes, in case a "\n\connect" spans two chunks
        self._lines_mode = True
        self.source_major: int | None = None
        self.pg_dump_major: int | None = None
        self.skipped: list[str] = []
        self._head_ok = False
        self._size = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        self._tail = (self._tail + chunk[-4096:])[-4096:]  # the trailer, then \unrestrict and blank lines
        pending = chunk
        while pending:
            pending = self._lines(pending) if self._lines_mode else self._pass(pending)

    def _pass(self, data: bytes) -> bytes:
        data, self._carry = self._carry + data, b""
        at = data.find(_CONNECT)
        if at >= 0:  # a \connect in the body: what follows is database-level again
            self._write(data[: at + 1])
            self._lines_mode = True
            return data[at + 1:]
        keep = len(_CONNECT) - 1
        self._write(data[:-keep])
        self._carry = data[-keep:]
        return b""

    def _lines(self, data: bytes) -> bytes:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) <= _PREAMBLE_LIMIT:
                    return b""
                rest, self._buf = self._buf, b""  # not pg_dump's preamble: pass everything through
                self._lines_mode = False
                return rest
            line, self._buf = self._buf[: nl + 1], self._buf[nl + 1:]
            if not self._line(line):
                rest, self._buf = line + self._buf, b""
                self._lines_mode = False
                return rest

    def close(self) -> None:
        """End of the dump: it must be pg_dump's, and complete."""
        if self._lines_mode and self._buf:
            line, self._buf = self._buf, b""
            if not self._line(line):
                self._write(line)
        if self._carry:
            self._write(self._carry)
            self._carry = b""
        if self._size == 0:
            raise IntegrityError(f"backup {self.backup_id}: the dump is empty (0 bytes of SQL): nothing to restore")
        if not self._head_ok:
            raise IntegrityError(f"backup {self.backup_id}: the dump does not start like a pg_dump SQL script "
                                 "(no '-- PostgreSQL database dump' header): not restoring it")
        if _PLAIN_TAIL not in self._tail:
            raise IntegrityError(f"backup {self.backup_id}: the dump has no '-- PostgreSQL database dump complete' "
                                 "trailer: it is truncated (pg_dump did not finish); not restoring it")

    def _line(self, line: bytes) -> bool:
        """Handle one preamble line; False when ``line`` is not preamble (the body starts with it)."""
        text = line.rstrip(b"\r\n")
        if not text.strip() or text.startswith(b"--"):
            if text.startswith(b"-- PostgreSQL database dump"):
                self._head_ok = True
            m = _DUMPED_FROM.match(text)
            if m:
                self.source_major = int(m.group(1))  # 9.6 -> 9
                if self.source_major > self.server_major:
                    raise VersionMismatch(
                        f"this is a dump of PostgreSQL {self.source_major} "
                        f"({text.decode(errors='replace')[3:].strip()}) and the target server is PostgreSQL "
                        f"{self.server_major}: pg_dump's output only loads into the same or a newer major version. "
                        f"Restore it onto a PostgreSQL {self.source_major} (or newer) server", "backup_id")
            m = _DUMPED_BY.match(text)
            if m:
                self.pg_dump_major = int(m.group(1))
            self._write(line)
        elif text.startswith(b"SET transaction_timeout") and self.server_major < 17:
            self.skipped.append(text.decode(errors="replace"))
        elif text.startswith((b"SET ", b"SELECT pg_catalog.set_config(", b"\\restrict ", b"\\unrestrict ")):
            self._write(line)
        elif _DB_LEVEL.match(text):
            self.skipped.append(text.decode(errors="replace"))
        else:
            return False
        return True

    def notes(self, database: str) -> list[str]:
        if not self.skipped:
            return []
        skipped = list(dict.fromkeys(self.skipped))
        return [f"plain dump {self.backup_id}: skipped statement(s) naming the dumped database or not known to "
                f"PostgreSQL {self.server_major} (restored into '{database}' instead): "
                + "; ".join(s[:120] for s in skipped)]


@dataclass
class RestoreRun:
    decode: DecodeResult
    seconds: float
    staged_file: str | None = None
    notes: list[str] = field(default_factory=list)


def restore_into(storage: Storage, src: Source, keys: DecryptKeys, admin: Admin, database: str, *,
                 no_owner: bool = False, schema_only: bool = False, data_only: bool = False, jobs: int = 1,
                 staging_dir: str | None = None, staging_keep_free: int = 0,
                 app_name: str = APP_NAME) -> RestoreRun:
    """Decode the backup and restore it into the existing (normally empty) ``database``."""
    started = time.monotonic()
    if jobs > 1 and src.fmt == "plain":
        jobs = 1  # psql has no parallel mode
    if jobs > 1 or src.fmt == "directory":  # pg_restore -j and the directory format need local files
        needed = int(src.dump_size or (src.size or 0) * 4)
        tmpfiles.sweep_stale(staging_dir or tempfile.gettempdir(), "lifeboat-restore-")  # before measuring
        check_free_space(staging_dir or tempfile.gettempdir(), needed, staging_keep_free)
        tmpdir = tmpfiles.private_dir("lifeboat-restore-", dir=staging_dir)
        try:
            path = os.path.join(tmpdir, "dump")
            if src.fmt == "directory":
                os.makedirs(path, mode=0o700)
                tar = subprocess.Popen(["tar", "-x", "-C", path, "-f", "-"], stdin=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
                assert tar.stdin is not None
                dec = decode(storage, src, keys, tar.stdin.write)
                tar.stdin.close()
                err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
                if tar.wait() != 0:
                    raise RestoreError(f"unpacking {src.backup_id} into {tmpdir} failed: {err.strip()}")
                tocs = [d for d, _s, files in os.walk(path) if "toc.dat" in files]
                if not tocs:
                    raise IntegrityError(f"the directory-format backup {src.backup_id} has no toc.dat")
                path = tocs[0]
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    dec = decode(storage, src, keys, fh.write)
            _run_restore_process(admin, src, database, restore_argv(
                admin, src, database, no_owner=no_owner, schema_only=schema_only, data_only=data_only,
                jobs=jobs, file=path), None, app_name)
            return RestoreRun(dec, time.monotonic() - started, staged_file=path)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    argv = restore_argv(admin, src, database, no_owner=no_owner, schema_only=schema_only, data_only=data_only)
    holder: dict[str, DecodeResult] = {}
    guards: list[PlainDumpGuard] = []

    def produce(write: Callable[[bytes], None]) -> None:
        if src.fmt != "plain":
            holder["dec"] = decode(storage, src, keys, write)
            return
        guard = PlainDumpGuard(write, admin.server_major(), src.backup_id)
        guards.append(guard)
        holder["dec"] = decode(storage, src, keys, guard.feed)
        guard.close()

    _run_restore_process(admin, src, database, argv, produce, app_name)
    notes = guards[0].notes(database) if guards else []
    if no_owner and src.fmt == "plain":
        notes.append(f"no_owner: true does not apply to {src.backup_id}, a plain SQL dump: psql runs its OWNER TO "
                     "and GRANT statements as written (the roles they name must exist on this server)")
    return RestoreRun(holder["dec"], time.monotonic() - started, notes=notes)


def _run_restore_process(admin: Admin, src: Source, database: str, argv: list[str],
                         produce: Callable[[Callable[[bytes], None]], None] | None, app_name: str) -> None:
    label = os.path.basename(argv[0])
    with admin.target.child_env(database) as env:
        env["PGAPPNAME"] = app_name
        # session settings of the restore only: the target is new (or being rebuilt) and is checked
        # before use, so commits need not wait for the WAL flush; bigger index builds
        env["PGOPTIONS"] = (env.get("PGOPTIONS", "") + " " + RESTORE_PGOPTIONS).strip()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if produce else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        tail = _Tail(proc.stderr, label)
        decode_error: BaseException | None = None
        try:
            if produce is not None:
                assert proc.stdin is not None

                def write(chunk: bytes) -> None:
                    proc.stdin.write(chunk)  # type: ignore[union-attr]

                try:
                    produce(write)
                except BaseException as exc:  # noqa: BLE001 - decided below, with the child's status
                    decode_error = exc
                finally:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
                    if decode_error is not None and proc.poll() is None:
                        proc.kill()
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            tail.join()
    errors = [ln for ln in tail.lines if _ERROR_LINE.search(ln)]
    if decode_error is not None and not isinstance(decode_error, BrokenPipeError):
        raise decode_error
    if rc != 0 or errors:
        detail = " | ".join(errors[-4:]) or tail.text()
        low = detail.lower()
        if any(s in low for s in ("terminating connection", "server closed the connection", "connection to server",
                                  "could not connect", "no connection to the server")):
            raise ConnectionFailed(f"connection lost while restoring {src.backup_id} into '{database}' "
                                   f"({label} exit {rc}): {detail}")
        role = re.search(r'role "([^"]+)" does not exist', detail)
        if role:
            detail += (f" - the dump names role '{role.group(1)}' (owner or GRANT), which this server lacks: create "
                       "the dump's roles first (pg_dumpall --globals-only of the old server, or CREATE ROLE ... "
                       "NOLOGIN), then rerun" + ("" if src.fmt == "plain" else "; or restore with no_owner: true "
                                                 "(the restoring user owns everything, GRANTs are not restored)"))
        raise RestoreError(f"{label} restoring {src.backup_id} into '{database}' failed (exit {rc}): {detail}")
    if isinstance(decode_error, BrokenPipeError):
        raise RestoreError(f"{label} stopped reading the dump of {src.backup_id} early (exit {rc})")


# ------------------------------------------------------------------ checks after a restore

def manifest_tables(src: Source) -> list[tuple[str, str]]:
    return [(t["schema"], t["name"]) for t in (src.manifest or {}).get("tables", [])]


def compare_counts(conn: Any, src: Source, only: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Exact row counts of the restored tables against the manifest."""
    from ansible.module_utils.lifeboat import pgmeta

    expected = {(t["schema"], t["name"]): int(t["rows"]) for t in (src.manifest or {}).get("tables", [])}
    tables = [t for t in expected if only is None or t in only]
    existing = set(pgmeta.list_tables(conn))
    mismatches, missing, counted = [], [], {}
    for schema, name in tables:
        if (schema, name) not in existing:
            missing.append(f"{schema}.{name}")
            continue
        got = pgmeta.row_counts(conn, [(schema, name)])[0]["rows"]
        if got != expected[(schema, name)] and _count_with_children(conn, schema, name) == expected[(schema, name)]:
            got = expected[(schema, name)]  # a manifest written before counts were ONLY (children included)
        counted[f"{schema}.{name}"] = got
        if got != expected[(schema, name)]:
            mismatches.append(f"{schema}.{name}: {got} rows, manifest {expected[(schema, name)]}")
    return {"tables": len(tables), "counts": counted, "mismatches": mismatches, "missing": missing,
            "ok": not mismatches and not missing}


def _count_with_children(conn: Any, schema: str, name: str) -> int | None:
    """count(*) including inheritance children, or None when the table has none."""
    from psycopg import sql

    if not conn.execute("SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhparent "
                        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                        "AND c.relname = %s", (schema, name)).fetchone():
        return None
    return int(conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(_ident(schema), _ident(name))).fetchone()[0])


def report_counts(conn: Any) -> dict[str, int]:
    """Row counts of every table (older-procedure dumps: reported, nothing to compare with)."""
    from ansible.module_utils.lifeboat import pgmeta

    return {f"{r['schema']}.{r['name']}": r["rows"] for r in pgmeta.row_counts(conn, pgmeta.list_tables(conn))}


def schema_hash_for(conn: Any, src: Source) -> str:
    """Recompute the schema hash with the scope the backup engine used (backup._scope_schemas)."""
    from types import SimpleNamespace

    from ansible.module_utils.lifeboat import backup, pgmeta

    scope = (src.manifest or {}).get("scope", {}) or {}
    req = SimpleNamespace(include_tables=scope.get("include_tables") or [],
                          include_schemas=scope.get("include_schemas") or [],
                          exclude_schemas=scope.get("exclude_schemas") or [],
                          exclude_tables=scope.get("exclude_tables") or [])
    schemas, tables = backup._scope_schemas(conn, req, manifest_tables(src))
    return pgmeta.schema_hash(conn, schemas, tables)


# ------------------------------------------------------------------ safety snapshot

SNAPSHOT_PREFIX = "safety-snapshots"


def snapshot_destination(destination: str, options: dict[str, Any]) -> str:
    """Safety snapshots live apart from the regular backups (never picked as 'latest' by mistake)."""
    if options.get("destination"):
        return str(options["destination"])
    return destination.rstrip("/") + "/" + SNAPSHOT_PREFIX


def _export_gpg_keys(homedir: str, fingerprints: list[str], directory: str) -> list[str]:
    """Public keys of the manifest's recipients, exported from ``homedir`` into armored files."""
    paths = []
    for fpr in fingerprints:
        proc = subprocess.run([shutil.which("gpg") or "gpg", "--homedir", homedir, "--batch", "--armor",
                               "--export", fpr], capture_output=True, check=False, timeout=60)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise ConfigError(f"snapshot_options: the public key {fpr} of the backup's recipients is not in "
                              f"gpg_homedir {homedir}; give snapshot_options.encryption_recipients",
                              "snapshot_options")
        path = os.path.join(directory, f"{fpr}.asc")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(proc.stdout)
        paths.append(path)
    return paths


def safety_snapshot(admin: Admin, settings: Any, destination: str, database: str, src: Source, keys: DecryptKeys,
                    options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Back up the current ``database`` with the backup engine before it is changed.

    Encryption defaults to the restored backup's: the same gpg recipients (public keys exported from
    gpg_homedir), the same age recipients, or the same passphrase. ``options`` may set destination,
    format, compression, encryption, encryption_recipients, encryption_passphrase.
    """
    from ansible.module_utils.lifeboat import backup, crypto

    options = dict(options or {})
    enc_meta = (src.manifest or {}).get("encryption") or {}
    method = options.get("encryption") or enc_meta.get("method") or "none"
    tmp = tmpfiles.private_dir("lifeboat-snap-")
    try:
        recipients = list(options.get("encryption_recipients") or [])
        passphrase = options.get("encryption_passphrase")
        if method == "gpg" and not recipients and not passphrase:
            if enc_meta.get("mode") == "public-key" and enc_meta.get("recipients") and keys.gpg_homedir:
                recipients = _export_gpg_keys(keys.gpg_homedir, enc_meta["recipients"], tmp)
            elif keys.passphrase:
                passphrase = keys.passphrase
            else:
                raise ConfigError("snapshot_options: cannot tell how to encrypt the safety snapshot; give "
                                  "snapshot_options.encryption_recipients (public key files)", "snapshot_options")
        if method == "age" and not recipients:
            recipients = list(enc_meta.get("recipients") or [])
        req = backup.BackupRequest(
            target=admin.target.with_database(database), destination=snapshot_destination(destination, options),
            format=options.get("format", "custom"), compression=options.get("compression", "zstd"),
            encryption=crypto.EncryptionSpec(method=method, recipients=recipients, passphrase=passphrase),
            s3=settings, pg_bin_dir=(admin.bin_dirs or [None])[0], tags={"lifeboat": "safety-snapshot"})
        out = backup.run(req)
        return {"backup_id": out.get("backup_id"), "uri": out.get("uri"), "destination": req.destination,
                "size": out.get("size"), "sha256": out.get("sha256")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ hooks

@dataclass
class HookResult:
    name: str
    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 3), "detail": self.detail}


def describe_hook(hook: dict[str, Any] | None) -> str:
    if not hook or hook.get("type", "none") == "none":
        return "none"
    if hook["type"] == "command":
        return "command " + " ".join(hook.get("argv", [])[:1]) + (" ..." if len(hook.get("argv", [])) > 1 else "")
    return f"http {hook.get('method', 'POST')} {mask_url(hook.get('url', ''))}"


def validate_hook(hook: dict[str, Any] | None, option: str) -> None:
    if not hook:
        return
    kind = hook.get("type", "none")
    if kind not in ("none", "command", "http"):
        raise ConfigError(f"{option}: type must be none, command or http, not '{kind}'", option)
    if kind == "command" and not (isinstance(hook.get("argv"), list) and hook["argv"]):
        raise ConfigError(f"{option}: a command hook needs argv, a non-empty list (no shell)", option)
    if kind == "http" and not str(hook.get("url", "")).startswith(("http://", "https://")):
        raise ConfigError(f"{option}: an http hook needs url, an http:// or https:// URL", option)


def run_hook(hook: dict[str, Any] | None, name: str, context: dict[str, str],
             secret_headers: dict[str, str] | None = None) -> HookResult:
    """Run one hook. Never raises: the caller decides what a failure means.

    ``secret_headers`` (e.g. an Authorization token, the module's no_log ``hook_headers``) are added to
    every HTTP hook and never appear in a detail or a message.
    """
    started = time.monotonic()
    if not hook or hook.get("type", "none") == "none":
        return HookResult(name, True, 0.0, "none")
    try:
        if hook["type"] == "command":
            env = dict(os.environ)
            env.update({f"LIFEBOAT_{k.upper()}": str(v) for k, v in context.items()})
            env.update({str(k): str(v) for k, v in (hook.get("env") or {}).items()})
            proc = subprocess.run([str(a) for a in hook["argv"]], env=env, capture_output=True, text=True,
                                  timeout=float(hook.get("timeout", 300)), check=False)
            out = (proc.stdout + proc.stderr).strip().splitlines()
            detail = f"{describe_hook(hook)}: exit {proc.returncode}" + (f": {out[-1][:200]}" if out else "")
            return HookResult(name, proc.returncode == 0, time.monotonic() - started, detail)
        body = json.dumps({"event": name, **context}).encode() if hook.get("body") is None \
            else str(hook["body"]).encode()
        req = urllib.request.Request(  # noqa: S310 - validate_hook allows http(s) only
            hook["url"], data=body if hook.get("method", "POST") != "GET" else None, method=hook.get("method", "POST"))
        req.add_header("Content-Type", "application/json")
        for key, value in {**(hook.get("headers") or {}), **(secret_headers or {})}.items():
            req.add_header(str(key), str(value))
        with urllib.request.urlopen(req, timeout=float(hook.get("timeout", 30))) as resp:  # noqa: S310 - operator URL
            status = resp.status
        return HookResult(name, 200 <= status < 300, time.monotonic() - started,
                          f"{describe_hook(hook)}: HTTP {status}")
    except urllib.error.HTTPError as exc:
        return HookResult(name, False, time.monotonic() - started, f"{describe_hook(hook)}: HTTP {exc.code}")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return HookResult(name, False, time.monotonic() - started,
                          f"{describe_hook(hook)}: {exc.__class__.__name__}: {str(exc)[:200]}")


# ------------------------------------------------------------------ partial restores

def _fk_checks(conn: Any, tables: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """(constraint label, query counting violating rows) for every FK from or to the tables.

    A foreign key from or to a partitioned table is checked once, on the partitioned tables (its copies on
    each partition, ``conparentid <> 0``, would each see only one partition's rows); a partition counts as
    its partitioned ancestors.
    """
    from psycopg import sql

    rows = conn.execute(
        """SELECT k.conname, cn.nspname, c.relname, pn.nspname, p.relname,
                  ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o),
                  ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, o)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o)
             FROM pg_catalog.pg_constraint k
             JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
             JOIN pg_catalog.pg_class p ON p.oid = k.confrelid
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
            WHERE k.contype = 'f' AND k.conparentid = 0""").fetchall()
    wanted = set(tables) | set(_partition_ancestors(conn, tables))
    checks = []
    for conname, cs, cr, ps, pr, ccols, pcols in rows:
        if (cs, cr) not in wanted and (ps, pr) not in wanted:
            continue
        not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(_ident(col)) for col in ccols)
        join = sql.SQL(" AND ").join(sql.SQL("p.{} = c.{}").format(_ident(pc), _ident(cc))
                                     for cc, pc in zip(ccols, pcols, strict=True))
        query = sql.SQL("SELECT count(*) FROM {}.{} c WHERE {} AND NOT EXISTS "
                        "(SELECT 1 FROM {}.{} p WHERE {})").format(
            _ident(cs), _ident(cr), not_null, _ident(ps), _ident(pr), join)
        checks.append((f"{cs}.{cr}.{conname} -> {ps}.{pr}", query))
    return checks


def _copy_columns(conn: Any, schema: str, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        """SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
              AND a.attgenerated = '' ORDER BY a.attnum""", (schema, table)).fetchall()]


def _owned_sequences(conn: Any, schema: str, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        """SELECT sn.nspname, s.relname FROM pg_catalog.pg_depend d
             JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
             JOIN pg_catalog.pg_class t ON t.oid = d.refobjid JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
            WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
              AND d.deptype IN ('a', 'i') AND tn.nspname = %s AND t.relname = %s""", (schema, table)).fetchall()]


def _table_exists(conn: Any, schema: str, table: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", (schema, table)).fetchone() is not None


def _dump_ddl(admin: Admin, database: str, tables: list[tuple[str, str]], schema_only: bool = True) -> str:
    """pg_dump -s of some tables (with their owned sequences) from a staging database, as SQL text."""
    argv = [admin.client("pg_dump"), "--schema-only", "-d", dbname_arg(database)]
    for schema, table in tables:
        argv += ["-t", _quote_pattern(schema) + "." + _quote_pattern(table)]
    with admin.target.child_env(database) as env:
        proc = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise RestoreError(f"pg_dump of the table definitions from staging failed: "
                           f"{proc.stderr.decode(errors='replace').strip()[-400:]}")
    # psql meta-commands (\\restrict / \\unrestrict of recent pg_dump releases) are not SQL: drop them
    return "\n".join(ln for ln in proc.stdout.decode().splitlines() if not ln.startswith("\\"))


def copy_schema(admin: Admin, source: str, dest: str) -> None:
    """``pg_dump --schema-only source | psql dest`` (definitions only, no rows)."""
    dump_argv = [admin.client("pg_dump"), "--schema-only", "-d", dbname_arg(source)]
    load_argv = [admin.client("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname_arg(dest), "-o", os.devnull]
    with admin.target.child_env(source) as env:
        dump = subprocess.run(dump_argv, env=env, capture_output=True, check=False, timeout=3600)
    if dump.returncode != 0:
        raise RestoreError(f"pg_dump --schema-only of '{source}' failed: "
                           f"{dump.stderr.decode(errors='replace').strip()[-400:]}")
    with admin.target.child_env(dest) as env:
        load = subprocess.run(load_argv, env=env, input=dump.stdout, capture_output=True, check=False, timeout=3600)
    if load.returncode != 0:
        raise RestoreError(f"loading the schema of '{source}' into '{dest}' failed: "
                           f"{load.stderr.decode(errors='replace').strip()[-400:]}")


def _quote_pattern(name: str) -> str:
    """A pg_dump -t pattern matching exactly this name (quoted, wildcards escaped)."""
    return '"' + name.replace('"', '""') + '"'


def copy_tables(admin: Admin, staging: str, database: str, tables: list[tuple[str, str]],
                check_foreign_keys: bool = True, app_name: str = APP_NAME) -> dict[str, Any]:
    """Replace the rows of ``tables`` in ``database`` with those of the staging database, atomically.

    In ONE transaction on the target: missing tables are created from the
    staging definition (with their missing partitioned parents), the tables' own rows
    (``ONLY``: never those of inheritance children) are deleted (with
    ``session_replication_role = replica``: no cascades into other tables, no
    user triggers), the staged rows copied (binary COPY), owned sequences set
    to their staged values, and every foreign key from or to these tables
    checked; any violation rolls everything back.
    """
    from psycopg import sql

    result: dict[str, Any] = {"tables": [f"{s}.{t}" for s, t in tables], "created": [], "sequences": [],
                              "rows": {}}
    src_conn = admin.connect(staging)
    dst_conn = admin.connect(database)
    try:
        for schema, table in tables:
            if not _table_exists(src_conn, schema, table):
                raise NotFound(f"tables: table {schema}.{table} is not in backup's data", "tables")
        dst_conn.execute("SELECT pg_catalog.set_config('application_name', %s, false)", (app_name,))
        with dst_conn.transaction():
            dst_conn.execute("SET LOCAL session_replication_role = replica")
            missing = [t for t in tables if not _table_exists(dst_conn, *t)]
            if missing:
                parents = [p for p in _partition_ancestors(src_conn, missing)
                           if p not in missing and not _table_exists(dst_conn, *p)]
                ddl = _dump_ddl(admin, staging, parents + missing)
                dst_conn.execute(ddl)
                dst_conn.execute("SELECT pg_catalog.set_config('search_path', 'public', true)")
                result["created"] = [f"{s}.{t}" for s, t in missing]
            for schema, table in tables:
                qual = sql.SQL("{}.{}").format(_ident(schema), _ident(table))
                dst_conn.execute(sql.SQL("DELETE FROM ONLY {}").format(qual))
                cols = _copy_columns(dst_conn, schema, table)
                src_cols = set(_copy_columns(src_conn, schema, table))
                if set(cols) != src_cols:
                    raise RestoreError(
                        f"tables: {schema}.{table} has columns {sorted(cols)} in '{database}' but "
                        f"{sorted(src_cols)} in the backup; restore it into a side schema (mode side_schema)")
                col_list = sql.SQL(", ").join(_ident(c) for c in cols)
                # a table without columns still has rows: COPY it without a column list
                into = sql.SQL("{} ({})").format(qual, col_list) if cols else qual
                with src_conn.cursor().copy(sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT (FORMAT BINARY)").format(
                        col_list, qual)) as out, \
                        dst_conn.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(into)) as inp:
                    for data in out:
                        inp.write(data)
                n = int(dst_conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(qual)).fetchone()[0])
                result["rows"][f"{schema}.{table}"] = n
                for seq_schema, seq in _owned_sequences(src_conn, schema, table):
                    last, called = src_conn.execute(sql.SQL("SELECT last_value, is_called FROM {}.{}").format(
                        _ident(seq_schema), _ident(seq))).fetchone()
                    seq_name = sql.SQL("{}.{}").format(_ident(seq_schema), _ident(seq)).as_string(dst_conn)
                    dst_conn.execute("SELECT pg_catalog.setval(%s::regclass, %s, %s)", (seq_name, last, called))
                    result["sequences"].append(f"{seq_schema}.{seq}")
            if check_foreign_keys:
                violations = []
                for label, query in _fk_checks(dst_conn, tables):
                    bad = int(dst_conn.execute(query).fetchone()[0])
                    if bad:
                        violations.append(f"{label}: {bad} rows")
                if violations:
                    raise RestoreError(
                        "tables: the restored rows break foreign keys, nothing was changed (rolled back): "
                        + "; ".join(violations) + ". Restore the related tables too, or set "
                        "check_foreign_keys: false", "tables")
    finally:
        src_conn.close()
        dst_conn.close()
    return result


def copy_to_side_schema(admin: Admin, staging: str, database: str, tables: list[tuple[str, str]],
                        side_schema: str) -> dict[str, Any]:
    """Copy tables (definition, rows, owned sequences; no foreign keys) into a new schema of ``database``."""
    from psycopg import sql

    with admin.connect(database) as conn:
        if conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (side_schema,)).fetchone():
            raise SafetyError(f"side_schema: schema '{side_schema}' already exists in '{database}'; choose a new "
                              "name (nothing is overwritten in side_schema mode)", "side_schema")
    with admin.connect(staging) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(_ident(side_schema)))
        for schema, table in tables:
            if not _table_exists(conn, schema, table):
                raise NotFound(f"tables: table {schema}.{table} is not in the backup", "tables")
            # a partition's foreign keys are copies of its partitioned ancestors' (they cannot be dropped alone):
            # drop the ancestors' (staging is scratch)
            for fs, ft in [(schema, table)] + _partition_ancestors(conn, [(schema, table)]):
                fks = conn.execute(
                    "SELECT k.conname FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c "
                    "ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE k.contype = 'f' AND k.conparentid = 0 AND n.nspname = %s AND c.relname = %s",
                    (fs, ft)).fetchall()
                for (fk,) in fks:
                    conn.execute(sql.SQL("ALTER TABLE {}.{} DROP CONSTRAINT {}").format(
                        _ident(fs), _ident(ft), _ident(fk)))
        # foreign keys from other tables would stop the move; they stay behind in staging
        for schema, table in tables:
            refs = [r for ps_, pt_ in [(schema, table)] + _partition_ancestors(conn, [(schema, table)])
                    for r in conn.execute(
                "SELECT cn.nspname, c.relname, k.conname FROM pg_catalog.pg_constraint k "
                "JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace cn "
                "ON cn.oid = c.relnamespace JOIN pg_catalog.pg_class p ON p.oid = k.confrelid "
                "JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace WHERE k.contype = 'f' "
                "AND k.conparentid = 0 AND pn.nspname = %s AND p.relname = %s", (ps_, pt_)).fetchall()]
            for cs, cr, conname in refs:
                conn.execute(sql.SQL("ALTER TABLE {}.{} DROP CONSTRAINT {}").format(
                    _ident(cs), _ident(cr), _ident(conname)))
            # a partition or an inheritance child copied alone becomes a plain table: still attached, its
            # definition would name the live parent (overlapping partitions; its rows in the parent's queries)
            for ps, pt, is_partition in conn.execute(
                    "SELECT pn.nspname, p.relname, c.relispartition FROM pg_catalog.pg_inherits i "
                    "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_namespace cn "
                    "ON cn.oid = c.relnamespace JOIN pg_catalog.pg_class p ON p.oid = i.inhparent "
                    "JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace "
                    "WHERE cn.nspname = %s AND c.relname = %s", (schema, table)).fetchall():
                if is_partition:
                    conn.execute(sql.SQL("ALTER TABLE {}.{} DETACH PARTITION {}.{}").format(
                        _ident(ps), _ident(pt), _ident(schema), _ident(table)))
                elif (ps, pt) not in tables:
                    conn.execute(sql.SQL("ALTER TABLE {}.{} NO INHERIT {}.{}").format(
                        _ident(schema), _ident(table), _ident(ps), _ident(pt)))
            conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(
                _ident(schema), _ident(table), _ident(side_schema)))
    argv = [admin.client("pg_dump"), "--no-owner", "--no-privileges", "-n", _quote_pattern(side_schema),
            "-d", dbname_arg(staging)]
    psql = [admin.client("psql"), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", dbname_arg(database), "-o",
            os.devnull]
    with admin.target.child_env(staging) as env:
        dump = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=3600)
    if dump.returncode != 0:
        raise RestoreError(f"pg_dump of side schema from staging failed: {dump.stderr.decode(errors='replace')}")
    with admin.target.child_env(database) as env:
        env["PGAPPNAME"] = APP_NAME
        load = subprocess.run(psql, env=env, input=dump.stdout, capture_output=True, check=False, timeout=3600)
    if load.returncode != 0:
        raise RestoreError(f"loading side schema '{side_schema}' into '{database}' failed: "
                           f"{load.stderr.decode(errors='replace').strip()[-400:]}")
    with admin.connect(database) as conn:
        rows = {f"{side_schema}.{t}": pgmeta_count(conn, side_schema, t) for _s, t in tables}
    return {"side_schema": side_schema, "tables": [f"{s}.{t}" for s, t in tables], "rows": rows}


def pgmeta_count(conn: Any, schema: str, table: str) -> int:
    from ansible.module_utils.lifeboat import pgmeta

    return pgmeta.row_counts(conn, [(schema, table)])[0]["rows"]


def resolve_tables(conn: Any, tables: list[str] | None, schemas: list[str] | None) -> list[tuple[str, str]]:
    """Table patterns / schema names -> (schema, table) present in the (staging) database."""
    from ansible.module_utils.lifeboat import pgmeta

    found = pgmeta.list_tables(conn, include_schemas=schemas or None, include_tables=tables or None)
    if tables:
        for pat in tables:
            leaves = partition_leaves(conn, pat)
            if not pgmeta.list_tables(conn, include_tables=[pat]) and not leaves:
                raise NotFound(f"tables: '{pat}' matches no table in the backup", "tables")
            found += [t for t in leaves if t not in found]
    if not found:
        raise NotFound(f"schemas: {schemas} match no table in the backup", "schemas")
    return sorted(found)


def partition_leaves(conn: Any, pattern: str) -> list[tuple[str, str]]:
    """The leaf partitions (ordinary tables: they hold the rows) of the partitioned tables ``pattern`` matches.

    A partitioned table has no rows of its own: restoring it means restoring all its partitions.
    """
    from ansible.module_utils.lifeboat import pgmeta

    sch, tab = pgmeta._split_pattern(pattern)
    parents = conn.execute(
        "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.relkind = 'p'").fetchall()
    leaves: list[tuple[str, str]] = []
    for oid, schema, name in parents:
        if (sch is None or pgmeta._match(schema, sch)) and pgmeta._match(name, tab):
            leaves += [(r[0], r[1]) for r in conn.execute(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_tree(%s::oid::regclass) t "
                "JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE t.isleaf AND c.relkind = 'r' ORDER BY 1, 2", (oid,)).fetchall()
                       if (r[0], r[1]) not in leaves]
    return leaves


def _partition_ancestors(conn: Any, tables: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The partitioned tables above ``tables`` (outermost first): a dropped partition needs them to exist."""
    from psycopg import sql

    result: list[tuple[str, str]] = []
    for schema, table in tables:
        qual = sql.SQL("{}.{}").format(_ident(schema), _ident(table)).as_string(conn)
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_ancestors(%s::regclass) WITH ORDINALITY "
            "a(relid, depth) JOIN pg_catalog.pg_class c ON c.oid = a.relid JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE a.relid <> %s::regclass ORDER BY a.depth DESC", (qual, qual)).fetchall()
        result += [(r[0], r[1]) for r in rows if (r[0], r[1]) not in result]
    return result


# ------------------------------------------------------------------ the runbook

@dataclass
class Request:
    """Everything the operator asked for (module options, minus connection and secrets)."""

    database: str
    source_database: str | None = None
    confirm: str | None = None
    backup_id: str | None = None
    before: str | None = None
    require_verified: bool = False
    prefix: str = ""
    mode: str = "swap"
    tables: list[str] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)
    side_schema: str | None = None
    schema_only: bool = False
    data_only: bool = False
    jobs: int = 1
    staging_dir: str | None = None
    staging_keep_free: int = 256 * 1024 * 1024
    no_owner: bool = False
    terminate_sessions: bool = False
    check_foreign_keys: bool = True
    safety_snapshot: bool = True
    maintenance_on: dict[str, Any] | None = None
    maintenance_off: dict[str, Any] | None = None
    post_restore: list[dict[str, Any]] = field(default_factory=list)
    hook_headers: dict[str, str] = field(default_factory=dict, repr=False)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode: must be one of {', '.join(MODES)}, not '{self.mode}'", "mode")
        if self.mode in ("partial", "side_schema") and not (self.tables or self.schemas):
            raise ConfigError(f"tables: mode {self.mode} needs tables or schemas", "tables")
        if self.mode in ("swap", "in_place") and (self.tables or self.schemas):
            raise ConfigError("tables: selected tables or schemas are restored with mode partial (into the "
                              "existing database) or side_schema", "tables")
        if self.mode == "side_schema" and not self.side_schema:
            raise ConfigError("side_schema: mode side_schema needs the name of the new schema", "side_schema")
        if self.schema_only and self.data_only:
            raise ConfigError("schema_only and data_only are mutually exclusive", "schema_only")
        if self.data_only and self.mode != "in_place":
            raise ConfigError("data_only: a data-only restore loads rows into the existing database's tables; "
                              "use mode in_place (the tables must exist and be empty)", "data_only")
        if self.schema_only and self.mode in ("partial", "side_schema"):
            raise ConfigError("schema_only: not available for partial restores", "schema_only")
        if self.jobs < 1:
            raise ConfigError("jobs: must be 1 or more", "jobs")
        validate_hook(self.maintenance_on, "maintenance_on")
        validate_hook(self.maintenance_off, "maintenance_off")
        for i, hook in enumerate(self.post_restore):
            validate_hook(hook, f"post_restore[{i}]")

    def check_confirmation(self) -> None:
        if self.confirm != self.database:
            given = "nothing" if not self.confirm else f"'{self.confirm}'"
            raise SafetyError(f"confirm: this restore overwrites database '{self.database}'; it runs only when "
                              f"confirm equals the target database name '{self.database}' (got {given})", "confirm")


class Steps:
    """Durations and outcomes of the runbook steps, for the summary."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[dict[str, Any]]:
        item: dict[str, Any] = {"step": name, "status": "running", "detail": detail}
        self.items.append(item)
        started = time.monotonic()
        try:
            yield item
            item["status"] = "ok" if item["status"] == "running" else item["status"]
        except BaseException as exc:
            item["status"] = "failed"
            item["error"] = str(exc)
            raise
        finally:
            item["seconds"] = round(time.monotonic() - started, 3)

    def skip(self, name: str, why: str) -> None:
        self.items.append({"step": name, "status": "skipped", "detail": why, "seconds": 0.0})


def partial_scope_of(src: Source) -> str:
    """'' for a whole-database backup, else what limits it (include/exclude filters, schema-only, data-only)."""
    scope = (src.manifest or {}).get("scope") or {}
    parts = [f"{key}: {', '.join(scope[key])}" for key in ("include_tables", "exclude_tables", "include_schemas",
                                                           "exclude_schemas") if scope.get(key)]
    parts += [key.replace("_", "-") for key in ("schema_only", "data_only") if scope.get(key)]
    return "; ".join(parts)


def plan_lines(req: Request, src: Source, choice: Choice, target_exists: bool, names: dict[str, str]) -> list[str]:
    """The full plan, in the order the steps run (shown by check mode and before a real run)."""
    lines = [f"1. backup: {src.backup_id} ({choice.reason}; "
             + ("older-procedure plain SQL dump, gzip, no manifest" if src.legacy
                else f"format {src.fmt}, {src.compression}, encryption {src.encryption}, "
                     f"{len((src.manifest or {}).get('tables', []))} tables in the manifest") + ")",
             f"2. maintenance on: {describe_hook(req.maintenance_on)}; maintenance off at the end, also on "
             f"failure: {describe_hook(req.maintenance_off)}"]
    if not target_exists:
        lines.append(f"3. safety snapshot: skipped, database '{req.database}' does not exist")
    elif req.safety_snapshot:
        lines.append(f"3. safety snapshot: a Lifeboat backup of the current '{req.database}'")
    else:
        lines.append("3. safety snapshot: SKIPPED on request (safety_snapshot: false)")
    fetch = "streamed into pg_restore" if src.fmt == "custom" and req.jobs == 1 else \
        "streamed into psql" if src.fmt == "plain" else \
        f"staged in {req.staging_dir or tempfile.gettempdir()} (free space checked first) for pg_restore -j {req.jobs}"
    lines.append(f"4. fetch, check sha256, decrypt, decompress: {fetch}")
    what = " (schema only)" if req.schema_only else " (data only)" if req.data_only else ""
    if req.mode == "swap" and target_exists:
        lines.append(f"5. restore{what} into new database '{names['new']}'; check row counts; then terminate "
                     f"sessions on '{req.database}' and rename it to '{names['old']}' and '{names['new']}' to "
                     f"'{req.database}' in one transaction (the old database is kept)")
    elif req.mode == "swap":
        lines.append(f"5. restore{what} into new database '{names['new']}', checked, then renamed to "
                     f"'{req.database}' (nothing to swap)")
    elif req.mode == "in_place":
        lines.append(f"5. IN PLACE{what}: drop and recreate '{req.database}' then restore into it. NOT ATOMIC: "
                     "a failure leaves it partially restored (the safety snapshot holds its previous state)"
                     + ("; other sessions are terminated" if req.terminate_sessions
                        else "; refused while other sessions are connected"))
    elif req.mode == "partial":
        sel = ", ".join(req.tables or []) or "schemas " + ", ".join(req.schemas)
        lines.append(f"5. partial: restore the backup into staging database '{names['stage']}', then in ONE "
                     f"transaction on '{req.database}' replace the rows of {sel} (owned sequences set, foreign "
                     "keys checked before commit); other tables are not touched; staging dropped")
    else:
        sel = ", ".join(req.tables or []) or "schemas " + ", ".join(req.schemas)
        lines.append(f"5. side schema: copy {sel} from staging database '{names['stage']}' into the new schema "
                     f"'{req.side_schema}' of '{req.database}'; existing tables are not touched")
    lines.append("6. check row counts against the manifest" if not src.legacy
                 else "6. report row counts (older-procedure dump: no manifest to compare with)")
    if req.post_restore:
        lines.append("   post-restore hooks: " + "; ".join(describe_hook(h) for h in req.post_restore))
    lines.append("7. summary with the duration of each step")
    return lines


def run(req: Request, storage: Storage, admin: Admin, keys: DecryptKeys, check_mode: bool = False,
        snapshot: Callable[[str, Source], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The 7-step runbook. Returns the summary; raises a LifeboatError naming the cause."""
    req.validate()
    if not check_mode:
        req.check_confirmation()
    steps = Steps()
    result: dict[str, Any] = {"database": req.database, "mode": req.mode, "changed": False, "warnings": []}
    with steps.step("choose backup") as item:
        choice = choose_backup(storage, req.source_database or req.database, req.backup_id, req.before,
                               req.prefix, req.require_verified)
        src = source_for(storage, choice.ref)
        item["detail"] = f"{src.backup_id} ({choice.reason})"
    result["warnings"] += choice.warnings
    result.update(backup_id=src.backup_id, artifact=storage.uri(src.ref.artifact_key), legacy=src.legacy)
    partial_scope = partial_scope_of(src)
    if partial_scope and req.mode in ("swap", "in_place"):
        raise SafetyError(
            f"backup_id: backup {src.backup_id} holds only part of the database ({partial_scope}); restoring it "
            f"with mode {req.mode} would replace '{req.database}' with that part and lose the rest. Use mode "
            "partial or side_schema with the tables you need, or choose a full backup", "backup_id")
    now = mf.utcnow()
    names = {"new": new_db_name(req.database, now), "old": old_db_name(req.database, now),
             "stage": scratch_name("stage", now)}
    with admin.connect() as conn:
        target_exists = database_exists(conn, req.database)
        sessions = other_sessions(conn, req.database) if target_exists else []
    if req.mode in ("partial", "side_schema") and not target_exists:
        raise NotFound(f"database: '{req.database}' does not exist; a {req.mode} restore needs the existing "
                       "database (use mode swap to restore the whole backup)", "database")
    result["plan"] = plan_lines(req, src, choice, target_exists, names)
    if check_mode:
        result["steps"] = steps.items
        return result
    if req.mode == "in_place" and sessions and not req.terminate_sessions:
        raise SafetyError(
            f"database: '{req.database}' is in use by {len(sessions)} other session(s) ("
            + ", ".join(f"pid {s['pid']} {s['user']} {s['application'] or ''}".strip() for s in sessions[:5])
            + "); an in-place restore needs it idle: stop the application (maintenance_on), or set "
              "terminate_sessions: true, or use mode swap", "database")
    context = {"database": req.database, "backup_id": src.backup_id, "mode": req.mode}
    hooks: list[dict[str, Any]] = []
    try:
        with steps.step("maintenance on", describe_hook(req.maintenance_on)):
            hook = run_hook(req.maintenance_on, "maintenance_on", context, req.hook_headers)
            hooks.append(hook.as_dict())
            if not hook.ok:
                raise RestoreError(f"maintenance_on: the maintenance hook failed ({hook.detail}); nothing was "
                                   "restored", "maintenance_on")
        if not target_exists:
            steps.skip("safety snapshot", f"database '{req.database}' does not exist")
        elif not req.safety_snapshot:
            steps.skip("safety snapshot", "disabled (safety_snapshot: false)")
            result["warnings"].append("no safety snapshot was taken (safety_snapshot: false)")
        else:
            with steps.step("safety snapshot") as item:
                if snapshot is None:
                    raise ConfigError("safety_snapshot: no backup engine is available to take the safety "
                                      "snapshot; set safety_snapshot: false to restore without one",
                                      "safety_snapshot")
                snap = snapshot(req.database, src)
                result["safety_snapshot"] = snap
                item["detail"] = str(snap.get("backup_id", ""))
        result["changed"] = True
        if req.mode == "swap":
            _run_swap(req, storage, src, keys, admin, steps, result, names, target_exists)
        elif req.mode == "in_place":
            _run_in_place(req, storage, src, keys, admin, steps, result)
        else:
            _run_partial(req, storage, src, keys, admin, steps, result)
        for i, hook_cfg in enumerate(req.post_restore):
            with steps.step(f"post-restore hook {i + 1}", describe_hook(hook_cfg)):
                hook = run_hook(hook_cfg, f"post_restore[{i}]", context, req.hook_headers)
                hooks.append(hook.as_dict())
                if not hook.ok:
                    result["warnings"].append(f"post_restore[{i}] failed: {hook.detail} (the restore itself "
                                              "is complete)")
    except LifeboatError as exc:
        exc.summary = result  # type: ignore[attr-defined]
        raise
    except Exception as exc:  # noqa: BLE001 - a PostgreSQL or OS error we did not foresee: name it, keep the summary
        first = (str(exc).strip().splitlines() or [""])[0]
        err = RestoreError(f"restore of '{req.database}' failed: {exc.__class__.__name__}: {first}")
        err.summary = result  # type: ignore[attr-defined]
        raise err from None
    finally:
        with steps.step("maintenance off", describe_hook(req.maintenance_off)) as item:
            hook = run_hook(req.maintenance_off, "maintenance_off", context, req.hook_headers)
            hooks.append(hook.as_dict())
            if not hook.ok:
                item["status"] = "failed"
                result["warnings"].append(f"maintenance_off: the resume hook FAILED ({hook.detail}); the "
                                          "application may still be in maintenance mode")
        result["hooks"] = hooks
        result["steps"] = steps.items
    return result


def _run_swap(req: Request, storage: Storage, src: Source, keys: DecryptKeys, admin: Admin, steps: Steps,
              result: dict[str, Any], names: dict[str, str], target_exists: bool) -> None:
    new, old = names["new"], names["old"]
    with admin.connect() as conn:
        props = database_properties(conn, req.database) if target_exists else None
        if database_exists(conn, new):
            raise SafetyError(f"database '{new}' already exists; wait a second and retry")
        create_database(conn, new, props["owner"] if props else None)
    swapped = False
    try:
        with steps.step("fetch, decrypt, decompress, restore", f"into new database '{new}'") as item:
            run_ = restore_into(storage, src, keys, admin, new, no_owner=req.no_owner, schema_only=req.schema_only,
                                jobs=req.jobs, staging_dir=req.staging_dir, staging_keep_free=req.staging_keep_free)
            item["detail"] += f"; {run_.decode.stored_size} bytes fetched, {run_.decode.dump_size} bytes restored"
            result["restored_bytes"] = run_.decode.dump_size
            result["warnings"] += run_.notes
        with steps.step("check against the manifest") as item:
            _check_result(admin, new, src, req, result, item)
        with admin.connect() as conn:
            if props:
                apply_database_properties(conn, new, props)
            with steps.step("swap", f"'{req.database}' -> '{old}', '{new}' -> '{req.database}'") as item:
                if target_exists:
                    item["terminated_sessions"] = swap_databases(conn, req.database, new, old)
                    result["old_database"] = old
                else:
                    from psycopg import sql

                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(new), _ident(req.database)))
                swapped = True
    finally:
        if not swapped:
            reopen_connections(admin, req.database, old)
            with contextlib.suppress(Exception), admin.connect() as conn:
                drop_database(conn, new)
            result["note"] = (f"the original database '{req.database}' was not touched; the partial new database "
                              f"'{new}' was dropped")


def _run_in_place(req: Request, storage: Storage, src: Source, keys: DecryptKeys, admin: Admin, steps: Steps,
                  result: dict[str, Any]) -> None:
    from psycopg import sql

    result["warnings"].append(f"in-place restore of '{req.database}' is NOT atomic: a failure leaves it partially "
                              "restored")
    with admin.connect() as conn:
        exists = database_exists(conn, req.database)
        props = database_properties(conn, req.database) if exists else None
        if not req.data_only:
            with steps.step("drop and recreate", f"'{req.database}'"):
                if exists:
                    if req.terminate_sessions:
                        terminate_sessions(conn, req.database)
                    conn.execute(sql.SQL("DROP DATABASE {}").format(_ident(req.database)))
                create_database(conn, req.database, props["owner"] if props else None)
                if props:
                    apply_database_properties(conn, req.database, props)
    try:
        with steps.step("fetch, decrypt, decompress, restore", f"into '{req.database}' (in place)") as item:
            run_ = restore_into(storage, src, keys, admin, req.database, no_owner=req.no_owner,
                                schema_only=req.schema_only, data_only=req.data_only, jobs=req.jobs,
                                staging_dir=req.staging_dir, staging_keep_free=req.staging_keep_free)
            item["detail"] += f"; {run_.decode.dump_size} bytes restored"
            result["restored_bytes"] = run_.decode.dump_size
            result["warnings"] += run_.notes
    except LifeboatError as exc:
        snap = (result.get("safety_snapshot") or {}).get("backup_id")
        raise type(exc)(f"{exc} -- the in-place restore did not complete: database '{req.database}' is PARTIALLY "
                        "restored" + (f"; its previous state is in safety snapshot {snap}" if snap else "")) from None
    with steps.step("check against the manifest") as item:
        _check_result(admin, req.database, src, req, result, item)


def _run_partial(req: Request, storage: Storage, src: Source, keys: DecryptKeys, admin: Admin, steps: Steps,
                 result: dict[str, Any]) -> None:
    scoped = bool(partial_scope_of(src)) and src.fmt != "plain"
    with scratch_database(admin, "stage") as stage:
        result["staging_database"] = stage
        if scoped:
            # a backup limited to some tables/schemas is not self-contained (a column default may use a
            # sequence it does not hold, a foreign key may point outside it): staging gets the current
            # database's definitions, then only the backup's rows
            with steps.step("copy the current schema into staging", f"'{req.database}' -> '{stage}'"):
                copy_schema(admin, req.database, stage)
        with steps.step("fetch, decrypt, decompress, restore", f"into staging database '{stage}'"
                        + (" (data only)" if scoped else "")) as item:
            run_ = restore_into(storage, src, keys, admin, stage, no_owner=False, data_only=scoped, jobs=req.jobs,
                                staging_dir=req.staging_dir, staging_keep_free=req.staging_keep_free)
            item["detail"] += f"; {run_.decode.dump_size} bytes restored"
            result["warnings"] += run_.notes
        with admin.connect(stage) as conn:
            tables = resolve_tables(conn, req.tables, req.schemas)
            if not src.legacy:
                with steps.step("check staging against the manifest") as item:
                    check = compare_counts(conn, src, only=tables)
                    item["detail"] = f"{len(check['counts'])} tables"
                    if not check["ok"]:
                        raise IntegrityError("the staged tables do not match the manifest: "
                                             + "; ".join(check["mismatches"] + check["missing"]))
        if req.mode == "partial":
            with steps.step("replace rows", ", ".join(f"{s}.{t}" for s, t in tables)) as item:
                copied = copy_tables(admin, stage, req.database, tables, req.check_foreign_keys)
                item["detail"] += f" ({sum(copied['rows'].values())} rows)"
        else:
            with steps.step("copy into side schema", req.side_schema or "") as item:
                copied = copy_to_side_schema(admin, stage, req.database, tables, req.side_schema or "")
        result["restored_tables"] = copied
    with steps.step("check against the manifest") as item:
        if src.legacy:
            result["row_counts"] = copied["rows"]
            item["detail"] = "older-procedure dump: counts reported"
            return
        expected = {f"{t['schema']}.{t['name']}": int(t["rows"]) for t in src.manifest.get("tables", [])}
        bad = []
        # side schema: "<side>.<table>" was "<schema>.<table>" (names may hold dots: map, do not split)
        origin = {} if req.mode == "partial" else {f"{req.side_schema}.{t}": f"{s}.{t}" for s, t in tables}
        for name, rows in copied["rows"].items():
            key = origin.get(name, name)
            if key in expected and expected[key] != rows:
                bad.append(f"{name}: {rows} rows, manifest {expected[key]}")
        result["row_counts"] = copied["rows"]
        if bad:
            raise IntegrityError("restored tables do not match the manifest: " + "; ".join(bad))
        item["detail"] = f"{len(copied['rows'])} tables match the manifest"


def _check_result(admin: Admin, database: str, src: Source, req: Request, result: dict[str, Any],
                  item: dict[str, Any]) -> None:
    with admin.connect(database) as conn:
        if src.legacy:
            result["row_counts"] = report_counts(conn)
            item["detail"] = f"older-procedure dump: {len(result['row_counts'])} tables counted (no manifest)"
            return
        if req.schema_only:
            item["detail"] = "schema only: no rows to count"
            return
        check = compare_counts(conn, src)
        result["row_counts"] = check["counts"]
        if not check["ok"]:
            raise IntegrityError(f"the restored database '{database}' does not match the manifest of "
                                 f"{src.backup_id}: " + "; ".join(check["mismatches"] + check["missing"]))
        item["detail"] = f"{check['tables']} tables match the manifest's exact row counts"
        if src.manifest and src.manifest.get("schema_hash"):
            got = schema_hash_for(conn, src)
            if got != src.manifest["schema_hash"]:
                result["warnings"].append(f"the schema hash of '{database}' differs from the manifest's "
                                          f"({got[:12]} != {src.manifest['schema_hash'][:12]})")


# ------------------------------------------------------------------ module plumbing (plain dicts)

SECRET_OPTIONS = ("password", "s3_secret_key", "passphrase", "dsn")


def mask_secrets(params: dict[str, Any], text: str) -> str:
    """``text`` with the value of every secret option of the common argument spec replaced by ``***``."""
    for key in SECRET_OPTIONS:
        value = params.get(key)
        if value:
            text = text.replace(str(value), "***")
    return text


def common_argument_spec() -> dict[str, dict[str, Any]]:
    """Options shared by lifeboat_pg_restore and lifeboat_backup_verify: storage, server, keys."""
    return {
        "destination": dict(type="str", required=True),
        "prefix": dict(type="str", default=""),
        "s3_endpoint": dict(type="str"),
        "s3_region": dict(type="str"),
        "s3_access_key": dict(type="str", no_log=False),
        "s3_secret_key": dict(type="str", no_log=True),
        "s3_validate_certs": dict(type="bool", default=True),
        "dsn": dict(type="str", no_log=True),
        "host": dict(type="str"),
        "port": dict(type="int"),
        "user": dict(type="str"),
        "password": dict(type="str", no_log=True),
        "maintenance_database": dict(type="str", default="postgres"),
        "pg_bin_dir": dict(type="path"),
        "gpg_homedir": dict(type="path"),
        "gpg_key_file": dict(type="path"),
        "passphrase": dict(type="str", no_log=True),
        "age_identity_file": dict(type="path"),
        "backup_id": dict(type="str"),
        "before": dict(type="str"),
    }


def s3_settings_from(params: dict[str, Any]) -> Any:
    from ansible.module_utils.lifeboat.s3 import S3Settings

    return S3Settings(endpoint=params.get("s3_endpoint") or None, region=params.get("s3_region") or None,
                      access_key=params.get("s3_access_key") or None, secret_key=params.get("s3_secret_key") or None,
                      verify_tls=bool(params.get("s3_validate_certs", True)))


def storage_from(params: dict[str, Any]) -> Storage:
    from ansible.module_utils.lifeboat.storage import open_storage

    return open_storage(params["destination"], s3_settings_from(params))


def admin_from(params: dict[str, Any]) -> Admin:
    from ansible.module_utils.lifeboat.pgconn import PgTarget

    maint = params.get("maintenance_database") or "postgres"
    target = PgTarget.from_options(dsn=params.get("dsn"), host=params.get("host"), port=params.get("port"),
                                   user=params.get("user"), password=params.get("password"), database=maint)
    target = target.with_database(maint)
    return Admin(target, maint, [params["pg_bin_dir"]] if params.get("pg_bin_dir") else None)


def keys_from(params: dict[str, Any]) -> DecryptKeys:
    return DecryptKeys(gpg_homedir=params.get("gpg_homedir"), secret_key_file=params.get("gpg_key_file"),
                       passphrase=params.get("passphrase"), age_identity_file=params.get("age_identity_file"))
