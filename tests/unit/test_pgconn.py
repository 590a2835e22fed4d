"""module_utils/lifeboat/pgconn.py: connection targets, the password kept out of the environment."""
from __future__ import annotations

import os
import stat

import pytest
from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.pgconn import PgTarget


def test_pg_target_from_dsn_and_child_env_keeps_password_out_of_env():
    t = PgTarget.from_options(
        dsn="postgresql://postgres.ref:p%40ss:word@db.example.com:6543/postgres?sslmode=require")
    assert (t.host, t.port, t.user, t.database) == ("db.example.com", 6543, "postgres.ref", "postgres")
    assert t.password == "p@ss:word"
    assert "p@ss" not in t.describe() and "p@ss" not in repr(t)
    with t.child_env() as env:
        assert env["PGHOST"] == "db.example.com" and env["PGSSLMODE"] == "require"
        assert "PGPASSWORD" not in env
        assert not any("p@ss" in v for v in env.values())
        passfile = env["PGPASSFILE"]
        assert stat.S_IMODE(os.stat(passfile).st_mode) == 0o600
        assert open(passfile).read() == "*:*:*:*:p@ss\\:word\n"
    assert not os.path.exists(passfile), "the password file is removed afterwards"
    with pytest.raises(ConfigError, match="database"):
        PgTarget.from_options(host="h", user="u")
    with pytest.raises(ConfigError, match="not a port number|cannot be parsed") as err:
        PgTarget.from_options(dsn="postgresql://u:secretpw@h:notaport/db")
    assert "secretpw" not in str(err.value)
