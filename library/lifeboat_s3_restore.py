#!/usr/bin/python
# Lifeboat: point-in-time and missing-files restores from a versioned backup bucket.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_s3_restore
short_description: Restore files from a versioned backup bucket (point in time, or missing files)
description:
  - O(mode=point_in_time) makes O(destination) hold the O(backup) prefix as it was at O(restore_time),
    chosen per key from the bucket's version history. Files that did not exist at that time are left
    alone unless O(delete_newer=true); a file is only overwritten or deleted when its current content is
    itself kept in the backup, unless O(force=true).
  - O(mode=missing) restores exactly the keys that are referenced (O(keys), or the first column of
    O(keys_query) run read-only against O(dsn)) and missing from O(destination), from their newest backup
    version, and reports the keys found nowhere in RV(not_found). NULLs and duplicates are ignored, a
    leading C(/) is dropped; a key found nowhere as written is also looked up without a leading
    C(destination-bucket/) and in the other Unicode normalization form (NFC/NFD).
  - O(mode=recovery_point) restores the files of a database's recovery point. For each key the database
    lists (O(keys), or O(keys_query) run against the restored database, e.g. C(select name from storage.objects
    where bucket_id = 'videos')), it restores the version the O(backup) prefix held at the database backup's
    snapshot time (O(as_of_backup)) or at O(restore_time). A file the sync copied only after that time comes
    from its first copy after it (RV(later_copies)); a file deleted before it while the database still listed
    it, from its newest version before (RV(earlier_copies)). Unlisted destination objects are left alone
    unless O(delete_unlisted=true).
  - Check mode reports the plan and touches nothing. A rerun with nothing to do reports C(changed=false).
