"""The drill of a ``supabase``-profile backup: restored into a scratch Supabase-like project and compared.

A Supabase backup restores into a Supabase project (the platform's roles, ``auth`` and ``storage`` schemas and
tables, the functions the user's policies call), which a plain drill server does not have. The drill makes one:
a scratch database (``lifeboat_drill_<stamp>_<rand>``, always dropped, swept when a killed run left it) on a
Supabase-like drill server (one with the platform's roles: role ``supabase_admin``), in which the drill's admin
runs ``supabase_platform_sql``, a psql script that makes the platform in an empty database (the lab's
``roles/lab/files/supabase_platform.sql``; for a real project, the platform of the supabase/postgres image the
project runs). The backup's parts are fetched and checked by the manifest (restore/supabase_fetch.py) and
restored exactly as ``lifeboat_supabase_restore`` restores into a new project (restore/supabase.py, mode
``new``: one transaction, foreign keys and the manifest's row counts checked before the commit), then compared
with the manifest: row counts of every table (the application's and the platform's user data), the schema hash
and the privileges of the application schemas, the content hashes when the backup recorded them, and the
tables' publication membership. The application's own roles the drill server lacks are created there (no
passwords, NOLOGIN as recorded), as a restore would.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

from ansible.module_utils.lifeboat import tmpfiles
from ansible.module_utils.lifeboat.crypto import DecryptionSpec
from ansible.module_utils.lifeboat.errors import LifeboatError
from ansible.module_utils.lifeboat.pgmeta import row_counts
from ansible.module_utils.lifeboat.restore import supabase as sb_restore
from ansible.module_utils.lifeboat.restore import supabase_fetch
from ansible.module_utils.lifeboat.restore.checks import (
    compare_content,
    compare_counts,
    compare_privileges,
    expected_schema_hash,
    schema_hash_for,
)
from ansible.module_utils.lifeboat.restore.load import GIB
from ansible.module_utils.lifeboat.restore.pgadmin import Admin, scratch_database, sweep_scratch
from ansible.module_utils.lifeboat.restore.selection import Source, recorded_locale
from ansible.module_utils.lifeboat.storage import Storage

NO_PLATFORM = ("a supabase-profile backup restores into a Supabase project: give the drill a Supabase-like server "
               "(one with the platform's roles, e.g. the supabase/postgres image) and supabase_platform_sql (a psql "
               "script that makes the platform in an empty database; the lab's is roles/lab/files/"
               "supabase_platform.sql), or prove the restore with playbooks/supabase_restore.yml into a new project "
               "(docs/supabase.md)")


def drill(storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin | None, platform_sql: str | None,
          sweep_hours: float, result: Any) -> None:
    """Restore ``src`` into a scratch project and compare it with the manifest, adding checks to ``result``
    (verify.Result). What the drill server cannot do is inconclusive, never a verdict on the backup."""
    if admin is None or not platform_sql:
        result.could_not("restore", NO_PLATFORM + ": both dumps were checked to the end")
        return
    if not os.path.isfile(platform_sql):
        result.could_not("restore", f"supabase_platform_sql: {platform_sql} is not a file; " + NO_PLATFORM)
        return
    try:
        with admin.connect() as conn:
            if conn.execute("SELECT to_regrole('supabase_admin')").fetchone()[0] is None:
                result.could_not("restore", f"the drill server {admin.target.describe()} has no role supabase_admin: "
                                            "it is not a Supabase-like server, and its platform script is not run "
                                            "there; " + NO_PLATFORM)
                return
            result.swept = sweep_scratch(conn, sweep_hours)
        with scratch_database(admin, "drill", locale=recorded_locale(src)) as scratch:
            result.scratch_database = scratch
            _drill_in(storage, src, keys, admin, platform_sql, scratch, result)
    except LifeboatError as exc:
        result.could_not("scratch database", str(exc))


def _drill_in(storage: Storage, src: Source, keys: DecryptionSpec, admin: Admin, platform_sql: str, scratch: str,
              result: Any) -> None:
    with admin.target.child_env(scratch) as env:
        proc = subprocess.run([admin.client("psql"), "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                               "-f", platform_sql], env=env, capture_output=True, text=True, check=False, timeout=900)
    if proc.returncode != 0:
        result.could_not("platform", f"{platform_sql} failed in scratch database {scratch}: "
                                     + " | ".join(proc.stderr.strip().splitlines()[-3:])[:600])
        return
    result.check("platform", True, f"scratch project {scratch}: the platform made by {platform_sql}")
    work = tmpfiles.private_dir("lifeboat-sb-drill-")
    started = time.monotonic()
    try:
        parts = supabase_fetch.fetch(storage, src, keys, work)
        size = sum(os.path.getsize(p) for p in parts.archives)
        done = sb_restore.restore(admin.target.with_database(scratch), parts.archives,
                                  sb_restore.Scope(parts.app_schemas, parts.platform_tables), mode="new",
                                  roles_script=parts.roles_script, expected_counts=parts.expected_counts,
                                  publications=parts.publications, settings=parts.settings,
                                  bin_dirs=admin.bin_dirs)
    except LifeboatError as exc:
        result.restore_failed(exc)
        return
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.restore_duration_s = round(time.monotonic() - started, 3)
    result.restored_bytes = size
    result.check("sha256", True, "every part's stored sha256 matches the manifest (app, platform"
                 + (", roles" if parts.roles_script else "") + ")")
    result.check("restore", True, f"restored into scratch project {scratch} as into a new project (one "
                                  f"transaction, foreign keys and the manifest's row counts checked before the "
                                  f"commit): {size} bytes in {result.restore_duration_s:.1f}s"
                 + (f" ({round(result.restore_duration_s / (size / GIB), 1)} s/GiB)" if size else "")
                 + (f"; roles created: {', '.join(done.roles_created)}" if done.roles_created else ""))
    with admin.connect(scratch) as conn:
        cmp = compare_counts(conn, src)
        platform = [tuple(k.split(".", 1)) for k in parts.expected_counts if tuple(k.split(".", 1))
                    in set(parts.platform_tables)]
        got = {f"{t['schema']}.{t['name']}": t["rows"] for t in row_counts(conn, platform)}
        bad = [f"{k}: {v} rows, the manifest says {parts.expected_counts[k]}" for k, v in got.items()
               if v != parts.expected_counts[k]]
        result.row_counts = {**cmp["counts"], **got}
        ok = cmp["ok"] and not bad
        result.check("row_counts", ok, f"{cmp['tables'] + len(got)} tables (application and platform user data) "
                                       "match the manifest's exact row counts" if ok else
                     "; ".join(cmp["mismatches"] + [f"missing table {m}" for m in cmp["missing"]] + bad))
        if src.manifest is not None and src.manifest.schema_hash:
            have, want = schema_hash_for(conn, src), expected_schema_hash(conn, src)
            result.check("schema_hash", have == want, "schema hash of the application schemas matches the manifest"
                         if have == want else f"schema hash {have} != manifest {want}")
        result.check("privileges", *compare_privileges(conn, src, no_owner=False))
        if src.manifest is not None and src.manifest.content_hashes.tables:
            result.check("content_hashes", *compare_content(conn, src))
        if parts.publications:
            have_pubs = {tuple(r) for r in conn.execute(
                "SELECT pubname, schemaname, tablename FROM pg_catalog.pg_publication_tables").fetchall()}
            lost = [f"{s}.{t} in {p}" for p, s, t in parts.publications if (p, s, t) not in have_pubs]
            result.check("publications", not lost, "the tables are in their publications as recorded" if not lost
                         else "not in their publication after the restore: " + ", ".join(lost))
