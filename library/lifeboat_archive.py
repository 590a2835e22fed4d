#!/usr/bin/python
# Lifeboat: directory and configuration-file archives (tar, compressed, encrypted, with a manifest).
from __future__ import annotations

DOCUMENTATION = r"""
---
module: lifeboat_archive
short_description: Archive directories or configuration files to S3 or a directory, and restore them
description:
  - O(state=archived) streams a tar (pax) archive of O(path) (or of the listed O(files)) through zstd or gzip
    and gpg/age encryption straight to O(destination), then writes a manifest (file count, bytes, sha256,
    encryption recipients, the stock-tool restore command). Owners, modes and mtimes are kept.
  - Configuration files (O(files)) are always encrypted; the module refuses O(encryption=none) for them.
  - Idempotent; when the newest archive of O(name) was made from an identical tree (paths, sizes, mtimes,
    modes, owners), nothing is written and C(changed=false).
  - O(state=restored) extracts the newest (or O(archive_id)) archive into O(restore_to), optionally only the
    members matching O(patterns), with modes and owners as archived unless O(file_mode), O(dir_mode),
    O(owner) or O(group) say otherwise.
  - "By hand: C(aws s3 cp s3://bucket/prefix/NAME/ID/NAME.tar.zst.gpg - | gpg -d | zstd -d |
    tar -x --numeric-owner -p -C DIR)."
options:
  state:
    description: Make an archive, or restore one.
    type: str
    choices: [archived, restored]
    default: archived
  name:
    description: Archive name (letters, digits, '.', '_', '-'); archives live under O(destination)/NAME/.
    type: str
    required: true
  path:
    description: Directory to archive (O(state=archived)); mutually exclusive with O(files).
    type: path
  files:
    description: Absolute paths of configuration files to archive (always encrypted).
    type: list
    elements: path
  exclude:
    description: Shell patterns (relative path or base name) left out of a directory archive.
    type: list
    elements: str
    default: []
  destination:
    description: C(s3://bucket/prefix) or an absolute directory holding the archives.
    type: str
    required: true
  compression:
    description: Compression of the tar stream.
    type: str
    choices: [zstd, gzip, none]
    default: zstd
  compression_level:
    description: Compression level (zstd 1-19, gzip 1-9).
    type: int
  encryption:
    default: gpg
  force:
    description: Write a new archive even when the tree has not changed.
    type: bool
    default: false
  run_record:
    description:
      - With O(state=archived), where to leave a record of this run (C(s3://bucket/prefix) reached with this
        module's endpoint and credentials, or an absolute directory), read by the catalog and the monitor
        (C(lifeboat_backup_status)). It writes C(last-run.json) after every run, C(last-success.json) after a
        successful one. A run that finds the tree unchanged is a successful run.
      - A record that cannot be written is a warning, not a failure. Empty writes none.
    type: str
    default: ""
  restore_to:
    description: Directory to extract into (O(state=restored)).
    type: path
  archive_id:
    description: Restore this archive instead of the newest one.
    type: str
  patterns:
    description: Only extract members whose archive path matches one of these patterns (e.g. C(*/face-sources/*)).
    type: list
    elements: str
    default: []
  file_mode:
    default: null
  dir_mode:
    default: null
  owner:
    description: Numeric uid for every extracted file (root only).
    type: int
  group:
    description: Numeric gid for every extracted file (root only).
    type: int
extends_documentation_fragment:
  - lifeboat_s3
  - lifeboat_encryption
  - lifeboat_decryption
  - lifeboat_file_modes
requirements: [boto3, zstandard, gpg or age]
author: Lifeboat
"""

EXAMPLES = r"""
- name: Archive the application's storage directory, encrypted to the backup key
  lifeboat_archive:
    name: storage
    path: /srv/app/storage
    exclude: ["*.tmp", "cache"]
    destination: s3://lifeboat-backups/files
    encryption_recipients: [/etc/lifeboat/backup.pub.asc]

- name: Back up configuration files (always encrypted)
  lifeboat_archive:
    name: config
    files: [/srv/app/.env, /etc/nginx/sites-enabled/app.conf]
    destination: s3://lifeboat-backups/files
    encryption_recipients: [/etc/lifeboat/backup.pub.asc]

- name: Restore only the face sources, files 0640
  lifeboat_archive:
    state: restored
    name: storage
    destination: s3://lifeboat-backups/files
    restore_to: /srv/restore
    patterns: ["*/face-sources/*"]
    file_mode: "0640"
    secret_key_file: /root/lifeboat-backup.sec.asc
"""

