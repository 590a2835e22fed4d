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
  - "O(mode=swap) (default): the backup is restored into C(<db>_lifeboat_new_<stamp>_<token>) and checked; only then are
    the sessions on the target terminated and both databases renamed in one transaction. The previous database is
    kept as C(<db>_lifeboat_old_<stamp>_<token>) (returned as RV(old_database)). A failure at any point leaves the
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
  - Secrets (O(password), O(dsn), O(s3_secret_key), O(decryption_passphrase)) never reach argv, logs or return values.
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
      - Parallel C(pg_restore -j) jobs. C(pg_restore -j) needs a seekable archive, so above 1 the decoded dump is
        staged in a local file in O(staging_dir) after checking the free space against the manifest's dump size.
      - Unset (the default), the number is chosen from the target server, at most 4, and never more than the
        connections it has left, two kept free. On this host (a Unix socket, or a direct TCP connection to an
        address of this host, which the server sees with this connection's own address and port) this host's CPU
        count, which the server shares. On another host (a managed database, also behind NAT) its
        C(max_parallel_workers), which providers size to its cores. Reached through an address of this host
        that forwards elsewhere (an SSH tunnel or a proxy on 127.0.0.1, a container's published port), the server
        may be here or far away, so both bound it; set O(jobs) when the server behind the tunnel is bigger.
      - The free space is checked before anything is fetched, against the manifest's dump size plus a margin (1%,
        at least 16 MiB) plus O(staging_keep_free). When it is short, the restore streams into C(pg_restore)
        instead and a warning says why. When the disk fills up while staging, the part staged is fed to a
        streaming C(pg_restore) and removed, the rest of the download follows (the artifact is fetched once), and
        a warning says how far staging got.
      - An explicit value wins. Above 1 on a short disk the restore fails naming the space needed and free (or,
        when the disk fills up while staging, where it stopped), the database untouched.
        C(1) always streams, nothing written locally. A plain SQL dump is always restored by C(psql), streamed.
      - The result's RV(jobs) and RV(restore_path) say what ran.
    type: int
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
  accept_differences:
    description:
      - After the restore, each table's content hash and the owners and privileges are compared with the
        backup's manifest. By default a difference fails the restore; with O(mode=swap) the restored database is
        then not put in place and the current one is untouched.
      - True keeps the restore anyway and returns the differences as warnings (for a restore you know differs,
        e.g. into another locale or without the backup's roles).
    type: bool
    default: false
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
      - Hook that puts the application into maintenance before anything changes.
      - Command hooks get C(LIFEBOAT_DATABASE), C(LIFEBOAT_BACKUP_ID), C(LIFEBOAT_MODE) in their environment.
    type: dict
    suboptions: &hook
      type:
        description: C(none), C(command) (needs O(maintenance_on.argv)) or C(http) (needs O(maintenance_on.url)).
        type: str
        choices: [none, command, http]
        default: none
      argv:
        description: Command and arguments (no shell).
        type: list
        elements: str
      env:
        description: Extra environment variables of a command hook.
        type: dict
      url:
        description: URL of an http hook (C(http://) or C(https://)).
        type: str
      method:
        description: HTTP method of an http hook.
        type: str
        default: POST
      headers:
        description: HTTP headers (not secret; put tokens in O(hook_headers)).
        type: dict
      body:
        description: Request body of an http hook (default, a JSON object naming the event, database, backup and mode).
        type: raw
      timeout:
        description: Seconds before the hook counts as failed (default 300 for a command, 30 for http).
        type: float
  maintenance_off:
    description: Hook that resumes the application; ALWAYS runs at the end, also when the restore failed.
    type: dict
    suboptions: *hook
  post_restore:
    description: Hooks run after a successful restore (e.g. regenerate a client, restart the app); same shape.
    type: list
    elements: dict
    default: []
    suboptions: *hook
  hook_headers:
    description:
      - Secret HTTP headers (e.g. C(Authorization)) added to every C(http) hook. Kept out of logs and results;
        put tokens here, not in the hooks' C(headers).
    type: dict
    default: {}
extends_documentation_fragment:
  - lifeboat_s3
  - lifeboat_postgres
  - lifeboat_postgres.admin
  - lifeboat_decryption
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
backup_created_at:
  description: When the backup chosen was taken (UTC, ISO 8601); the confirmation names it.
  returned: when a backup was chosen
  type: str
  sample: "2026-11-22T02:00:00Z"
backup_age:
  description: How old the backup chosen is, for people (C(9h 12m), C(3d 4h)).
  returned: when a backup was chosen
  type: str
  sample: 9h 12m
target_existed:
  description: Whether the target database existed (when it did not, nothing is swapped and no old database is kept).
  returned: when the server was reached
  type: bool
  sample: true
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
  sample: appdb_lifeboat_old_20261122t031500z_4f1c2a
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
jobs:
  description: The C(pg_restore) jobs that ran (1 when streamed or for a plain SQL dump).
  returned: when the restore ran
  type: int
  sample: 2
restore_path:
  description: C(staged) (decoded into a local file in O(staging_dir), then C(pg_restore -j)) or C(streamed).
  returned: when the restore ran
  type: str
  sample: staged
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

from ansible.module_utils.lifeboat import options  # noqa: E402
from ansible.module_utils.lifeboat import restore as engine  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402
from ansible.module_utils.lifeboat.storage import open_storage  # noqa: E402


def hook_options() -> dict:
    """Suboptions of a hook (maintenance_on, maintenance_off, post_restore[])."""
    return dict(
        type=dict(type="str", default="none", choices=["none", "command", "http"]),
        argv=dict(type="list", elements="str"),
        env=dict(type="dict"),
        url=dict(type="str"),
        method=dict(type="str", default="POST"),
        headers=dict(type="dict"),
        body=dict(type="raw"),
        timeout=dict(type="float"),
    )


def argument_spec() -> dict:
    spec = dict(
        database=dict(type="str", required=True),
        source_database=dict(type="str"),
        confirm=dict(type="str"),
        destination=dict(type="str", required=True),
        prefix=dict(type="str", default=""),
        backup_id=dict(type="str"),
        before=dict(type="str"),
        require_verified=dict(type="bool", default=False),
        mode=dict(type="str", default="swap", choices=list(engine.MODES)),
        tables=dict(type="list", elements="str", default=[]),
        schemas=dict(type="list", elements="str", default=[]),
        side_schema=dict(type="str"),
        schema_only=dict(type="bool", default=False),
        data_only=dict(type="bool", default=False),
        jobs=dict(type="int"),
        staging_dir=dict(type="path"),
        staging_keep_free=dict(type="int", default=268435456),
        no_owner=dict(type="bool", default=False),
        create_roles=dict(type="bool", default=False),
        terminate_sessions=dict(type="bool", default=False),
        check_foreign_keys=dict(type="bool", default=True),
        accept_differences=dict(type="bool", default=False),
        safety_snapshot=dict(type="bool", default=True),
        snapshot_options=dict(type="dict", default={}),
        maintenance_on=dict(type="dict", options=hook_options()),
        maintenance_off=dict(type="dict", options=hook_options()),
        post_restore=dict(type="list", elements="dict", default=[], options=hook_options()),
        hook_headers=dict(type="dict", default={}, no_log=True),
    )
    spec.update(options.s3_spec())
    spec.update(options.pg_spec())
    spec.update(options.pg_admin_spec())
    spec.update(options.decryption_spec())
    return spec


def module_kwargs() -> dict:
    return dict(
        supports_check_mode=True,
        mutually_exclusive=[("backup_id", "before")],
        required_if=[("mode", "side_schema", ("side_schema",))],
        required_together=options.s3_together(),
    )


def main() -> None:
    module = LifeboatModule(argument_spec(), what="restore", **module_kwargs())
    p = module.params
    req = engine.Request(
        database=p["database"], source_database=p["source_database"], confirm=p["confirm"],
        backup_id=p["backup_id"], before=p["before"], require_verified=p["require_verified"], prefix=p["prefix"],
        mode=p["mode"], tables=p["tables"], schemas=p["schemas"], side_schema=p["side_schema"],
        schema_only=p["schema_only"], data_only=p["data_only"], jobs=p["jobs"], staging_dir=p["staging_dir"],
        staging_keep_free=p["staging_keep_free"], no_owner=p["no_owner"], create_roles=p["create_roles"],
        terminate_sessions=p["terminate_sessions"], check_foreign_keys=p["check_foreign_keys"],
        accept_differences=p["accept_differences"],
        safety_snapshot=p["safety_snapshot"], maintenance_on=p["maintenance_on"],
        maintenance_off=p["maintenance_off"], post_restore=p["post_restore"],
        hook_headers={str(k): str(v) for k, v in (p["hook_headers"] or {}).items()})

    def work() -> dict:
        settings = options.s3_settings(p)
        storage = open_storage(p["destination"], settings)
        admin = options.restore_admin(p)
        keys = options.decrypt_keys(p)

        def snapshot(database, src):
            return engine.safety_snapshot(admin, settings, p["destination"], database, src, keys,
                                          p["snapshot_options"])

        return engine.run(req, storage, admin, keys, check_mode=module.check_mode, snapshot=snapshot)

    result = module.run(work)
    result["summary"] = engine.render_summary(result)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if module.check_mode:
        result["changed"] = True  # the real run would change the database
    module.exit_json(**result)


if __name__ == "__main__":
    main()
