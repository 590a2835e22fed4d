"""Documentation of the S3 endpoint and credential options (module_utils/lifeboat/options.py: s3_spec)."""


class ModuleDocFragment:
    # the module's own store (prefix s3_; the unprefixed names are aliases; AWS_* environment fallbacks)
    DOCUMENTATION = r"""
options:
  s3_endpoint:
    description:
      - URL of the S3-compatible endpoint (omit for AWS S3).
      - Falls back to the environment variables C(AWS_ENDPOINT_URL_S3) or C(AWS_ENDPOINT_URL).
    type: str
    aliases: [endpoint]
  s3_region:
    description:
      - Region of the bucket.
      - Falls back to the environment variables C(AWS_REGION) or C(AWS_DEFAULT_REGION).
    type: str
    aliases: [region]
  s3_access_key:
    description:
      - Access key id; with O(s3_secret_key). Omit both to use boto3's default credential chain
        (environment, O(s3_profile), instance role).
      - Falls back to the environment variable C(AWS_ACCESS_KEY_ID).
    type: str
    aliases: [access_key]
  s3_secret_key:
    description:
      - Secret access key. Never logged or returned.
      - Falls back to the environment variable C(AWS_SECRET_ACCESS_KEY).
    type: str
    aliases: [secret_key]
  s3_session_token:
    description:
      - Session token of temporary credentials (STS). Never logged or returned.
      - Falls back to the environment variable C(AWS_SESSION_TOKEN).
    type: str
    aliases: [session_token]
  s3_profile:
    description:
      - Named profile of the AWS shared configuration (C(~/.aws/config)).
      - Falls back to the environment variable C(AWS_PROFILE).
    type: str
    aliases: [profile]
  s3_validate_certs:
    description:
      - Verify the TLS certificate of the endpoint. Turn off only for a test endpoint with a
        self-signed certificate.
    type: bool
    default: true
    aliases: [validate_certs]
"""

    # the sides of a transfer (no aliases or fallbacks: boto3 reads the environment for each side)
    SOURCE = r"""
options:
  source_endpoint:
    description:
      - URL of the S3-compatible endpoint of the source (omit for AWS S3).
    type: str
  source_region:
    description:
      - Region of the bucket of the source.
    type: str
  source_access_key:
    description:
      - Access key id of the source; with O(source_secret_key). Omit both to use boto3's default credential chain
        (environment, O(source_profile), instance role).
    type: str
  source_secret_key:
    description:
      - Secret access key of the source. Never logged or returned.
    type: str
  source_session_token:
    description:
      - Session token of temporary credentials of the source (STS). Never logged or returned.
    type: str
  source_profile:
    description:
      - Named profile of the AWS shared configuration (C(~/.aws/config)) of the source.
    type: str
  source_validate_certs:
    description:
      - Verify the TLS certificate of the source endpoint. Turn off only for a test endpoint with a
        self-signed certificate.
    type: bool
    default: true
"""

    DESTINATION = r"""
options:
  destination_endpoint:
    description:
      - URL of the S3-compatible endpoint of the destination (omit for AWS S3).
    type: str
  destination_region:
    description:
      - Region of the bucket of the destination.
    type: str
  destination_access_key:
    description:
      - Access key id of the destination; with O(destination_secret_key). Omit both to use boto3's default
        credential chain (environment, O(destination_profile), instance role).
    type: str
  destination_secret_key:
    description:
      - Secret access key of the destination. Never logged or returned.
    type: str
  destination_session_token:
    description:
      - Session token of temporary credentials of the destination (STS). Never logged or returned.
    type: str
  destination_profile:
    description:
      - Named profile of the AWS shared configuration (C(~/.aws/config)) of the destination.
    type: str
  destination_validate_certs:
    description:
      - Verify the TLS certificate of the destination endpoint. Turn off only for a test endpoint with a
        self-signed certificate.
    type: bool
    default: true
"""

    BACKUP = r"""
options:
  backup_endpoint:
    description:
      - URL of the S3-compatible endpoint of the backup (omit for AWS S3).
    type: str
  backup_region:
    description:
      - Region of the bucket of the backup.
    type: str
  backup_access_key:
    description:
      - Access key id of the backup; with O(backup_secret_key). Omit both to use boto3's default credential chain
        (environment, O(backup_profile), instance role).
    type: str
  backup_secret_key:
    description:
      - Secret access key of the backup. Never logged or returned.
    type: str
  backup_session_token:
    description:
      - Session token of temporary credentials of the backup (STS). Never logged or returned.
    type: str
  backup_profile:
    description:
      - Named profile of the AWS shared configuration (C(~/.aws/config)) of the backup.
    type: str
  backup_validate_certs:
    description:
      - Verify the TLS certificate of the backup endpoint. Turn off only for a test endpoint with a
        self-signed certificate.
    type: bool
    default: true
"""
