#!/usr/bin/python
# Lifeboat: prove that backups restore (integrity check, restore drill, verification record, report).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_backup_verify
short_description: Verify Lifeboat backups by checksum, full decode and a restore drill
description:
  - "O(level=integrity): the stored object's sha256 equals the manifest's; it decrypts and decompresses to the end
    (streamed, nothing written locally); the decoded dump's sha256 equals the manifest's; C(pg_restore -l) lists the
    table of contents (custom format), or a plain SQL dump has pg_dump's header and 'dump complete' trailer."
  - "O(level=drill): restores the backup into a scratch database C(lifeboat_drill_<stamp>_<rand>) that is ALWAYS
    dropped afterwards, also on failure (stale ones older than O(sweep_hours) are dropped first); compares the exact
    per-table row counts, the schema hash and the owners and privileges with the manifest, and each table's
    content hash when the backup recorded them (C(content_hashes)); runs C(pg_amcheck); runs O(assertions)."
  - "Older-procedure dumps (C(db-backup-*.sql.gz), no manifest) are verified too: gzip stream to the end and SQL
    shape; the drill restores them with psql and reports their row counts (nothing to compare with)."
  - With O(record=true), a verification record (C(verify-<stamp>.json)) is written next to the backup
    (level, outcome, checks, restore duration, RTO per GiB); restore's "latest verified" choice reads it.
  - Writes a Markdown and a JSON report into O(report_dir) (directory 0700, files 0600).
  - Fails (after writing the report) when a verification failed and O(fail_on_failure=true), naming each failed check.
  - Check mode lists the backups that would be verified and writes nothing.
