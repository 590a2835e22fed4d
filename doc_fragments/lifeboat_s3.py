"""Documentation of the S3 endpoint and credential options (module_utils/lifeboat/options.py: s3_spec).

One text per option, for every store a module names: its own (``s3_``: the unprefixed names are aliases, the
``AWS_*`` variables fallbacks), the sides of a transfer (``source_``, ``destination_``, ``backup_``: no
aliases or fallbacks, boto3 reads the environment itself for each side) and the stores of a list of targets
(``targets[]``: lifeboat_catalog and lifeboat_backup_status, the suboptions besides catalog.target_options()).
"""
import yaml

# (option, description with {of} = " of the source"..., type, environment fallbacks of the module's own store)
_FIELDS = (
    ("endpoint", ["URL of the S3-compatible endpoint{of} (omit for AWS S3)."], "str",
     ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]),
    ("region", ["Region of the bucket{of}."], "str", ["AWS_REGION", "AWS_DEFAULT_REGION"]),
    ("access_key", ["Access key id{of}; with O({ref}secret_key). Omit both to use boto3's default credential "
                    "chain (environment, O({ref}profile), instance role)."], "str", ["AWS_ACCESS_KEY_ID"]),
    ("secret_key", ["Secret access key{of}. Never logged or returned."], "str", ["AWS_SECRET_ACCESS_KEY"]),
    ("session_token", ["Session token of temporary credentials{of} (STS). Never logged or returned."], "str",
     ["AWS_SESSION_TOKEN"]),
    ("profile", ["Named profile of the AWS shared configuration (C(~/.aws/config)){of}."], "str", ["AWS_PROFILE"]),
    ("validate_certs", ["Verify the TLS certificate of the endpoint{of}. Turn off only for a test endpoint with a "
                        "self-signed certificate."], "bool", []),
)


def _options(prefix: str, whose: str = "", ref: str = "", own: bool = False) -> dict:
    """The S3 options of one store: names ``<prefix><field>``, texts naming ``whose`` store."""
    ref = ref or prefix
    out = {}
    for field, lines, kind, env in _FIELDS:
        fill = {"of": f" of {whose}" if whose else "", "ref": ref}
        description = [line.format(**fill) for line in lines]
        if own and env:
            names = " or ".join(f"C({v})" for v in env)
            description.append(f"Falls back to the environment variable{'s' if len(env) > 1 else ''} {names}.")
        opt = {"description": description, "type": kind}
        if kind == "bool":
            opt["default"] = True
        if own:
            opt["aliases"] = [field]
        out[prefix + field] = opt
    return out


_TARGETS = yaml.safe_load(r"""
description:
  - The places to read. Each is a backup root (O(targets[].kind=database)), an archive root
    (C(archive)) or a bucket mirror (C(sync)), with the credentials to read it.
  - Secrets (O(targets[].secret_key), O(targets[].session_token)) are never logged or returned.
type: list
elements: dict
required: true
suboptions:
  name:
    description: Name of the target in the output, the metrics (label C(target)) and the alerts; unique.
    type: str
    required: true
  kind:
    description:
      - C(database) lists the backup sets of a backup root (and the older procedure's dumps at its root).
      - C(archive) lists the archives of one name in an archive root and reads the archive job's run record.
      - C(sync) reads the run record of a bucket sync job.
    type: str
    default: database
    choices: [database, archive, sync]
  destination:
    description: C(s3://bucket/prefix) or an absolute directory; required for C(database) and C(archive).
    type: str
    default: ""
  database:
    description: Only this database's backups (C(database) targets); omit for every database under the root.
    type: str
  archive:
    description: The archive name (C(archive) targets); default the target's name.
    type: str
  run_record:
    description: The location the job's C(run_record) option writes to (C(archive), C(sync) targets).
    type: str
    default: ""
  include_legacy:
    description: List the older procedure's C(db-backup-*.sql.gz) and C(backup_*.sql.gz) dumps found at the root.
    type: bool
    default: true
  max_age_hours:
    description: This target's freshness limit in hours (lifeboat_backup_status); omit for the module's.
    type: float
""")
_TARGETS["suboptions"].update(_options("", "the target's store", ref="targets[]."))


def _doc(options: dict) -> str:
    return yaml.safe_dump({"options": options}, sort_keys=False, width=120)


class ModuleDocFragment:
    # the module's own store
    DOCUMENTATION = _doc(_options("s3_", own=True))
    # the sides of a transfer
    SOURCE = _doc(_options("source_", "the source"))
    DESTINATION = _doc(_options("destination_", "the destination"))
    BACKUP = _doc(_options("backup_", "the backup"))
    # lifeboat_catalog and lifeboat_backup_status: the whole targets option (its S3 suboptions from above)
    TARGETS = _doc({"targets": _TARGETS})
