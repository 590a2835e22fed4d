"""The restore strategies: swap (restore into a new database, then rename), in place, partial
(staging, then rows replaced or copied into a side schema).
"""
from __future__ import annotations

import contextlib
from typing import Any

from psycopg import sql

from ansible.module_utils.lifeboat.crypto import DecryptionSpec
from ansible.module_utils.lifeboat.errors import (
    IntegrityError,
    LifeboatError,
    SafetyError,
)
from ansible.module_utils.lifeboat.restore.checks import (
    compare_content,
    compare_counts,
    compare_privileges,
    expected_schema_hash,
    report_counts,
    schema_hash_for,
)
from ansible.module_utils.lifeboat.restore.load import RestoreRun, restore_into
from ansible.module_utils.lifeboat.restore.partial import copy_schema, copy_tables, copy_to_side_schema, resolve_tables
from ansible.module_utils.lifeboat.restore.pgadmin import (
    Admin,
    apply_database_properties,
    create_database,
    database_exists,
    database_properties,
    drop_database,
    ident,
    mark_owned,
    owned_database,
    reopen_connections,
    scratch_database,
    swap_databases,
    terminate_sessions,
)
from ansible.module_utils.lifeboat.restore.request import Request, Steps
from ansible.module_utils.lifeboat.restore.selection import (
    Source,
    partial_scope_of,
    recorded_locale,
    recorded_properties,
)
from ansible.module_utils.lifeboat.storage import Storage


def run_swap(req: Request, storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, steps: Steps,
              result: dict[str, Any], names: dict[str, str], target_exists: bool) -> None:
    new = names["new"]
    with owned_database(admin, new):  # held until the swap is over: no sweep touches it meanwhile
        _run_swap(req, storage, src, keys, admin, steps, result, names, target_exists)


def _recorded(req: Request, src: Source) -> dict[str, Any] | None:
    """The manifest's database properties for a NEW database; under no_owner without the roles' parts
    (owner, grants, per-role settings): the restoring user owns everything, as no_owner promises."""
    props = recorded_properties(src)
    if props and req.no_owner:
        props = {k: v for k, v in props.items() if k not in ("owner", "acl", "default_acl", "role_settings")}
    return props


def _run_swap(req: Request, storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, steps: Steps,
              result: dict[str, Any], names: dict[str, str], target_exists: bool) -> None:
    new, old = names["new"], names["old"]
    with admin.connect() as conn:
        # swap over an existing database: it keeps its owner, grants, settings and comment; a new database gets
        # the ones the manifest recorded. The encoding and locale are always the backup's: they decide the values
        props = database_properties(conn, req.database) if target_exists else _recorded(req, src)
        if database_exists(conn, new):
            raise SafetyError(f"database '{new}' already exists (its random part repeated); run the restore again")
        create_database(conn, new, props.get("owner") if props else None, recorded_locale(src))
        mark_owned(conn, new, "swap", database=req.database, old=old)
    swapped = False
    try:
        with steps.step("fetch, decrypt, decompress, restore", f"into new database '{new}'") as item:
            run_ = restore_into(storage, src, keys, admin, new, no_owner=req.no_owner, schema_only=req.schema_only,
                                jobs=req.jobs, staging_dir=req.staging_dir, staging_keep_free=req.staging_keep_free)
            item["detail"] += (f"; {run_.decode.stored_size} bytes fetched, {run_.decode.dump_size} bytes restored, "
                               + run_.describe())
            _record_run(result, run_)
            result["warnings"] += run_.notes
        with steps.step("check against the manifest") as item:
            _check_result(admin, new, src, req, result, item)
        with admin.connect() as conn:
            # the comment is set in the swap's own transaction: until then the new database carries the swap's mark
            comment = (props or {}).get("comment")
            if props:
                apply_database_properties(conn, new, {k: v for k, v in props.items() if k != "comment"})
            if target_exists:
                with steps.step("swap", f"'{req.database}' -> '{old}', '{new}' -> '{req.database}'") as item:
                    item["terminated_sessions"] = swap_databases(conn, req.database, new, old, comment)
                    result["old_database"] = old
            else:  # nothing to swap and no old database: the checked new database takes the name
                with steps.step("rename", f"'{new}' -> '{req.database}' ('{req.database}' did not exist)"):
                    with conn.transaction():
                        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(new),
                                                                                      ident(req.database)))
                        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                            ident(req.database), sql.Literal(comment or None)))
            swapped = True
    finally:
        if not swapped:
            reopen_connections(admin, req.database, old)
            with contextlib.suppress(Exception), admin.connect() as conn:
                drop_database(conn, new)
            result["note"] = ((f"the original database '{req.database}' was not touched" if target_exists else
                               f"'{req.database}' did not exist and still does not") +
                              f"; the partial new database '{new}' was dropped")


