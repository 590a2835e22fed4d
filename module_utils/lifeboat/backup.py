"""The database backup engine: plan and run one PostgreSQL backup.

``plan(request)`` connects read-only and says what a run would do (check mode:
nothing is written anywhere). ``run(request)`` does it:

1. validate the options, prepare the encryptor (keys checked before any data moves);
2. connect with psycopg (typed errors naming host:port/database, never the password),
   read the server version and pick a pg_dump whose major is >= the server's;
3. check the destination (bucket exists and the credentials work / directory writable);
4. open a REPEATABLE READ READ ONLY transaction; the privilege pre-flight (privileges.py: everything in the
   dump's scope the role cannot read, named with the fix, fails the run here and in check mode);
   ``pg_export_snapshot()``;
5. stream ``pg_dump --snapshot`` -> compressor -> encryptor -> sha256 -> storage
   (pipeline.py), while exact row counts and the schema hash are taken in the
   same snapshot (in a savepoint: a failing query never aborts the exporting transaction);
   the directory format is the one exception that dumps into a private temporary directory
   (``pg_dump -Fd -j N``) and then streams it as a tar;
6. write the manifest LAST (docs/manifest.md), with the stock-tool restore command.

Concurrency: the whole run holds the backup lock of this database and
destination (runlock.py: an advisory lock on the source server, so it holds
across hosts and dies with its holder); a second run waits ``lock_wait_s`` and
then refuses naming the holder. The backup id is the first free
``<db>-<stamp>[-n]``, and artifact and manifest are written exclusively, so a
run never replaces another run's backup, whatever happens.

On any failure the upload is aborted / the partial file removed and a typed
LifeboatError is raised; nothing that looks like a complete backup remains.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import secrets as _secrets
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any


from ansible.module_utils.lifeboat import (crypto, leftovers, manifest, pgmeta, pipeline, privileges, roles, runlock,
                                          supabase, tmpfiles)
from ansible.module_utils.lifeboat.errors import ConfigError, DeadlineExceeded, DumpError, LifeboatError
from ansible.module_utils.lifeboat.pgconn import PgTarget, find_client, server_major
from ansible.module_utils.lifeboat.backup_failures import dump_failure, dump_scope, facts_error
from ansible.module_utils.lifeboat.backup_manifest import (  # noqa: F401 - re-exported: backup.<name> keeps working
    build_manifest,
    createdb_command,
    database_sql,
    restore_instructions,
)
from ansible.module_utils.lifeboat.s3 import S3Settings
from ansible.module_utils.lifeboat.storage import (
    MIB,
    LocalStorage,
    S3Storage,
    Storage,
    open_storage,
)

FORMATS = ("custom", "directory", "plain")
#: a nightly backup that has not finished in 6 hours is stuck, not slow (raise it for multi-TB databases)
DEFAULT_DEADLINE_S = 6 * 3600.0
PG_DUMP_FORMAT = {"custom": "c", "directory": "d", "plain": "p"}


@dataclass
class BackupRequest:
    """Everything one backup needs. ``target.password`` and the S3 secret are secrets."""

    target: PgTarget
    destination: str
    format: str = "custom"
    jobs: int = 2
    schema_only: bool = False
    data_only: bool = False
    include_tables: list[str] = field(default_factory=list)
    exclude_tables: list[str] = field(default_factory=list)
    include_schemas: list[str] = field(default_factory=list)
    exclude_schemas: list[str] = field(default_factory=list)
    compression: str = "zstd"
    compression_level: int | None = None
    compression_threads: int = 0
    naming: str = "lifeboat"
    encryption: crypto.EncryptionSpec = field(default_factory=crypto.EncryptionSpec)
    s3: S3Settings = field(default_factory=S3Settings)
    #: S3 part size; raised automatically when the database is so large that 10,000 parts would not do
    part_size_mb: int = 8
    pg_bin_dir: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    #: where the directory format's temporary dump goes (default: TMPDIR)
    work_dir: str | None = None
    #: how long to wait for another run of the same database and destination (0: refuse at once)
    lock_wait_s: float = 0.0
    #: the whole run's deadline in seconds (0: none); see the module docstring
    deadline_s: float = DEFAULT_DEADLINE_S
    #: per-table content hashes in the dump's snapshot (manifest ``content_hashes``; one more read of every
    #: table, see docs/manifest.md for its cost), compared by the drill and the restore
    content_hashes: bool = False
    #: what killed runs left under <db>/ (open uploads, sets without manifest) older than this is swept (leftovers.py)
    sweep_grace_s: float = leftovers.DEFAULT_GRACE_S
    #: auto: the supabase profile when the database is a Supabase project (supabase.py); default; supabase
    profile: str = "auto"

    def secrets(self) -> list[str]:
        return [s for s in (self.target.password, self.s3.secret_key, self.s3.session_token,
                            self.encryption.passphrase) if s]


def validate(req: BackupRequest) -> None:
    """Contradictions the argument_spec cannot express; each names the option."""
    if req.format not in FORMATS:
        raise ConfigError(f"format: '{req.format}' is not one of {', '.join(FORMATS)}", "format")
    if req.schema_only and req.data_only:
        raise ConfigError("schema_only and data_only are mutually exclusive", "schema_only")
    if req.naming not in ("lifeboat", "legacy"):
        raise ConfigError(f"naming: '{req.naming}' is not one of lifeboat, legacy", "naming")
    if req.naming == "legacy":
        if req.format != "plain" or req.compression != "gzip":
            raise ConfigError("naming: legacy names (db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz) require format: plain "
                              f"and compression: gzip (got format: {req.format}, compression: {req.compression})",
                              "naming")
        if req.encryption.method != "none":
            raise ConfigError("naming: legacy names end in .sql.gz, which must stay readable with gunzip; use "
                              "naming: lifeboat to encrypt", "naming")
    if req.jobs < 1:
        raise ConfigError("jobs: must be 1 or more", "jobs")
    if req.deadline_s < 0:
        raise ConfigError(f"deadline_s: {req.deadline_s} is negative (0 means no deadline)", "deadline_s")
    if req.lock_wait_s < 0:
        raise ConfigError(f"lock_wait_s: {req.lock_wait_s} is negative (0 refuses at once when another run holds "
                          "the lock)", "lock_wait_s")
    if req.sweep_grace_s < 0:
        raise ConfigError(f"sweep_grace_s: {req.sweep_grace_s} is negative (what killed runs left is swept once it "
                          "is older than this many seconds)", "sweep_grace_s")
    if req.part_size_mb < 5:
        raise ConfigError(f"part_size_mb: {req.part_size_mb} MiB is below S3's minimum of 5 MiB", "part_size_mb")
    if not req.destination:
        raise ConfigError("destination: required (s3://bucket/prefix or an absolute directory)", "destination")
    if req.profile not in supabase.PROFILES:
        raise ConfigError(f"db_profile: '{req.profile}' is not one of {', '.join(supabase.PROFILES)}", "db_profile")
    if req.profile == "supabase" and not _supabase_shape(req):
        raise ConfigError("db_profile: supabase makes three parts restored with pg_restore and psql: it needs format: "
                          f"custom, naming: lifeboat and neither schema_only nor data_only (got format: {req.format}, "
                          f"naming: {req.naming}, schema_only: {req.schema_only}, data_only: {req.data_only})",
                          "db_profile")


def _supabase_shape(req: BackupRequest) -> bool:
    return req.format == "custom" and req.naming == "lifeboat" and not (req.schema_only or req.data_only)


def part_size_for(req: BackupRequest, estimated_bytes: int | None = None) -> int:
    """The requested part size, raised so that ~9,000 parts hold the database's on-disk size.

    A dump is smaller than ``pg_database_size()`` (no indexes, no bloat) and compression shrinks it
    further, so this keeps even a badly compressible database under S3's 10,000-part limit.
    """
    size = req.part_size_mb * MIB
    if estimated_bytes:
        needed = -(-estimated_bytes // 9000)
        size = max(size, -(-needed // MIB) * MIB)
    return size


def _storage(req: BackupRequest, estimated_bytes: int | None = None) -> Storage:
    return open_storage(req.destination, req.s3, part_size=part_size_for(req, estimated_bytes))


def _database_size(conn: Any) -> int:
    return int(conn.execute("SELECT pg_catalog.pg_database_size(current_database())").fetchone()[0])


def _layout(req: BackupRequest, when: Any, enc_method: str, seq: int = 1) -> manifest.Layout:
    return manifest.layout_for(req.target.database or "db", when, req.format, req.compression, enc_method,
                               naming=req.naming, seq=seq)


#: how many ids of one second are tried before giving up (only reached by a store full of same-second backups)
MAX_SEQ = 100


def free_layout(req: BackupRequest, storage: Storage, when: Any, enc_method: str) -> manifest.Layout:
    """The first ``<db>-<stamp>[-n]`` whose artifact and manifest do not exist yet."""
    for seq in range(1, MAX_SEQ + 1):
        layout = _layout(req, when, enc_method, seq)
        if not storage.exists(layout.manifest_key) and not storage.exists(layout.artifact_key):
            return layout
    raise ConfigError(f"destination: {MAX_SEQ} backups named {_layout(req, when, enc_method).backup_id}[-n] "
                      f"already exist at {storage.url}; refusing to overwrite them", "destination")


def _user_schemas(conn: Any) -> list[str]:
    rows = conn.execute(
        "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname <> ALL(%s) "
        "AND nspname NOT LIKE 'pg\\_temp\\_%%' AND nspname NOT LIKE 'pg\\_toast%%' ORDER BY 1",
        (list(pgmeta.SYSTEM_SCHEMAS),)).fetchall()
    return [r[0] for r in rows]


def scope_schemas(conn: Any, req: BackupRequest,
                   tables: list[tuple[str, str]]) -> tuple[list[str] | None, list[tuple[str, str]] | None]:
    """(schemas, tables) for pgmeta.schema_hash: what the dump contains."""
    if req.include_tables:
        return sorted({s for s, _ in tables}), tables
    if req.include_schemas or req.exclude_schemas:
        def matches(schema: str, patterns: list[str]) -> bool:
            return any(pgmeta.match_pattern(schema, pgmeta.split_pattern(p)[1]) for p in patterns)

        schemas = [s for s in _user_schemas(conn)
                   if (not req.include_schemas or matches(s, req.include_schemas))
                   and not (req.exclude_schemas and matches(s, req.exclude_schemas))]
        return schemas, (tables if req.exclude_tables else None)
    return None, (tables if req.exclude_tables else None)


def preflight_privileges(conn: Any, req: BackupRequest) -> None:
    """Fail before anything is dumped when the backup role cannot read or lock an object in the dump's scope,
    naming each one with the fix (privileges.py). Catalog queries only: safe in the snapshot's transaction."""
    privileges.check(conn, req.target.database or "", req.target.describe(), **dump_scope(req))


