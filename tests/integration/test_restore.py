"""restore.yml / lifeboat_pg_restore against the lab: real PostgreSQL 15, real SeaweedFS, real gpg.

Every test works on its own copy of appdb (``CREATE DATABASE ... TEMPLATE appdb``) and its own bucket:
the shared appdb is never touched.
"""
from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time

import psycopg
import pytest
from testlib import run_playbook
from restore_helpers import (
    admin_conn,
    backup_with_engine,
    counts,
    flip_byte,
    make_backup,
    make_legacy_backup,
    manifest_counts,
    source_database,
    storage_for,
    truncate,
)

from ansible.module_utils.lifeboat import manifest as mf
from ansible.module_utils.lifeboat import restore as engine
from ansible.module_utils.lifeboat.errors import (
    ConnectionFailed,
    EncryptionError,
    IntegrityError,
    NotFound,
    RestoreError,
    SafetyError,
)
from ansible.module_utils.lifeboat.pgconn import PgTarget



def endpoint_of(storage) -> dict:
    st = storage.settings
    return {"endpoint": st.endpoint, "region": st.region, "access_key": st.access_key, "secret_key": st.secret_key}


def databases(pg, like: str) -> list[str]:
    with admin_conn(pg) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
                                           (like,)).fetchall()]


def playbook(db: str, bucket: str, confirm: str | None = None, check: bool = False, **extra):
    evars = {"lifeboat_restore_database": db, "lifeboat_restore_destination": f"s3://{bucket}/db",
             "lifeboat_restore_safety_snapshot": False, **extra}
    if confirm is not None:
        evars["lifeboat_confirm"] = confirm
    return run_playbook("playbooks/restore.yml", "-e", json.dumps(evars), check=check)


def damage(pg, db: str) -> None:
    with admin_conn(pg, db) as conn:
        conn.execute("DELETE FROM analytics.events WHERE id % 3 = 0")
        conn.execute("DELETE FROM public.invoices WHERE amount_cents > 5000")
        conn.execute('DROP TABLE public."Audit Log"')


def admin(pg) -> engine.Admin:
    return engine.Admin(PgTarget(host=pg["host"], port=pg["port"], user=pg["admin_user"],
                                 password=pg["admin_password"], database="postgres"))


def keys(lab) -> engine.DecryptKeys:
    return engine.DecryptKeys(gpg_homedir=lab["gpg"]["homedir"], age_identity_file=lab["age"]["identity_file"])


# --------------------------------------------------------------------------- the "done when" tests

def test_restore_yml_full_restore_new_db_and_swap(pg, backed_up_by_playbook):
    db, bucket, _storage, manifest = backed_up_by_playbook
    damage(pg, db)
    damaged = counts(pg, db)
    assert "public.Audit Log" not in damaged
    assert damaged != manifest_counts(manifest)

    # check mode: the full plan, nothing changes
    proc = playbook(db, bucket, check=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "new database" in proc.stdout and "one transaction" in proc.stdout
    assert counts(pg, db) == damaged
    assert databases(pg, db + "_lifeboat_%") == []

    # a wrong confirmation is refused before anything happens
    proc = playbook(db, bucket, confirm="appdb")
    assert proc.returncode != 0
    assert "Refusing to restore" in proc.stdout and db in proc.stdout
    assert counts(pg, db) == damaged

    # the real run, non-interactive, with the safety snapshot of the damaged state
    proc = playbook(db, bucket, confirm=db, lifeboat_restore_safety_snapshot=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert counts(pg, db) == manifest_counts(manifest)
    # the safety snapshot is a normal Lifeboat backup of the damaged database, kept apart from the backups
    snaps = storage_for(bucket, endpoint_of(_storage),
                        prefix="db/safety-snapshots")
    snap = mf.select_backup(snaps, db)
    snap_manifest = mf.read_manifest(snaps, snap.manifest_key)
    assert manifest_counts(snap_manifest) == damaged
    assert snap_manifest["encryption"]["method"] == "gpg"
    assert snap.backup_id in proc.stdout
    assert mf.select_backup(_storage, db).backup_id == manifest["backup_id"]
    assert manifest["backup_id"] in proc.stdout
    # the previous (damaged) database is kept under the reported name
    old = databases(pg, db + "_lifeboat_old_%")
    assert len(old) == 1 and old[0] in proc.stdout
    assert counts(pg, old[0]) == damaged
    assert databases(pg, db + "_lifeboat_new_%") == []
    # owner and database privileges carried over to the restored database
    with admin_conn(pg) as conn:
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (db,)).fetchone()
        assert owner[0] == pg["app_user"]
        assert conn.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')",
                            (pg["backup_user"], db)).fetchone()[0]
    # the summary lists each step with its duration
    for step in ("choose backup", "fetch, decrypt, decompress, restore", "check against the manifest", "swap",
                 "maintenance off"):
        assert step in proc.stdout


