"""Names no one here chose: psql-style patterns with quoted wildcards, database names that look like conninfo."""
from __future__ import annotations

import pytest

from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.restore import dbname_arg


@pytest.mark.parametrize("pattern,name,matches", [
    ('"Tab*le?"', "Tab*le?", True),
    ('"Tab*le?"', "Tabxxle!", False),       # quoted * and ? are literal, as in psql
    ("tab*", "table", True),                 # unquoted they are wildcards
    ('"a[b]"', "a[b]", True),
    ('"a[b]"', "ab", False),                 # [ is never a character class
    ('"We.ird ""S"" %ü"."x"', "x", True),
])
def test_quoted_wildcards_are_literal(pattern, name, matches):
    _schema, glob = pgmeta._split_pattern(pattern)
    assert pgmeta._match(name, glob) is matches


def test_dbname_arg_is_a_conninfo_naming_exactly_the_database():
    import psycopg.conninfo

    for name in ("appdb", 'Shop "Prod" ü=1', "O'Neil\\x", "postgresql://evil/db", "host=elsewhere dbname=x"):
        arg = dbname_arg(name)
        assert psycopg.conninfo.conninfo_to_dict(arg) == {"dbname": name}


@pytest.mark.parametrize("stored,items", [
    ('"UPPER", public', ["UPPER", "public"]),
    ('"$user", public', ["$user", "public"]),
    ('"We.ird ""Sch"" %ü", x', ['We.ird "Sch" %ü', "x"]),
    ('""', [""]),
    ("a", ["a"]),
])
def test_list_settings_split_like_the_server(stored, items):
    """search_path="UPPER", public (pg_db_role_setting) is set back as 'UPPER', 'public', not as one name."""
    from ansible.module_utils.lifeboat.restore import split_guc_list

    assert split_guc_list(stored) == items