options:
  mode:
    description: What to restore.
    type: str
    choices: [point_in_time, missing, recovery_point]
    default: point_in_time
  backup:
    description: C(s3://bucket/prefix) of the versioned backup (as written by lifeboat_s3_sync).
    type: str
    required: true
  destination:
    description: C(s3://bucket/prefix) or an absolute directory to restore into.
    type: str
    required: true
  restore_time:
    description: ISO 8601 time with a timezone (C(2026-11-22T02:00:00Z)); required for O(mode=point_in_time).
    type: str
  delete_newer:
    description: With O(mode=point_in_time), delete destination files that did not exist at O(restore_time).
    type: bool
    default: false
  force:
    description: Also overwrite or delete destination files whose current content is in no backup (data loss).
    type: bool
    default: false
  keys:
    description: Keys the application references (O(mode=missing) and O(mode=recovery_point)).
    type: list
    elements: str
  keys_query:
    description:
      - SQL returning referenced keys in its first column, e.g. C(select storage_path from videos), or a list of
        such statements whose keys are taken together.
      - With O(mode=recovery_point), a second column may hold the ETag of the content the database recorded (for
        Supabase, C(select name, metadata->>'eTag' from storage.objects where bucket_id = 'videos')), and the version
        with that content is restored, even if the sync copied it after the time.
      - Every column that holds a storage key needs one, e.g. C(select storage_path from videos) and
        C(select output_path from generated_videos where output_path is not null).
    type: raw
  database:
    description: Database O(keys_query) runs in (or the DSN's), over the connection the PostgreSQL options describe.
    type: str
  concurrency:
    description: Objects restored in parallel.
    type: int
    default: 8
  as_of_backup:
    description:
      - With O(mode=recovery_point), the database backup whose snapshot time is the restore time, given as the location
        of its manifest as backup.yml prints it (C(s3://lifeboat-backups/db/postgres/<id>/manifest.json)) or its
        directory, read with the O(backup_endpoint) credentials and checked like every manifest.
      - Give this or O(restore_time).
    type: str
  delete_unlisted:
    description: With O(mode=recovery_point), delete destination objects the keys do not list (each only when
      its current content is kept in the backup, unless O(force=true)).
    type: bool
    default: false
extends_documentation_fragment:
  - lifeboat_s3.backup
  - lifeboat_s3.destination
  - lifeboat_postgres
  - lifeboat_file_modes
requirements: [boto3, psycopg (for keys_query)]
author: Lifeboat
"""

EXAMPLES = r"""
- name: Bring the videos prefix back to how it was before the incident
  lifeboat_s3_restore:
    mode: point_in_time
    backup: s3://app-storage-backup/app-storage/videos
    destination: s3://app-storage/videos
    restore_time: "2026-11-21T23:00:00Z"
    delete_newer: true

- name: Restore the files the database references but the bucket lost
  lifeboat_s3_restore:
    mode: missing
    backup: s3://app-storage-backup/app-storage
    destination: s3://app-storage
    keys_query: select storage_path from videos
    dsn: "{{ vault_app_dsn }}"
"""

RETURN = r"""
restored:
  description: Objects restored (or to restore in check mode).
  returned: always
  type: int
  sample: 5
restored_bytes:
  description: Bytes restored.
  returned: always
  type: int
  sample: 52428800
deleted:
  description: Destination files deleted because they did not exist at the restore time.
  returned: always
  type: int
  sample: 0
unchanged:
  description: Files already as they were at the restore time.
  returned: always
  type: int
  sample: 1195
left_newer:
  description: Destination files newer than the restore time, left alone.
  returned: always
  type: int
  sample: 2
missing:
  description: With O(mode=missing), referenced keys that were missing from the destination.
  returned: always
  type: int
  sample: 6
restored_keys:
  description: Up to 50 restored keys.
  returned: always
  type: list
  elements: str
  sample: ["videos/1/a.mp4"]
deleted_keys:
  description: Up to 50 deleted keys.
  returned: always
  type: list
  elements: str
  sample: []
not_found:
  description: Referenced keys found in neither the destination nor the backup.
  returned: always
  type: list
  elements: str
  sample: ["videos/9/lost.mp4"]
skipped_unbacked:
  description: Up to 50 keys left alone because their current content is in no backup (see O(force)).
  returned: always
  type: list
  elements: str
  sample: []
failed:
  description: Objects that could not be restored, with the reason.
  returned: always
  type: list
  elements: dict
  sample: []
listed:
  description: With O(mode=recovery_point), the distinct keys the database lists.
  returned: when mode is recovery_point
  type: int
  sample: 1350
later_copies:
  description: With O(mode=recovery_point), listed keys with no version at the time, restored from their first
    copy after it (the sync copied them later); RV(later_copies_keys) names up to 50.
  returned: when mode is recovery_point
  type: int
  sample: 0
earlier_copies:
  description: With O(mode=recovery_point), listed keys deleted in the backup before the time, restored from
    their newest version before the deletion; RV(earlier_copies_keys) names up to 50.
  returned: when mode is recovery_point
  type: int
  sample: 0
etag_unmatched:
  description: With O(mode=recovery_point), listed keys whose recorded ETag no backup version has (restored by
    the time instead); RV(etag_unmatched_keys) names up to 50.
  returned: when mode is recovery_point
  type: int
  sample: 0
recovery_time:
  description: With O(mode=recovery_point), the time the files were restored to (the backup's snapshot time).
  returned: when mode is recovery_point
  type: str
  sample: "2026-12-03T11:40:02Z"
backup_id:
  description: With O(mode=recovery_point) and O(as_of_backup), the database backup's id.
  returned: when mode is recovery_point
  type: str
  sample: postgres-20261203T114002Z
duration_s:
  description: Wall-clock duration in seconds.
  returned: always
  type: float
  sample: 2.5
"""

from ansible.module_utils.lifeboat import options  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402
from ansible.module_utils.lifeboat.s3restore import (  # noqa: E402
    keys_from_query,
    parse_time,
    restore_missing,
    restore_point_in_time,
)
from ansible.module_utils.lifeboat import s3recovery  # noqa: E402


def argument_spec() -> dict:
    spec = dict(
        mode=dict(type="str", default="point_in_time", choices=["point_in_time", "missing", "recovery_point"]),
        backup=dict(type="str", required=True),
        destination=dict(type="str", required=True),
        restore_time=dict(type="str"),
        delete_newer=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        keys=dict(type="list", elements="str", no_log=False),
        keys_query=dict(type="raw"),
        database=dict(type="str"),
        concurrency=dict(type="int", default=8),
        as_of_backup=dict(type="str"),
        delete_unlisted=dict(type="bool", default=False),
    )
    spec.update(options.pg_spec())
    spec.update(options.file_modes_spec())
    spec.update(options.s3_spec("backup_"))
    spec.update(options.s3_spec("destination_"))
    return spec


def module_kwargs() -> dict:
    return dict(
        supports_check_mode=True,
        required_if=[("mode", "point_in_time", ["restore_time"]),
                     ("mode", "missing", ["keys", "keys_query"], True),
                     ("mode", "recovery_point", ["keys", "keys_query"], True),
                     ("mode", "recovery_point", ["restore_time", "as_of_backup"], True)],
        mutually_exclusive=[("keys", "keys_query"), ("restore_time", "as_of_backup")],
        required_together=options.s3_together("backup_") + options.s3_together("destination_"),
    )


def main() -> None:
    module = LifeboatModule(argument_spec(), what="object restore", **module_kwargs())
    p = module.params

    def work():
        common = dict(backup_settings=options.s3_settings(p, "backup_", p["concurrency"]),
                      target_settings=options.s3_settings(p, "destination_", p["concurrency"]),
                      concurrency=p["concurrency"], check_mode=module.check_mode, **options.file_modes(p))
        if p["mode"] == "point_in_time":
            return restore_point_in_time(p["backup"], p["destination"], parse_time(p["restore_time"]),
                                         delete_newer=p["delete_newer"], force=p["force"], **common)
        if p["mode"] == "recovery_point":
            at, backup_id = (s3recovery.backup_time(p["as_of_backup"], common["backup_settings"])
                             if p["as_of_backup"] else (parse_time(p["restore_time"]), None))
            listed = p["keys"] if p["keys"] is not None else s3recovery.keys_from_query(
                options.pg_target(p, p["database"]), p["keys_query"])
            res = s3recovery.restore_recovery_point(p["backup"], p["destination"], listed, at,
                                                    delete_unlisted=p["delete_unlisted"], force=p["force"], **common)
            res.backup_id = backup_id
            return res
        keys = p["keys"] if p["keys"] is not None else keys_from_query(options.pg_target(p, p["database"]),
                                                                          p["keys_query"])
        return restore_missing(p["backup"], p["destination"], keys, **common)

    result = module.run(work, changed=False)
    module.exit_json(changed=result.changed, backup=p["backup"], destination=p["destination"],
                     **result.as_dict())


if __name__ == "__main__":
    main()
