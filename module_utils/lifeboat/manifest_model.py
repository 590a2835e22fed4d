"""The typed manifest model: what a backup set's or an archive's manifest says, read in one place.

Every reader of manifests (restore, verify, the catalog, retention, archives) takes one of these
instead of a dict:

- :class:`BackupManifest` (``lifeboat/backup-manifest/v1``): the database backup set: its artifact
  (:class:`Artifact`: key, size, sha256 of the stored bytes and of the dump), the table counts, the
  scope, compression and encryption, the hashes the drill compares, the roles file (:class:`RolesPart`)
  and, for the supabase profile, the platform part (:class:`SupabaseParts`);
- :class:`ArchiveManifest` (``lifeboat.archive/1``): a directory or configuration archive.

``parse(raw, where)`` is the one reader: JSON, the document's own checksum (``manifest_sha256``),
its schema, then the type of every field the engine reads. A manifest that fails is
:class:`DamagedManifest` (torn, checksum mismatch, a field of the wrong type: the message names the
key and the fix) or :class:`ForeignManifest` (another tool's file, or a newer Lifeboat's format).

Every manifest version Lifeboat has written reads: fields added later (``manifest_sha256``,
``database_properties``, ``roles``, ``privileges``, ``content_hashes``, ``schema_hash_cross_major``,
``supabase``) are optional and default to "not recorded". Only what every version wrote is required
(backup: ``backup_id``, ``started_at``, ``artifact.key``; archive: ``archive_id``, ``artifact.key``).
The document itself stays available as ``doc`` (module results return it as it is).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat.errors import IntegrityError

SCHEMA = "lifeboat/backup-manifest/v1"
ARCHIVE_SCHEMA = "lifeboat.archive/1"
SCHEMAS = (SCHEMA, ARCHIVE_SCHEMA)
CHECKSUM_FIELD = "manifest_sha256"
#: the fix every damaged-manifest message ends with
FIX = ("restore an intact copy of the manifest (an earlier object version, or the copy a bucket sync made), "
       "or choose another backup")


class DamagedManifest(IntegrityError):
    """A manifest that exists but is torn or damaged (invalid JSON, checksum mismatch, a field of the wrong type).

    ``reason`` is the cause alone (for lists of damaged sets); the message adds where and the fix."""

    reason: str = ""

    @classmethod
    def at(cls, where: str, reason: str) -> "DamagedManifest":
        err = cls(f"manifest {where} is damaged: {reason}; " + FIX)
        err.reason = reason
        return err


class ForeignManifest(DamagedManifest):
    """A JSON document that is not the manifest expected here (another tool's, another kind's, a newer format's)."""

    schema: Any = None

    @classmethod
    def of(cls, where: str, schema: Any, expected: tuple[str, ...]) -> "ForeignManifest":
        reason = foreign_reason(schema, expected)
        err = cls(f"manifest {where}: {reason}")
        err.reason, err.schema = reason, schema
        return err


def parse_time(value: str) -> _dt.datetime:
    """Parse an ISO 8601 time ('2026-11-20 12:00', '...Z', with offset); naive = UTC."""
    text = value.strip().replace("Z", "+00:00")
    when = _dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.astimezone(_dt.UTC)


def manifest_checksum(doc: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the manifest without its own checksum field."""
    body = {k: v for k, v in doc.items() if k != CHECKSUM_FIELD}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


# ------------------------------------------------------------------ typed parts

@dataclass(frozen=True)
class Part:
    """One stored object of a set, with the checksum and size of its stored bytes."""

    key: str
    uri: str | None = None
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Artifact(Part):
    """The set's main object; ``dump_*`` describe the dump before compression and encryption."""

    dump_size: int | None = None
    dump_sha256: str | None = None


@dataclass(frozen=True)
class TableRows:
    schema: str
    name: str
    rows: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class TableHash:
    schema: str
    name: str
    hash: str


@dataclass(frozen=True)
class ContentHashes:
    method: str | None = None
    tables: tuple[TableHash, ...] = ()
    duration_s: float | None = None


@dataclass(frozen=True)
class Scope:
    schema_only: bool = False
    data_only: bool = False
    include_tables: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()
    include_schemas: tuple[str, ...] = ()
    exclude_schemas: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """'' for a full backup, else ':schema-only', ':data-only' or ':partial' (one retention series each)."""
        if self.schema_only:
            return ":schema-only"
        if self.data_only:
            return ":data-only"
        if self.include_tables or self.exclude_tables or self.include_schemas or self.exclude_schemas:
            return ":partial"
        return ""


@dataclass(frozen=True)
class Compression:
    algorithm: str = "none"
    level: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class Encryption:
    method: str = "none"
    mode: str | None = None
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolesPart(Part):
    """The roles file beside the dump (``roles``); ``key`` is empty when none was stored (``skipped``)."""

    method: str | None = None
    names: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    note: str | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class PlatformData(Part):
    """The supabase profile's second dump: the platform tables holding user data, with their row counts."""

    tables: tuple[TableRows, ...] = ()


@dataclass(frozen=True)
class SupabaseParts:
    app_schemas: tuple[str, ...] = ()
    platform_tables: tuple[tuple[str, str], ...] = ()     # (schema, table), as the backup wrote them
    platform_data: PlatformData | None = None
    left_out: tuple[dict[str, Any], ...] = ()
    doc: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)   # the section as written


@dataclass(frozen=True)
class BackupManifest:
    """A database backup set (``lifeboat/backup-manifest/v1``)."""

    backup_id: str
    database: str | None
    started_at: _dt.datetime
    artifact: Artifact
    doc: dict[str, Any] = field(repr=False, compare=False)
    naming: str = "lifeboat"
    format: str = "custom"
    finished_at: _dt.datetime | None = None
    duration_s: float | None = None
    scope: Scope = Scope()
    compression: Compression = Compression()
    encryption: Encryption = Encryption()
    tables: tuple[TableRows, ...] = ()
    schema_hash: str | None = None
    schema_hash_cross_major: str | None = None
    server_version_num: int | None = None
    pg_dump_major: int | None = None
    privileges: dict[str, str] = field(default_factory=dict)
    content_hashes: ContentHashes = ContentHashes()
    database_properties: dict[str, Any] | None = None
    roles: RolesPart | None = None
    supabase: SupabaseParts | None = None
    checksum: str | None = None

    schema = SCHEMA

    @property
    def row_counts(self) -> dict[str, int]:
        """``{'schema.table': rows}`` as the manifest records them."""
        return {t.qualified: t.rows for t in self.tables}


@dataclass(frozen=True)
class ArchiveManifest:
    """A directory or configuration archive (``lifeboat.archive/1``)."""

    archive_id: str
    name: str | None
    artifact: Part
    doc: dict[str, Any] = field(repr=False, compare=False)
    created_at: _dt.datetime | None = None
    duration_s: float | None = None
    files: int | None = None
    bytes: int | None = None
    compression: Compression = Compression()
    encryption: Encryption = Encryption()
    tree_signature: str | None = None
    checksum: str | None = None

    schema = ARCHIVE_SCHEMA


# ------------------------------------------------------------------ the reader

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "an object"}


