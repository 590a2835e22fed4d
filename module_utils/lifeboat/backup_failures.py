"""What a failed database backup says: pg_dump's and the snapshot facts' failures, named with the cause and the fix.

The backup run (backup.py) raises what these return. A privilege failure (row-level security, large objects,
an object granted or revoked since the pre-flight) names the role and what it cannot read, checked again on a
new connection (privileges.py); pg_dump's 'could not import the requested snapshot' is never shown as the
cause when the row counts in the same snapshot failed first. Secrets are masked (pipeline.mask).
"""
from __future__ import annotations

from typing import Any

from ansible.module_utils.lifeboat import pipeline, privileges
from ansible.module_utils.lifeboat.errors import DumpError, LifeboatError, PermissionDenied


def dump_scope(req: Any) -> dict[str, Any]:
    """The dump's scope as :func:`privileges.find_unreadable` takes it (the pg_dump filters of a BackupRequest)."""
    return {"include_schemas": list(req.include_schemas), "exclude_schemas": list(req.exclude_schemas),
            "include_tables": list(req.include_tables), "exclude_tables": list(req.exclude_tables),
            "schema_only": req.schema_only, "data_only": req.data_only}


def privilege_hint(text: str, user: str | None) -> str:
    """What to do when pg_dump failed because the backup role may not read everything (names the role)."""
    role = f"'{user}'" if user else "the backup role"
    if "row-level security" in text:
        return (f" - the backup role {role} is subject to that table's row-level security policy and pg_dump "
                "refuses to dump only the rows a policy lets it see (pg_read_all_data does not bypass RLS): "
                "give it BYPASSRLS (ALTER ROLE ... BYPASSRLS) or back up as the table owner or a superuser")
    if "permission denied for large object" in text:
        return (f" - the backup role {role} cannot read the database's large objects (pg_read_all_data does not "
                "cover them): back up as their owner or a superuser, or GRANT SELECT ON LARGE OBJECT <oid> to "
                "the role")
    return ""


def facts_error(exc: BaseException, req: Any) -> LifeboatError:
    """The row counts / schema hash in the dump's snapshot failed (``req``: the BackupRequest)."""
    if isinstance(exc, LifeboatError):
        return exc
    text = pipeline.mask(f"{exc.__class__.__name__}: {exc}", req.secrets())
    message = f"PostgreSQL at {req.target.describe()}: counting rows in the dump's snapshot failed: {text}"
    if "permission denied" in text or "row-level security" in text:
        return PermissionDenied(message + unreadable_now(req), "exclude_tables")
    return DumpError(message)


def unreadable_now(req: Any) -> str:
    """What the backup role cannot read, checked again on a new connection after a run failed on a privilege
    (granted or revoked since the pre-flight): the objects and their fixes, or '' when that check cannot run."""
    try:
        with req.target.connect(autocommit=True) as conn:
            items = privileges.find_unreadable(conn, **dump_scope(req))
    except Exception:  # noqa: BLE001 - the failure itself is what the user sees; this only adds the fixes
        return ""
    if not items:
        return ""
    return " - " + privileges.message(items, req.target.database or "", req.target.describe())


def dump_failure(exc: DumpError, req: Any, facts_err: BaseException | None) -> LifeboatError:
    """pg_dump failed: its first error, with the row counts' own failure (which may be the cause) and the fix.

    pg_dump's 'could not import the requested snapshot' is only ever a consequence: the transaction that
    exported the snapshot ended (the source session was terminated, or before the facts ran in a savepoint, a
    failing facts query aborted it); the cause is then named first."""
    text = str(exc)
    secondary = "could not import the requested snapshot" in text
    cause = ""
    if facts_err is not None and not isinstance(facts_err, LifeboatError):
        detail = pipeline.mask(f"{facts_err.__class__.__name__}: {facts_err}", req.secrets())
        if "canceling statement due to user request" not in detail:   # our own cancel after the dump failed
            cause = f"the row counts in the dump's snapshot failed: {detail}"
    if secondary and cause:
        text = f"{cause} (and then {text})"
    elif cause:
        text = f"{text}; {cause}"
    hint = privilege_hint(text, req.target.user)
    if "permission denied" in text or "row-level security" in text:
        return PermissionDenied(text + hint + unreadable_now(req), exc.option or "exclude_tables")
    return DumpError(text + hint, exc.option)