def supabase_scope(conn: Any, req: BackupRequest) -> tuple[BackupRequest, supabase.Scope | None]:
    """The supabase profile (chosen, or detected with profile: auto): the request limited to the user's schemas
    and the scope of the platform's user data; the user-data tables the login cannot read are named here, with
    the fix, before anything is dumped. Any other profile: the request unchanged and None."""
    if req.profile == "default" or (req.profile == "auto" and not (_supabase_shape(req) and supabase.detect(conn))):
        return req, None
    if not supabase.detect(conn):
        raise ConfigError(f"db_profile: supabase, but database '{req.target.database}' at {req.target.describe()} is "
                          "not a Supabase project (no role supabase_admin, or no schemas auth and storage); use "
                          "db_profile: default", "db_profile")
    sb = supabase.scope(conn)
    if not (req.include_schemas or req.include_tables):   # the user's schemas, named (pg_dump --schema each)
        req = dataclasses.replace(req, include_schemas=[privileges.dump_pattern(s) for s in sb.app_schemas])
    if sb.data_tables:
        privileges.check(conn, req.target.database or "", req.target.describe(),
                         include_tables=sb.data_patterns(), data_only=True)
    return req, sb


def _connect(req: BackupRequest) -> Any:
    return req.target.connect(snapshot_reader=True)


