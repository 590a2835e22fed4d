#!/usr/bin/python
# Lifeboat: incremental sync between S3 buckets/prefixes and local directories.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_s3_sync
short_description: Incremental, parallel sync between S3 buckets and local directories
description:
  - Makes O(destination) hold what O(source) holds. Each side is an C(s3://bucket/prefix) URL or an
    absolute directory, so one module serves bucket to bucket (across endpoints and credentials),
    directory to bucket (uploads on a host) and bucket to directory (restores).
  - Changes are decided from the two listings only (size and ETag); an unchanged object costs no request.
    A rerun with nothing to do reports C(changed=false) and copies nothing.
  - Server-side copy when both sides are the same endpoint and credentials, streaming otherwise. Content
    type and user metadata are preserved. Reads are conditional on the listed ETag; an object that changes
    during the copy is re-read and reported in RV(changed_during_copy).
  - Deletions at the source are propagated only with O(delete=true), and only into a bucket with versioning
    enabled, so every deleted file stays recoverable; otherwise the module refuses before touching anything.
  - Check mode reports the plan (counts and bytes to copy or delete) and touches nothing.
  - 0-byte folder markers (keys ending in C(/)) are mirrored between buckets and become directories in a
    directory. Into a directory, a key with a leading C(/) or an empty, C(.) or C(..) segment, a key whose
    parent is a symbolic link leading out of the directory, or a key that is both a file and a folder prefix
    (C(a) and C(a/b)) is not written and is named in RV(failed); everything else is copied first.
options:
  source:
    description: C(s3://bucket/prefix) or an absolute directory to read from.
    type: str
    required: true
  destination:
    description: C(s3://bucket/prefix) or an absolute directory to write to.
    type: str
    required: true
  delete:
    description:
      - Delete destination objects that no longer exist at the source.
      - Refused unless the destination is a bucket with versioning enabled.
    type: bool
    default: false
  include:
    description: Shell patterns (fnmatch, against the key relative to the prefix); only matching keys are synced.
    type: list
    elements: str
    default: []
  exclude:
    description: Shell patterns of keys to leave alone on both sides.
    type: list
    elements: str
    default: []
  concurrency:
    description: Number of objects copied in parallel.
    type: int
    default: 8
  part_size_mb:
    description: Part size in MiB for multipart uploads of large files (minimum 5).
    type: int
    default: 16
  multipart_threshold_mb:
    description: Files larger than this (MiB) are uploaded in parts.
    type: int
    default: 64
  retries:
    description: How many times an object that changes during its copy is re-read before it is reported as failed.
    type: int
    default: 3
  run_record:
    description:
      - Where to leave a record of this run (C(s3://bucket/prefix) reached with the destination's endpoint and
        credentials, or an absolute directory), read by the catalog and the monitor (C(lifeboat_backup_status)).
      - Writes C(last-run.json) after every run and C(last-success.json) after a successful one. Never inside the
        mirrored destination (a propagated deletion would remove it, a restore would copy it back).
      - A record that cannot be written is a warning, not a failure of the sync. Empty writes none.
    type: str
    default: ""
extends_documentation_fragment:
  - lifeboat_s3.source
  - lifeboat_s3.destination
  - lifeboat_file_modes
requirements: [boto3]
author: Lifeboat
"""

EXAMPLES = r"""
- name: Mirror the application bucket into the versioned backup bucket (another endpoint)
  lifeboat_s3_sync:
    source: s3://app-storage
    source_endpoint: https://project.supabase.co/storage/v1/s3
    source_access_key: "{{ vault_supabase_s3_key }}"
    source_secret_key: "{{ vault_supabase_s3_secret }}"
    destination: s3://app-storage-backup/app-storage
    destination_region: eu-west-1
    delete: true
    concurrency: 16

- name: Upload a host's uploads directory
  lifeboat_s3_sync:
    source: /srv/app/storage/uploads
    destination: s3://app-storage-backup/hosts/web1/uploads
    exclude: ["*.tmp"]

- name: Restore a prefix into a directory
  lifeboat_s3_sync:
    source: s3://app-storage-backup/app-storage/videos
    destination: /srv/restore/videos
    file_mode: "0640"
"""

RETURN = r"""
copied:
  description: Objects copied (in check mode, objects that would be copied).
  returned: always
  type: int
  sample: 12
copied_bytes:
  description: Bytes copied (or to copy).
  returned: always
  type: int
  sample: 1048576
deleted:
  description: Destination objects deleted (or to delete).
  returned: always
  type: int
  sample: 0
deleted_bytes:
  description: Bytes of the deleted objects.
  returned: always
  type: int
  sample: 0
unchanged:
  description: Objects already up to date (and destination-only objects left alone).
  returned: always
  type: int
  sample: 9988
excluded:
  description: Keys skipped by the include/exclude patterns.
  returned: always
  type: int
  sample: 0
changed_during_copy:
  description: Keys whose source changed while they were copied (the newer content was copied).
  returned: always
  type: list
  elements: str
  sample: []
failed:
  description: Objects that could not be synced, with the reason (also in msg when the module fails).
  returned: always
  type: list
  elements: dict
  sample: []
to_copy_sample:
  description: Up to 20 keys planned for copying.
  returned: always
  type: list
  elements: str
  sample: ["videos/a.mp4"]
to_delete_sample:
  description: Up to 20 keys planned for deletion.
  returned: always
  type: list
  elements: str
  sample: []
method:
  description: C(server-side copy) or C(stream).
  returned: always
  type: str
  sample: stream
duration_s:
  description: Wall-clock duration in seconds.
  returned: always
  type: float
  sample: 1.25
source:
  description: The source as given.
  returned: always
  type: str
  sample: s3://app-storage
destination:
  description: The destination as given.
  returned: always
  type: str
  sample: s3://app-storage-backup/app-storage
run_record_uri:
  description: Where the run record went (C(last-run.json)); null when it could not be written.
  returned: when O(run_record) is set and not in check mode
  type: str
  sample: s3://lifeboat-backups/runs/storage-sync/last-run.json
"""

from ansible.module_utils.lifeboat import manifest as mf  # noqa: E402
from ansible.module_utils.lifeboat import options, runrecord  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402
from ansible.module_utils.lifeboat.s3sync import MIB, SyncOptions, sync  # noqa: E402


def argument_spec() -> dict:
    spec = dict(
        source=dict(type="str", required=True),
        destination=dict(type="str", required=True),
        delete=dict(type="bool", default=False),
        include=dict(type="list", elements="str", default=[]),
        exclude=dict(type="list", elements="str", default=[]),
        concurrency=dict(type="int", default=8),
        part_size_mb=dict(type="int", default=16),
        multipart_threshold_mb=dict(type="int", default=64),
        retries=dict(type="int", default=3),
        run_record=dict(type="str", default=""),
    )
    spec.update(options.file_modes_spec())
    spec.update(options.s3_spec("source_"))
    spec.update(options.s3_spec("destination_"))
    return spec


def module_kwargs() -> dict:
    return dict(supports_check_mode=True,
                required_together=options.s3_together("source_") + options.s3_together("destination_"))


def main() -> None:
    module = LifeboatModule(argument_spec(), what="sync", **module_kwargs())
    p = module.params
    opts = SyncOptions(
        delete=p["delete"], include=p["include"], exclude=p["exclude"], concurrency=p["concurrency"],
        part_size=p["part_size_mb"] * MIB, multipart_threshold=p["multipart_threshold_mb"] * MIB,
        retries=p["retries"], check_mode=module.check_mode,
    )
    where = dict(source=p["source"], destination=p["destination"])
    started = mf.utcnow()
    dst_settings = options.s3_settings(p, "destination_", p["concurrency"])

    def record(ok: bool, counts: dict, error: str | None) -> None:
        if not p["run_record"] or module.check_mode:
            return
        numbers = {k: v for k, v in counts.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        numbers["failed"] = len(counts.get("failed") or [])
        doc = runrecord.build("sync", p["destination"], p["source"], p["destination"], ok, started, mf.utcnow(),
                              counts.get("duration_s", 0.0), numbers, error)
        uri, warning = runrecord.write_quietly(p["run_record"], dst_settings, doc)
        if warning:
            module.warn(warning)
        where["run_record_uri"] = uri

    try:
        result = sync(p["source"], p["destination"], options.s3_settings(p, "source_", p["concurrency"]),
                      dst_settings, opts, **options.file_modes(p))
    except Exception as exc:  # noqa: BLE001 - named by fail_error, with what was done (SyncError.partial)
        record(False, getattr(exc, "partial", None) or {}, str(exc))
        module.fail_error(exc, **{"changed": False, **where})
    record(True, result.as_dict(), None)
    module.exit_json(changed=result.changed, **where, **result.as_dict())


if __name__ == "__main__":
    main()
