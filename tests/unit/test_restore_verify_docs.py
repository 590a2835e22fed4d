"""DOCUMENTATION / EXAMPLES / RETURN of the restore and verify modules match their argument_spec."""
from __future__ import annotations

import importlib.util

import pytest
import yaml
from conftest import REPO

MODULES = ["lifeboat_pg_restore", "lifeboat_backup_verify"]


def load(name):
    path = REPO / "library" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_argument_spec(name):
    mod = load(name)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    examples = yaml.safe_load(mod.EXAMPLES)
    ret = yaml.safe_load(mod.RETURN)
    assert doc["module"] == name
    spec = mod.argument_spec()
    assert set(doc["options"]) == set(spec), set(doc["options"]) ^ set(spec)
    for opt, s in spec.items():
        d = doc["options"][opt]
        assert d.get("description"), opt
        assert d.get("type", "str") == s.get("type", "str"), opt
        assert d.get("default") == s.get("default"), opt
        assert bool(d.get("required")) == bool(s.get("required")), opt
        assert d.get("choices") == s.get("choices"), opt
        if s.get("type") == "list":
            assert d.get("elements") == s.get("elements"), opt
        if any(w in opt for w in ("secret", "password", "passphrase", "token", "dsn")) and s.get("type") != "bool":
            assert s.get("no_log") is True, f"{opt} must be no_log"
    for key, r in ret.items():
        assert {"description", "returned", "type"} <= set(r), key
    # every example only uses documented options
    for task in examples:
        args = task.get(name) or task.get(f"lifeboat.{name}") or {}
        assert set(args) <= set(spec), set(args) - set(spec)