def _pick_pg_dump(req: BackupRequest, version_num: int) -> tuple[str, int, str]:
    extra = [req.pg_bin_dir] if req.pg_bin_dir else None
    if req.pg_bin_dir and not os.path.isdir(req.pg_bin_dir):
        raise ConfigError(f"pg_bin_dir: '{req.pg_bin_dir}' is not a directory", "pg_bin_dir")
    return find_client("pg_dump", server_major(version_num), extra)


def _check_destination(storage: Storage, write: bool) -> None:
    if isinstance(storage, LocalStorage) and not write and not os.path.isdir(storage.root):
        return  # will be created (0700) by the real run
    storage.check(write=write)


# ------------------------------------------------------------------------ plan

def plan(req: BackupRequest) -> dict[str, Any]:
    """What a run would do: object key, format, estimated size. Reads only; writes nothing."""
    validate(req)
    enc = crypto.prepare_encryptor(req.encryption)
    try:
        comp = pipeline.Compression(req.compression, req.compression_level, req.compression_threads).resolve()
        conn = req.target.connect(autocommit=True)
        try:
            version_num, version = pgmeta.server_version(conn)
            size = _database_size(conn)
            req, sb = supabase_scope(conn, req)
            preflight_privileges(conn, req)   # check mode finds what the dump could not read, too
            tables = [] if req.schema_only else pgmeta.list_tables(
                conn, req.include_schemas, req.exclude_schemas, req.include_tables, req.exclude_tables)
        finally:
            conn.close()
        pg_dump, major, dump_version = _pick_pg_dump(req, version_num)
        storage = _storage(req, size)
        _check_destination(storage, write=False)
        when = manifest.utcnow()
        layout = _layout(req, when, enc.method)
        return {
            "backup_id": layout.backup_id,
            "key": layout.artifact_key,
            "uri": storage.uri(layout.artifact_key),
            "manifest_uri": storage.uri(layout.manifest_key),
            "format": req.format,
            "compression": comp.manifest(),
            "encryption": enc.manifest(),
            "estimated_size": size,
            "part_size_mb": part_size_for(req, size) // MIB,
            "tables": len(tables),
            "server_version": version,
            "pg_dump": {"path": pg_dump, "version": dump_version, "major": major},
            "profile": "supabase" if sb else "default",
            **({"supabase": {"app_schemas": sb.app_schemas, "left_out": sb.left_out,
                             "platform_tables": [f"{s}.{t}" for s, t in sb.data_tables]}} if sb else {}),
        }
    finally:
        enc.cleanup()