class _Fields:
    """Typed access to one JSON object of a manifest; every failure names the key (dotted) and the fix."""

    def __init__(self, data: Any, where: str, path: str = ""):
        self.where, self.path = where, path
        if not isinstance(data, dict):
            raise self._bad(path or "(document)", data, dict)
        self.data: dict[str, Any] = data

    def _bad(self, key: str, value: Any, want: type) -> DamagedManifest:
        got = type(value).__name__ if value is not None else "null"
        return DamagedManifest.at(self.where, f"key '{key}' is {_short(value)} ({got}), expected "
                                              f"{_TYPE_NAMES.get(want, want.__name__)} (edited, or damaged)")

    def _key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def missing(self, name: str) -> DamagedManifest:
        return DamagedManifest.at(self.where, f"key '{self._key(name)}' is missing (every Lifeboat manifest has it: "
                                              "edited, or damaged)")

    def get(self, name: str, want: type, required: bool = False) -> Any:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.missing(name)
            return None
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if want is int and isinstance(value, bool) or not isinstance(value, want):
            raise self._bad(self._key(name), value, want)
        if required and want is str and not value:
            raise self.missing(name)
        return value

    def text(self, name: str, required: bool = False, default: str | None = None) -> Any:
        value = self.get(name, str, required)
        return default if value is None else value

    def integer(self, name: str) -> int | None:
        return self.get(name, int)

    def number(self, name: str) -> float | None:
        return self.get(name, float)

    def flag(self, name: str) -> bool:
        return bool(self.get(name, bool))

    def strings(self, name: str) -> tuple[str, ...]:
        items = self.get(name, list) or []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self._bad(f"{self._key(name)}[{i}]", item, str)
        return tuple(items)

    def time(self, name: str, required: bool = False) -> _dt.datetime | None:
        value = self.text(name, required)
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError:
            raise DamagedManifest.at(self.where, f"key '{self._key(name)}' is {_short(value)}, not an ISO 8601 "
                                                 "time (edited, or damaged)") from None

    def sub(self, name: str, required: bool = False) -> "_Fields | None":
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.missing(name)
            return None
        return _Fields(value, self.where, self._key(name))

    def objects(self, name: str) -> list["_Fields"]:
        items = self.get(name, list) or []
        return [_Fields(item, self.where, f"{self._key(name)}[{i}]") for i, item in enumerate(items)]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _part_fields(f: _Fields) -> dict[str, Any]:
    return {"key": f.text("key", required=True), "uri": f.text("uri"), "size": f.integer("size"),
            "sha256": f.text("sha256")}


