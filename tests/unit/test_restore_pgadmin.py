"""module_utils/lifeboat/restore/pgadmin.py: conninfo database arguments, list settings."""
from __future__ import annotations

import pytest

from ansible.module_utils.lifeboat.restore import dbname_arg


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
