"""module_utils/lifeboat/pgmeta.py: psql-style table patterns."""
from __future__ import annotations


import pytest
from ansible.module_utils.lifeboat import pgmeta





@pytest.mark.parametrize("pattern,expected", [
    ("users", (None, "users")),
    ("public.Users", ("public", "users")),
    ('"Audit Log"', (None, "Audit Log")),
    ('app."Mixed.Case"', ("app", "Mixed.Case")),
    ("analytics.*", ("analytics", "*")),
])
def test_table_patterns_follow_psql_rules(pattern, expected):
    assert pgmeta.split_pattern(pattern) == expected

@pytest.mark.parametrize("pattern,name,matches", [
    ('"Tab*le?"', "Tab*le?", True),
    ('"Tab*le?"', "Tabxxle!", False),       # quoted * and ? are literal, as in psql
    ("tab*", "table", True),                 # unquoted they are wildcards
    ('"a[b]"', "a[b]", True),
    ('"a[b]"', "ab", False),                 # [ is never a character class
    ('"We.ird ""S"" %ü"."x"', "x", True),
])
def test_quoted_wildcards_are_literal(pattern, name, matches):
    _schema, glob = pgmeta.split_pattern(pattern)
    assert pgmeta.match_pattern(name, glob) is matches
