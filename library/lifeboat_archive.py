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
    description: C(gpg) (public keys in O(encryption_recipients) or O(encryption_passphrase)), C(age), or C(none).
    type: str
    choices: [gpg, age, none]
    default: gpg
  encryption_recipients:
    description: gpg public key files, or age recipients ("age1...") / recipients files.
    type: list
    elements: str
    default: []
  encryption_passphrase:
    description: Symmetric gpg passphrase (passed to gpg through a file descriptor). Never logged or returned.
    type: str
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
    description: Mode for every extracted file instead of the archived one (e.g. C("0640")).
    type: str
  dir_mode:
    description: Mode for every extracted directory instead of the archived one.
    type: str
  owner:
    description: Numeric uid for every extracted file (root only).
    type: int
  group:
    description: Numeric gid for every extracted file (root only).
    type: int
  secret_key_file:
    description: ASCII-armored gpg secret key that decrypts the archive (imported into a private, temporary home).
    type: path
  gpg_homedir:
    description: Existing gpg home directory holding the decryption key.
    type: path
  decryption_passphrase:
    description: Passphrase of a symmetric gpg archive. Never logged or returned.
    type: str
  identity_file:
    description: age identity file that decrypts the archive.
    type: path
  endpoint:
    description: URL of the S3-compatible endpoint (omit for AWS S3).
    type: str
  region:
    description: Region of the bucket.
    type: str
  access_key:
    description: Access key id; with O(secret_key).
    type: str
  secret_key:
    description: Secret access key. Never logged or returned.
    type: str
  session_token:
    description: Session token for temporary credentials. Never logged or returned.
    type: str
  profile:
    description: Named AWS profile.
    type: str
  validate_certs:
    description: Verify the endpoint's TLS certificate.
    type: bool
    default: true
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

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.lifeboat import manifest as mf  # noqa: E402
from ansible.module_utils.lifeboat import runrecord  # noqa: E402
from ansible.module_utils.lifeboat.archive import ArchiveSpec, create_archive, restore_archive  # noqa: E402
from ansible.module_utils.lifeboat.crypto import DecryptionSpec, EncryptionSpec  # noqa: E402
from ansible.module_utils.lifeboat.errors import LifeboatError  # noqa: E402
from ansible.module_utils.lifeboat.s3args import endpoint_spec, endpoint_together, settings_from  # noqa: E402


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
        encryption=dict(type="str", default="gpg", choices=["gpg", "age", "none"]),
        encryption_recipients=dict(type="list", elements="str", default=[]),
        encryption_passphrase=dict(type="str", no_log=True),
        force=dict(type="bool", default=False),
        run_record=dict(type="str", default=""),
        restore_to=dict(type="path"),
        archive_id=dict(type="str"),
        patterns=dict(type="list", elements="str", default=[]),
        file_mode=dict(type="str"),
        dir_mode=dict(type="str"),
        owner=dict(type="int"),
        group=dict(type="int"),
        secret_key_file=dict(type="path", no_log=False),
        gpg_homedir=dict(type="path"),
        decryption_passphrase=dict(type="str", no_log=True),
        identity_file=dict(type="path"),
    )
    spec.update(endpoint_spec(""))
    return spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("state", "archived", ["path", "files"], True), ("state", "restored", ["restore_to"])],
        mutually_exclusive=[("path", "files"), ("encryption_recipients", "encryption_passphrase"),
                            ("secret_key_file", "gpg_homedir", "identity_file")],
        required_together=endpoint_together(""),
    )
    p = module.params
    settings = settings_from(p, "")
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
                encryption=EncryptionSpec(method=p["encryption"], recipients=p["encryption_recipients"],
                                          passphrase=p["encryption_passphrase"]))
            res = create_archive(spec, p["destination"], settings, check_mode=module.check_mode, force=p["force"])
            extra = record(True, {"files": res.files, "bytes": res.bytes, "written": int(res.changed),
                                  "duration_s": round(res.duration_s, 3)}, None)
            module.exit_json(changed=res.changed, archive_id=res.archive_id, artifact=res.artifact,
                             manifest=res.manifest, files=res.files, bytes=res.bytes,
                             duration_s=round(res.duration_s, 3), **extra)
        modes = {}
        for opt in ("file_mode", "dir_mode"):
            if p[opt] is not None:
                try:
                    modes[opt] = int(str(p[opt]), 8)
                except ValueError:
                    module.fail_json(msg=f"{opt}: '{p[opt]}' is not an octal mode such as \"0640\"")
        method = "age" if p["identity_file"] else ("gpg" if (p["secret_key_file"] or p["gpg_homedir"]
                                                          or p["decryption_passphrase"]) else "none")
        dec = DecryptionSpec(method=method, secret_key_file=p["secret_key_file"], gpg_homedir=p["gpg_homedir"],
                             passphrase=p["decryption_passphrase"], identity_file=p["identity_file"])
        res = restore_archive(p["name"], p["destination"], p["restore_to"], settings, dec,
                              archive_id=p["archive_id"], patterns=p["patterns"], owner=p["owner"],
                              group=p["group"], check_mode=module.check_mode, **modes)
        module.exit_json(changed=True, archive_id=res.archive_id, files=res.extracted,
                         skipped=res.skipped, paths=res.paths, duration_s=round(res.duration_s, 3))
    except LifeboatError as exc:
        module.fail_json(msg=str(exc), **record(False, {}, str(exc)))


if __name__ == "__main__":
    main()