def _tables(f: _Fields, name: str) -> tuple[TableRows, ...]:
    out = []
    for t in f.objects(name):
        rows = t.get("rows", int, required=True)
        out.append(TableRows(t.text("schema", required=True), t.text("name", required=True), rows))
    return tuple(out)


def _compression(f: _Fields | None) -> Compression:
    if f is None:
        return Compression()
    # 'method' was never written by a backup, but a hand-made manifest may say so: read like the catalog did
    return Compression(f.text("algorithm") or f.text("method") or "none", f.integer("level"), f.integer("threads"))


def _encryption(f: _Fields | None) -> Encryption:
    if f is None:
        return Encryption()
    return Encryption(f.text("method") or "none", f.text("mode"), f.strings("recipients"))


def _roles(f: _Fields | None) -> RolesPart | None:
    if f is None:
        return None
    return RolesPart(key=f.text("key", default=""), uri=f.text("uri"), size=f.integer("size"),
                     sha256=f.text("sha256"), method=f.text("method"), names=f.strings("names"),
                     required=f.strings("required"), note=f.text("note"), skipped=f.text("skipped"))


def _supabase(f: _Fields | None) -> SupabaseParts | None:
    if f is None:
        return None
    data = f.sub("platform_data")
    platform = None if data is None else PlatformData(**_part_fields(data), tables=_tables(data, "tables"))
    left_out = tuple(item.data for item in f.objects("left_out"))
    pairs = []
    for i, item in enumerate(f.get("platform_tables", list) or []):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise DamagedManifest.at(f.where, f"key 'supabase.platform_tables[{i}]' is {_short(item)}, expected "
                                              "[schema, table] (edited, or damaged)")
        pairs.append((item[0], item[1]))
    return SupabaseParts(f.strings("app_schemas"), tuple(pairs), platform, left_out, f.data)


def _content_hashes(f: _Fields | None) -> ContentHashes:
    if f is None or not f.data:
        return ContentHashes()
    tables = tuple(TableHash(t.text("schema", required=True), t.text("name", required=True),
                             t.text("hash", required=True)) for t in f.objects("tables"))
    return ContentHashes(f.text("method"), tables, f.number("duration_s"))


def backup_manifest(doc: dict[str, Any], where: str) -> BackupManifest:
    """The typed view of a backup manifest document (its schema already checked); raises DamagedManifest."""
    f = _Fields(doc, where)
    art = f.sub("artifact", required=True)
    assert art is not None
    scope = f.sub("scope")
    privileges = f.get("privileges", dict) or {}
    for name, value in privileges.items():
        if not isinstance(value, str):
            raise f._bad(f"privileges.{name}", value, str)
    props = f.get("database_properties", dict)
    server, dump = f.sub("server"), f.sub("pg_dump")
    return BackupManifest(
        backup_id=f.text("backup_id", required=True), database=f.text("database"),
        started_at=f.time("started_at", required=True) or _dt.datetime.min, doc=doc,
        artifact=Artifact(**_part_fields(art), dump_size=art.integer("dump_size"),
                          dump_sha256=art.text("dump_sha256")),
        naming=f.text("naming", default="lifeboat"), format=f.text("format", default="custom"),
        finished_at=f.time("finished_at"), duration_s=f.number("duration_s"),
        scope=Scope() if scope is None else Scope(
            scope.flag("schema_only"), scope.flag("data_only"), scope.strings("include_tables"),
            scope.strings("exclude_tables"), scope.strings("include_schemas"), scope.strings("exclude_schemas")),
        compression=_compression(f.sub("compression")), encryption=_encryption(f.sub("encryption")),
        tables=_tables(f, "tables"), schema_hash=f.text("schema_hash"),
        schema_hash_cross_major=f.text("schema_hash_cross_major"),
        server_version_num=server.integer("version_num") if server else None,
        pg_dump_major=dump.integer("major") if dump else None,
        privileges=dict(privileges), content_hashes=_content_hashes(f.sub("content_hashes")),
        database_properties=props, roles=_roles(f.sub("roles")), supabase=_supabase(f.sub("supabase")),
        checksum=f.text(CHECKSUM_FIELD))


