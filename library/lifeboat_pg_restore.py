#!/usr/bin/python
# Lifeboat: restore a PostgreSQL database from a Lifeboat backup (or an older db-backup-*.sql.gz dump).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_pg_restore
short_description: Restore a PostgreSQL database from a Lifeboat backup, safely
description:
  - The incident runbook as one module (docs/runbook-restore.md). Chooses the backup (latest verified by
    default, or O(backup_id), or the latest before O(before)), puts the application into maintenance through
    O(maintenance_on), takes a safety snapshot of the current database, fetches the artifact, checks its sha256,
    decrypts and decompresses it streamed into C(pg_restore) (or C(psql) for plain SQL dumps), restores,
    checks the exact row counts against the manifest, runs O(post_restore) hooks and always runs
    O(maintenance_off) at the end, also when a step failed.
  - "Latest verified: the newest backup whose most recent verification record passed. When a newer backup is not
    verified, a warning names it. When no backup is verified, the latest complete backup is used with a warning,
    unless O(require_verified=true)."
  - "O(mode=swap) (default): the backup is restored into C(<db>_lifeboat_new_<stamp>) and checked; only then are
    the sessions on the target terminated and both databases renamed in one transaction. The previous database is
    kept as C(<db>_lifeboat_old_<stamp>) (returned as RV(old_database)). A failure at any point leaves the
    original database untouched and drops the new one."
  - "O(mode=in_place) drops and recreates the target, then restores into it. It is NOT atomic: a failure leaves
    the database partially restored (the safety snapshot holds the previous state). It is refused while other
    sessions are connected unless O(terminate_sessions=true)."
  - "O(mode=partial) restores only O(tables) / O(schemas) into the existing database: the backup is restored
    into a staging database, then in ONE transaction the tables' rows are replaced (owned sequences set, no
    cascade into other tables, foreign keys from and to them checked before commit). Other tables are untouched.
    O(mode=side_schema) copies the tables into a new schema O(side_schema) instead."
  - A backup limited to some tables or schemas is refused for O(mode=swap) and O(mode=in_place) (it would replace the
    whole database with that part); restore it with O(mode=partial).
  - Runs only when O(confirm) equals O(database). Check mode returns the full plan and changes nothing.
  - Secrets (O(password), O(dsn), O(s3_secret_key), O(passphrase)) never reach argv, logs or return values.