def test_restore_yml_partial_single_table(pg, backed_up_by_playbook):
    db, bucket, _storage, manifest = backed_up_by_playbook
    expected = manifest_counts(manifest)
    with admin_conn(pg, db) as conn:
        conn.execute("DELETE FROM public.invoices WHERE id % 2 = 0")           # the table we restore
        conn.execute("DELETE FROM analytics.events WHERE id % 5 = 0")          # must stay changed
        conn.execute("UPDATE public.users SET display_name = 'changed' WHERE email = 'user7@example.com'")
        conn.execute("SELECT setval('public.invoices_id_seq', 1)")
        before_oid = conn.execute("SELECT 'public.invoices'::regclass::oid").fetchone()[0]
    changed = counts(pg, db)

    proc = playbook(db, bucket, confirm=db, lifeboat_restore_mode="partial",
                    lifeboat_restore_tables=["public.invoices"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    now = counts(pg, db)
    assert now["public.invoices"] == expected["public.invoices"]
    for table, rows in changed.items():
        if table != "public.invoices":
            assert now[table] == rows, table                       # others untouched
    assert now["analytics.events"] != expected["analytics.events"]
    with admin_conn(pg, db) as conn:
        assert conn.execute("SELECT display_name FROM public.users WHERE email = 'user7@example.com'"
                            ).fetchone()[0] == "changed"
        # same table (not dropped and recreated), sequence moved past the restored ids
        assert conn.execute("SELECT 'public.invoices'::regclass::oid").fetchone()[0] == before_oid
        max_id = conn.execute("SELECT max(id) FROM public.invoices").fetchone()[0]
        assert conn.execute("SELECT last_value FROM public.invoices_id_seq").fetchone()[0] >= max_id
    # no staging database left behind
    assert databases(pg, "lifeboat_stage_%") == []


# --------------------------------------------------------------------------- engine-level behaviour and faults

def test_partial_restore_rolls_back_on_foreign_key_violation(pg, lab, backed_up):
    db, _bucket, storage, _manifest = backed_up
    with admin_conn(pg, db) as conn:
        # a new user with videos: restoring users from the backup would orphan these videos
        conn.execute("INSERT INTO public.users (id, email) VALUES ('00000000-0000-0000-0000-000000000001', 'n@x')")
        conn.execute("INSERT INTO public.videos (user_id, title, storage_path) VALUES "
                     "('00000000-0000-0000-0000-000000000001', 't', 'videos/new/1.mp4')")
    before = counts(pg, db)
    req = engine.Request(database=db, confirm=db, mode="partial", tables=["public.users"], safety_snapshot=False)
    with pytest.raises(RestoreError, match=r"break foreign keys.*rolled back.*videos_user_id_fkey"):
        engine.run(req, storage, admin(pg), keys(lab))
    assert counts(pg, db) == before
    assert databases(pg, "lifeboat_stage_%") == []


def test_side_schema_restore(pg, lab, backed_up):
    db, _bucket, storage, manifest = backed_up
    with admin_conn(pg, db) as conn:
        conn.execute("DELETE FROM public.invoices")
    req = engine.Request(database=db, confirm=db, mode="side_schema", tables=["public.invoices"],
                         side_schema="recovered", safety_snapshot=False)
    out = engine.run(req, storage, admin(pg), keys(lab))
    with admin_conn(pg, db) as conn:
        assert conn.execute("SELECT count(*) FROM recovered.invoices").fetchone()[0] == \
            manifest_counts(manifest)["public.invoices"]
        assert conn.execute("SELECT count(*) FROM public.invoices").fetchone()[0] == 0
    assert out["row_counts"] == {"recovered.invoices": manifest_counts(manifest)["public.invoices"]}
    # a second run refuses to overwrite the side schema
    with pytest.raises(SafetyError, match="already exists"):
        engine.run(req, storage, admin(pg), keys(lab))


def test_confirmation_required(pg, lab, backed_up):
    db, _bucket, storage, _manifest = backed_up
    req = engine.Request(database=db, confirm="appdb", safety_snapshot=False)
    with pytest.raises(SafetyError) as err:
        engine.run(req, storage, admin(pg), keys(lab))
    assert f"'{db}'" in str(err.value) and "'appdb'" in str(err.value)


def test_unknown_backup_id(pg, lab, backed_up):
    db, _bucket, storage, _manifest = backed_up
    req = engine.Request(database=db, confirm=db, backup_id=f"{db}-20200101T000000Z", safety_snapshot=False)
    with pytest.raises(NotFound, match=r"backup_id: no backup .*20200101T000000Z"):
        engine.run(req, storage, admin(pg), keys(lab))


def test_backup_without_manifest(pg, lab, backed_up):
    db, _bucket, storage, manifest = backed_up
    storage.delete(manifest["artifact"]["key"].rsplit("/", 1)[0] + "/manifest.json")
    # by id: the artifact is there, the manifest is not -> incomplete, never restored
    req = engine.Request(database=db, confirm=db, backup_id=manifest["backup_id"], safety_snapshot=False)
    with pytest.raises(NotFound, match="no backup"):
        engine.run(req, storage, admin(pg), keys(lab))
    # latest: nothing complete
    req = engine.Request(database=db, confirm=db, safety_snapshot=False)
    with pytest.raises(NotFound, match="no complete backup"):
        engine.run(req, storage, admin(pg), keys(lab))


@pytest.mark.parametrize("tamper", ["flip", "truncate"])
def test_checksum_mismatch_leaves_original_untouched(pg, lab, backed_up, tamper):
    db, _bucket, storage, manifest = backed_up
    damage(pg, db)
    damaged = counts(pg, db)
    (flip_byte if tamper == "flip" else truncate)(storage, manifest["artifact"]["key"])
    req = engine.Request(database=db, confirm=db, safety_snapshot=False)
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        engine.run(req, storage, admin(pg), keys(lab))
    assert counts(pg, db) == damaged
    assert databases(pg, db + "_lifeboat_%") == []


def test_restore_whose_values_differ_from_the_snapshot_is_not_swapped_in(pg, lab, scratch_bucket, source_template):
    """Same row counts, other values: the restored database is not the one backed up, so it does not replace
    the live one (fails on the old main: it was swapped in with a warning)."""
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        manifest = backup_with_engine(pg, lab, storage, bucket, endpoint, db, content_hashes=True)
        _differ_then_accept(pg, lab, db, storage, manifest)


def _differ_then_accept(pg, lab, db, storage, manifest):
    damage(pg, db)
    damaged = counts(pg, db)
    recorded = manifest["content_hashes"]["tables"]
    victim = next(t for t in recorded if t["name"] == "invoices")
    # the manifest of a snapshot whose invoices held other values than the dump gives back (re-sealed: intact)
    victim["hash"] = "0" * len(victim["hash"])
    key = manifest["artifact"]["key"].rsplit("/", 1)[0] + "/manifest.json"
    mf.write_manifest(storage, key, mf.seal(manifest), exclusive=False)
    req = engine.Request(database=db, confirm=db, safety_snapshot=False)
    with pytest.raises(IntegrityError, match=r"does not match .*public\.invoices.*not put in place.*"
                                             r"untouched.*accept_differences: true"):
        engine.run(req, storage, admin(pg), keys(lab))
    assert counts(pg, db) == damaged
    assert databases(pg, db + "_lifeboat_%") == []
    # knowingly: restored and swapped in, the difference listed
    req = engine.Request(database=db, confirm=db, safety_snapshot=False, accept_differences=True)
    out = engine.run(req, storage, admin(pg), keys(lab))
    assert [w for w in out["warnings"] if "accept_differences" in w and "public.invoices" in w]
    assert counts(pg, db) == manifest_counts(manifest)
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{out["old_database"]}"')


def test_wrong_decryption_key(pg, lab, backed_up, tmp_path):
    db, _bucket, storage, _manifest = backed_up
    empty_home = tmp_path / "gnupg"
    empty_home.mkdir(mode=0o700)
    req = engine.Request(database=db, confirm=db, safety_snapshot=False)
    with pytest.raises(EncryptionError, match="wrong decryption key"):
        engine.run(req, storage, admin(pg), engine.DecryptKeys(gpg_homedir=str(empty_home)))
    assert databases(pg, db + "_lifeboat_%") == []


def test_in_place_refused_while_in_use_then_allowed(pg, lab, backed_up):
    db, _bucket, storage, manifest = backed_up
    damage(pg, db)
    with psycopg.connect(f"host={pg['host']} port={pg['port']} user={pg['admin_user']} "
                         f"password={pg['admin_password']} dbname={db} application_name=the-app"):
        req = engine.Request(database=db, confirm=db, mode="in_place", safety_snapshot=False)
        with pytest.raises(SafetyError, match=r"in use by 1 other session.*the-app"):
            engine.run(req, storage, admin(pg), keys(lab))
        req.terminate_sessions = True
        out = engine.run(req, storage, admin(pg), keys(lab))
    assert any("NOT atomic" in w for w in out["warnings"])
    assert counts(pg, db) == manifest_counts(manifest)


def test_not_enough_disk_for_staged_parallel_restore(pg, lab, backed_up, tmp_path):
    db, _bucket, storage, _manifest = backed_up
    import shutil

    total = shutil.disk_usage(tmp_path).total
    req = engine.Request(database=db, confirm=db, jobs=2, staging_dir=str(tmp_path), staging_keep_free=total,
                         safety_snapshot=False)
    with pytest.raises(RestoreError, match=r"not enough disk for a parallel restore.*jobs: 1"):
        engine.run(req, storage, admin(pg), keys(lab))
    assert databases(pg, db + "_lifeboat_%") == []
    assert list(tmp_path.iterdir()) == []


def test_parallel_restore_stages_locally(pg, lab, backed_up, tmp_path):
    db, _bucket, storage, manifest = backed_up
    damage(pg, db)
    req = engine.Request(database=db, confirm=db, jobs=2, staging_dir=str(tmp_path), staging_keep_free=0,
                         safety_snapshot=False)
    engine.run(req, storage, admin(pg), keys(lab))
    assert counts(pg, db) == manifest_counts(manifest)
    assert list(tmp_path.iterdir()) == []  # the staged dump is removed


def _two_cpus() -> None:
    import os

    if (os.cpu_count() or 1) < 2:
        pytest.skip("the automatic jobs of a server on this host are its CPU count: 1 here, nothing to parallelise")


def test_default_restore_is_parallel(pg, lab, backed_up, tmp_path):
    """jobs unset: pg_restore -j N from a staged copy, N chosen from the server (on this host: the CPUs, at most 4)."""
    import os

    _two_cpus()
    db, _bucket, storage, manifest = backed_up
    damage(pg, db)
    req = engine.Request(database=db, confirm=db, staging_dir=str(tmp_path), staging_keep_free=0,
                         safety_snapshot=False)
    assert req.jobs is None
    out = engine.run(req, storage, admin(pg), keys(lab))
    assert counts(pg, db) == manifest_counts(manifest)
    assert out["jobs"] == min(4, os.cpu_count() or 1) and out["restore_path"] == "staged", out
    step = [s for s in out["steps"] if s["step"] == "fetch, decrypt, decompress, restore"][0]
    assert f"pg_restore -j {out['jobs']} from a staged local copy (automatic: at most 4," in step["detail"]
    assert not any("streamed" in w for w in out["warnings"])
    assert list(tmp_path.iterdir()) == []  # the staged dump is removed


def test_default_restore_streams_when_the_staging_disk_is_short(pg, lab, backed_up, tmp_path):
    """jobs unset and the staging disk short (staging_keep_free above what is free): streamed, saying why."""
    import shutil

    _two_cpus()
    db, _bucket, storage, manifest = backed_up
    damage(pg, db)
    total = shutil.disk_usage(tmp_path).total
    req = engine.Request(database=db, confirm=db, staging_dir=str(tmp_path), staging_keep_free=total,
                         safety_snapshot=False)
    out = engine.run(req, storage, admin(pg), keys(lab))
    assert counts(pg, db) == manifest_counts(manifest)
    assert out["jobs"] == 1 and out["restore_path"] == "streamed", out
    why = [w for w in out["warnings"] if w.startswith("restored streamed, without pg_restore -j")]
    assert why and "not enough disk for a parallel restore" in why[0] and str(tmp_path) in why[0], out["warnings"]
    assert "staging_keep_free" in why[0]
    assert list(tmp_path.iterdir()) == []


def test_jobs_one_streams(pg, lab, backed_up, tmp_path):
    db, _bucket, storage, manifest = backed_up
    damage(pg, db)
    req = engine.Request(database=db, confirm=db, jobs=1, staging_dir=str(tmp_path), safety_snapshot=False)
    out = engine.run(req, storage, admin(pg), keys(lab))
    assert counts(pg, db) == manifest_counts(manifest)
    assert out["jobs"] == 1 and out["restore_path"] == "streamed", out
    assert not any("streamed" in w or "disk" in w for w in out["warnings"]), out["warnings"]
    assert list(tmp_path.iterdir()) == []


def test_connection_lost_mid_restore(pg, lab, scratch_bucket, source_template):
    """pg_terminate_backend on the restore session: the original database stays as it was."""
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    big = "CREATE TABLE public.bulk AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 600000) g"
    with source_database(pg, source_template, extra_sql=big) as db:
        make_backup(pg, lab, storage, db)
        damage(pg, db)
        damaged = counts(pg, db)
        killed: list[int] = []

        def killer():
            deadline = time.time() + 60
            with admin_conn(pg) as conn:
                while time.time() < deadline and not killed:
                    rows = conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname LIKE %s "
                        "AND query ILIKE 'COPY%%'", (engine.APP_NAME, db + "_lifeboat_new_%")).fetchall()
                    for (pid,) in rows:
                        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        killed.append(pid)
                    time.sleep(0.05)

        t = threading.Thread(target=killer)
        t.start()
        req = engine.Request(database=db, confirm=db, safety_snapshot=False)
        try:
            with pytest.raises(ConnectionFailed, match="connection lost while restoring"):
                engine.run(req, storage, admin(pg), keys(lab))
        finally:
            t.join()
        assert killed
        assert counts(pg, db) == damaged
        assert databases(pg, db + "_lifeboat_%") == []


def test_hooks_command_and_http_resume_also_on_failure(pg, lab, backed_up, tmp_path):
    db, _bucket, storage, manifest = backed_up
    calls: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            assert self.headers.get("Authorization") == "Bearer hook-token"
            calls.append((self.path, json.loads(body)["event"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    marker = tmp_path / "maintenance"
    try:
        on = {"type": "command", "argv": ["/bin/sh", "-c", f'echo "$LIFEBOAT_DATABASE" > {marker}']}
        off = {"type": "http", "url": url + "/off"}
        post = [{"type": "http", "url": url + "/post"}]
        # a failing restore (tampered artifact): maintenance off still runs, post-restore does not
        flip_byte(storage, manifest["artifact"]["key"])
        req = engine.Request(database=db, confirm=db, safety_snapshot=False, maintenance_on=on,
                             maintenance_off=off, post_restore=post,
                             hook_headers={"Authorization": "Bearer hook-token"})
        with pytest.raises(IntegrityError) as err:
            engine.run(req, storage, admin(pg), keys(lab))
        assert "hook-token" not in str(err.value) and "hook-token" not in json.dumps(err.value.partial)
        assert marker.read_text().strip() == db
        assert calls == [("/off", "maintenance_off")]
        # a failing maintenance-on hook stops the restore before anything changes, resume still runs
        calls.clear()
        req.maintenance_on = {"type": "command", "argv": ["/bin/false"]}
        with pytest.raises(RestoreError, match="maintenance_on: the maintenance hook failed"):
            engine.run(req, storage, admin(pg), keys(lab))
        assert calls == [("/off", "maintenance_off")]
    finally:
        server.shutdown()


def test_restore_before_time_and_latest_verified(pg, lab, backed_up):
    db, _bucket, storage, first = backed_up
    with admin_conn(pg, db) as conn:
        conn.execute("DELETE FROM public.invoices WHERE id > 700")
    later = mf.parse_time(first["started_at"]) + dt.timedelta(hours=1)
    second = make_backup(pg, lab, storage, db, when=later)
    assert second["backup_id"] != first["backup_id"]
    # no verification records: latest complete, with a warning
    choice = engine.choose_backup(storage, db)
    assert choice.ref.backup_id == second["backup_id"] and choice.warnings
    # before the second backup's time: the first
    assert engine.choose_backup(storage, db, before=second["started_at"]).ref.backup_id == first["backup_id"]
    # a passed verification on the first only: it is the latest verified; the warning names the newer one
    ref = mf.select_backup(storage, db, backup_id=first["backup_id"])
    storage.put_bytes(ref.layout().verification_key(mf.utcnow()), json.dumps(
        {"schema": mf.VERIFY_SCHEMA, "backup_id": first["backup_id"], "outcome": "passed",
         "finished_at": mf.iso(mf.utcnow())}).encode())
    choice = engine.choose_backup(storage, db)
    assert choice.ref.backup_id == first["backup_id"]
    assert second["backup_id"] in choice.warnings[0]
    assert engine.choose_backup(storage, db, require_verified=True).ref.backup_id == first["backup_id"]
    # a failed record after the pass makes the first unverified again
    storage.put_bytes(ref.layout().verification_key(mf.utcnow() + dt.timedelta(seconds=5)), json.dumps(
        {"schema": mf.VERIFY_SCHEMA, "backup_id": first["backup_id"], "outcome": "failed",
         "finished_at": mf.iso(mf.utcnow() + dt.timedelta(seconds=5))}).encode())
    with pytest.raises(NotFound, match="require_verified"):
        engine.choose_backup(storage, db, require_verified=True)


def test_legacy_sql_gz_restore(pg, lab, scratch_bucket, source_template):
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        original = counts(pg, db)
        key = make_legacy_backup(pg, storage, db)
        damage(pg, db)
        proc = playbook(db, bucket, confirm=db, lifeboat_restore_backup_id=key.rsplit("/", 1)[-1])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert counts(pg, db) == original
        assert "older-procedure" in proc.stdout


def test_age_encrypted_backup_restores(pg, lab, scratch_bucket, source_template):
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        manifest = make_backup(pg, lab, storage, db, encryption="age")
        damage(pg, db)
        req = engine.Request(database=db, confirm=db, safety_snapshot=True)
        out = engine.run(req, storage, admin(pg), keys(lab),
                         snapshot=lambda name, src: engine.safety_snapshot(
                             admin(pg), storage.settings, f"s3://{bucket}/db", name, src, keys(lab)))
        assert counts(pg, db) == manifest_counts(manifest)
        assert out["safety_snapshot"]["backup_id"].startswith(db)
        snaps = storage_for(bucket, endpoint, prefix="db/safety-snapshots")
        snap = mf.read_manifest(snaps, mf.select_backup(snaps, db).manifest_key)
        assert snap["encryption"]["method"] == "age"
        assert snap["encryption"]["recipients"] == [lab["age"]["recipient"]]


def test_partial_restore_recreates_a_dropped_table_with_quoted_name(pg, lab, backed_up):
    db, _bucket, storage, manifest = backed_up
    with admin_conn(pg, db) as conn:
        conn.execute('DROP TABLE public."Audit Log"')
        conn.execute("DELETE FROM public.invoices WHERE id < 10")   # another table: must stay changed
    invoices = counts(pg, db)["public.invoices"]
    req = engine.Request(database=db, confirm=db, mode="partial", tables=['public."Audit Log"'],
                         safety_snapshot=False)
    out = engine.run(req, storage, admin(pg), keys(lab))
    assert out["restored_tables"]["created"] == ["public.Audit Log"]
    now = counts(pg, db)
    assert now["public.Audit Log"] == manifest_counts(manifest)["public.Audit Log"]
    assert now["public.invoices"] == invoices
    with admin_conn(pg, db) as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'Audit Log'").fetchone()[0]
        assert owner == pg["app_user"]
        # its serial sequence came back too, past the restored ids
        conn.execute('INSERT INTO public."Audit Log" (action) VALUES (%s)', ("after restore",))


def test_restore_yml_fails_clearly_on_a_tampered_backup(pg, backed_up):
    db, bucket, storage, manifest = backed_up
    damage(pg, db)
    damaged = counts(pg, db)
    flip_byte(storage, manifest["artifact"]["key"])
    proc = playbook(db, bucket, confirm=db)
    assert proc.returncode != 0
    assert "RESTORE FAILED" in proc.stdout and "checksum mismatch" in proc.stdout
    assert f"the original database '{db}' was not touched" in proc.stdout
    assert counts(pg, db) == damaged
    assert databases(pg, db + "_lifeboat_%") == []


def test_bad_credentials_fail_clearly_without_echoing_the_secret(pg, backed_up, tmp_path):
    db, bucket, _storage, _manifest = backed_up
    # the wrong password goes through a 0600 vars file, not argv
    path = tmp_path / "vars.json"
    path.write_text(json.dumps({"lifeboat_restore_password": "Wr0ng-S3cret-Value"}))
    path.chmod(0o600)
    proc = run_playbook("playbooks/restore.yml", "-e", json.dumps({
        "lifeboat_restore_database": db, "lifeboat_restore_destination": f"s3://{bucket}/db",
        "lifeboat_confirm": db, "lifeboat_restore_safety_snapshot": False}), "-e", f"@{path}")
    assert proc.returncode != 0
    assert "authentication failed" in proc.stdout and "RESTORE FAILED" in proc.stdout
    assert "Wr0ng-S3cret-Value" not in proc.stdout + proc.stderr


def test_partial_backup_is_never_swapped_in_but_restores_partially(pg, lab, scratch_bucket,
                                                                   source_template):
    bucket, endpoint = scratch_bucket
    storage = storage_for(bucket, endpoint)
    with source_database(pg, source_template) as db:
        manifest = backup_with_engine(pg, lab, storage, bucket, endpoint, db, include_tables=["public.invoices"])
        assert [t["name"] for t in manifest["tables"]] == ["invoices"]
        with admin_conn(pg, db) as conn:
            conn.execute("DELETE FROM public.invoices")
        before = counts(pg, db)
        for mode in ("swap", "in_place"):
            with pytest.raises(SafetyError, match=r"holds only part of the database \(include_tables: "
                                                  r"public.invoices\).*mode partial"):
                engine.run(engine.Request(database=db, confirm=db, mode=mode, safety_snapshot=False), storage,
                           admin(pg), keys(lab))
        assert counts(pg, db) == before
        engine.run(engine.Request(database=db, confirm=db, mode="partial", tables=["public.invoices"],
                                  safety_snapshot=False), storage, admin(pg), keys(lab))
        assert counts(pg, db)["public.invoices"] == manifest["tables"][0]["rows"] > 0


def test_autovacuum_worker_is_not_a_session_in_use(pg, scratch_db):
    """Deleted rows wake autovacuum; its worker must not make a restore refuse the database as 'in use'.

    (A CI run failed this way: an incident's DELETE woke autovacuum on the damaged database.)
    The table is set up so autovacuum starts at once and crawls, and naptime is 1s while the test runs.
    """
    name = scratch_db["name"]
    with psycopg.connect(scratch_db["dsn"], autocommit=True) as db, \
            psycopg.connect(scratch_db["dsn"], autocommit=True, application_name="the-app"), \
            admin_conn(pg) as admin:
        db.execute("CREATE TABLE t (id int) WITH (autovacuum_vacuum_threshold = 0, "
                   "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_delay = 100, "
                   "autovacuum_vacuum_cost_limit = 1)")
        db.execute("INSERT INTO t SELECT generate_series(1, 200000)")
        db.execute("DELETE FROM t")
        admin.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        admin.execute("SELECT pg_reload_conf()")
        try:
            deadline = time.monotonic() + 60
            while not admin.execute("SELECT 1 FROM pg_stat_activity WHERE datname = %s "
                                    "AND backend_type = 'autovacuum worker'", (name,)).fetchall():
                assert time.monotonic() < deadline, "autovacuum never started on the test database"
                time.sleep(0.2)
            sessions = engine.other_sessions(admin, name)
        finally:
            admin.execute("ALTER SYSTEM RESET autovacuum_naptime")
            admin.execute("SELECT pg_reload_conf()")
    # this test's own two connections, and nothing else
    assert sorted(s["application"] for s in sessions) == ["", "the-app"], sessions
