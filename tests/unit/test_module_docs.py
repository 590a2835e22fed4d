"""Every module in library/ documents exactly its argument_spec, and ansible-doc renders it.

Convention (docs/development.md, "Modules"): each ``library/lifeboat_*.py`` exposes a module-level
``argument_spec()`` function returning the dict given to ``AnsibleModule`` (and optionally
``module_kwargs()`` returning the other keyword arguments: ``supports_check_mode``,
``required_if``, ``mutually_exclusive``...). Modules are discovered, not listed, so a new
module is covered the moment it lands.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import yaml
from testlib import REPO, VENV_BIN

MODULE_FILES = sorted((REPO / "library").glob("lifeboat_*.py"))
SECRET_WORDS = ("password", "secret", "passphrase", "token", "dsn")


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def spec_of(mod) -> dict:
    if callable(getattr(mod, "argument_spec", None)):
        return mod.argument_spec()
    if isinstance(getattr(mod, "ARGUMENT_SPEC", None), dict):
        return mod.ARGUMENT_SPEC
    pytest.fail(f"{mod.__name__}: expose a module-level argument_spec() function (docs/development.md, Modules)")


def _compare_options(where: str, doc_opts: dict, spec: dict) -> None:
    doc_opts = doc_opts or {}
    assert set(doc_opts) == set(spec), f"{where}: documented but not in argument_spec: " \
        f"{sorted(set(doc_opts) - set(spec))}; in argument_spec but undocumented: {sorted(set(spec) - set(doc_opts))}"
    for opt, s in spec.items():
        d = doc_opts[opt]
        name = f"{where}.{opt}"
        assert d.get("description"), f"{name}: no description"
        assert d.get("type", "str") == s.get("type", "str"), f"{name}: type {d.get('type')} != {s.get('type')}"
        assert d.get("default") == s.get("default"), f"{name}: default {d.get('default')!r} != {s.get('default')!r}"
        assert bool(d.get("required")) == bool(s.get("required")), f"{name}: required differs"
        assert d.get("choices") == s.get("choices"), f"{name}: choices {d.get('choices')} != {s.get('choices')}"
        assert sorted(d.get("aliases") or []) == sorted(s.get("aliases") or []), f"{name}: aliases differ"
        if s.get("type") == "list" or d.get("type") == "list":
            assert d.get("elements") == s.get("elements"), f"{name}: elements differ"
        if any(w in opt for w in SECRET_WORDS) and s.get("type", "str") not in ("bool", "path"):
            assert s.get("no_log") is True, f"{name}: a secret must be no_log=True"
        if s.get("options") or d.get("suboptions"):
            _compare_options(name, d.get("suboptions"), s.get("options") or {})


def test_modules_are_discovered():
    names = {p.stem for p in MODULE_FILES}
    assert "lifeboat_pg_backup" in names


@pytest.mark.parametrize("path", MODULE_FILES, ids=[p.stem for p in MODULE_FILES])
def test_documentation_matches_argument_spec(path):
    mod = load(path)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    assert doc["module"] == path.stem
    assert doc.get("short_description")
    spec = spec_of(mod)
    _compare_options(path.stem, doc.get("options"), spec)

    # the relations given to AnsibleModule name real options
    kwargs = mod.module_kwargs() if callable(getattr(mod, "module_kwargs", None)) else {}
    for key in ("mutually_exclusive", "required_together", "required_one_of"):
        for group in kwargs.get(key, []):
            assert set(group) <= set(spec), f"{key} names unknown options {set(group) - set(spec)}"
    for rule in kwargs.get("required_if", []):
        assert rule[0] in spec and set(rule[2]) <= set(spec), f"required_if names unknown options: {rule}"
        assert rule[1] in (spec[rule[0]].get("choices") or [rule[1]]), f"required_if value not a choice: {rule}"

    # RETURN: every value says what, when and which type
    ret = yaml.safe_load(mod.RETURN) or {}
    for key, r in ret.items():
        assert {"description", "returned", "type"} <= set(r), f"RETURN.{key} lacks description/returned/type"

    # EXAMPLES: valid YAML whose tasks use only documented options
    examples = yaml.safe_load(mod.EXAMPLES) or []
    aliases = {a for s in spec.values() for a in (s.get("aliases") or [])}
    used = False
    for task in examples:
        args = task.get(path.stem) or task.get(f"lifeboat.{path.stem}")
        if args is None:
            continue
        used = True
        assert set(args) <= set(spec) | aliases, f"EXAMPLES use undocumented options {set(args) - set(spec)}"
        for opt, s in spec.items():
            if s.get("required"):
                assert opt in args, f"EXAMPLES omit the required option {opt}"
    assert used, "EXAMPLES never call the module"


def test_pg_backup_contract():
    """The backup module's specific promises: secrets no_log with env fallbacks, check mode."""
    mod = load(REPO / "library" / "lifeboat_pg_backup.py")
    spec = mod.argument_spec()
    for secret in ("dsn", "password", "encryption_passphrase", "s3_secret_key", "s3_session_token"):
        assert spec[secret]["no_log"] is True, secret
    assert spec["dsn"]["fallback"][1] == ["LIFEBOAT_PG_DSN"]
    assert spec["password"]["fallback"][1] == ["PGPASSWORD"]
    assert mod.module_kwargs()["supports_check_mode"] is True


@pytest.mark.parametrize("path", MODULE_FILES, ids=[p.stem for p in MODULE_FILES])
def test_ansible_doc_renders(path):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    exe = VENV_BIN / "ansible-doc"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ansible.cli.doc"]
    proc = subprocess.run(cmd + ["-M", str(REPO / "library"), path.stem], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
    assert path.stem in proc.stdout
    doc = yaml.safe_load(load(path).DOCUMENTATION)
    for opt in doc.get("options") or {}:
        assert opt in proc.stdout, f"ansible-doc output lacks option {opt}"
