"""sslmode reaches every PostgreSQL connection of backup, drill and restore (the lab's PostgreSQL 15 serves TLS).

With ``sslmode: require`` libpq refuses a connection that is not encrypted, so a backup, a drill and a
restore that succeed ran over TLS, the modules' own connections and their pg_dump / pg_restore / psql
children alike. The control: ``sslmode: verify-ca`` without a root certificate fails in each module,
naming the missing certificate (the option is not dropped on the way).
"""
from __future__ import annotations

import json

import psycopg
import pytest
from restore_helpers import admin_conn, counts, source_database
from testlib import dsn, run_playbook

FINGERPRINT_SQL = ("SELECT md5(string_agg(u::text, ',' ORDER BY u.id)) FROM public.users u "
                   "UNION ALL SELECT md5(string_agg(v::text, ',' ORDER BY v.id)) FROM public.videos v")


def connection(pg: dict, sslmode: str) -> dict:
    return {"host": pg["host"], "port": pg["port"], "user": pg["admin_user"], "password": pg["admin_password"],
            "sslmode": sslmode}


def s3(endpoint: dict) -> dict:
    return {"s3_endpoint": endpoint["endpoint"], "s3_region": endpoint["region"],
            "s3_access_key": endpoint["access_key"], "s3_secret_key": endpoint["secret_key"]}


def play(tmp_path, name: str, tasks: list[dict]):
    book = tmp_path / f"{name}.yml"
    book.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = {"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}
    proc = run_playbook(str(book), env=env, timeout=900)
    data = json.loads(proc.stdout)
    return proc, {t["task"]["name"]: t["hosts"]["localhost"] for t in data["plays"][0]["tasks"]}


def fingerprint(pg: dict, db: str) -> list[str]:
    with admin_conn(pg, db) as conn:
        return [r[0] for r in conn.execute(FINGERPRINT_SQL).fetchall()]


def test_tls_is_served_and_plain_connections_still_work(pg):
    mine = "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()"
    for sslmode, encrypted in (("require", True), ("disable", False)):
        with psycopg.connect(dsn(pg, "admin_user", "admin_password", "postgres") + f" sslmode={sslmode}") as conn:
            assert conn.execute("SHOW ssl").fetchone()[0] == "on"
            assert conn.execute(mine).fetchone()[0] is encrypted, sslmode


def test_backup_drill_restore_with_sslmode_require(pg, lab, scratch_bucket, source_template, tmp_path):
    bucket, endpoint = scratch_bucket
    dest = f"s3://{bucket}/db"
    with source_database(pg, source_template) as db:
        before, before_counts = fingerprint(pg, db), counts(pg, db)
        proc, res = play(tmp_path, "tls", [
            {"name": "backup", "lifeboat_pg_backup": {"database": db, "destination": dest, "encryption": "none",
                                                      **connection(pg, "require"), **s3(endpoint)}},
            {"name": "drill", "lifeboat_backup_verify": {"destination": dest, "databases": [db], "level": "drill",
                                                          **connection(pg, "require"), **s3(endpoint)}},
            {"name": "damage", "ansible.builtin.command": {"argv": [
                f"{pg['bin_dir']}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "DELETE FROM public.videos",
                f"host={pg['host']} port={pg['port']} user={pg['admin_user']} dbname={db} sslmode=require"]},
             "environment": {"PGPASSWORD": pg["admin_password"]}},
            {"name": "restore", "lifeboat_pg_restore": {"database": db, "confirm": db, "destination": dest,
                                                         "safety_snapshot": False, **connection(pg, "require"),
                                                         **s3(endpoint)}},
        ])
        assert proc.returncode == 0, proc.stdout[-4000:]
        backup, drill, restore = res["backup"], res["drill"], res["restore"]
        assert backup["changed"] and backup["backup_id"]
        assert drill["passed"] and drill["results"][0]["outcome"] == "passed", drill
        assert drill["results"][0]["level"] == "drill"
        assert restore["backup_id"] == backup["backup_id"] and restore["old_database"].startswith(db)
        # the same database came back: every table's exact row count and the rows themselves
        assert counts(pg, db) == before_counts and before_counts["public.videos"] > 0
        assert fingerprint(pg, db) == before


@pytest.mark.parametrize("module", ["lifeboat_pg_backup", "lifeboat_backup_verify", "lifeboat_pg_restore"])
def test_sslmode_reaches_libpq_in_every_module(pg, lab, scratch_bucket, source_template, tmp_path, module):
    """verify-ca without a root certificate (none in ~/.postgresql, PGSSLROOTCERT never inherited) fails."""
    bucket, endpoint = scratch_bucket
    dest = f"s3://{bucket}/db"
    with source_database(pg, source_template) as db:
        setup = [{"name": "backup", "lifeboat_pg_backup": {"database": db, "destination": dest, "encryption": "none",
                                                           **connection(pg, "disable"), **s3(endpoint)}}]
        args = {
            "lifeboat_pg_backup": {"database": db, "destination": dest, "encryption": "none"},
            "lifeboat_backup_verify": {"destination": dest, "databases": [db], "level": "drill"},
            "lifeboat_pg_restore": {"database": db, "confirm": db, "destination": dest, "safety_snapshot": False},
        }[module]
        task = {"name": "under test", module: {**args, **connection(pg, "verify-ca"), **s3(endpoint)},
                "ignore_errors": True}
        proc, res = play(tmp_path, "verify-ca", setup + [task])
        out = res["under test"]
        assert out.get("failed"), out
        assert "root certificate" in out["msg"], out["msg"]
        assert pg["admin_password"] not in json.dumps(out)
