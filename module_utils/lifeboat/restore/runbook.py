"""The incident runbook as code: choose, hooks, safety snapshot, restore by strategy, checks, summary.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import Callable
from typing import Any

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.crypto import DecryptionSpec
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    EncryptionError,
    LifeboatError,
    NotFound,
    RestoreError,
    SafetyError,
)
from ansible.module_utils.lifeboat.restore.hooks import describe_hook, run_hook
from ansible.module_utils.lifeboat.restore.names import new_db_name, old_db_name, run_token, scratch_name
from ansible.module_utils.lifeboat.restore.pgadmin import Admin, database_exists, other_sessions, repair_interrupted
from ansible.module_utils.lifeboat.restore.request import Request, Steps
from ansible.module_utils.lifeboat.restore.rolecheck import ensure_roles, missing_for, missing_message
from ansible.module_utils.lifeboat.restore.selection import Choice, Source, choose_backup, partial_scope_of, source_for
from ansible.module_utils.lifeboat.restore.strategies import run_in_place, run_partial, run_swap
from ansible.module_utils.lifeboat.storage import Storage


def plan_lines(req: Request, src: Source, choice: Choice, target_exists: bool, names: dict[str, str]) -> list[str]:
    """The full plan, in the order the steps run (shown by check mode and before a real run)."""
    taken = f"taken {mf.iso(src.ref.created_at)}, {age_text(mf.utcnow() - src.ref.created_at)} ago"
    lines = [f"1. backup: {src.backup_id}, {taken} ({choice.reason}; "
             + ("older-procedure plain SQL dump, gzip, no manifest" if src.legacy
                else f"format {src.fmt}, {src.compression}, encryption {src.encryption}, "
                     f"{len(src.manifest.tables if src.manifest else ())} tables in the manifest") + ")",
             f"2. maintenance on: {describe_hook(req.maintenance_on)}; maintenance off at the end, also on "
             f"failure: {describe_hook(req.maintenance_off)}"]
    if not target_exists:
        lines.append(f"3. safety snapshot: skipped, database '{req.database}' does not exist")
    elif req.safety_snapshot:
        lines.append(f"3. safety snapshot: a Lifeboat backup of the current '{req.database}'")
    else:
        lines.append("3. safety snapshot: SKIPPED on request (safety_snapshot: false)")
    staging = req.staging_dir or tempfile.gettempdir()
    fetch = "streamed into psql" if src.fmt == "plain" else \
        "streamed into pg_restore" if src.fmt == "custom" and req.jobs == 1 else \
        (f"staged in {staging} (free space checked first) for pg_restore -j, jobs chosen from the server "
         "(restore/parallel.py); streamed into pg_restore instead when the disk is short") \
        if req.jobs is None and src.fmt == "custom" else \
        f"staged in {staging} (free space checked first) for pg_restore -j {req.jobs or 'chosen from the server'}"
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


#: what a failed restore returns with its message (the rest of the summary stays in the steps)
FAILURE_KEYS = ("plan", "steps", "hooks", "backup_id", "backup_created_at", "backup_age", "target_existed",
                "old_database", "safety_snapshot", "note", "warnings")


def check_key_directory(src: Source, keys: DecryptionSpec) -> None:
    """A gpg-encrypted backup with a GnuPG directory that is not there: said so before anything runs (it used to
    surface as a public key missing for the safety snapshot)."""
    home = keys.gpg_homedir
    if src.encryption == "gpg" and home and not os.path.isdir(home):
        raise EncryptionError(f"gpg_homedir: the GnuPG directory '{home}' does not exist (or is not a directory); "
                              f"backup {src.backup_id} is encrypted with gpg and its secret key (and the public key "
                              "the safety snapshot encrypts with) must be in that directory: give the directory "
                              "that holds them", "gpg_homedir")


def age_text(delta: _dt.timedelta) -> str:
    """'3d 4h', '5h 12m', '7m', '40s': how old a backup is, for the plan and the confirmation."""
    secs = max(0, int(delta.total_seconds()))
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def render_summary(result: dict[str, Any]) -> str:
    """A human-readable summary: what was restored from which backup, how long each step took."""
    mode = result["mode"]
    if mode == "swap" and result.get("target_existed") is False:
        mode = "swap: a new database, nothing to swap, no old database"
    lines = [f"{'plan for' if not result.get('changed') else 'restore of'} database '{result['database']}' "
             f"(mode {mode}) from backup {result.get('backup_id', '?')}"
             + (f", taken {result['backup_created_at']} ({result['backup_age']} ago)"
                if result.get("backup_created_at") else "")]
    if result.get("old_database"):
        lines.append(f"previous database kept as '{result['old_database']}'")
    if result.get("safety_snapshot"):
        lines.append(f"safety snapshot: {result['safety_snapshot'].get('backup_id')}")
    for step in result.get("steps", []):
        lines.append(f"  {step['step']:<40} {step['status']:<8} {step.get('seconds', 0):>8.2f}s  "
                     f"{step.get('detail', '')}")
    for warning in result.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)


def run(req: Request, storage: Storage, admin: Admin, keys: DecryptionSpec, check_mode: bool = False,
        snapshot: Callable[[str, Source], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The 7-step runbook. Returns the summary; raises a LifeboatError naming the cause.

    A failure after the restore started declares its partial result (``exc.partial``: the plan, the steps
    run, the hooks, the safety snapshot, a note on what was left, the summary text).
    """
    try:
        return _run(req, storage, admin, keys, check_mode, snapshot)
    except LifeboatError as exc:
        if exc.partial is None:
            raise
        result = exc.partial
        partial: dict[str, Any] = {k: result[k] for k in FAILURE_KEYS if k in result}
        partial["changed"] = bool(result.get("changed"))
        partial["summary"] = render_summary(result)
        msg = f"{exc} ({result['note']})" if result.get("note") else str(exc)
        raise type(exc)(msg, exc.option).with_partial(partial) from None


