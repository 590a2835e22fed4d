"""privileges.py without a server: patterns that match exactly one name, the fix and the message."""
from __future__ import annotations

import pytest

from ansible.module_utils.lifeboat import pgmeta, privileges
from ansible.module_utils.lifeboat.privileges import Unreadable, dump_pattern


@pytest.mark.parametrize("parts, expected", [
    (("public", "users"), "public.users"),
    (("public", "Hidden Notes"), 'public."Hidden Notes"'),
    (("app", 'say "hi"'), 'app."say ""hi"""'),
    (("a.b", "t*"), '"a.b"."t*"'),
    (("locked",), "locked"),
])
def test_dump_pattern_matches_exactly_that_name(parts, expected):
    assert dump_pattern(*parts) == expected
    # and Lifeboat's own pattern matching (the row counts' scope) reads it back as that name only
    sch, tab = pgmeta.split_pattern(expected)
    assert pgmeta.match_pattern(parts[-1], tab)
    if len(parts) == 2:
        assert pgmeta.match_pattern(parts[0], sch)
    assert not pgmeta.match_pattern(parts[-1] + "x", tab)


def test_fix_and_message_name_the_object_the_role_and_both_ways_out():
    items = [Unreadable("schema", "locked", "", "bk", "own", "USAGE", {"exclude_schemas": "locked"},
                        "GRANT USAGE ON SCHEMA locked TO bk;"),
             Unreadable("large object", "", "16400", "bk", "own", "SELECT", {},
                        "GRANT SELECT ON LARGE OBJECT 16400 TO bk;")]
    assert items[0].fix() == ("exclude it: add 'locked' to exclude_schemas; or grant it (as 'own' or a superuser): "
                              "GRANT USAGE ON SCHEMA locked TO bk;")
    assert items[1].fix().startswith("grant it (as 'own' or a superuser): GRANT SELECT ON LARGE OBJECT 16400")
    msg = privileges.message(items, "appdb", "127.0.0.1:5432")
    assert msg.startswith("the backup role 'bk' cannot read 2 object(s) of database 'appdb' at 127.0.0.1:5432")
    assert "[1] schema locked (owner 'own')" in msg and "[2] large object 16400" in msg
    assert "include_schemas / include_tables" in msg   # how large objects are left out
    assert items[0].as_dict()["fix"] == items[0].fix()


def test_message_lists_a_bounded_number():
    items = [Unreadable("table", "s", f"t{i}", "bk", "own", "SELECT", {"exclude_tables": f"s.t{i}"},
                        f"GRANT SELECT ON TABLE s.t{i} TO bk;") for i in range(privileges.MESSAGE_LIMIT + 3)]
    msg = privileges.message(items, "db", "h:1")
    assert f"[{privileges.MESSAGE_LIMIT}] table s.t{privileges.MESSAGE_LIMIT - 1}" in msg
    assert "... and 3 more" in msg
