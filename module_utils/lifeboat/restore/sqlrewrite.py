"""Point pg_restore's SQL at other schemas: the staged in-place Supabase restore (restore/supabase_stage.py) creates
the backup's objects in ``<schema>_lifeboat_new_<token>`` beside the live ones, from the same archive.

pg_dump writes every name schema-qualified (``public.videos``, ``"Odd Schema".t``), so the rewrite is lexical:
outside string literals, dollar-quoted bodies and comments, a qualifier naming a mapped schema is replaced, and so
is a bare schema name after the keyword SCHEMA. Left as they are, on purpose:

* function bodies (dollar-quoted): they name ``public.x`` as text, and after the swap ``public.x`` is the restored
  object;
* names in ``keep`` (per schema): the live objects a staged one must refer to, because they are not staged (the
  functions that platform triggers call, replaced in place; objects of extensions);
* string literals, except a qualified name given to ``::regclass``, ``::regproc``, ``::regprocedure``,
  ``::regtype``, ``::regconfig``, ``::regdictionary`` or ``::regcollation`` (``nextval('public.t_id_seq'::regclass)``,
  ``to_tsvector('public.titles'::regconfig, ...)``) or to ``setval(``: those resolve to an object when they run.
"""
from __future__ import annotations

import re

_IDENT_START = re.compile(r"[A-Za-z_\x80-\U0010ffff]")
_IDENT = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_DOLLAR = re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_REG_CAST = re.compile(
    r"::(?:pg_catalog\.)?(regclass|regproc|regprocedure|regtype|regconfig|regdictionary|regcollation)\b")


def quote_ident(name: str) -> str:
    """pg_dump's quoting: bare when lower-case letters, digits and underscores (not first a digit)."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _ident_at(text: str, i: int) -> tuple[str, int] | None:
    """(name, end) of the identifier starting at i (bare: lower-cased; quoted: unescaped), or None."""
    if i < len(text) and text[i] == '"':
        j, out = i + 1, []
        while j < len(text):
            if text[j] == '"':
                if text.startswith('""', j):
                    out.append('"')
                    j += 2
                    continue
                return "".join(out), j + 1
            out.append(text[j])
            j += 1
        return None
    m = _IDENT.match(text, i)
    if m:
        return m.group(0).lower(), m.end()
    return None


class Rewriter:
    """Rewrite one SQL text (statements of pg_restore's output, never COPY data) for ``mapping`` (schema ->
    staged schema); ``keep``: schema -> names whose references stay on the live schema."""

    def __init__(self, mapping: dict[str, str], keep: dict[str, set[str]] | None = None) -> None:
        self.mapping = mapping
        self.keep = keep or {}

    def sql(self, text: str) -> str:  # noqa: C901 - one lexer
        out: list[str] = []
        i, n = 0, len(text)
        prev_word = ""      # the last keyword-like token (upper-cased), for "SCHEMA <name>"
        prev_char = ""      # the last significant character, to skip "a.public.b"
        while i < n:
            c = text[i]
            if text.startswith("--", i):
                j = text.find("\n", i)
                j = n if j < 0 else j
                out.append(text[i:j])
                i = j
                continue
            if text.startswith("/*", i):
                depth, j = 1, i + 2
                while j < n and depth:
                    if text.startswith("/*", j):
                        depth, j = depth + 1, j + 2
                    elif text.startswith("*/", j):
                        depth, j = depth - 1, j + 2
                    else:
                        j += 1
                out.append(text[i:j])
                i = j
                continue
            if c == "'":
                escape = i > 0 and text[i - 1] in "eE" and (i < 2 or not _IDENT.match(text[i - 2]))
                j = i + 1
                while j < n:
                    if escape and text[j] == "\\":
                        j += 2
                        continue
                    if text[j] == "'":
                        if text.startswith("''", j):
                            j += 2
                            continue
                        break
                    j += 1
                literal = text[i:j + 1]
                after = text[j + 1:j + 40]
                if not escape and (_REG_CAST.match(after) or "".join(out[-2:]).lower() == "setval("):
                    value = literal[1:-1].replace("''", "'")
                    literal = "'" + self.sql(value).replace("'", "''") + "'"
                out.append(literal)
                i = j + 1
                prev_char, prev_word = "'", ""
                continue
            if c == "$":
                m = _DOLLAR.match(text, i)
                if m and not (i > 0 and _IDENT.match(text[i - 1])):
                    end = text.find(m.group(0), m.end())
                    end = n if end < 0 else end + len(m.group(0))
                    out.append(text[i:end])
                    i = end
                    prev_char, prev_word = "$", ""
                    continue
            if c == '"' or (_IDENT_START.match(c) and not (i > 0 and re.match(r"[A-Za-z0-9_$]", text[i - 1]))):
                got = _ident_at(text, i)
                if got is None:  # an unterminated quoted name: leave the rest alone
                    out.append(text[i:])
                    break
                name, end = got
                raw = new = text[i:end]
                if name in self.mapping and prev_char != ".":
                    if end < n and text[end] == ".":
                        nxt = _ident_at(text, end + 1)
                        if nxt is not None and nxt[0] not in self.keep.get(name, ()):
                            new = quote_ident(self.mapping[name])
                    elif prev_word == "SCHEMA":
                        new = quote_ident(self.mapping[name])
                out.append(new)
                prev_word = raw.upper() if c != '"' else ""
                prev_char = "a"
                i = end
                continue
            out.append(c)
            if not c.isspace():
                prev_char, prev_word = c, ""
            i += 1
        return "".join(out)


def statements(text: str) -> list[str]:
    """``text`` cut after each top-level ``;`` (literals, quoted names, dollar bodies and comments respected)."""
    out, start, i, n = [], 0, 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c in "'\"":
            j = i + 1
            while j < n and not (text[j] == c and not text.startswith(c * 2, j)):
                j += 2 if text.startswith(c * 2, j) else 1
            i = j + 1
            continue
        if c == "$":
            m = _DOLLAR.match(text, i)
            if m and not (i > 0 and _IDENT.match(text[i - 1])):
                end = text.find(m.group(0), m.end())
                i = n if end < 0 else end + len(m.group(0))
                continue
        if c == ";":
            out.append(text[start:i + 1])
            start = i + 1
        i += 1
    if text[start:].strip():
        out.append(text[start:])
    return out


_REFERENCES = re.compile(r"\bREFERENCES\s+")


def references_schema(statement: str) -> str | None:
    """The schema of the table an ``ADD CONSTRAINT ... FOREIGN KEY ... REFERENCES s.t(...)`` statement names."""
    m = _REFERENCES.search(statement)
    if not m:
        return None
    got = _ident_at(statement, m.end())
    if got is None or not statement.startswith(".", got[1]):
        return None
    return got[0]


def copy_header(line: str, rewriter: Rewriter) -> str:
    """pg_restore's ``COPY public.t (a, b) FROM stdin;`` with the table's schema mapped."""
    return rewriter.sql(line)


_COPY = re.compile(r"^COPY (.+?) \((.*)\) FROM stdin;\s*$", re.DOTALL)


def copy_columns(line: str) -> str | None:
    """The column list of a COPY header, as written (quoted names kept)."""
    m = _COPY.match(line)
    return m.group(2) if m else None
