#!/usr/bin/python
# Lifeboat: restore a Supabase project's backup into a Supabase project, as its postgres login.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_supabase_restore
short_description: Restore a Supabase backup into a new Supabase project, or in place after an incident
description:
  - Restores the pg_dump archives of a Supabase backup (one snapshot; the application schemas, and the platform
    tables that hold user data such as C(auth.users) and C(storage.objects)) into a Supabase project, connected
    as the project's non-superuser C(postgres) login (direct connection or session pooler). The platform's own
    schemas, tables and roles are never touched; the project already has them.
  - "From the backup store (O(destination)): the backup (latest verified by default, or O(backup_id), or the
    latest before O(before); as restore.yml chooses) is fetched by its manifest: each part's stored sha256 is
    checked while it streams, decrypted and decompressed into a private directory in O(work_dir) (0700, files
    0600, removed at the end, also after a failure). The manifest gives the schemas, the platform tables, the
    row counts checked before the commit, the tables' publications (Realtime) and the database's settings.
    A damaged part stops the restore naming it before the project is touched."
  - "The backup's tables go back into the platform's publications (C(supabase_realtime)) where the login owns
    the publication; the database's recorded settings (C(app.settings.*)) the project lacks are set where the
    login may (tried first in a rolled-back transaction). What the login may not do is returned in
    RV(platform_sql) with the reason in RV(skipped)."
  - Or from local, decoded files (O(archives)), for example the parts the manifest's stock commands wrote.
  - Everything happens in ONE transaction (BEGIN and COMMIT sent by the module, so that a run killed at any point
    commits nothing); nothing changes unless the whole restore succeeded, every foreign key from or to a restored
    table holds, and the row counts equal O(expected_counts).
  - O(mode=new) needs a new project (platform tables empty, application schemas without tables or functions).
    Roles the backup needs and the project lacks are created from O(roles_file), without passwords.
  - O(mode=in_place) replaces the application schemas' objects and the platform tables' rows of the same
    project. It needs O(confirm) equal to the database name, and first writes a safety snapshot (archives of
    the same shape, restorable by this module) into O(snapshot_dir). The live objects are kept aside in
    C(<schema>_lifeboat_old_<token>) (RV(moved_aside)).
  - "In place, the slow part is staged beside the live objects (RV(swap) C(staged)): the backup's objects are
    created, loaded, indexed and checked in C(<schema>_lifeboat_new_<token>), the platform tables' rows in
    C(lifeboat_stage_<token>), without locking anything the application uses (it reads and writes as usual;
    foreign keys to platform tables wait for the swap). Then the swap, at the end of the same transaction: the
    live objects are moved aside and the staged ones into the schema (C(ALTER ... SET SCHEMA): owners, grants,
    policies, triggers, comments, sequence values go with them), functions that platform triggers call are
    replaced in place, the platform tables' rows are kept aside (RV(platform_rows_aside)) and replaced, foreign
    keys to and from platform tables checked, counts checked, commit. The application waits only during the
    swap, whose time grows with the platform tables' rows, not with the application's data. A C(public) the
    login does not own (Supabase) keeps its identity: only the objects in it move."
  - "A backup whose application schemas hold object kinds the swap cannot move (operators, operator classes and
    families, foreign tables, ...) is restored in one transaction that holds its locks from the
    start (the application waits for the whole restore); RV(swap) says so and why."
  - The login needs C(SET) on C(session_replication_role) (Supabase grants it to C(postgres)); without it the
    task fails naming the C(GRANT).
