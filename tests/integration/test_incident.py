"""The worst hour without surprises (issue 11): what a newcomer meets during an incident, at playbook level."""
from __future__ import annotations

import pytest
from testlib import run_playbook


@pytest.mark.parametrize(("playbook", "typo", "meant"), [
    ("playbooks/restore.yml", "lifeboat_restore_backup_ld", "lifeboat_restore_backup_id"),
    ("playbooks/storage_restore.yml", "lifeboat_storage_restore_prefx", "lifeboat_storage_restore_prefix"),
    ("playbooks/backup.yml", "lifeboat_backup_compresion", "lifeboat_backup_compression"),
])
def test_a_typo_in_a_variable_name_is_refused_naming_the_closest(playbook, typo, meant):
    proc = run_playbook(playbook, "-e", f"{typo}=x", "-e", "lifeboat_confirm=nothing", check=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{playbook} ran with the unknown variable {typo}:\n{out[-3000:]}"
    assert f"unknown variable {typo}: did you mean {meant}?" in out, out[-3000:]
    assert "ok=0" in out  # refused before anything ran