# ------------------------------------------------------------------------- run

def _pg_dump_argv(req: BackupRequest, pg_dump: str, snapshot: str, out_dir: str | None) -> list[str]:
    argv = [pg_dump, "--no-password", f"--snapshot={snapshot}", f"--format={PG_DUMP_FORMAT[req.format]}"]
    if req.format in ("custom", "directory"):
        argv.append("--compress=0")  # compression happens outside pg_dump, in the pipeline
    if req.format == "directory":
        argv += [f"--jobs={req.jobs}", f"--file={out_dir}"]
    if req.schema_only:
        argv.append("--schema-only")
    if req.data_only:
        argv.append("--data-only")
    for pat in req.include_schemas:
        argv.append(f"--schema={pat}")
    for pat in req.exclude_schemas:
        argv.append(f"--exclude-schema={pat}")
    for pat in req.include_tables:
        argv.append(f"--table={pat}")
    for pat in req.exclude_tables:
        argv.append(f"--exclude-table={pat}")
    return argv  # the database comes from PGDATABASE, the password from PGPASSFILE


def _run_directory_dump(argv: list[str], env: dict[str, str], secrets: list[str]) -> None:
    """pg_dump -Fd -j N into a private directory (the only format that needs a temporary dir)."""
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    err = proc.stderr.decode(errors="replace")
    errors = [ln for ln in err.splitlines() if ln.startswith("pg_dump: error:")]
    if proc.returncode != 0 or errors:
        status = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        detail = "; ".join(errors[:3] or [ln for ln in err.splitlines() if ln.strip()][-3:])
        raise DumpError(pipeline.mask(f"pg_dump failed ({status})" + (f": {detail}" if detail else ""), secrets))


def run(req: BackupRequest) -> dict[str, Any]:
    """Make one backup; returns the result (and the manifest). Raises LifeboatError on failure."""
    validate(req)
    supabase.refuse_transaction_pooler(req.target)
    open_storage(req.destination, req.s3)  # a malformed destination fails before connecting
    with runlock.backup_lock(req.target, req.destination, req.target.database or "", req.lock_wait_s):
        if not req.deadline_s:
            return _run_locked(req)
        # every session of this run (the dump's transaction, pg_dump) carries this application_name
        tag = f"lifeboat-backup-{os.getpid()}-{_secrets.token_hex(4)}"
        req = dataclasses.replace(req, target=dataclasses.replace(
            req.target, extra={**req.target.extra, "application_name": tag}))
        fired = threading.Event()
        watchdog = threading.Timer(req.deadline_s, _on_deadline, args=(req, tag, fired))
        watchdog.daemon = True
        watchdog.start()
        try:
            return _run_locked(req)
        except LifeboatError as exc:
            if not fired.is_set():
                raise
            if isinstance(exc, DeadlineExceeded):
                raise
            raise DeadlineExceeded(
                f"deadline_s: the backup of '{req.target.database}' did not finish within {req.deadline_s:g}s "
                f"and was ended: PostgreSQL at {req.target.describe()} or pg_dump stopped making progress "
                f"({exc}); its sessions were terminated, so the source transaction is released", "deadline_s") \
                from None
        finally:
            watchdog.cancel()