options:
  archives:
    description: Local pg_dump custom-format archives of the backup (decrypted and decompressed), any order.
      Give either this or O(destination).
    type: list
    elements: path
  destination:
    description: Where the backups are, C(s3://bucket/prefix) or an absolute directory (as backup.yml wrote
      them). Give either this or O(archives).
    type: str
  prefix:
    description: Key prefix of the backups below O(destination).
    type: str
    default: ""
  source_database:
    description: With O(destination), the database name the backups were taken from (default, the target's;
      a Supabase project's is C(postgres)).
    type: str
  backup_id:
    description: With O(destination), restore this backup instead of the latest verified one.
    type: str
  before:
    description: With O(destination), restore the latest backup taken strictly before this time (ISO 8601, naive
      = UTC).
    type: str
  require_verified:
    description: With O(destination), fail instead of falling back to an unverified backup when none has a passed
      verification record.
    type: bool
    default: false
  work_dir:
    description: With O(destination), where the parts are decoded (a private directory is made in it and removed
      at the end); needs room for the decoded backup. Default, the system temporary directory.
    type: path
  mode:
    description: C(new) (a new project) or C(in_place) (the same project after an incident).
    type: str
    choices: [new, in_place]
    required: true
  app_schemas:
    description: The application's schemas the backup holds. Default, the manifest's with O(destination), else
      C([public]).
    type: list
    elements: str
  platform_tables:
    description: The platform tables to restore, as C(schema.table); those the archives do not hold are left as
      they are. Default, the manifest's C(supabase.platform_tables) with O(destination), else C(auth.users),
      C(auth.identities), C(auth.mfa_factors), C(auth.one_time_tokens), C(auth.sessions), C(auth.refresh_tokens),
      C(auth.audit_log_entries), C(storage.buckets), C(storage.objects).
    type: list
    elements: str
  roles_file:
    description: With O(archives), the backup's roles script (C(pg_dumpall --roles-only --no-role-passwords)
      lines); platform roles in it are ignored. From O(destination), the backup's own roles part is used.
    type: path
  expected_counts:
    description: Row counts per C(schema.table); a difference rolls the restore back. From O(destination), the
      manifest's.
    type: dict
  confirm:
    description: With O(mode=in_place), the database name, typed again.
    type: str
  snapshot_dir:
    description: With O(mode=in_place), a directory for the safety snapshot (room for one backup).
    type: path
  database:
    description: The project's database (or the DSN's; Supabase's is C(postgres)).
    type: str
extends_documentation_fragment:
  - lifeboat_postgres
  - lifeboat_s3
  - lifeboat_decryption
requirements: [psycopg]
author: Lifeboat
"""

EXAMPLES = r"""
- name: Restore last night's backup into the new project
  lifeboat_supabase_restore:
    dsn: "{{ vault_new_project_dsn }}"
    archives: [/srv/restore/app.dump, /srv/restore/platform.dump]
    roles_file: /srv/restore/roles.sql
    app_schemas: [public, app_private]
    mode: new

- name: Restore the project in place from its latest verified backup in the store
  lifeboat_supabase_restore:
    destination: s3://lifeboat-backups/db
    s3_endpoint: https://s3.eu-west-1.amazonaws.com
    age_identity_file: /etc/lifeboat/age-identity.txt
    mode: in_place
    confirm: postgres
    snapshot_dir: /srv/lifeboat-safety
"""

RETURN = r"""
backup_id:
  description: With O(destination), the backup restored.
  returned: success, with O(destination)
  type: str
  sample: postgres-20261122T020000Z
publications:
  description: The backup's tables put back into the platform's publications.
  returned: success
  type: list
  elements: str
  sample: ["public.videos in publication supabase_realtime"]
settings_applied:
  description: The statements that set the database's recorded settings the project lacked.
  returned: success
  type: list
  elements: str
  sample: []
mode:
  description: The mode run.
  returned: success
  type: str
  sample: in_place
moved_aside:
  description: With O(mode=in_place), each application schema and where its previous objects were kept.
  returned: success
  type: dict
  sample: {"public": "public_lifeboat_old_3f9a0c1e"}
swap:
  description: With O(mode=in_place), C(staged) (the application waited only for the short swap), or why the
    restore took one long transaction instead.
  returned: success
  type: str
  sample: staged
platform_rows_aside:
  description: With O(mode=in_place) staged, the schema where the platform tables' replaced rows are kept (one
    table per platform table, named C(<schema>.<table>)), for you to inspect and drop.
  returned: success
  type: str
  sample: public_lifeboat_old_3f9a0c1e
safety_snapshot:
  description: With O(mode=in_place), the safety snapshot's archives.
  returned: success
  type: list
  elements: str
  sample: ["/srv/snap/postgres-before-restore-3f9a0c1e-app.dump"]
roles_created:
  description: Roles created (without passwords).
  returned: success
  type: list
  elements: str
  sample: []
