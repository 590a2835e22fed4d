"""What killed backups left in a directory destination, swept by the next backup (leftovers.py)."""
from __future__ import annotations

import os
import time

import pytest

from ansible.module_utils.lifeboat import leftovers
from ansible.module_utils.lifeboat.storage import LocalStorage


def put(root, rel: str, age: float = 7200.0, data: bytes = b"x") -> str:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    old = time.time() - age
    os.utime(path, (old, old))
    return path


def test_sweep_removes_old_sets_without_manifest_and_partials_only(tmp_path):
    root = str(tmp_path)
    put(root, "app/app-20261201T010000Z/app.dump.zst.gpg")                    # killed before its manifest
    put(root, "app/app-20261201T010000Z/roles.sql.zst.gpg")
    put(root, "app/app-20261201T020000Z/app.dump.zst.gpg", age=60)            # young: maybe a live run's
    put(root, "app/app-20261201T030000Z/app.dump.zst.gpg")                    # complete
    put(root, "app/app-20261201T030000Z/manifest.json", data=b"{not json")    # damaged: never touched here
    put(root, "app/app-20261201T040000Z/app.dump.zst.gpg.123-456.partial")    # an older version's killed writer
    put(root, "app/app-20261201T050000Z/app.dump.zst.gpg.1-2-ab.lifeboat-partial")  # a killed local writer
    put(root, "other/other-20261201T010000Z/other.dump.zst.gpg")              # another database's
    out = leftovers.sweep(LocalStorage(root), "app", grace_s=3600)
    assert sorted(out.removed) == ["app/app-20261201T010000Z/app.dump.zst.gpg",
                                   "app/app-20261201T010000Z/roles.sql.zst.gpg",
                                   "app/app-20261201T040000Z/app.dump.zst.gpg.123-456.partial",
                                   "app/app-20261201T050000Z/app.dump.zst.gpg.1-2-ab.lifeboat-partial"]
    assert out.reported == [] and out.aborted_uploads == []
    left = sorted(os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(root) for f in fs)
    assert left == ["app/app-20261201T020000Z/app.dump.zst.gpg", "app/app-20261201T030000Z/app.dump.zst.gpg",
                    "app/app-20261201T030000Z/manifest.json", "other/other-20261201T010000Z/other.dump.zst.gpg"]
    assert any("without manifest" in line for line in out.lines())


def test_sweep_reports_what_it_may_not_remove(tmp_path):
    root = str(tmp_path)
    put(root, "app/app-20261201T010000Z/app.dump.zst.gpg")
    if os.geteuid() == 0:
        pytest.skip("root ignores directory modes")
    set_dir = os.path.join(root, "app", "app-20261201T010000Z")
    os.chmod(set_dir, 0o500)  # the backup's user may not delete here
    try:
        out = leftovers.sweep(LocalStorage(root), "app", grace_s=0)
        assert out.removed == []
        assert len(out.reported) == 1 and "app-20261201T010000Z" in out.reported[0]
        assert "has no manifest" in out.reported[0] and "remove it by hand" in out.reported[0]
    finally:
        os.chmod(set_dir, 0o700)
