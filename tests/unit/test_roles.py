"""Parsing a roles file (pg_dumpall --roles-only --no-role-passwords) to create only the missing roles."""
from __future__ import annotations

from ansible.module_utils.lifeboat import roles

SCRIPT = '''--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;
SET client_encoding = 'UTF8';

--
-- Roles
--

CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "Report ""Reader""";
ALTER ROLE "Report ""Reader""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
COMMENT ON ROLE "Report ""Reader""" IS 'reads; reports';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;

--
-- User Configurations
--

ALTER ROLE app_owner SET search_path TO 'app', 'public';

--
-- Role memberships
--

GRANT "Report ""Reader""" TO app_owner WITH INHERIT TRUE GRANTED BY postgres;
GRANT gone_role TO app_owner GRANTED BY postgres;
GRANT app_owner TO postgres GRANTED BY postgres;
'''


def test_role_names_unquotes():
    assert roles.role_names(SCRIPT) == ['Report "Reader"', "app_owner", "postgres"]


def test_statements_for_only_the_missing_roles_and_their_memberships():
    got = roles.statements_for(SCRIPT, {"app_owner", 'Report "Reader"'}, existing={"postgres"})
    assert got == [
        "CREATE ROLE app_owner;",
        "ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS;",
        'CREATE ROLE "Report ""Reader""";',
        'ALTER ROLE "Report ""Reader""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION '
        "NOBYPASSRLS;",
        'COMMENT ON ROLE "Report ""Reader""" IS \'reads; reports\';',
        "ALTER ROLE app_owner SET search_path TO 'app', 'public';",
        'GRANT "Report ""Reader""" TO app_owner WITH INHERIT TRUE;',
    ]
    # the existing postgres role is never touched, and a membership in an unknown role is left out
    assert not any("postgres" in s or "gone_role" in s for s in got)