def archive_manifest(doc: dict[str, Any], where: str) -> ArchiveManifest:
    """The typed view of an archive manifest document (its schema already checked); raises DamagedManifest."""
    f = _Fields(doc, where)
    art = f.sub("artifact", required=True)
    assert art is not None
    return ArchiveManifest(
        archive_id=f.text("archive_id", required=True), name=f.text("name"), artifact=Part(**_part_fields(art)),
        doc=doc, created_at=f.time("created_at"), duration_s=f.number("duration_s"), files=f.integer("files"),
        bytes=f.integer("bytes"), compression=_compression(f.sub("compression")),
        encryption=_encryption(f.sub("encryption")), tree_signature=f.text("tree_signature"),
        checksum=f.text(CHECKSUM_FIELD))


def check(raw: bytes, schema: str | None = SCHEMA) -> tuple[dict[str, Any] | None, str | None]:
    """(document, None) when ``raw`` is sound JSON of ``schema`` (any Lifeboat manifest schema for None) whose
    checksum matches; (None or the document, reason) otherwise. A manifest written before checksums existed
    has no ``manifest_sha256`` and is accepted as it is."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return None, f"not valid JSON ({exc}): torn or damaged"
    if not isinstance(data, dict):
        return None, "not a JSON object: damaged"
    wanted = SCHEMAS if schema is None else (schema,)
    if data.get("schema") not in wanted:
        return data, f"schema {data.get('schema')!r}, expected {' or '.join(repr(s) for s in wanted)}"
    want = data.get(CHECKSUM_FIELD)
    if want is not None and want != manifest_checksum(data):
        return data, f"its manifest_sha256 {str(want)[:16]}... does not match its content: damaged"
    return data, None


def foreign_reason(schema: Any, expected: tuple[str, ...]) -> str:
    """Why a document of ``schema`` is not one of ``expected``, and what to do about it."""
    family = {SCHEMA: "lifeboat/backup-manifest/", ARCHIVE_SCHEMA: "lifeboat.archive/"}
    for want in expected:
        if isinstance(schema, str) and schema.startswith(family[want]) and schema != want:
            return (f"schema {schema!r} is a newer Lifeboat's format (this version reads {want!r}): upgrade "
                    "Lifeboat on this host to read it")
    if schema in SCHEMAS:
        return (f"schema {schema!r} is another kind of Lifeboat set than expected here ({' or '.join(expected)}): "
                "check the destination or prefix")
    return (f"schema {schema!r}, expected {' or '.join(repr(s) for s in expected)}: not a Lifeboat manifest "
            "(another tool's file?); move it out of the backup folders")


def parse(raw: bytes, where: str, schema: str | None = SCHEMA) -> BackupManifest | ArchiveManifest:
    """The one manifest reader: ``raw`` (the stored bytes) as a typed manifest of ``schema`` (either kind for
    None). Raises DamagedManifest (torn, checksum, a field of the wrong type) or ForeignManifest (schema)."""
    data, problem = check(raw, None)
    if data is None or (problem is not None and data.get("schema") in SCHEMAS):
        raise DamagedManifest.at(where, str(problem))
    expected = SCHEMAS if schema is None else (schema,)
    if data.get("schema") not in expected:
        raise ForeignManifest.of(where, data.get("schema"), expected)
    if data["schema"] == ARCHIVE_SCHEMA:
        return archive_manifest(data, where)
    return backup_manifest(data, where)