def _on_deadline(req: BackupRequest, tag: str, fired: threading.Event) -> None:
    """The deadline passed: end this run's own sessions on the source (never another's: the tag is unique)."""
    fired.set()
    with contextlib.suppress(Exception):
        with req.target.with_database(req.target.database or "").connect(autocommit=True) as conn:
            conn.execute("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
                         "WHERE application_name = %s AND pid <> pg_catalog.pg_backend_pid()", (tag,))


def _run_locked(req: BackupRequest) -> dict[str, Any]:
    t0 = time.monotonic()
    secrets = req.secrets()
    comp = pipeline.Compression(req.compression, req.compression_level, req.compression_threads).resolve()
    enc = crypto.prepare_encryptor(req.encryption)           # keys usable before any data moves
    tmpdir: str | None = None
    conn = None
    try:
        open_storage(req.destination, req.s3)  # a malformed destination fails before connecting
        conn = _connect(req)
        version_num, version = pgmeta.server_version(conn)
        pg_dump, dump_major, dump_version = _pick_pg_dump(req, version_num)
        req, sb = supabase_scope(conn, req)
        preflight_privileges(conn, req)   # before anything is written or dumped
        storage = _storage(req, _database_size(conn))
        if isinstance(storage, S3Storage) and req.deadline_s:
            storage.set_deadline(max(0.001, req.deadline_s - (time.monotonic() - t0)))
        _check_destination(storage, write=True)
        # under the lock: what is under <db>/ without a manifest was left by a dead run (leftovers.py)
        swept = leftovers.sweep(storage, req.target.database or "db", req.sweep_grace_s) \
            if req.naming == "lifeboat" else leftovers.Swept()

        started = manifest.utcnow()
        layout = free_layout(req, storage, started, enc.method)
        snapshot = str(conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0])

        # exact row counts and the schema hash in the same snapshot, while pg_dump runs
        facts: dict[str, Any] = {}

        def take_facts() -> None:
            try:
                # in a savepoint: a failing query (permission denied, cancel) rolls back to it and never aborts
                # the transaction that exported the snapshot, which pg_dump may not have imported yet
                with conn.transaction():
                    tables = [] if req.schema_only else pgmeta.list_tables(
                        conn, req.include_schemas, req.exclude_schemas, req.include_tables, req.exclude_tables)
                    facts["tables"] = pgmeta.row_counts(conn, tables)
                    schemas, scope_tables = scope_schemas(conn, req, tables)
                    facts["schema_hash"] = pgmeta.schema_hash(conn, schemas, scope_tables)
                    facts["schema_hash_cross_major"] = pgmeta.cross_major_hash(conn, schemas, scope_tables)
                    facts["privileges"] = pgmeta.privileges_hashes(conn, schemas)
                    facts["database_properties"] = pgmeta.database_facts(conn)
                    facts["required_roles"] = roles.required_roles(conn)
                    if req.content_hashes and not req.schema_only:
                        t_hash = time.monotonic()
                        hashed = pgmeta.content_hashes(conn, [(t["schema"], t["name"]) for t in facts["tables"]])
                        facts["content_hashes"] = {"method": pgmeta.CONTENT_HASH_METHOD, "tables": hashed,
                                                   "duration_s": round(time.monotonic() - t_hash, 3)}
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                facts["error"] = exc

        counter = threading.Thread(target=take_facts, name="lifeboat-rowcounts", daemon=True)
        counter.start()
        try:
            with req.target.child_env() as env:
                env["LC_ALL"] = "C"
                if req.format == "directory":
                    base = req.work_dir or None
                    tmpdir = tmpfiles.private_dir("lifeboat-dump-", dir=base)
                    name = manifest.safe_name(req.target.database or "db")
                    _run_directory_dump(_pg_dump_argv(req, pg_dump, snapshot, os.path.join(tmpdir, name)), env,
                                        secrets)
                    source: Any = pipeline.ProcSpec("tar", ["tar", "-C", tmpdir, "-cf", "-", name],
                                                    error_prefixes=("tar: ",))
                else:
                    source = pipeline.ProcSpec("pg_dump", _pg_dump_argv(req, pg_dump, snapshot, None), env=env,
                                               error_prefixes=("pg_dump: error:",))
                writer = storage.open_writer(layout.artifact_key, metadata={"lifeboat-backup-id": layout.backup_id},
                                             exclusive=True)
                result = pipeline.run_backup_stream(source, writer, comp, enc, secrets=secrets,
                                                    source_check="frame")
        except DumpError as exc:
            _stop_counter(conn, counter)
            raise dump_failure(exc, req, facts.get("error")) from None
        except BaseException:
            _stop_counter(conn, counter)
            raise
        counter.join()
        if "error" in facts:
            storage.delete(layout.artifact_key)  # no manifest will describe it
            raise facts_error(facts["error"], req) from None
        if sb is not None:
            try:   # still in the snapshot's transaction: the same instant as the user's schemas
                facts["supabase"] = _supabase_parts(req, sb, conn, storage, layout, comp, enc, secrets, pg_dump,
                                                    snapshot)
                facts["roles_script"] = supabase.roles_sql(conn, sb.user_roles)
            except BaseException:
                storage.delete(layout.artifact_key)
                if facts.get("supabase"):
                    storage.delete(facts["supabase"]["platform_data"]["key"])
                raise
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - read-only transaction; closing is enough
            pass
        try:
            facts["roles"] = _store_roles(req, conn, storage, layout, comp, enc, secrets, facts, version_num)
        except BaseException:
            storage.delete(layout.artifact_key)  # no manifest will describe it
            if facts.get("supabase"):
                storage.delete(facts["supabase"]["platform_data"]["key"])
            raise
        finished = manifest.utcnow()
        duration = round(time.monotonic() - t0, 3)
        doc = build_manifest(req, storage, layout, comp, enc, result, facts, snapshot, started, finished, duration,
                             version_num, version, pg_dump, dump_version, dump_major)
        try:
            manifest.write_manifest(storage, layout.manifest_key, doc)   # LAST
        except BaseException:
            try:
                storage.delete(layout.artifact_key)  # no manifest: do not leave an orphan that looks finished
            except LifeboatError:
                pass
            raise
        return {
            "backup_id": layout.backup_id,
            "key": layout.artifact_key,
            "uri": storage.uri(layout.artifact_key),
            "manifest_uri": storage.uri(layout.manifest_key),
            "size": result.size,
            "sha256": result.sha256,
            "duration_s": duration,
            "tables": len(doc["tables"]),
            "total_rows": sum(t["rows"] for t in doc["tables"]),
            "restore_command": doc["restore"]["command"],
            "swept": swept.as_dict(),
            "warnings": swept.reported,
            "manifest": doc,
        }
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        enc.cleanup()


