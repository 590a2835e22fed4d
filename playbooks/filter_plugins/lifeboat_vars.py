"""Filters about the playbooks' own variables.

``lifeboat_unknown_vars``: every playbook refuses ``lifeboat_*`` variables that nothing reads.

A typo in ``-e lifeboat_restore_backup_ld=...`` would otherwise be ignored silently and change what is
restored. A variable is known when a playbook or a role of this repository, or an expression (``{{ }}``) of an
inventory in use, reads it; ``lifeboat_allow_vars`` lists extra names an inventory defines for its own use.
Used by ``playbooks/tasks/lifeboat_check_vars.yml``, the first task of every playbook.

``lifeboat_option_vars``: a module's message names its options (``no_owner``, ``gpg_homedir``,
``snapshot_options.encryption_recipients``); a playbook user sets variables. Given the playbook's mapping
{option: variable}, the message names the variables instead.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path

PREFIX = "lifeboat_"
REPO = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\blifeboat_[a-z0-9_]+\b")
EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
SUFFIXES = {".yml", ".yaml", ".j2", ".json"}


def _files(root: Path):
    if root.is_file():
        yield root
    elif root.is_dir():
        yield from (p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in SUFFIXES)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def known_names(inventory_sources=()) -> set[str]:
    """Names read by the playbooks and roles, and by the expressions of the given inventories."""
    known: set[str] = set()
    for top in ("playbooks", "roles"):
        for path in _files(REPO / top):
            known.update(NAME.findall(_read(path)))
    for source in inventory_sources or ():
        for path in _files(Path(str(source))):
            for expression in EXPRESSION.findall(_read(path)):
                known.update(NAME.findall(expression))
    modules = {p.stem for p in (REPO / "library").glob("lifeboat_*.py")}
    return {name for name in known if not name.endswith("_")} - modules


def unknown_vars(names, inventory_sources=(), allowed=()) -> list[str]:
    """One message per unknown ``lifeboat_*`` name, naming the closest known variable."""
    known = known_names(inventory_sources) | set(allowed or ())
    messages = []
    for name in sorted({str(n) for n in names if str(n).startswith(PREFIX)} - known):
        # compared without the common prefix, which would make every name look close
        close = difflib.get_close_matches(name[len(PREFIX):], sorted(k[len(PREFIX):] for k in known), n=1, cutoff=0.6)
        hint = f"did you mean {PREFIX}{close[0]}?" if close else "no known variable is close"
        messages.append(f"unknown variable {name}: {hint} (nothing reads it; if an inventory defines it "
                        f"for its own use, add it to lifeboat_allow_vars)")
    return messages


def option_vars(msg, mapping) -> str:
    """``msg`` with the module options of ``mapping`` replaced by the playbook variables that set them.

    Options with an underscore (``no_owner``, ``backup_id``) are identifiers wherever they appear; a one-word
    option (``before``, ``mode``) is one only where the engine names it: at the start of the message or of a
    clause (``before: 'yesterday' is not a time``), never inside prose ("the database", "before the swap").
    """
    text = str(msg)
    for option in sorted((str(o) for o in mapping or {}), key=len, reverse=True):
        variable = str(mapping[option])
        if "_" in option or "." in option:
            pattern = rf"(?<![\w.]){re.escape(option)}(?![\w])"
        else:
            pattern = rf"(?:(?<=^)|(?<=[;(] )|(?<=: )){re.escape(option)}(?=:)"
        text = re.sub(pattern, variable, text)
    return text


class FilterModule:
    def filters(self):
        return {"lifeboat_unknown_vars": unknown_vars, "lifeboat_option_vars": option_vars}