def run_in_place(req: Request, storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, steps: Steps,
                  result: dict[str, Any]) -> None:
    result["warnings"].append(f"in-place restore of '{req.database}' is NOT atomic: a failure leaves it partially "
                              "restored")
    with admin.connect() as conn:
        exists = database_exists(conn, req.database)
        props = database_properties(conn, req.database) if exists else _recorded(req, src)
        if not req.data_only:
            with steps.step("drop and recreate", f"'{req.database}'"):
                if exists:
                    if req.terminate_sessions:
                        terminate_sessions(conn, req.database)
                    conn.execute(sql.SQL("DROP DATABASE {}").format(ident(req.database)))
                create_database(conn, req.database, props.get("owner") if props else None, recorded_locale(src))
                if props:
                    apply_database_properties(conn, req.database, props)
    try:
        with steps.step("fetch, decrypt, decompress, restore", f"into '{req.database}' (in place)") as item:
            run_ = restore_into(storage, src, keys, admin, req.database, no_owner=req.no_owner,
                                schema_only=req.schema_only, data_only=req.data_only, jobs=req.jobs,
                                staging_dir=req.staging_dir, staging_keep_free=req.staging_keep_free)
            item["detail"] += f"; {run_.decode.dump_size} bytes restored, {run_.describe()}"
            _record_run(result, run_)
            result["warnings"] += run_.notes
    except LifeboatError as exc:
        snap = (result.get("safety_snapshot") or {}).get("backup_id")
        raise type(exc)(f"{exc} -- the in-place restore did not complete: database '{req.database}' is PARTIALLY "
                        "restored" + (f"; its previous state is in safety snapshot {snap}" if snap else "")) from None
    with steps.step("check against the manifest") as item:
        _check_result(admin, req.database, src, req, result, item)


def run_partial(req: Request, storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, steps: Steps,
                 result: dict[str, Any]) -> None:
    scoped = bool(partial_scope_of(src)) and src.fmt != "plain"
    with scratch_database(admin, "stage", locale=recorded_locale(src)) as stage:
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
            item["detail"] += f"; {run_.decode.dump_size} bytes restored, {run_.describe()}"
            result["jobs"], result["restore_path"] = run_.jobs, run_.path
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
        expected = src.manifest.row_counts if src.manifest else {}
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


def _record_run(result: dict[str, Any], run_: RestoreRun) -> None:
    result["restored_bytes"] = run_.decode.dump_size
    result["jobs"], result["restore_path"] = run_.jobs, run_.path


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
        if src.manifest and src.manifest.schema_hash:
            got = schema_hash_for(conn, src)
            expected = expected_schema_hash(conn, src) or ""
            if got != expected:
                result["warnings"].append(f"the schema hash of '{database}' differs from the manifest's "
                                          f"({got[:12]} != {expected[:12]})")
        differences = []
        ok, detail = compare_privileges(conn, src, no_owner=req.no_owner)
        if ok is False and req.data_only:  # the schema, its owners and grants are the live database's
            result["warnings"].append(f"owners/privileges of '{database}' {detail} (data_only: not restored)")
        elif ok is False:
            differences.append(f"owners/privileges {detail}")
        if src.manifest and src.manifest.content_hashes.tables:
            ok, detail = compare_content(conn, src)
            if ok is False:
                differences.append(f"content: {detail}")
            elif ok:
                item["detail"] += f"; {detail}"
    if not differences:
        return
    if req.accept_differences:
        result["warnings"] += [f"'{database}' differs from {src.backup_id} (accept_differences: true): {d}"
                               for d in differences]
        return
    where = ("it was not put in place; the database you had is untouched" if req.mode == "swap" else
             f"'{database}' is restored but is not the database that was backed up"
             + (f"; its previous state is in safety snapshot {result['safety_snapshot']['backup_id']}"
                if (result.get("safety_snapshot") or {}).get("backup_id") else ""))
    raise IntegrityError(f"the restored database does not match {src.backup_id}: " + "; ".join(differences)
                         + f" -- {where}. To keep such a restore anyway (e.g. knowingly into another locale), "
                           "run it again with accept_differences: true")