def _run(req: Request, storage: Storage, admin: Admin, keys: DecryptionSpec, check_mode: bool,
         snapshot: Callable[[str, Source], dict[str, Any]] | None) -> dict[str, Any]:
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
    result.update(backup_id=src.backup_id, artifact=storage.uri(src.ref.artifact_key), legacy=src.legacy,
                  backup_created_at=mf.iso(src.ref.created_at), backup_age=age_text(mf.utcnow() - src.ref.created_at))
    check_key_directory(src, keys)
    partial_scope = partial_scope_of(src)
    if partial_scope and req.mode in ("swap", "in_place"):
        raise SafetyError(
            f"backup_id: backup {src.backup_id} holds only part of the database ({partial_scope}); restoring it "
            f"with mode {req.mode} would replace '{req.database}' with that part and lose the rest. Use mode "
            "partial or side_schema with the tables you need, or choose a full backup", "backup_id")
    now = mf.utcnow()
    token = run_token()
    names = {"new": new_db_name(req.database, now, token), "old": old_db_name(req.database, now, token),
             "stage": scratch_name("stage", now)}
    with admin.connect() as conn:
        if not check_mode:  # what killed runs left (an interrupted swap first: it may lock out the live name)
            repaired = repair_interrupted(conn)
            if repaired:
                result["repaired"] = repaired
                result["warnings"] += repaired
        target_exists = database_exists(conn, req.database)
        result["target_existed"] = target_exists
        sessions = other_sessions(conn, req.database) if target_exists else []
    if req.mode in ("partial", "side_schema") and not target_exists:
        raise NotFound(f"database: '{req.database}' does not exist; a {req.mode} restore needs the existing "
                       "database (use mode swap to restore the whole backup)", "database")
    result["plan"] = plan_lines(req, src, choice, target_exists, names)
    missing = [] if src.legacy or req.no_owner or req.data_only else missing_for(admin, src)
    result["missing_roles"] = missing
    if missing:
        result["plan"].insert(3, ("   roles: create " if req.create_roles else "   roles MISSING (the restore will "
                                  "stop; set create_roles: true): ") + ", ".join(missing))
    if check_mode:
        result["steps"] = steps.items
        return result
    if req.mode == "in_place" and sessions and not req.terminate_sessions:
        raise SafetyError(
            f"database: '{req.database}' is in use by {len(sessions)} other session(s) ("
            + ", ".join(f"pid {s['pid']} {s['user']} {s['application'] or ''}".strip() for s in sessions[:5])
            + "); an in-place restore needs it idle: stop the application (maintenance_on), or set "
              "terminate_sessions: true, or use mode swap", "database")
    if missing and not req.create_roles:
        raise RestoreError(missing_message(src, missing, req.database), "create_roles")
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
        if missing:
            with steps.step("create roles", ", ".join(missing)):
                result["created_roles"] = ensure_roles(storage, src, keys, admin, True, req.database)["created"]
        if req.mode == "swap":
            run_swap(req, storage, src, keys, admin, steps, result, names, target_exists)
        elif req.mode == "in_place":
            run_in_place(req, storage, src, keys, admin, steps, result)
        else:
            run_partial(req, storage, src, keys, admin, steps, result)
        for i, hook_cfg in enumerate(req.post_restore):
            with steps.step(f"post-restore hook {i + 1}", describe_hook(hook_cfg)):
                hook = run_hook(hook_cfg, f"post_restore[{i}]", context, req.hook_headers)
                hooks.append(hook.as_dict())
                if not hook.ok:
                    result["warnings"].append(f"post_restore[{i}] failed: {hook.detail} (the restore itself "
                                              "is complete)")
    except LifeboatError as exc:
        exc.with_partial(result)  # the same dict: the finally below adds the hooks and steps
        raise
    except Exception as exc:  # noqa: BLE001 - a PostgreSQL or OS error we did not foresee: name it, keep the summary
        first = (str(exc).strip().splitlines() or [""])[0]
        raise RestoreError(f"restore of '{req.database}' failed: {exc.__class__.__name__}: {first}").with_partial(
            result) from None
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
