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
4. fetch -> sha256 -> decrypt -> decompress; by default (``jobs`` unset) a
   parallel ``pg_restore -j`` with jobs chosen from the target server, the
   decoded dump staged in a local file after checking the free space, and
   streamed into pg_restore instead (said in a warning) when that disk is
   short; ``jobs: 1`` and plain SQL dumps stream into pg_restore/psql;
5. restore: ``swap`` (default: into ``<db>_lifeboat_new_<stamp>_<token>``, checked, then
   sessions terminated and both renames in ONE transaction; the previous
   database is kept as ``<db>_lifeboat_old_<stamp>_<token>``), ``in_place`` (drop and
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

The package, one concern per module (each imports only what it needs; this
``__init__`` re-exports the public API for callers that want one name):

- ``selection``   which backup: ``Source`` (manifest), verification records, ``choose_backup``
- ``decoding``    fetch -> sha256 -> decrypt -> decompress into a sink; ``DecryptKeys`` (builds the one keys type,
                  crypto.DecryptionSpec)
- ``names``       new/old/scratch database names and their age
- ``pgadmin``     PostgreSQL administration: databases, sessions, swap, scratch databases, ``Admin``
- ``plainsql``    the plain-SQL guard (``PlainDumpGuard``) for older-procedure dumps
- ``parallel``    how many pg_restore jobs when the operator did not say (from the server's facts)
- ``load``        restore a decoded backup into one database (pg_restore / psql, staged for ``-j``)
- ``checks``      row counts and schema hash against the manifest
- ``snapshot``    the safety snapshot (a normal Lifeboat backup)
- ``hooks``       maintenance and post-restore hooks
- ``partial``     rows replaced from staging, or tables copied into a side schema
- ``request``     ``Request`` (what the operator asked) and ``Steps`` (the summary's steps)
- ``strategies``  swap, in place, partial
- ``rolecheck``   the roles a backup needs, compared with (or created on) the target server
- ``runbook``     the 7-step runbook (``run``) and its plan
- ``supabase``    a Supabase backup into a Supabase project (new, or in place) in one transaction
- ``supabase_fetch`` its parts from the store by the manifest (sha256-checked, decoded into a private directory)

"""
from __future__ import annotations

from ansible.module_utils.lifeboat.restore.checks import (
    compare_counts,
    manifest_tables,
    report_counts,
    schema_hash_for,
)
from ansible.module_utils.lifeboat.restore.decoding import (
    CHUNK,
    DecodeResult,
    DecryptKeys,
    decode,
    stored_sha256,
)
from ansible.module_utils.lifeboat.restore.hooks import (
    HookResult,
    describe_hook,
    run_hook,
    validate_hook,
)
from ansible.module_utils.lifeboat.restore.load import (
    APP_NAME,
    GIB,
    RESTORE_PGOPTIONS,
    RestoreRun,
    check_free_space,
    restore_argv,
    restore_into,
)
from ansible.module_utils.lifeboat.restore.names import (
    SCRATCH_PREFIXES,
    new_db_name,
    old_db_name,
    run_token,
    scratch_age,
    scratch_name,
)
from ansible.module_utils.lifeboat.restore.partial import (
    copy_schema,
    copy_tables,
    copy_to_side_schema,
    partition_leaves,
    pgmeta_count,
    resolve_tables,
)
from ansible.module_utils.lifeboat.restore.pgadmin import (
    Admin,
    apply_database_properties,
    create_database,
    database_exists,
    database_properties,
    dbname_arg,
    drop_database,
    ident,
    other_sessions,
    reopen_connections,
    scratch_database,
    split_guc_list,
    swap_databases,
    sweep_scratch,
    terminate_sessions,
)
from ansible.module_utils.lifeboat.restore.plainsql import (
    PlainDumpGuard,
)
from ansible.module_utils.lifeboat.restore.request import (
    MODES,
    Request,
    Steps,
)
from ansible.module_utils.lifeboat.restore.runbook import (
    FAILURE_KEYS,
    plan_lines,
    render_summary,
    run,
)
from ansible.module_utils.lifeboat.restore.selection import (
    Choice,
    Source,
    choose_backup,
    is_verified,
    partial_scope_of,
    source_for,
    verification_records,
)
from ansible.module_utils.lifeboat.restore.snapshot import (
    SNAPSHOT_PREFIX,
    safety_snapshot,
    snapshot_destination,
)
from ansible.module_utils.lifeboat.restore.strategies import (
    run_in_place,
    run_partial,
    run_swap,
)

__all__ = [
    "APP_NAME",
    "Admin",
    "CHUNK",
    "Choice",
    "DecodeResult",
    "FAILURE_KEYS",
    "DecryptKeys",
    "GIB",
    "HookResult",
    "MODES",
    "PlainDumpGuard",
    "RESTORE_PGOPTIONS",
    "Request",
    "RestoreRun",
    "SCRATCH_PREFIXES",
    "SNAPSHOT_PREFIX",
    "Source",
    "Steps",
    "apply_database_properties",
    "check_free_space",
    "choose_backup",
    "compare_counts",
    "copy_schema",
    "copy_tables",
    "copy_to_side_schema",
    "create_database",
    "database_exists",
    "database_properties",
    "dbname_arg",
    "decode",
    "describe_hook",
    "drop_database",
    "ident",
    "is_verified",
    "manifest_tables",
    "new_db_name",
    "old_db_name",
    "run_token",
    "other_sessions",
    "partial_scope_of",
    "partition_leaves",
    "pgmeta_count",
    "plan_lines",
    "render_summary",
    "reopen_connections",
    "report_counts",
    "resolve_tables",
    "restore_argv",
    "restore_into",
    "run",
    "run_hook",
    "run_in_place",
    "run_partial",
    "run_swap",
    "safety_snapshot",
    "schema_hash_for",
    "scratch_age",
    "scratch_database",
    "scratch_name",
    "snapshot_destination",
    "source_for",
    "split_guc_list",
    "stored_sha256",
    "swap_databases",
    "sweep_scratch",
    "terminate_sessions",
    "validate_hook",
    "verification_records",
]
