"""The tests' own helpers: what pytest prints about the lab must not show its secrets (CI logs keep it)."""
from __future__ import annotations

import json

import psycopg
from testlib import Conninfo, RedactedDict, dsn, load_lab


def test_lab_repr_hides_nested_secrets_but_values_stay_real(tmp_path):
    path = tmp_path / "lab.json"
    path.write_text(json.dumps({"postgres": {"admin_password": "pw-1", "port": 5}, "s3": {"backup": {
        "access_key": "AK-2", "secret_key": "SK-3", "endpoint": "http://127.0.0.1:1"}}, "gpg": {"token": ""}}))
    lab = load_lab(path)
    text = repr(lab) + str(lab) + f"{lab!r}"
    for secret in ("pw-1", "AK-2", "SK-3"):
        assert secret not in text, text
    assert "http://127.0.0.1:1" in text and "'port': 5" in text
    assert "'token': ''" in text  # an empty value hides nothing and is shown as empty
    assert isinstance(lab["s3"]["backup"], RedactedDict)
    assert lab["postgres"]["admin_password"] == "pw-1"
    assert json.loads(json.dumps(lab))["s3"]["backup"]["secret_key"] == "SK-3"


def test_conninfo_repr_hides_the_password_and_libpq_reads_it_whole():
    pg = {"host": "127.0.0.1", "port": 1, "admin_user": "a", "admin_password": "p@ss w0rd'x"}
    conninfo = dsn(pg, "admin_user", "admin_password", "db")
    assert isinstance(conninfo, Conninfo)
    assert "p@ss" not in repr(conninfo) and "password=********" in repr(conninfo)
    assert "p@ss" in str(conninfo)
    assert psycopg.conninfo.conninfo_to_dict(conninfo)["password"] == "p@ss w0rd'x"
