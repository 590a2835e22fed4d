"""The shape of the engine stays: imports go one way (docs/architecture.md, "Engine packages").

* Only the module layer (library/, module_utils/lifeboat/module.py and options.py) imports Ansible's
  module classes (``ansible.module_utils.basic``); the engine below never does, nor the module layer.
* psycopg is imported only by the PostgreSQL modules: pgconn.py, pgmeta.py, roles.py, supabase.py and the restore
  package.
* No module imports a private name (``_x``) of another module, by ``from m import _x`` or ``m._x``.
* No file of the engine is over 700 lines (split it along a concern instead).
"""
from __future__ import annotations

import ast

import pytest
from testlib import REPO

ENGINE = REPO / "module_utils" / "lifeboat"
MODULE_LAYER = {"module.py", "options.py"}
POSTGRES = {"pgconn.py", "pgmeta.py", "roles.py", "supabase.py"}
PREFIX = "ansible.module_utils.lifeboat"
MAX_LINES = 700


def engine_files():
    return sorted(ENGINE.rglob("*.py"))


def rel(path) -> str:
    return str(path.relative_to(ENGINE))


def imports(path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import statement, wherever it is."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


@pytest.mark.parametrize("path", engine_files(), ids=rel)
def test_the_engine_never_imports_ansible_module_classes(path):
    if rel(path) in MODULE_LAYER:
        return
    for module, names, line in imports(path):
        assert not module.startswith("ansible.module_utils.basic"), \
            f"{rel(path)}:{line} imports {module}: only library/ and module.py/options.py may"
        assert module not in (f"{PREFIX}.module", f"{PREFIX}.options") and not (
            module == PREFIX and {"module", "options"} & set(names)), \
            f"{rel(path)}:{line}: the engine must not import the module layer ({module} {names})"


@pytest.mark.parametrize("path", engine_files(), ids=rel)
def test_psycopg_only_in_the_postgresql_modules(path):
    allowed = rel(path) in POSTGRES or rel(path).startswith("restore/")
    for module, _names, line in imports(path):
        if module == "psycopg" or module.startswith("psycopg."):
            assert allowed, f"{rel(path)}:{line} imports {module}: go through pgconn/pgmeta"


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(source: str) -> list[str]:
    """Every private name of another engine module that ``source`` imports or reaches: ``from m import _x``
    (absolute or relative), ``m._x``, ``pkg.m._x`` through any imported alias of the engine."""
    tree = ast.parse(source)
    found: list[str] = []
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and ((node.module or "").startswith(PREFIX) or node.level):
            found += [f"{node.lineno}: from {'.' * node.level}{node.module or ''} import {a.name}"
                      for a in node.names if private(a.name)]
            aliases |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(PREFIX):
                    aliases.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, root = [node.attr], node.value
        while isinstance(root, ast.Attribute):
            chain.append(root.attr)
            root = root.value
        if isinstance(root, ast.Name) and root.id in aliases and private(node.attr):
            found.append(f"{node.lineno}: {root.id}.{'.'.join(reversed(chain))}")
    return found


def test_the_private_name_check_sees_every_form():
    assert private_uses("from ansible.module_utils.lifeboat.restore.pgadmin import _quote\n")
    assert private_uses("from .pgadmin import _quote\n")
    assert private_uses("from ansible.module_utils.lifeboat import restore\nrestore.pgadmin._quote('x')\n")
    assert private_uses("import ansible.module_utils.lifeboat.storage\nansible.module_utils.lifeboat.storage._x\n")
    assert private_uses("from ansible.module_utils.lifeboat import storage as st\nst._makedirs_private\n")
    assert not private_uses("from ansible.module_utils.lifeboat import storage\nstorage.open_storage\nself._x\n")


@pytest.mark.parametrize("path", engine_files() + sorted((REPO / "library").glob("*.py")), ids=lambda p: p.name)
def test_no_private_names_across_modules(path):
    found = private_uses(path.read_text())
    assert not found, f"{path.name} uses private names of other modules: {found}"


@pytest.mark.parametrize("path", engine_files(), ids=rel)
def test_no_engine_file_is_over_700_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{rel(path)} has {lines} lines (limit {MAX_LINES}): split it along a concern"