options:
  database:
    description: The target database on the server (the one restored, swapped or overwritten).
    type: str
    required: true
  source_database:
    description: The database name the backups were taken from, when it differs from O(database).
    type: str
  confirm:
    description:
      - Must equal O(database), or the module refuses to run (check mode excepted).
      - restore.yml asks for it with vars_prompt unless C(-e lifeboat_confirm=<dbname>) is given.
    type: str
  destination:
    description: Where the backups are, C(s3://bucket/prefix) or an absolute directory.
    type: str
    required: true
  prefix:
    description: Key prefix of the backups below O(destination).
    type: str
    default: ""
  s3_endpoint:
    description: S3 endpoint URL for S3-compatible services (SeaweedFS, MinIO...); empty for AWS.
    type: str
  s3_region:
    description: S3 region.
    type: str
  s3_access_key:
    description: S3 access key id.
    type: str
  s3_secret_key:
    description: S3 secret access key.
    type: str
  s3_validate_certs:
    description: Verify the S3 endpoint's TLS certificate.
    type: bool
    default: true
  dsn:
    description: Connection string of an administrative role on the target server (database part ignored).
    type: str
  host:
    description: Server host (overrides the DSN's).
    type: str
  port:
    description: Server port.
    type: int
  user:
    description: Administrative role that may create, drop and rename databases.
    type: str
  password:
    description: Its password (handed to child processes through a private PGPASSFILE).
    type: str
  maintenance_database:
    description: Database to connect to for CREATE/DROP/ALTER DATABASE.
    type: str
    default: postgres
  pg_bin_dir:
    description: Directory of pg_restore/psql/pg_dump to use (default, the closest version >= the server's).
    type: path
  gpg_homedir:
    description: GnuPG home holding the secret key of a recipient (public-key gpg backups).
    type: path
  gpg_key_file:
    description: Armored secret key file, imported into a private temporary GnuPG home.
    type: path
  passphrase:
    description: Passphrase of symmetric gpg backups (or of the secret key); passed to gpg through a file descriptor.
    type: str
  age_identity_file:
    description: age identity file for age-encrypted backups.
    type: path
  backup_id:
    description: Restore this backup (its id, artifact key or artifact file name) instead of the latest verified one.
    type: str
  before:
    description:
      - Restore the latest backup taken strictly before this time (ISO 8601, naive = UTC), e.g. C(2026-11-20 12:00).
    type: str
  require_verified:
    description: Fail instead of falling back to an unverified backup when none has a passed verification record.
    type: bool
    default: false
  mode:
    description: How to restore (see the description).
    type: str
    choices: [swap, in_place, partial, side_schema]
    default: swap
  tables:
    description: Tables to restore with O(mode=partial) or O(mode=side_schema) (C(schema.table) patterns).
    type: list
    elements: str
    default: []
  schemas:
    description: Schemas whose tables are restored with O(mode=partial) or O(mode=side_schema).
    type: list
    elements: str
    default: []
  side_schema:
    description: New schema receiving the tables with O(mode=side_schema); must not exist.
    type: str
  schema_only:
    description: Restore the definitions only (O(mode=swap) or O(mode=in_place)).
    type: bool
    default: false
  data_only:
    description: Load the rows only into the existing, empty tables (O(mode=in_place) only, triggers disabled).
    type: bool
    default: false
  jobs:
    description:
      - Parallel pg_restore jobs. Above 1, the decoded dump is staged in a local file in O(staging_dir)
        after checking the free space (the restore fails with a clear message when it is short).
    type: int
    default: 1
  staging_dir:
    description: Directory for the staged dump of a parallel restore (default, the system temporary directory).
    type: path
  staging_keep_free:
    description: Bytes that must remain free on the staging filesystem after staging the dump.
    type: int
    default: 268435456
  no_owner:
    description:
      - Restore without owners and privileges (C(--no-owner --no-privileges)). It LOSES them - everything is owned
        by the restoring user, GRANTs and revoked privileges are not restored (a function whose EXECUTE was revoked
        from PUBLIC becomes callable by everyone). Prefer O(create_roles) on a server that lacks the roles.
    type: bool
    default: false
  create_roles:
    description:
      - Create the roles the backup needs that the target server lacks, from the roles file stored beside the
        dump (C(pg_dumpall --roles-only --no-role-passwords)), without passwords, before any data moves.
      - When false and roles are missing, the restore stops before any data moves and names all of them.
    type: bool
    default: false
  terminate_sessions:
    description: With O(mode=in_place), terminate other sessions instead of refusing.
    type: bool
    default: false
  check_foreign_keys:
    description: With O(mode=partial), check every foreign key from or to the restored tables before committing.
    type: bool
    default: true
  safety_snapshot:
    description: Take a Lifeboat backup of the current database before changing it. Disable only knowingly.
    type: bool
    default: true
  snapshot_options:
    description:
      - Options for the safety snapshot. By default it goes to C(<destination>/safety-snapshots) (apart from the
        regular backups, so it is never chosen as "latest" by mistake), custom format, zstd, encrypted like the
        restored backup (its gpg recipients' public keys exported from O(gpg_homedir), its age recipients, or the
        same passphrase).
      - "Keys: C(destination), C(format), C(compression), C(encryption), C(encryption_recipients) (public key
        files / age recipients), C(encryption_passphrase)."
    type: dict
    default: {}
  maintenance_on:
    description:
      - Hook that puts the application into maintenance before anything changes. C(type) is C(none), C(command)
        (C(argv) list, optional C(env), C(timeout)) or C(http) (C(url), C(method), C(headers), C(body), C(timeout)).
      - Command hooks get C(LIFEBOAT_DATABASE), C(LIFEBOAT_BACKUP_ID), C(LIFEBOAT_MODE) in their environment.
    type: dict
  maintenance_off:
    description: Hook that resumes the application; ALWAYS runs at the end, also when the restore failed.
    type: dict
  post_restore:
    description: Hooks run after a successful restore (e.g. regenerate a client, restart the app); same shape.
    type: list
    elements: dict
    default: []
  hook_headers:
    description:
      - Secret HTTP headers (e.g. C(Authorization)) added to every C(http) hook. Kept out of logs and results;
        put tokens here, not in the hooks' C(headers).
    type: dict
    default: {}
author:
  - Lifeboat restore engineer
"""

EXAMPLES = r"""
- name: Restore appdb from its latest verified backup (new database, then swap)
  lifeboat_pg_restore:
    database: appdb
    confirm: "{{ lifeboat_confirm }}"
    destination: s3://lifeboat-backups/db
    s3_endpoint: http://127.0.0.1:40106
    s3_access_key: "{{ s3_access_key }}"
    s3_secret_key: "{{ s3_secret_key }}"
    host: 127.0.0.1
    port: 55432
    user: lifeboat_admin
    password: "{{ pg_admin_password }}"
    gpg_homedir: /etc/lifeboat/gnupg
    maintenance_on: {type: http, url: "http://127.0.0.1:8080/maintenance/on"}
    maintenance_off: {type: http, url: "http://127.0.0.1:8080/maintenance/off"}

- name: Restore only the invoices table as it was before noon
  lifeboat_pg_restore:
    database: appdb
    confirm: appdb
    destination: /var/backups/lifeboat
    user: lifeboat_admin
    mode: partial
    tables: [public.invoices]
    before: "2026-11-20 12:00"
    gpg_homedir: /etc/lifeboat/gnupg
"""

RETURN = r"""
plan:
  description: The steps, in order, as they run (check mode stops here).
  returned: always
  type: list
  elements: str
  sample: ["1. backup: appdb-20261122T020000Z (latest verified backup; ...)", "..."]
backup_id:
  description: The backup restored.
  returned: success
  type: str
  sample: appdb-20261122T020000Z
artifact:
  description: URI of the artifact restored.
  returned: success
  type: str
  sample: s3://lifeboat-backups/db/appdb/appdb-20261122T020000Z/appdb.dump.zst.gpg
legacy:
  description: Whether the backup is an older-procedure plain SQL dump without manifest.
  returned: success
  type: bool
  sample: false
database:
  description: The target database.
  returned: always
  type: str
  sample: appdb
mode:
  description: The restore mode used.
  returned: always
  type: str
  sample: swap
old_database:
  description: With O(mode=swap), the name the previous database was kept under.
  returned: when a database was swapped
  type: str
  sample: appdb_lifeboat_old_20261122t031500z
safety_snapshot:
  description: The safety snapshot taken before the restore (backup id, artifact).
  returned: when taken
  type: dict
  sample: {"backup_id": "appdb-20261122T031455Z"}
row_counts:
  description: Exact row counts of the restored tables (checked against the manifest, or reported for old dumps).
  returned: success
  type: dict
  sample: {"public.users": 400}
restored_tables:
  description: With O(mode=partial) or O(mode=side_schema), the tables, rows and sequences restored.
  returned: partial restores
  type: dict
  sample: {"tables": ["public.invoices"], "rows": {"public.invoices": 800}, "sequences": ["public.invoices_id_seq"]}
restored_bytes:
  description: Size of the decoded dump restored.
  returned: full restores
  type: int
  sample: 822388
steps:
  description: Each runbook step with its status, detail and duration in seconds.
  returned: always
  type: list
  elements: dict
  sample: [{"step": "swap", "status": "ok", "seconds": 0.01, "detail": "..."}]
hooks:
  description: Outcome of each hook that ran (maintenance on/off, post-restore).
  returned: when not in check mode
  type: list
  elements: dict
  sample: [{"name": "maintenance_off", "ok": true, "seconds": 0.02, "detail": "http POST http://..."}]
summary:
  description: A human-readable summary (what was restored from which backup, how long each step took).
  returned: always
  type: str
  sample: "restored appdb from appdb-20261122T020000Z (swap) ..."
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.lifeboat import restore as engine  # noqa: E402
from ansible.module_utils.lifeboat.errors import LifeboatError  # noqa: E402


def render_summary(result: dict) -> str:
    lines = [f"{'plan for' if not result.get('changed') else 'restore of'} database '{result['database']}' "
             f"(mode {result['mode']}) from backup {result.get('backup_id', '?')}"]
    if result.get("old_database"):
        lines.append(f"previous database kept as '{result['old_database']}'")
    if result.get("safety_snapshot"):
        lines.append(f"safety snapshot: {result['safety_snapshot'].get('backup_id')}")
    for step in result.get("steps", []):
        lines.append(f"  {step['step']:<40} {step['status']:<8} {step.get('seconds', 0):>8.2f}s  "
                     f"{step.get('detail', '')}")
    for warning in result.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)


def argument_spec() -> dict:
    spec = engine.common_argument_spec()
    spec.update(
        database=dict(type="str", required=True),
        source_database=dict(type="str"),
        confirm=dict(type="str"),
        require_verified=dict(type="bool", default=False),
        mode=dict(type="str", default="swap", choices=list(engine.MODES)),
        tables=dict(type="list", elements="str", default=[]),
        schemas=dict(type="list", elements="str", default=[]),
        side_schema=dict(type="str"),
        schema_only=dict(type="bool", default=False),
        data_only=dict(type="bool", default=False),
        jobs=dict(type="int", default=1),
        staging_dir=dict(type="path"),
        staging_keep_free=dict(type="int", default=268435456),
        no_owner=dict(type="bool", default=False),
        create_roles=dict(type="bool", default=False),
        terminate_sessions=dict(type="bool", default=False),
        check_foreign_keys=dict(type="bool", default=True),
        safety_snapshot=dict(type="bool", default=True),
        snapshot_options=dict(type="dict", default={}),
        maintenance_on=dict(type="dict"),
        maintenance_off=dict(type="dict"),
        post_restore=dict(type="list", elements="dict", default=[]),
        hook_headers=dict(type="dict", default={}, no_log=True),
    )
    return spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("backup_id", "before")],
        required_if=[("mode", "side_schema", ("side_schema",))],
        required_together=[("s3_access_key", "s3_secret_key")],
    )
    p = module.params
    req = engine.Request(
        database=p["database"], source_database=p["source_database"], confirm=p["confirm"],
        backup_id=p["backup_id"], before=p["before"], require_verified=p["require_verified"], prefix=p["prefix"],
        mode=p["mode"], tables=p["tables"], schemas=p["schemas"], side_schema=p["side_schema"],
        schema_only=p["schema_only"], data_only=p["data_only"], jobs=p["jobs"], staging_dir=p["staging_dir"],
        staging_keep_free=p["staging_keep_free"], no_owner=p["no_owner"], create_roles=p["create_roles"],
        terminate_sessions=p["terminate_sessions"], check_foreign_keys=p["check_foreign_keys"],
        safety_snapshot=p["safety_snapshot"], maintenance_on=p["maintenance_on"],
        maintenance_off=p["maintenance_off"], post_restore=p["post_restore"],
        hook_headers={str(k): str(v) for k, v in (p["hook_headers"] or {}).items()})
    try:
        storage = engine.storage_from(p)
        admin = engine.admin_from(p)
        keys = engine.keys_from(p)
        settings = engine.s3_settings_from(p)

        def snapshot(database, src):
            return engine.safety_snapshot(admin, settings, p["destination"], database, src, keys,
                                          p["snapshot_options"])

        result = engine.run(req, storage, admin, keys, check_mode=module.check_mode, snapshot=snapshot)
    except LifeboatError as exc:
        partial = getattr(exc, "summary", None) or {}
        extra = {k: partial[k] for k in ("plan", "steps", "hooks", "backup_id", "old_database", "safety_snapshot",
                                         "note", "warnings") if k in partial}
        if partial:
            extra["summary"] = render_summary({"database": p["database"], "mode": p["mode"], **partial})
        msg = str(exc)
        if partial.get("note"):
            msg += f" ({partial['note']})"
        module.fail_json(msg=engine.mask_secrets(module.params, msg), changed=bool(partial.get("changed")), **extra)
    except Exception as exc:  # noqa: BLE001 - unforeseen: a clear message, never a traceback with values
        module.fail_json(msg=engine.mask_secrets(module.params, f"restore failed: {exc.__class__.__name__}: {exc}"))
    result["summary"] = render_summary(result)
    warnings = result.pop("warnings", [])
    for warning in warnings:
        module.warn(warning)
    if module.check_mode:
        result["changed"] = True  # the real run would change the database
    module.exit_json(**result)


if __name__ == "__main__":
    main()