def platform_data_key(layout: manifest.Layout, comp: pipeline.Compression, enc_method: str) -> str:
    """The supabase profile's platform tables beside the artifact: ``<database>/<backup_id>/platform-data.dump...``."""
    base = layout.manifest_key[: -len(manifest.MANIFEST_NAME)]
    return f"{base}platform-data.dump{comp.extension}{manifest.ENCRYPTION_EXT[enc_method]}"


def _supabase_parts(req: BackupRequest, sb: supabase.Scope, conn: Any, storage: Storage, layout: manifest.Layout,
                    comp: pipeline.Compression, enc: crypto.Encryptor, secrets: list[str], pg_dump: str,
                    snapshot: str) -> dict[str, Any]:
    """The platform's user-data tables (pg_dump --table each, the same snapshot: their rows, and the user's
    triggers and policies on them), their row counts, and what was left out."""
    tables = pgmeta.row_counts(conn, sb.data_tables)
    key = platform_data_key(layout, comp, enc.method)
    argv = [pg_dump, "--no-password", f"--snapshot={snapshot}", "--format=c", "--compress=0"]
    argv += [f"--table={p}" for p in sb.data_patterns()]
    with req.target.child_env() as env:
        env["LC_ALL"] = "C"
        source = pipeline.ProcSpec("pg_dump", argv, env=env, error_prefixes=("pg_dump: error:",))
        writer = storage.open_writer(key, metadata={"lifeboat-backup-id": layout.backup_id}, exclusive=True)
        try:
            result = pipeline.run_backup_stream(source, writer, comp, enc, secrets=secrets, source_check="frame")
        except DumpError as exc:
            raise dump_failure(exc, req, None) from None
    return {"profile": "supabase", "app_schemas": list(sb.app_schemas), "platform_schemas": list(sb.platform_schemas),
            "platform_tables": [[s, t] for s, t in sb.data_tables],
            "platform_data": {"key": key, "uri": storage.uri(key), "size": result.size, "sha256": result.sha256,
                              "tables": tables},
            "user_roles": list(sb.user_roles), "left_out": sb.left_out,
            "toc_filter": supabase.toc_filter(supabase.owners_left_out(conn)),
            "publication_sql": supabase.publication_sql(conn, sb.app_schemas),
            "publication_tables": supabase.publication_tables(conn, sb.app_schemas),
            "extensions_sql": supabase.extensions_sql(conn),
            "data_list_command": supabase.data_list_command("platform.dump", supabase.fk_order(
                conn, sb.data_tables), "platform.list")}


