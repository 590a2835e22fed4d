#!/usr/bin/python
# Lifeboat: back up one PostgreSQL database to S3 or a local directory.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_pg_backup
short_description: Stream a consistent, compressed, encrypted PostgreSQL backup to S3 or a directory
description:
  - Runs C(pg_dump) in the snapshot of a REPEATABLE READ transaction (C(pg_export_snapshot()) +
    C(pg_dump --snapshot)) and streams its output through compression (zstd or gzip), encryption
    (OpenPGP with gpg, or age) and a sha256 checksum into an S3 multipart upload or a local file.
    No temporary file is written except for O(format=directory).
  - Exact per-table row counts and a schema hash are taken in the same snapshot and recorded in a JSON
    manifest written next to the artifact, B(last). A backup without a manifest is incomplete. The manifest
    also holds the stock-tool command (aws/cat, gpg/age, zstd/gzip, pg_restore/psql) that restores it.
  - Picks a C(pg_dump) whose major version is at least the server's, or fails saying which one is needed.
  - On any failure (connection, credentials, missing bucket or key, full disk, pg_dump killed, errors on
    pg_dump's stderr even with exit status 0) the upload is aborted or the partial file removed, and the
    task fails with a message naming the cause. Earlier backups are never touched.
  - Passwords never reach argv; C(pg_dump) reads a private C(PGPASSFILE) (0600) and gpg passphrases go
    through a file descriptor.
  - Check mode connects read-only and reports the plan (object key, format, estimated size); it writes nothing.
version_added: "0.1.0"
options:
  database:
    description: Database to back up (or the DSN's database).
    type: str
  format:
    description:
      - C(custom) (C(pg_restore) format, the default), C(directory) (C(pg_dump -Fd -j N) into a private
        temporary directory, then streamed as a tar), or C(plain) SQL (restored with C(psql)).
    type: str
    choices: [custom, directory, plain]
    default: custom
  jobs:
    description: Parallel dump jobs for O(format=directory).
    type: int
    default: 2
  schema_only:
    description: Dump only the schema (C(--schema-only)). Mutually exclusive with O(data_only).
    type: bool
    default: false
  data_only:
    description: Dump only the data (C(--data-only)). Mutually exclusive with O(schema_only).
    type: bool
    default: false
  include_tables:
    description: Only these tables (C(pg_dump --table) patterns, for example C(public.users) or C(analytics.*)).
    type: list
    elements: str
    default: []
  exclude_tables:
    description: Leave out these tables (C(pg_dump --exclude-table) patterns).
    type: list
    elements: str
    default: []
  include_schemas:
    description: Only these schemas (C(pg_dump --schema) patterns).
    type: list
    elements: str
    default: []
  exclude_schemas:
    description: Leave out these schemas (C(pg_dump --exclude-schema) patterns).
    type: list
    elements: str
    default: []
  db_profile:
    description:
      - C(supabase) backs up a Supabase project as its non-superuser C(postgres) login, in one exported snapshot, in
        three parts - the application's roles (no passwords, the platform's roles left out), the schema and data
        of the user's schemas (the main artifact), and the data of the platform tables that hold user data
        (C(auth.*), C(storage.*)). What the login cannot read and the platform recreates is left out and listed
        in the manifest (C(supabase.left_out)), with stock-tool steps for a new project (C(restore.supabase)).
      - C(auto) chooses C(supabase) when the database is a Supabase project (role C(supabase_admin), schemas
        C(auth) and C(storage)) and the backup is a whole C(custom)-format one; C(default) never does.
    type: str
    choices: [auto, default, supabase]
    default: auto
  compression:
    description: Compression applied to pg_dump's output (pg_dump's own compression is off).
    type: str
    choices: [zstd, gzip, none]
    default: zstd
  compression_level:
    description:
      - Compression level (zstd 1-19, default 1; gzip 1-9, default 6).
      - zstd 1 is the default because on pg_dump output it is several times cheaper than level 3 and about
        as small (smaller than gzip -6); raise it when storage costs more than CPU.
    type: int
  compression_threads:
    description: Compression threads (zstd, pigz); 0 picks up to 4 from the CPU count.
    type: int
    default: 0
  naming:
    description:
      - C(lifeboat) stores C(<database>/<backup_id>/<database>.<ext>) and C(manifest.json) next to it.
      - C(legacy) keeps the older procedure's flat name C(db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz) (plus
        C(.manifest.json)); it requires O(format=plain), O(compression=gzip) and O(encryption=none).
    type: str
    choices: [lifeboat, legacy]
    default: lifeboat
  destination:
    description: Where the backup goes, C(s3://bucket/prefix) or an absolute directory (created 0700).
    type: str
    required: true
  part_size_mb:
    description:
      - Multipart upload part size in MiB (minimum 5). The stream is read one part at a time and at most
        concurrency + 1 parts (fewer when parts are large, 48 MiB in all) are in flight, so memory stays flat
        whatever the database size (the backup's process tree peaks at about 127 MB at every scale, docs/benchmarks.md).
      - Raised automatically when the database is so large that S3's 10,000 parts would not hold it.
    type: int
    default: 8
  concurrency:
    description: Parts uploaded in parallel.
    type: int
    default: 4
  tags:
    description: Free-form labels recorded in the manifest.
    type: dict
    default: {}
  lock_wait_s:
    description:
      - Seconds to wait when another run (on any host) is backing up the same database to the same destination.
      - The lock is an advisory lock on the source server, released when its holder ends, even when killed.
      - C(0) refuses at once with a message naming the other run (host and PID).
    type: float
    default: 0
  deadline_s:
    description:
      - Deadline of the whole backup in seconds (C(0) for none). When it passes, the run's own sessions on the
        source are terminated (the dump's transaction is released at once), waits on the S3 endpoint give up, and
        the task fails naming what stopped answering.
      - Every S3 call also has connect and read timeouts.
    type: float
    default: 21600
  content_hashes:
    description:
      - Also record a content hash of each table, taken in the dump's own snapshot (manifest C(content_hashes)).
        The drill compares them on its restored copy and fails naming the tables whose values differ while their
        row counts match (a stored generated column recomputed under another locale); a restore warns.
      - It reads every table once more while pg_dump runs; docs/manifest.md gives the measured cost. Off by
        default for that reason.
    type: bool
    default: false
  sweep_grace_s:
    description:
      - At the start of every run, while it holds the lock of this database and destination, what killed runs left
        under C(<database>/) and is older than this many seconds is swept; open multipart uploads are aborted,
        backup sets without a C(manifest.json) are removed (reported as warnings where the credentials may not
        delete). Returned in C(swept).
    type: float
    default: 3600
extends_documentation_fragment:
  - lifeboat_s3
  - lifeboat_postgres
  - lifeboat_encryption
notes:
  - Needs psycopg 3 and boto3 on the host that runs the module, plus C(pg_dump), and C(gpg) or C(age) when
    encrypting.
  - Retention (deleting old backups) is not this module's job.
author:
  - Lifeboat backup engineer
"""

EXAMPLES = r"""
- name: Back up the application database to S3, zstd + OpenPGP
  lifeboat_pg_backup:
    dsn: "{{ app_database_url }}"
    destination: s3://acme-backups/db
    s3_region: eu-west-1
    encryption: gpg
    encryption_recipients:
      - /etc/lifeboat/keys/backup.pub.asc
    tags:
      trigger: nightly
  register: backup

- name: Keep the older procedure's file names in a local directory
  lifeboat_pg_backup:
    host: 127.0.0.1
    port: 5432
    user: backup
    password: "{{ vault_backup_password }}"
    database: appdb
    format: plain
    compression: gzip
    naming: legacy
    destination: /var/backups/db

- name: Parallel directory-format dump, age-encrypted, to an S3-compatible endpoint
  lifeboat_pg_backup:
    dsn: "{{ app_database_url }}"
    format: directory
    jobs: 4
    encryption: age
    encryption_recipients:
      - age1up6ux4y9j67c87cp5f9sqet8l7m6npwpp8uf3d7pa5psanrglpns48qwnh
    destination: s3://lifeboat-backups/db
    s3_endpoint: http://127.0.0.1:40106
    s3_access_key: "{{ backup_access_key }}"
    s3_secret_key: "{{ backup_secret_key }}"
"""

RETURN = r"""
backup_id:
  description: Identifier of the backup (C(<database>-YYYYmmddTHHMMSSZ), or the legacy file stem).
  returned: success
  type: str
  sample: appdb-20261122T020000Z
uri:
  description: Where the artifact landed.
  returned: success
  type: str
  sample: s3://lifeboat-backups/db/appdb/appdb-20261122T020000Z/appdb.dump.zst.gpg
manifest_uri:
  description: Where the manifest landed.
  returned: success
  type: str
  sample: s3://lifeboat-backups/db/appdb/appdb-20261122T020000Z/manifest.json
size:
  description: Size of the stored artifact in bytes.
  returned: success
  type: int
  sample: 1234567
sha256:
  description: sha256 of the stored artifact.
  returned: success
  type: str
  sample: c5de44cde5be785d6b0bea5355384dea63eb475f77d0d0544c11d7d1c966a5d2
duration_s:
  description: Seconds from connecting to the manifest being written.
  returned: success
  type: float
  sample: 7.1
tables:
  description: Number of tables whose data the dump contains (row counts are in the manifest).
  returned: success
  type: int
  sample: 6
total_rows:
  description: Sum of the exact row counts taken in the dump's snapshot.
  returned: success
  type: int
  sample: 6000
restore_command:
  description: Bash command restoring the backup into C($TARGET_DB) with stock tools (see the manifest's notes).
  returned: success
  type: str
  sample: set -o pipefail; aws s3 cp s3://b/k - | gpg --decrypt | zstd -d | pg_restore --no-owner -d "$TARGET_DB"
manifest:
  description: The manifest that was written (docs/manifest.md). Contains no secret.
  returned: success
  type: dict
swept:
  description: What killed runs of this database had left in this destination and this run swept (see O(sweep_grace_s)).
  returned: success
  type: dict
  contains:
    aborted_uploads:
      description: Keys whose open multipart upload was aborted.
      type: list
      elements: str
    removed:
      description: Objects of backup sets without a manifest (and C(.partial) files) that were removed.
      type: list
      elements: str
    reported:
      description: What could not be swept, each with its cause (also returned as warnings).
      type: list
      elements: str
plan:
  description: In check mode, what a run would do.
  returned: check mode
  type: dict
  contains:
    key:
      description: Object key of the artifact, relative to the destination.
      type: str
    format:
      description: Dump format.
      type: str
    estimated_size:
      description: C(pg_database_size()) of the database, in bytes (an upper bound before compression).
      type: int
"""

from ansible.module_utils.lifeboat import options  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402


# its own name (not an S3 "profile", which options.py's groups define): the engine's backup.BackupRequest.profile
DB_PROFILE_SPEC = {"type": "str", "default": "auto", "choices": ["auto", "default", "supabase"]}


def argument_spec() -> dict:
    """The module's argument_spec (tests compare it with the rendered documentation)."""
    spec = dict(
        database=dict(type="str"),
        format=dict(type="str", default="custom", choices=["custom", "directory", "plain"]),
        jobs=dict(type="int", default=2),
        schema_only=dict(type="bool", default=False),
        data_only=dict(type="bool", default=False),
        include_tables=dict(type="list", elements="str", default=[]),
        exclude_tables=dict(type="list", elements="str", default=[]),
        include_schemas=dict(type="list", elements="str", default=[]),
        exclude_schemas=dict(type="list", elements="str", default=[]),
        db_profile=DB_PROFILE_SPEC,
        compression=dict(type="str", default="zstd", choices=["zstd", "gzip", "none"]),
        compression_level=dict(type="int"),
        compression_threads=dict(type="int", default=0),
        naming=dict(type="str", default="lifeboat", choices=["lifeboat", "legacy"]),
        destination=dict(type="str", required=True),
        part_size_mb=dict(type="int", default=8),
        concurrency=dict(type="int", default=4),
        tags=dict(type="dict", default={}),
        lock_wait_s=dict(type="float", default=0),
        deadline_s=dict(type="float", default=21600),
        content_hashes=dict(type="bool", default=False),
        sweep_grace_s=dict(type="float", default=3600),
    )
    spec.update(options.pg_spec())
    spec.update(options.encryption_spec())
    spec.update(options.s3_spec())
    return spec


def module_kwargs() -> dict:
    """Everything AnsibleModule() gets besides argument_spec."""
    return dict(
        supports_check_mode=True,
        # schema_only/data_only and recipients/passphrase are exclusive too, but an explicit `false` / `[]`
        # is legitimate: the engine checks them (backup.validate, crypto) with a message naming both options
        required_together=options.s3_together(),
        required_one_of=[("dsn", "database")],
        required_if=[
            ("encryption", "gpg", ("encryption_recipients", "encryption_passphrase"), True),
            ("encryption", "age", ("encryption_recipients",)),
        ],
    )


def _request(p: dict):
    from ansible.module_utils.lifeboat import backup  # here: a missing psycopg is reported by module.run

    return backup.BackupRequest(
        target=options.pg_target(p, p["database"]), destination=p["destination"], format=p["format"],
        jobs=p["jobs"], schema_only=p["schema_only"], data_only=p["data_only"],
        include_tables=p["include_tables"], exclude_tables=p["exclude_tables"],
        include_schemas=p["include_schemas"], exclude_schemas=p["exclude_schemas"], profile=p["db_profile"],
        compression=p["compression"], compression_level=p["compression_level"],
        compression_threads=p["compression_threads"], naming=p["naming"], encryption=options.encryption(p),
        s3=options.s3_settings(p, concurrency=p["concurrency"]),
        part_size_mb=p["part_size_mb"], pg_bin_dir=p["pg_bin_dir"],
        tags={str(k): str(v) for k, v in (p["tags"] or {}).items()},
        lock_wait_s=p["lock_wait_s"], deadline_s=p["deadline_s"], content_hashes=p["content_hashes"],
        sweep_grace_s=p["sweep_grace_s"],
    )


def main() -> None:
    module = LifeboatModule(argument_spec(), what="backup", **module_kwargs())
    p = module.params
    if p["naming"] == "legacy" and (p["format"] != "plain" or p["compression"] != "gzip"
                                    or p["encryption"] != "none"):
        module.fail_json(msg="naming: legacy names (db-backup-YYYY-MM-DD_HH-MM-SS.sql.gz) require format: plain, "
                             f"compression: gzip and encryption: none (got format: {p['format']}, compression: "
                             f"{p['compression']}, encryption: {p['encryption']})")

    def work() -> dict:
        from ansible.module_utils.lifeboat import backup

        req = _request(p)
        if module.check_mode:
            plan = backup.plan(req)
            module.exit_json(changed=True, plan=plan, backup_id=plan["backup_id"], uri=plan["uri"],
                             manifest_uri=plan["manifest_uri"])
        return backup.run(req)

    module.exit_json(changed=True, **module.run(work))


if __name__ == "__main__":
    main()
