"""DOCUMENTATION of the storage modules matches their argument_spec (names, types, defaults, no_log)."""
from __future__ import annotations

import importlib.util

import pytest
import yaml
from conftest import REPO

MODULES = ["lifeboat_s3_sync", "lifeboat_s3_restore", "lifeboat_archive", "lifeboat_s3_replication"]


def load(name):
    path = REPO / "library" / f"{name}.py"
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_argument_spec(name):
    mod = load(name)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    yaml.safe_load(mod.EXAMPLES)
    ret = yaml.safe_load(mod.RETURN)
    assert doc["module"] == name
    spec = mod.argument_spec()
    assert set(doc["options"]) == set(spec), set(doc["options"]) ^ set(spec)
    for opt, s in spec.items():
        d = doc["options"][opt]
        assert d.get("type", "str") == s.get("type", "str"), opt
        assert d.get("default") == s.get("default"), opt
        assert bool(d.get("required")) == bool(s.get("required")), opt
        assert d.get("choices") == s.get("choices"), opt
        if s.get("type") == "list":
            assert d.get("elements") == s.get("elements"), opt
        secretish = any(w in opt for w in ("secret", "password", "passphrase", "token", "dsn"))
        if secretish and s.get("type") not in ("bool", "path"):
            assert s.get("no_log") is True, f"{opt} must be no_log"
    for key, r in ret.items():
        assert {"description", "returned", "type"} <= set(r), key