def roles_key(layout: manifest.Layout, comp: pipeline.Compression, enc_method: str) -> str:
    """The roles file beside the artifact: ``<database>/<backup_id>/roles.sql.zst.gpg``."""
    base = layout.manifest_key[: -len(manifest.MANIFEST_NAME)]
    return f"{base}roles.sql{comp.extension}{manifest.ENCRYPTION_EXT[enc_method]}"


def _store_roles(req: BackupRequest, conn: Any, storage: Storage, layout: manifest.Layout,
                 comp: pipeline.Compression, enc: crypto.Encryptor, secrets: list[str], facts: dict[str, Any],
                 version_num: int) -> dict[str, Any]:
    """Store the server's roles (pg_dumpall --roles-only --no-role-passwords, or the same statements from the
    catalog where pg_dumpall may not run), compressed and encrypted like the dump, beside it."""
    required = list(facts.get("required_roles") or [])
    if req.naming == "legacy":
        return {"required": required, "skipped": "naming: legacy keeps only the older procedure's .sql.gz"}
    method, note = "pg_dumpall", None
    if facts.get("roles_script") is not None:   # the supabase profile: the application's roles, in the snapshot
        script = facts["roles_script"]
        key = roles_key(layout, comp, enc.method)
        writer = storage.open_writer(key, metadata={"lifeboat-backup-id": layout.backup_id})
        result = pipeline.run_backup_stream(io.BytesIO(script), writer, comp, enc, secrets=secrets)
        return {"key": key, "uri": storage.uri(key), "method": "catalog (supabase profile: platform roles left out)",
                "size": result.size, "sha256": result.sha256,
                "names": list((facts.get("supabase") or {}).get("user_roles") or []), "required": required}
    try:
        extra = [req.pg_bin_dir] if req.pg_bin_dir else None
        pg_dumpall = find_client("pg_dumpall", server_major(version_num), extra)[0]
        with req.target.child_env() as env:
            env["LC_ALL"] = "C"
            script = roles.dumpall_roles(pg_dumpall, env, req.target.database or "postgres")
    except (LifeboatError, OSError, subprocess.SubprocessError) as exc:
        method, note = "catalog", pipeline.mask(str(exc), secrets)[:300]
        script = roles.catalog_roles_sql(conn)
    key = roles_key(layout, comp, enc.method)
    writer = storage.open_writer(key, metadata={"lifeboat-backup-id": layout.backup_id})
    result = pipeline.run_backup_stream(io.BytesIO(script), writer, comp, enc, secrets=secrets)
    doc = {"key": key, "uri": storage.uri(key), "method": method, "size": result.size, "sha256": result.sha256,
           "names": roles.role_names(script.decode("utf-8", "replace")), "required": required}
    if note:
        doc["note"] = f"pg_dumpall could not run ({note}); the roles were written from the catalog"
    return doc


def _stop_counter(conn: Any, counter: threading.Thread) -> None:
    """Cancel the row counts (the dump failed) and wait for the thread before the connection closes."""
    if counter.is_alive():
        try:
            conn.cancel_safe(timeout=10)
        except Exception:  # noqa: BLE001 - best effort; the join below still bounds the wait
            pass
    counter.join(timeout=60)
