"""playbooks/site.yml and the example inventory's host groups (one inventory deploys everything)."""
from __future__ import annotations

import json
import os
import subprocess

import yaml
from testlib import REPO, VENV_BIN

EXAMPLE_VAULT_PASSWORD = "lifeboat-example-vault"  # throwaway, documented in README.md


def pw_file(tmp_path):
    path = tmp_path / "pw"
    path.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
    os.chmod(path, 0o600)
    return str(path)


def test_example_inventory_has_the_groups_site_yml_deploys(tmp_path):
    out = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", "inventories/example", "--list",
                          "--vault-password-file", pw_file(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    inv = json.loads(out)
    assert inv["lifeboat_backup_hosts"]["hosts"] == ["backup-01.example.com"]
    assert inv["lifeboat_app_hosts"]["hosts"] == ["web-01.example.com"]
    assert "lifeboat_db_hosts" in inv["all"]["children"]
    site = yaml.safe_load((REPO / "playbooks/site.yml").read_text())
    assert [p["hosts"] for p in site] == ["localhost", "lifeboat_backup_hosts:lifeboat_app_hosts"]


def test_site_yml_parses_against_the_example_inventory(tmp_path):
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "inventories/example", "playbooks/site.yml",
                           "--syntax-check", "--vault-password-file", pw_file(tmp_path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_jobs_inventories_hold_no_secret_and_app_hosts_only_archive():
    for group in ("lifeboat_backup_hosts", "lifeboat_app_hosts"):
        raw = yaml.safe_load((REPO / f"inventories/example/group_vars/{group}.yml").read_text())
        text = json.dumps(raw["lifeboat_site_jobs_vars"])
        assert "vault_" not in text and "secret_key" not in text and "password" not in text, group
        # secrets reach the jobs through the env file, from the vault
        assert all("vault_" in v for v in raw["lifeboat_host_env"].values()), group
    app = yaml.safe_load((REPO / "inventories/example/group_vars/lifeboat_app_hosts.yml").read_text())
    assert app["backup_schedule_database_enabled"] is False and app["backup_schedule_retention_enabled"] is False
    assert app["backup_schedule_storage_args"] == "--tags storage_backup_archive,storage_backup_config"
