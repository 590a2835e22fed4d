"""module_utils/lifeboat/s3.py: s3:// URLs, masked URLs."""
from __future__ import annotations


import pytest
from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.s3 import mask_url, parse_s3_url


def test_parse_s3_url_and_errors():
    loc = parse_s3_url("s3://lifeboat-backups/db/prod/")
    assert (loc.bucket, loc.prefix) == ("lifeboat-backups", "db/prod")
    assert loc.key("appdb", "x.json") == "db/prod/appdb/x.json"
    assert str(parse_s3_url("s3://bucket")) == "s3://bucket"
    with pytest.raises(ConfigError, match="not an s3:// URL"):
        parse_s3_url("https://bucket/x")
    with pytest.raises(ConfigError, match="not a valid bucket name"):
        parse_s3_url("s3://UPPER/x")

def test_mask_url_hides_password():
    masked = mask_url("postgresql://postgres.abc:s3cr%40t@db.example.com:5432/postgres")
    assert "s3cr" not in masked and "***" in masked and "db.example.com:5432" in masked
    assert mask_url("s3://bucket/prefix") == "s3://bucket/prefix"
