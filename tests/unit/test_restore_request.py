"""module_utils/lifeboat/restore/request.py: confirmation and validation name the option."""
from __future__ import annotations


import pytest

from ansible.module_utils.lifeboat import restore as rs
from ansible.module_utils.lifeboat.errors import ConfigError, SafetyError


def test_confirmation_must_name_the_database():
    req = rs.Request(database="appdb", confirm="appdb_copy")
    with pytest.raises(SafetyError) as err:
        req.check_confirmation()
    assert "'appdb'" in str(err.value) and "'appdb_copy'" in str(err.value)
    with pytest.raises(SafetyError, match="got nothing"):
        rs.Request(database="appdb").check_confirmation()
    rs.Request(database="appdb", confirm="appdb").check_confirmation()

@pytest.mark.parametrize("kwargs, option", [
    ({"mode": "partial"}, "tables"),
    ({"mode": "swap", "tables": ["users"]}, "tables"),
    ({"mode": "side_schema", "tables": ["users"]}, "side_schema"),
    ({"schema_only": True, "data_only": True}, "schema_only"),
    ({"data_only": True}, "data_only"),
    ({"jobs": 0}, "jobs"),
    ({"maintenance_on": {"type": "command", "argv": []}}, "maintenance_on"),
    ({"maintenance_off": {"type": "http", "url": "file:///etc/passwd"}}, "maintenance_off"),
    ({"post_restore": [{"type": "smoke"}]}, "post_restore[0]"),
    ({"mode": "upsert"}, "mode"),
])
def test_request_validation_names_the_option(kwargs, option):
    with pytest.raises(ConfigError) as err:
        rs.Request(database="appdb", **kwargs).validate()
    assert err.value.option == option