RETURN = r"""
archive_id:
  description: Identifier of the archive written, found unchanged, or restored.
  returned: always
  type: str
  sample: storage-20261122T020000Z
artifact:
  description: URI of the archive object.
  returned: state=archived
  type: str
  sample: s3://lifeboat-backups/files/storage/storage-20261122T020000Z/storage.tar.zst.gpg
manifest:
  description: The manifest (in check mode, the plan).
  returned: state=archived
  type: dict
  sample: {"files": 120, "bytes": 1048576, "artifact": {"sha256": "..."}}
files:
  description: Files archived (or extracted).
  returned: always
  type: int
  sample: 120
bytes:
  description: Bytes of the archived files.
  returned: state=archived
  type: int
  sample: 1048576
skipped:
  description: Members not matching O(patterns).
  returned: state=restored
  type: int
  sample: 0
paths:
  description: Up to 50 extracted paths.
  returned: state=restored
  type: list
  elements: str
  sample: ["storage/app/face-sources/u1/face.png"]
run_record_uri:
  description: Where the run record went (C(last-run.json)); null when it could not be written.
  returned: when O(run_record) is set, O(state=archived) and not in check mode
  type: str
  sample: s3://lifeboat-backups/runs/archive-uploads/last-run.json
duration_s:
  description: Wall-clock duration in seconds.
  returned: always
  type: float
  sample: 3.2
"""

from ansible.module_utils.lifeboat import manifest as mf  # noqa: E402
from ansible.module_utils.lifeboat import options, runrecord  # noqa: E402
from ansible.module_utils.lifeboat.archive import ArchiveSpec, create_archive, restore_archive  # noqa: E402
from ansible.module_utils.lifeboat.module import LifeboatModule  # noqa: E402


def argument_spec() -> dict:
    spec = dict(
        state=dict(type="str", default="archived", choices=["archived", "restored"]),
        name=dict(type="str", required=True),
        path=dict(type="path"),
        files=dict(type="list", elements="path"),
        exclude=dict(type="list", elements="str", default=[]),
        destination=dict(type="str", required=True),
        compression=dict(type="str", default="zstd", choices=["zstd", "gzip", "none"]),
        compression_level=dict(type="int"),
        force=dict(type="bool", default=False),
        run_record=dict(type="str", default=""),
        restore_to=dict(type="path"),
        archive_id=dict(type="str"),
        patterns=dict(type="list", elements="str", default=[]),
        owner=dict(type="int"),
        group=dict(type="int"),
    )
    spec.update(options.encryption_spec(default="gpg"))
    spec.update(options.decryption_spec())
    spec.update(options.file_modes_spec(file_mode=None, dir_mode=None))
    spec.update(options.s3_spec())
    return spec


def module_kwargs() -> dict:
    return dict(
        supports_check_mode=True,
        required_if=[("state", "archived", ["path", "files"], True), ("state", "restored", ["restore_to"])],
        mutually_exclusive=[("path", "files"), ("encryption_recipients", "encryption_passphrase"),
                            ("gpg_key_file", "gpg_homedir", "age_identity_file")],
        required_together=options.s3_together(),
    )


def main() -> None:
    module = LifeboatModule(argument_spec(), what="archive", **module_kwargs())
    p = module.params
    settings = options.s3_settings(p)
    started = mf.utcnow()

    def record(ok: bool, counts: dict, error: str | None) -> dict:
        if p["state"] != "archived" or not p["run_record"] or module.check_mode:
            return {}
        doc = runrecord.build("archive", p["name"], p["path"] or ", ".join(p["files"] or []), p["destination"], ok,
                              started, mf.utcnow(), counts.get("duration_s", 0.0), counts, error)
        uri, warning = runrecord.write_quietly(p["run_record"], settings, doc)
        if warning:
            module.warn(warning)
        return {"run_record_uri": uri}

    try:
        if p["state"] == "archived":
            spec = ArchiveSpec(
                name=p["name"], kind="files" if p["files"] else "directory", path=p["path"],
                files=p["files"] or [], exclude=p["exclude"], compression=p["compression"],
                compression_level=p["compression_level"],
                encryption=options.encryption(p))
            res = create_archive(spec, p["destination"], settings, check_mode=module.check_mode, force=p["force"])
            extra = record(True, {"files": res.files, "bytes": res.bytes, "written": int(res.changed),
                                  "duration_s": round(res.duration_s, 3)}, None)
            module.exit_json(changed=res.changed, archive_id=res.archive_id, artifact=res.artifact,
                             manifest=res.manifest, files=res.files, bytes=res.bytes,
                             duration_s=round(res.duration_s, 3), **extra)
        modes = options.file_modes(p)
        res = restore_archive(p["name"], p["destination"], p["restore_to"], settings, options.decryption(p),
                              archive_id=p["archive_id"], patterns=p["patterns"], owner=p["owner"],
                              group=p["group"], check_mode=module.check_mode, **modes)
        module.exit_json(changed=True, archive_id=res.archive_id, files=res.extracted,
                         skipped=res.skipped, paths=res.paths, duration_s=round(res.duration_s, 3))
    except Exception as exc:  # noqa: BLE001 - named by fail_error, with the run record of the failure
        module.fail_error(exc, **record(False, {}, str(exc)))


if __name__ == "__main__":
    main()
