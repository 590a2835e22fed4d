"""Foundation checks without servers: ansible.cfg, inventories, the lab role's specs."""
from __future__ import annotations

import configparser
import json
import os
import re
import subprocess

import pytest
import yaml

from testlib import REPO, VENV_BIN

EXAMPLE_VAULT_PASSWORD = "lifeboat-example-vault"  # throwaway, documented in README.md


def test_ansible_cfg_points_at_the_repo_and_the_local_lab():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    defaults = cfg["defaults"]
    assert defaults["inventory"] == "inventories/local"
    assert defaults["library"] == "library"
    assert defaults["module_utils"] == "module_utils"
    assert defaults["roles_path"] == "roles"
    assert defaults.getboolean("retry_files_enabled") is False


def test_local_inventory_is_localhost_in_the_venv():
    out = subprocess.run([str(VENV_BIN / "ansible-inventory"), "--host", "localhost"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    host = json.loads(out)
    assert host["ansible_connection"] == "local"
    assert host["ansible_python_interpreter"] == "{{ ansible_playbook_python }}"


def secret_leaves(tree, secret_key: bool = False, path: str = ""):
    """(path, value) of every value under a key that names a secret, at any depth."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            named = secret_key or bool(re.search(r"(password|secret|token|passphrase)", str(key)))
            yield from secret_leaves(value, named, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from secret_leaves(value, secret_key, f"{path}[{i}]")
    elif secret_key:
        yield path, tree


def test_example_inventory_keeps_every_secret_in_the_vault(tmp_path):
    vault = REPO / "inventories/example/group_vars/all/vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    password_file = tmp_path / "pw"
    password_file.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
    os.chmod(password_file, 0o600)
    plain = subprocess.run([str(VENV_BIN / "ansible-vault"), "view", "--vault-password-file", str(password_file),
                            str(vault)], capture_output=True, text=True, check=True).stdout
    vault_vars = yaml.safe_load(plain)
    assert vault_vars and all(k.startswith("vault_") for k in vault_vars)
    referenced: set[str] = set()
    for path in sorted((REPO / "inventories/example/group_vars/all").glob("*.yml")):
        if path.name == "vault.yml":
            continue
        text = path.read_text()
        referenced |= set(re.findall(r"\b(vault_[a-z0-9_]+)", text))
        for key, value in secret_leaves(yaml.safe_load(text) or {}):
            assert isinstance(value, str) and "{{" in value, f"{path.name}: {key} must come from the vault"
    assert referenced and referenced <= set(vault_vars), referenced - set(vault_vars)
    hosts = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", "inventories/example", "--list",
                            "--vault-password-file", str(password_file)], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout
    assert "backup-01.example.com" in hosts


def test_example_inventory_without_the_vault_password_fails_clearly():
    proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", "inventories/example", "--list"],
                          cwd=REPO, capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_VAULT_PASSWORD_FILE=""))
    assert proc.returncode != 0
    assert "vault" in (proc.stdout + proc.stderr).lower()


def test_lab_role_argument_specs_cover_every_default():
    defaults = yaml.safe_load((REPO / "roles/lab/defaults/main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles/lab/meta/argument_specs.yml").read_text())["argument_specs"]
    for entry in ("main", "down"):
        options = specs[entry]["options"]
        assert set(defaults) <= set(options), set(defaults) - set(options)
    assert all(name.startswith("lab_") for name in defaults)


def test_lab_secrets_never_reach_argv_in_the_role():
    """Passwords and keys travel by stdin or environment, and tasks that touch them hide their logs."""
    tasks_dir = REPO / "roles/lab/tasks"
    for path in sorted(tasks_dir.glob("*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            body = yaml.safe_dump(task)
            if "lab_secrets" not in body:
                continue
            argv = yaml.safe_dump(task.get("ansible.builtin.command", {}).get("argv", []))
            assert "lab_secrets" not in argv, f"{path.name}: {task['name']} puts a secret in argv"
            if "lifeboat_lab_service" not in task:  # that module marks env no_log itself
                assert task.get("no_log") is True, f"{path.name}: {task['name']} needs no_log"


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"{path.name}: '{line}' is not pinned with =="
            name, version = line.split("==", 1)
            pins[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version
    return pins


def test_runtime_requirements_are_the_tested_pins():
    """requirements-runtime.txt (what lifeboat_install puts on job hosts) pins exactly what the tests ran."""
    full = _pins(REPO / "requirements.txt")
    runtime = _pins(REPO / "requirements-runtime.txt")
    full.setdefault("psycopg-binary", full["psycopg"])  # installed by the psycopg[binary] extra
    assert {"ansible-core", "boto3", "psycopg", "zstandard"} <= set(runtime)
    assert {n: v for n, v in runtime.items() if full.get(n) != v} == {}


def test_install_role_argument_specs_cover_every_default():
    defaults = yaml.safe_load((REPO / "roles/lifeboat_install/defaults/main.yml").read_text())
    spec = yaml.safe_load((REPO / "roles/lifeboat_install/meta/argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)


def test_module_arguments_are_never_written_to_a_temporary_file(tmp_path):
    """Pipelining reaches the local connection: while a module runs, the remote tmp dir holds no AnsiballZ
    file carrying its arguments (passwords included)."""
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir(mode=0o700)
    env = dict(os.environ, ANSIBLE_REMOTE_TMP=str(remote_tmp), ANSIBLE_FORCE_COLOR="0")
    env.pop("ANSIBLE_PIPELINING", None)
    proc = subprocess.run([str(VENV_BIN / "ansible"), "localhost", "-m", "ansible.builtin.find", "-a",
                           f"paths={remote_tmp} recurse=true file_type=any", "-o"],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"matched": 0' in proc.stdout, f"module files written to disk while it ran: {proc.stdout}"
    assert "AnsiballZ" not in proc.stdout


def _lifeboat_vars_filter():
    import importlib.util
    spec = importlib.util.spec_from_file_location("lifeboat_vars", REPO / "playbooks/filter_plugins/lifeboat_vars.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_playbook_checks_its_variables_first():
    for path in sorted((REPO / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(path.read_text()):
            if "ansible.builtin.import_playbook" in play:
                continue  # the imported playbook's plays check their own variables
            first = (play.get("pre_tasks") or [{}])[0]
            assert first.get("ansible.builtin.import_tasks") == "tasks/lifeboat_check_vars.yml", (
                f"{path.name}: play '{play.get('name')}' does not start with tasks/lifeboat_check_vars.yml")


@pytest.mark.parametrize("inventory", ["inventories/local", "inventories/example"])
def test_every_variable_the_inventories_define_is_known(inventory):
    module = _lifeboat_vars_filter()
    defined = set()
    for path in (REPO / inventory).rglob("*.yml"):
        defined.update(re.findall(r"^(lifeboat_[a-z0-9_]+):", path.read_text(), flags=re.M))
    assert defined
    assert module.unknown_vars(defined, [str(REPO / inventory)]) == []


def test_an_unknown_variable_names_the_closest_known_one_or_none():
    module = _lifeboat_vars_filter()
    messages = module.unknown_vars(["lifeboat_restore_backup_ld", "lifeboat_qqqq", "ansible_x"])
    assert len(messages) == 2
    assert messages[0].startswith("unknown variable lifeboat_qqqq: no known variable is close")
    assert messages[1].startswith(
        "unknown variable lifeboat_restore_backup_ld: did you mean lifeboat_restore_backup_id?")
    assert module.unknown_vars(["lifeboat_qqqq"], allowed=["lifeboat_qqqq"]) == []


def test_module_options_in_a_message_become_the_playbooks_variables():
    module = _lifeboat_vars_filter()
    mapping = {"no_owner": "lifeboat_restore_no_owner", "create_roles": "lifeboat_restore_create_roles",
               "before": "lifeboat_restore_before", "database": "lifeboat_restore_database",
               "snapshot_options": "lifeboat_restore_snapshot_options"}
    msg = ("before: 'x' is not a time; database: 'db' is used before the swap; set create_roles: true or "
           "no_owner: true; give snapshot_options.encryption_recipients")
    assert module.option_vars(msg, mapping) == (
        "lifeboat_restore_before: 'x' is not a time; lifeboat_restore_database: 'db' is used before the swap; set "
        "lifeboat_restore_create_roles: true or lifeboat_restore_no_owner: true; give "
        "lifeboat_restore_snapshot_options.encryption_recipients")
    assert module.option_vars("lifeboat_restore_no_owner stays", mapping) == "lifeboat_restore_no_owner stays"


def _playbook_defined(node, out: set) -> None:
    """Names the playbooks define themselves: play/task vars, set_fact, register, vars_prompt, loop_var."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("vars", "ansible.builtin.set_fact") and isinstance(value, dict):
                out.update(str(k) for k in value)
            elif key == "register" and isinstance(value, str):
                out.add(value)
            elif key == "vars_prompt":
                out.update(p["name"] for p in value)
            elif key == "loop_control" and isinstance(value, dict) and "loop_var" in value:
                out.add(value["loop_var"])
            _playbook_defined(value, out)
    elif isinstance(node, list):
        for item in node:
            _playbook_defined(item, out)


def test_the_example_inventory_shows_every_variable_the_playbooks_read():
    """Every lifeboat_* variable a playbook reads is set in inventories/example, or shown there as a comment
    (a per-run confirmation, an option whose default is 'leave it out'): the production template is complete."""
    files = sorted((REPO / "playbooks").glob("*.yml")) + sorted((REPO / "playbooks/tasks").glob("*.yml"))
    read, own = set(), set()
    for path in files:
        read.update(re.findall(r"\blifeboat_[a-z0-9_]+\b", path.read_text()))
        _playbook_defined(yaml.safe_load(path.read_text()), own)
    not_variables = ({p.stem for p in (REPO / "library").glob("lifeboat_*.py")}
                     | {p.stem for p in (REPO / "playbooks/tasks").glob("*.yml")}
                     | {p.stem for p in (REPO / "playbooks/filter_plugins").glob("*.py")}
                     | {p.name for p in (REPO / "roles").iterdir()}
                     | {"lifeboat_unknown_vars", "lifeboat_option_vars"}  # filters
                     | set(re.findall(r"^\s+(lifeboat_[a-z0-9_]+):",
                                      (REPO / "inventories/example/hosts.yml").read_text(), flags=re.M)))  # groups
    shown = set()
    for path in (REPO / "inventories/example").rglob("*.yml"):
        shown.update(re.findall(r"^\s*#?\s*(lifeboat_[a-z0-9_]+):", path.read_text(), flags=re.M))
    missing = sorted(n for n in read - own - not_variables - shown if not n.endswith("_"))
    assert missing == [], f"add these to inventories/example (set, or shown as a comment): {missing}"
