"""What the operator asked for (``Request``) and the record of the runbook's steps (``Steps``).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    SafetyError,
)
from ansible.module_utils.lifeboat.restore.hooks import validate_hook


MODES = ("swap", "in_place", "partial", "side_schema")


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
    #: pg_restore jobs; None: chosen from the server (restore/parallel.py), streamed when the staging disk is short
    jobs: int | None = None
    staging_dir: str | None = None
    staging_keep_free: int = 256 * 1024 * 1024
    no_owner: bool = False
    #: create the roles the backup needs that the target server lacks (from the backup's roles file, no passwords)
    create_roles: bool = False
    terminate_sessions: bool = False
    check_foreign_keys: bool = True
    #: put a restored database in place even when its values or owners/privileges differ from the manifest's
    accept_differences: bool = False
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
        if self.jobs is not None and self.jobs < 1:
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
