"""Names of the databases a restore creates: new/old (swap) and scratch (drill, staging).
"""
from __future__ import annotations

import datetime as _dt
import re
import secrets

from ansible.module_utils.lifeboat import manifest as mf


_SCRATCH_RE = re.compile(r"^lifeboat_(?:drill|stage)_(\d{8}t\d{6}z)_[0-9a-f]+$")
SCRATCH_PREFIXES = ("lifeboat_drill_", "lifeboat_stage_")


def _stamp(when: _dt.datetime) -> str:
    return mf.stamp(when).lower()


def _fit(base: str, suffix: str) -> str:
    """``base + suffix`` within PostgreSQL's 63-byte identifier limit (base shortened)."""
    room = 63 - len(suffix.encode())
    raw = base.encode()[:room].decode("utf-8", "ignore")
    return raw + suffix


def run_token() -> str:
    """The random part shared by one restore's new and old names (two restores of one second never collide)."""
    return secrets.token_hex(3)


def new_db_name(database: str, when: _dt.datetime, token: str | None = None) -> str:
    """``<db>_lifeboat_new_<stamp>_<token>``: the stamp says when, the token keeps same-second runs apart."""
    return _fit(database, f"_lifeboat_new_{_stamp(when)}_{token or run_token()}")


def old_db_name(database: str, when: _dt.datetime, token: str | None = None) -> str:
    return _fit(database, f"_lifeboat_old_{_stamp(when)}_{token or run_token()}")


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
