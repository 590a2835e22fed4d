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
  - Everything happens in ONE transaction; nothing changes unless the whole restore succeeded, every foreign key
    from or to a restored table holds, and the row counts equal O(expected_counts).
  - O(mode=new) needs a new project (platform tables empty, application schemas without tables or functions).
    Roles the backup needs and the project lacks are created from O(roles_file), without passwords.
  - O(mode=in_place) replaces the application schemas' objects and the platform tables' rows of the same
    project. It needs O(confirm) equal to the database name, and first writes a safety snapshot (archives of
    the same shape, restorable by this module) into O(snapshot_dir). The live objects are kept aside in
    C(<schema>_lifeboat_old_<token>) (RV(moved_aside)).
  - The login needs C(SET) on C(session_replication_role) (Supabase grants it to C(postgres)); without it the
    task fails naming the C(GRANT).
options:
  archives:
    description: Local pg_dump custom-format archives of the backup (decrypted and decompressed), any order.
    type: list
    elements: path
    required: true
  mode:
    description: C(new) (a new project) or C(in_place) (the same project after an incident).
    type: str
    choices: [new, in_place]
    required: true
  app_schemas:
    description: The application's schemas the backup holds (as its manifest lists them).
    type: list
    elements: str
    default: [public]
  platform_tables:
    description: The platform tables to restore, as C(schema.table) (the backup manifest's
      C(supabase.platform_tables)); those the archives do not hold are left as they are.
    type: list
    elements: str
    default: [auth.users, auth.identities, auth.mfa_factors, auth.one_time_tokens, auth.sessions, auth.refresh_tokens,
              auth.audit_log_entries, storage.buckets, storage.objects]
  roles_file:
    description: The backup's roles script (C(pg_dumpall --roles-only --no-role-passwords) lines); platform roles
      in it are ignored.
    type: path
  expected_counts:
    description: Row counts per C(schema.table) from the backup's manifest; a difference rolls the restore back.
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
"""

RETURN = r"""
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
    owner); run them as the platform's admin (on Supabase, in the dashboard's SQL editor).
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
    return dict(
        archives=dict(type="list", elements="path", required=True),
        mode=dict(type="str", choices=["new", "in_place"], required=True),
        app_schemas=dict(type="list", elements="str", default=["public"]),
        platform_tables=dict(type="list", elements="str", default=DEFAULT_TABLES),
        roles_file=dict(type="path"),
        expected_counts=dict(type="dict"),
        confirm=dict(type="str"),
        snapshot_dir=dict(type="path"),
        database=dict(type="str"),
        **options.pg_spec(),
    )


def main() -> None:
    module = LifeboatModule(argument_spec(), what="the Supabase restore", supports_check_mode=False)
    p = module.params

    def work():
        from ansible.module_utils.lifeboat.restore import supabase

        tables = []
        for item in p["platform_tables"]:
            schema, dot, table = item.partition(".")
            if not dot or not schema or not table:
                raise ConfigError(f"platform_tables: {item!r} is not schema.table", "platform_tables")
            tables.append((schema, table))
        roles = ""
        if p["roles_file"]:
            with open(p["roles_file"], encoding="utf-8") as fh:
                roles = fh.read()
        counts = {k: int(v) for k, v in (p["expected_counts"] or {}).items()}
        bins = [p["pg_bin_dir"]] if p["pg_bin_dir"] else None
        return supabase.restore(options.pg_target(p, p["database"]), p["archives"],
                                supabase.Scope(p["app_schemas"], tables), mode=p["mode"], roles_script=roles,
                                expected_counts=counts, confirm=p["confirm"], snapshot_dir=p["snapshot_dir"],
                                bin_dirs=bins)

    result = module.run(work, changed=False)
    module.exit_json(changed=True, mode=result.mode, moved_aside=result.moved_aside,
                     safety_snapshot=result.safety_snapshot or [], roles_created=result.roles_created,
                     skipped=result.skipped, platform_sql=result.platform_sql)


if __name__ == "__main__":
    main()
