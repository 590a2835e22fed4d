"""Every module in library/ documents exactly its argument_spec, and ansible-doc renders it.

The documentation compared is the one ansible-doc renders (``ansible-doc --json``: the module's own
options merged with its doc fragments from doc_fragments/), so an option documented by a fragment counts.

Convention (docs/development.md, "Modules"): each ``library/lifeboat_*.py`` exposes a module-level
``argument_spec()`` function returning the dict given to ``AnsibleModule`` (and optionally
``module_kwargs()`` returning the other keyword arguments: ``supports_check_mode``,
``required_if``, ``mutually_exclusive``...). Modules are discovered, not listed, so a new
module is covered the moment it lands.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml
from testlib import REPO, VENV_BIN

# the modules of library/, and the lab-only module next to the role that uses it (roles/lab/library/)
LIBRARY_FILES = sorted((REPO / "library").glob("lifeboat_*.py"))
MODULE_FILES = LIBRARY_FILES + sorted(REPO.glob("roles/*/library/lifeboat_*.py"))
MODULE_PATH = os.pathsep.join(sorted({str(p.parent) for p in MODULE_FILES}))
SECRET_WORDS = ("password", "secret", "passphrase", "token", "dsn")


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@functools.cache
def rendered() -> dict:
    """{module name: its rendered doc} from ONE ansible-doc --json run over every module."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    exe = VENV_BIN / "ansible-doc"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ansible.cli.doc"]
    proc = subprocess.run(cmd + ["--json", "-t", "module", "-M", MODULE_PATH]
                          + [p.stem for p in MODULE_FILES], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {name: data["doc"] for name, data in json.loads(proc.stdout).items()}


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
    doc = rendered()[path.stem]
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
    proc = subprocess.run(cmd + ["-M", MODULE_PATH, path.stem], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
    assert path.stem in proc.stdout
    for opt in rendered()[path.stem].get("options") or {}:
        assert opt in proc.stdout, f"ansible-doc output lacks option {opt}"


# the option groups of module_utils/lifeboat/options.py, documented once each in doc_fragments/
def _group_options() -> set[str]:
    import testlib  # noqa: F401 - the engine import path

    from ansible.module_utils.lifeboat import options

    names: set[str] = set()
    for spec in (options.s3_spec(), options.pg_spec(), options.pg_admin_spec(), options.encryption_spec(),
                 options.decryption_spec(), options.file_modes_spec(),
                 *(options.s3_spec(p) for p in ("source_", "destination_", "backup_"))):
        for name, s in spec.items():
            names |= {name, *(s.get("aliases") or [])}
    return names


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=[p.stem for p in LIBRARY_FILES])
def test_shared_options_are_specified_and_documented_once(path):
    """A shared option comes from options.py and its doc fragment, never from the module's own text
    (a module may only override a fragment's default)."""
    groups = _group_options()
    own = (yaml.safe_load(load(path).DOCUMENTATION).get("options") or {})
    for name, entry in own.items():
        if name in groups:
            assert set(entry) <= {"default"}, f"{path.stem} documents the shared option {name} itself: " \
                "use its doc fragment (extends_documentation_fragment)"
    # nor as suboptions (a list of stores, e.g. targets[]: the fragment documents the whole option)
    stack = [(name, entry.get("suboptions") or {}) for name, entry in own.items()]
    while stack:
        parent, subs = stack.pop()
        for name, entry in subs.items():
            assert name not in groups, f"{path.stem} documents the shared option {parent}[].{name} itself: " \
                "use a doc fragment (lifeboat_s3.targets documents a list of stores)"
            stack.append((f"{parent}[].{name}", entry.get("suboptions") or {}))
    source = path.read_text()
    for name in groups:
        assert f"{name}=dict(" not in source and f'"{name}": dict(' not in source, \
            f"{path.stem} specifies the shared option {name} itself: use module_utils/lifeboat/options.py"
