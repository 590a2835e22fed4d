"""module_utils/lifeboat/prune.py: the sets retention sees in a store (a temporary directory, and memory)."""
from __future__ import annotations

import datetime as dt
import json

from ansible.module_utils.lifeboat import catalog, prune
from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat.restore import selection


def record(store, layout, when: dt.datetime, outcome: str) -> None:
    store.put_bytes(layout.verification_key(when), json.dumps(
        {"schema": mf.VERIFY_SCHEMA, "outcome": outcome, "finished_at": mf.iso(when)}).encode())


def test_a_backup_is_verified_by_its_newest_conclusive_drill_everywhere(store, add_backup):
    """Retention, restore's choice and the catalog read the same records with the same rule: a drill that could
    not run (inconclusive) after a passed one leaves the backup verified; a failed one after it does not."""
    t0 = dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)
    kept = add_backup(store, "appdb", t0, verified="passed")
    record(store, kept, t0 + dt.timedelta(days=1), "inconclusive")
    failed = add_backup(store, "appdb", t0 + dt.timedelta(days=2), verified="passed")
    record(store, failed, t0 + dt.timedelta(days=3), "failed")
    record(store, failed, t0 + dt.timedelta(days=4), "inconclusive")
    bare = add_backup(store, "appdb", t0 + dt.timedelta(days=5))
    state = {s.backup_id: s.verified for s in prune.scan(store)}
    assert state == {kept.backup_id: True, failed.backup_id: False, bare.backup_id: None}
    for layout, verified in ((kept, True), (failed, False), (bare, False)):
        ref = mf.select_backup(store, "appdb", backup_id=layout.backup_id)
        assert selection.is_verified(selection.verification_records(store, ref)) is verified
    target = catalog.scan(catalog.Target(name="t", kind="database", destination=store.url), storage=store)
    latest = {b["id"]: (b["verification"] or {}).get("outcome") for b in target["backups"]}
    assert latest == {kept.backup_id: "inconclusive", failed.backup_id: "inconclusive", bare.backup_id: None}
