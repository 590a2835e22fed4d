"""PlainDumpGuard: what reaches psql from an older-procedure plain SQL dump (no server needed)."""
from __future__ import annotations

import pytest

from ansible.module_utils.lifeboat.errors import IntegrityError, VersionMismatch
from ansible.module_utils.lifeboat.restore import PlainDumpGuard

KEY = "k3y"


def create_dump(server: str = "15.18", pg_dump: str = "15.18", body_rows: int = 2000) -> bytes:
    """The shape of ``pg_dump --create --clean --if-exists`` (pg_dump 15.14+ / 18 with \\restrict)."""
    sets = "SET statement_timeout = 0;\n" + ("SET transaction_timeout = 0;\n" if pg_dump >= "17" else "") \
        + "SET client_encoding = 'UTF8';\nSELECT pg_catalog.set_config('search_path', '', false);\n"
    reconnect = f"\\unrestrict {KEY}\n\\connect appdb\n\\restrict {KEY}\n\n{sets}\n"
    copy = "".join(f"{i}\t\\\\connect appdb\n" for i in range(body_rows))  # a text value "\connect appdb"
    return (f"--\n-- PostgreSQL database dump\n--\n\n\\restrict {KEY}\n\n-- Dumped from database version {server}\n"
            f"-- Dumped by pg_dump version {pg_dump}\n\n{sets}\nDROP DATABASE IF EXISTS appdb;\n--\n"
            "-- Name: appdb; Type: DATABASE; Schema: -; Owner: app_owner\n--\n\n"
            "CREATE DATABASE appdb WITH TEMPLATE = template0 ENCODING = 'UTF8';\n\n\n"
            f"ALTER DATABASE appdb OWNER TO app_owner;\n\n{reconnect}"
            "COMMENT ON DATABASE appdb IS 'c';\n\nALTER DATABASE appdb SET work_mem TO '8MB';\n\n"
            f"{reconnect}CREATE TABLE public.t (id integer, v text);\n\n"
            f"COPY public.t (id, v) FROM stdin;\n{copy}\\.\n\n"
            f"{reconnect}--\n-- Name: DATABASE appdb; Type: ACL; Schema: -; Owner: app_owner\n--\n\n"
            "GRANT CONNECT,TEMPORARY ON DATABASE appdb TO app_reader;\n\n\n--\n"
            f"-- PostgreSQL database dump complete\n--\n\n\\unrestrict {KEY}\n\n").encode()


def run(dump: bytes, server_major: int = 15, step: int = 4096) -> tuple[bytes, PlainDumpGuard]:
    out: list[bytes] = []
    guard = PlainDumpGuard(out.append, server_major, "db-backup-2026-11-01_02-00-00")
    for i in range(0, len(dump), step):
        guard.feed(dump[i:i + step])
    guard.close()
    return b"".join(out), guard


@pytest.mark.parametrize("step", [1, 5, 9, 64, 4096, 1 << 24])
def test_create_dump_database_level_statements_are_skipped_wherever_chunks_split(step):
    dump = create_dump()
    out, guard = run(dump, step=step)
    for bad in (b"DROP DATABASE", b"CREATE DATABASE", b"ALTER DATABASE", b"COMMENT ON DATABASE",
                b"ON DATABASE appdb TO", b"\n\\connect"):
        assert bad not in out, (step, bad)
    # everything else reaches psql byte for byte, including COPY rows whose text is "\connect appdb"
    kept = [ln for ln in dump.split(b"\n") if not ln.startswith((b"DROP DATABASE", b"CREATE DATABASE",
                                                                  b"ALTER DATABASE", b"COMMENT ON DATABASE",
                                                                  b"GRANT CONNECT", b"\\connect"))]
    assert out == b"\n".join(kept)
    assert out.count(b"\t\\\\connect appdb\n") == 2000
    assert any("DROP DATABASE" in n for n in guard.notes("appdb_lifeboat_new"))


def test_transaction_timeout_skipped_only_below_17():
    dump = create_dump(pg_dump="18.6")
    out15, _ = run(dump, 15)
    out18, _ = run(dump, 18)
    assert b"transaction_timeout" not in out15 and b"SET transaction_timeout = 0;" in out18


def test_dump_of_a_newer_server_is_refused():
    with pytest.raises(VersionMismatch, match="dump of PostgreSQL 18 .* target server is PostgreSQL 15"):
        run(create_dump(server="18.6", pg_dump="18.6"), 15)
    run(create_dump(server="15.18", pg_dump="18.6"), 18)


@pytest.mark.parametrize("data,words", [
    (b"", "empty"),
    (b"SELECT 1;\n", "does not start like a pg_dump SQL script"),
    (None, "no '-- PostgreSQL database dump complete' trailer: it is truncated"),
])
def test_not_a_complete_dump_is_refused(data, words):
    if data is None:
        full = create_dump()
        data = full[: full.index(b"\\.\n")]
    with pytest.raises(IntegrityError, match=words):
        run(data)