platform_sql:
  description: Statements of the backup the login may not run (a policy on a platform table needs the table's
    owner; a publication's membership, its owner; a database setting, a role allowed to set it), each with its
    reason in RV(skipped); run them as that role (on Supabase, in the dashboard's SQL editor).
  returned: success
  type: list
  elements: str
  sample: ["CREATE POLICY \"Avatars are public\" ON storage.objects FOR SELECT TO anon USING (true);"]
skipped:
  description: Entries of the backup the project keeps its own of (its public schema, the platform's default
    privileges, triggers or policies on platform tables the login cannot drop), each with the reason.
  returned: success
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.lifeboat import options  # noqa: E402
from ansible.module_utils.lifeboat.errors import ConfigError  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402

DEFAULT_TABLES = ["auth.users", "auth.identities", "auth.mfa_factors", "auth.one_time_tokens", "auth.sessions",
                  "auth.refresh_tokens", "auth.audit_log_entries", "storage.buckets",
                  "storage.objects"]


def argument_spec() -> dict:
    spec = dict(
        archives=dict(type="list", elements="path"),
        destination=dict(type="str"),
        prefix=dict(type="str", default=""),
        source_database=dict(type="str"),
        backup_id=dict(type="str"),
        before=dict(type="str"),
        require_verified=dict(type="bool", default=False),
        work_dir=dict(type="path"),
        mode=dict(type="str", choices=["new", "in_place"], required=True),
        app_schemas=dict(type="list", elements="str"),
        platform_tables=dict(type="list", elements="str"),
        roles_file=dict(type="path"),
        expected_counts=dict(type="dict"),
        confirm=dict(type="str"),
        snapshot_dir=dict(type="path"),
        database=dict(type="str"),
        **options.pg_spec(),
    )
    spec.update(options.s3_spec())
    spec.update(options.decryption_spec())
    return spec


def module_kwargs() -> dict:
    return dict(supports_check_mode=False, mutually_exclusive=[("archives", "destination"), ("backup_id", "before")],
                required_one_of=[("archives", "destination")], required_together=options.s3_together())


def main() -> None:
    module = LifeboatModule(argument_spec(), what="the Supabase restore", **module_kwargs())
    p = module.params
    facts: dict = {}

    def work():
        from ansible.module_utils.lifeboat.restore import supabase, supabase_fetch
        from ansible.module_utils.lifeboat.storage import open_storage

        tables = []
        for item in p["platform_tables"] or []:
            schema, dot, table = item.partition(".")
            if not dot or not schema or not table:
                raise ConfigError(f"platform_tables: {item!r} is not schema.table", "platform_tables")
            tables.append((schema, table))
        target = options.pg_target(p, p["database"])
        from ansible.module_utils.lifeboat import supabase as profile
        profile.refuse_transaction_pooler(target, "which cannot carry a restore (one transaction through several "
                                                  "client programs)")
        bins = [p["pg_bin_dir"]] if p["pg_bin_dir"] else None
        kwargs = dict(mode=p["mode"], confirm=p["confirm"], snapshot_dir=p["snapshot_dir"], bin_dirs=bins)
        if p["archives"]:
            roles = ""
            if p["roles_file"]:
                with open(p["roles_file"], encoding="utf-8") as fh:
                    roles = fh.read()
            counts = {k: int(v) for k, v in (p["expected_counts"] or {}).items()}
            scope = supabase.Scope(p["app_schemas"] or ["public"],
                                   tables or [tuple(t.split(".", 1)) for t in DEFAULT_TABLES])
            return supabase.restore(target, p["archives"], scope, roles_script=roles, expected_counts=counts,
                                    **kwargs)
        storage = open_storage(p["destination"], options.s3_settings(p))
        done = supabase_fetch.restore_from_store(
            storage, target, options.decrypt_keys(p), source_database=p["source_database"] or target.database
            or "postgres", backup_id=p["backup_id"], before=p["before"], prefix=p["prefix"],
            require_verified=p["require_verified"], work_dir=p["work_dir"], app_schemas=p["app_schemas"],
            platform_tables=tables or None,
            expected_counts={k: int(v) for k, v in (p["expected_counts"] or {}).items()} or None, **kwargs)
        facts.update(backup_id=done.backup_id, warnings=done.warnings)
        return done.result

    result = module.run(work, changed=False)
    for warning in facts.get("warnings") or []:
        module.warn(warning)
    module.exit_json(changed=True, mode=result.mode, moved_aside=result.moved_aside,
                     safety_snapshot=result.safety_snapshot or [], roles_created=result.roles_created,
                     skipped=result.skipped, platform_sql=result.platform_sql, publications=result.publications,
                     settings_applied=result.settings_applied, swap=result.swap,
                     platform_rows_aside=result.platform_rows_aside,
                     **({"backup_id": facts["backup_id"]} if facts.get("backup_id") else {}))


if __name__ == "__main__":
    main()