options:
  databases:
    description: Databases whose latest backup is verified. Empty means every database found in the store.
    type: list
    elements: str
    default: []
  backup_id:
    description: Verify this backup (id, artifact key or artifact file name) instead of the latest ones.
    type: str
  level:
    description: Verification level.
    type: str
    choices: [integrity, drill]
    default: drill
  record:
    description: Write the verification record next to the backup.
    type: bool
    default: true
  assertions:
    description:
      - Operator SQL assertions run in the drill database, read-only; the query must return a single C(true), or no
        rows (e.g. "every video has a user").
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: What the assertion checks (named in the report).
        type: str
        required: true
      sql:
        description: The query.
        type: str
        required: true
  amcheck:
    description:
      - Run pg_amcheck on the drill database.
      - When the drill role may not create the amcheck extension, the check is skipped with a warning (not a failure).
    type: bool
    default: true
  heapallindexed:
    description: Pass C(--heapallindexed) to pg_amcheck (slower, checks every heap tuple is indexed).
    type: bool
    default: false
  sweep_hours:
    description: Drop scratch databases (C(lifeboat_drill_*), C(lifeboat_stage_*)) older than this many hours first.
    type: float
    default: 6.0
  no_owner:
    description: Restore the drill without owners and privileges (roles need not exist on the drill server).
    type: bool
    default: true
  jobs:
    description:
      - C(pg_restore) jobs of the drill's restore, chosen as C(lifeboat_pg_restore) chooses them when unset (from the
        drill server, at most 4, the decoded dump staged in O(staging_dir), streamed when that disk is short).
        C(1) streams.
    type: int
  staging_dir:
    description: Directory for the drill's staged dump (default, the system temporary directory).
    type: path
  staging_keep_free:
    description: Bytes that must remain free on the staging filesystem after staging the dump.
    type: int
    default: 268435456
  supabase_platform_sql:
    description:
      - A psql script that makes the Supabase platform (roles, C(auth), C(storage), ... schemas and tables) in an
        empty database, run by the drill's role in the scratch database. With it, a backup made with the
        C(supabase) profile is drilled for real, on a Supabase-like drill server (one with role C(supabase_admin));
        it is restored as into a new project and compared (row counts of the application's and the platform's tables,
        schema hash, privileges, content hashes, publication membership). Without it, or on another server, the
        restore step of such a backup is recorded as inconclusive.
      - The lab's is C(roles/lab/files/supabase_platform.sql).
    type: path
  report_dir:
    description: Directory receiving the Markdown and JSON reports (created 0700). Empty means no report files.
    type: path
  fail_on_failure:
    description: Fail the task when a verification failed (after writing the report and the records).
    type: bool
    default: true
  destination:
    description: Where the backups are, C(s3://bucket/prefix) or an absolute directory.
    type: str
    required: true
  prefix:
    description: Key prefix of the backups below O(destination).
    type: str
    default: ""
extends_documentation_fragment:
  - lifeboat_s3
  - lifeboat_postgres
  - lifeboat_postgres.admin
  - lifeboat_decryption
author:
  - Lifeboat restore engineer
"""

EXAMPLES = r"""
- name: Drill the latest backup of appdb, with an application assertion
  lifeboat_backup_verify:
    databases: [appdb]
    level: drill
    destination: s3://lifeboat-backups/db
    s3_endpoint: http://127.0.0.1:40106
    s3_access_key: "{{ s3_access_key }}"
    s3_secret_key: "{{ s3_secret_key }}"
    host: 127.0.0.1
    port: 55432
    user: lifeboat_admin
    password: "{{ pg_admin_password }}"
    gpg_homedir: /etc/lifeboat/gnupg
    assertions:
      - name: every video has a user
        sql: SELECT v.id FROM public.videos v LEFT JOIN public.users u ON u.id = v.user_id WHERE u.id IS NULL
    report_dir: /var/lib/lifeboat/reports

- name: Integrity only (no database server needed), one backup
  lifeboat_backup_verify:
    backup_id: appdb-20261122T020000Z
    level: integrity
    destination: /var/backups/lifeboat
    gpg_homedir: /etc/lifeboat/gnupg
"""

RETURN = r"""
passed:
  description: Whether every verified backup passed (false when one failed or was inconclusive).
  returned: always
  type: bool
  sample: true
results:
  description: One verification record per backup (the document written next to it).
  returned: always
  type: list
  elements: dict
  sample: [{"backup_id": "appdb-20261122T020000Z", "level": "drill", "outcome": "passed", "checks": []}]
failures:
  description: "The failed checks, C(backup_id: check: detail)."
  returned: always
  type: list
  elements: str
  sample: ["appdb-20261122T020000Z: sha256: checksum mismatch for s3://..."]
inconclusive:
  description: >-
    The checks the drill could not run (a missing or wrong key, permissions, the drill server),
    C(backup_id: check: detail). Such a backup's outcome is C(inconclusive): never a verdict on the backup.
  returned: always
  type: list
  elements: str
  sample: ["appdb-20261122T020000Z: decode: gpg_homedir: '/nope' is not a directory (the drill could not run...)"]
report:
  description: Paths of the Markdown and JSON reports.
  returned: when report_dir is set and not in check mode
  type: dict
  sample: {"markdown": "/var/lib/lifeboat/reports/verify-20261122T030000Z-123.md", "json": "..."}
plan:
  description: The backups that are (or in check mode would be) verified.
  returned: always
  type: list
  elements: str
  sample: ["appdb-20261122T020000Z (drill)"]
"""

from ansible.module_utils.lifeboat import options as opts  # noqa: E402
from ansible.module_utils.lifeboat import verify as engine  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402
from ansible.module_utils.lifeboat.storage import open_storage  # noqa: E402


def argument_spec() -> dict:
    spec = dict(
        destination=dict(type="str", required=True),
        prefix=dict(type="str", default=""),
        backup_id=dict(type="str"),
        databases=dict(type="list", elements="str", default=[]),
        level=dict(type="str", default="drill", choices=list(engine.LEVELS)),
        record=dict(type="bool", default=True),
        assertions=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True), sql=dict(type="str", required=True))),
        amcheck=dict(type="bool", default=True),
        heapallindexed=dict(type="bool", default=False),
        sweep_hours=dict(type="float", default=6.0),
        no_owner=dict(type="bool", default=True),
        jobs=dict(type="int"),
        staging_dir=dict(type="path"),
        staging_keep_free=dict(type="int", default=268435456),
        supabase_platform_sql=dict(type="path"),
        report_dir=dict(type="path"),
        fail_on_failure=dict(type="bool", default=True),
    )
    spec.update(opts.s3_spec())
    spec.update(opts.pg_spec())
    spec.update(opts.pg_admin_spec())
    spec.update(opts.decryption_spec())
    return spec


def module_kwargs() -> dict:
    return dict(supports_check_mode=True, required_together=opts.s3_together())


def main() -> None:
    module = LifeboatModule(argument_spec(), what="verification", **module_kwargs())
    p = module.params
    assertions = [engine.Assertion(str(item["name"]), str(item["sql"])) for item in p["assertions"]]
    options = engine.Options(level=p["level"], record=p["record"] and not module.check_mode, assertions=assertions,
                             amcheck=p["amcheck"], heapallindexed=p["heapallindexed"],
                             sweep_hours=p["sweep_hours"], no_owner=p["no_owner"], jobs=p["jobs"],
                             staging_dir=p["staging_dir"], staging_keep_free=p["staging_keep_free"],
                             supabase_platform_sql=p["supabase_platform_sql"])
    storage = module.run(lambda: open_storage(p["destination"], opts.s3_settings(p)))
    refs = module.run(lambda: engine.targets(storage, p["databases"], p["backup_id"], p["prefix"]))
    plan = [f"{r.backup_id} ({p['level']}{', older-procedure dump' if r.legacy else ''})" for r in refs]
    if module.check_mode:
        module.exit_json(changed=p["record"], passed=True, results=[], failures=[], inconclusive=[], plan=plan)

    def work() -> list:
        admin = opts.restore_admin(p) if p["level"] == "drill" or p["host"] or p["dsn"] else None
        keys = opts.decrypt_keys(p)
        bin_dirs = [p["pg_bin_dir"]] if p["pg_bin_dir"] else None
        return [engine.verify_one(storage, ref, keys, admin, options, bin_dirs) for ref in refs]

    results = module.run(work)
    report = engine.write_reports(results, p["report_dir"], storage.url) if p["report_dir"] else None
    failures = [f"{r.backup_id}: {f}" for r in results for f in r.failures()]
    inconclusive = [f"{r.backup_id}: {f}" for r in results for f in r.inconclusive()]
    for warning in (w for r in results for w in r.warnings):
        module.warn(warning)
    out = dict(changed=any(r.record_key for r in results), passed=not failures and not inconclusive,
               results=[r.record() for r in results], failures=failures, inconclusive=inconclusive, plan=plan)
    if report:
        out["report"] = report
    if (failures or inconclusive) and p["fail_on_failure"]:
        where = f"; report: {report['markdown']}" if report else ""
        if failures:
            module.fail_json(msg=f"verification FAILED for {len({f.split(':')[0] for f in failures})} backup(s): "
                                 + " || ".join(failures) + where, **out)
        module.fail_json(msg="verification INCONCLUSIVE (the drill could not run; not a verdict on the backup): "
                             + " || ".join(inconclusive) + where, **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
