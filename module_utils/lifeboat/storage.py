"""The storage layer: one interface over the places data lives, an S3 prefix or a local directory.

* ``storage_api``: the interface (``Storage``, ``Entry``, ``Writer``, ``OpenUpload``) and S3 ETag arithmetic;
* ``storage_s3.S3Storage``: an S3 prefix; ``storage_local.LocalStorage``: a directory;
  ``memstore.MemoryStorage``: in memory (unit tests, dry runs);
* here: ``open_storage`` (a location to its store) and ``stock_fetch_command``.

Keys are relative to the store's root and always use '/'. Writers stream; ``abort()`` leaves nothing that looks
like a complete object; an ``exclusive`` writer never replaces an object (``AlreadyExists``).
``open_uploads()`` lists what writers began and never committed and ``abort_upload()`` removes one.
``get_json()`` reads a small JSON document (manifests, records), None when it is missing or unreadable.
"""
from __future__ import annotations

import shlex

from ansible.module_utils.lifeboat.errors import ConfigError
from ansible.module_utils.lifeboat.s3 import S3Settings, parse_s3_url
from ansible.module_utils.lifeboat.storage_api import (  # noqa: F401 - the storage layer's names, in one place
    MIB,
    MIN_PART_SIZE,
    Entry,
    ObjectInfo,
    OpenUpload,
    Storage,
    Writer,
)
from ansible.module_utils.lifeboat.storage_local import LocalStorage  # noqa: F401
from ansible.module_utils.lifeboat.storage_s3 import S3Storage  # noqa: F401


def open_storage(destination: str, settings: S3Settings | None = None, part_size: int = 16 * MIB) -> Storage:
    """``s3://bucket/prefix`` -> S3Storage; an absolute path -> LocalStorage."""
    if destination.startswith("s3://"):
        return S3Storage(parse_s3_url(destination), settings or S3Settings(), part_size=part_size)
    if "://" in destination:
        raise ConfigError(f"destination: unsupported scheme in '{destination}' (use s3://bucket/prefix or an "
                          "absolute directory)", "destination")
    return LocalStorage(destination)


def stock_fetch_command(storage: Storage, key: str) -> str:
    """The stock-tool command that writes a stored object to stdout, runnable as pasted on any S3-compatible
    store: ``aws --endpoint-url ... --region ... s3 cp s3://... -`` (credentials from the environment), or
    ``cat <path>`` for a local store. Every recorded restore command starts with it."""
    if isinstance(storage, S3Storage):
        opts = ""
        if storage.settings.endpoint:
            opts += f" --endpoint-url {shlex.quote(storage.settings.endpoint)}"
        if storage.settings.region:
            opts += f" --region {shlex.quote(storage.settings.region)}"
        return f"aws{opts} s3 cp {shlex.quote(storage.uri(key))} -"
    return f"cat {shlex.quote(storage.uri(key))}"
