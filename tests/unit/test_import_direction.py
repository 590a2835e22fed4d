"""The shape of the engine stays: imports go one way (docs/architecture.md, "Engine packages").

* Only the module layer (library/, module_utils/lifeboat/module.py and options.py) imports Ansible's
  module classes (``ansible.module_utils.basic``); the engine below never does, nor the module layer.
* psycopg is imported only by the PostgreSQL modules: pgconn.py, pgmeta.py, roles.py and the restore package.
* No module imports a private name (``_x``) of another module, by ``from m import _x`` or ``m._x``.
* No file of the engine is over 700 lines (split it along a concern instead).
"""
from __future__ import annotations

import ast

import pytest
from testlib import REPO

ENGINE = REPO / "module_utils" / "lifeboat"
MODULE_LAYER = {"module.py", "options.py"}
POSTGRES = {"pgconn.py", "pgmeta.py", "roles.py"}
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


@pytest.mark.parametrize("path", engine_files() + sorted((REPO / "library").glob("*.py")), ids=lambda p: p.name)
def test_no_private_names_across_modules(path):
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}
    for module, names, line in imports(path):
        if module.startswith(PREFIX):
            private = [n for n in names if n.startswith("_") and n != "__future__"]
            assert not private, f"{path.name}:{line} imports private names {private} from {module}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(PREFIX):
                    aliases[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            assert not (node.attr.startswith("_") and not node.attr.startswith("__")), \
                f"{path.name}:{node.lineno} uses the private {node.value.id}.{node.attr}"


@pytest.mark.parametrize("path", engine_files(), ids=rel)
def test_no_engine_file_is_over_700_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{rel(path)} has {lines} lines (limit {MAX_LINES}): split it along a concern"
