"""What the backup role cannot read: the privilege pre-flight of a backup (issue 9).

pg_dump needs, for every object in its scope, the privileges listed below; a role that lacks one fails the dump
halfway (``permission denied for table x``), and before this check the row counts, which run in the same
snapshot, failed first and aborted the transaction that exported it, so that only pg_dump's secondary
``could not import the requested snapshot`` was shown. :func:`find_unreadable` finds all of them first, with
catalog queries any role may run (``has_table_privilege``, ``has_schema_privilege``, ``has_sequence_privilege``,
``pg_has_role``; no superuser needed), so that the backup (and its check mode) fails before dumping, naming each
object, the role and the fix: exclude it (the option and the pattern) or grant it (the statement).

What pg_dump reads or locks (PostgreSQL 15 to 18):

* every table in scope (plain and partitioned; the other kinds are never locked): ``LOCK TABLE ... IN ACCESS
  SHARE MODE``, even with ``--schema-only``, which needs SELECT, INSERT, UPDATE, DELETE or TRUNCATE; its data
  (``COPY ... TO stdout``) needs SELECT;
* every sequence in scope, and those owned by a dumped table (serial, identity): its value
  (``last_value, is_called``) needs SELECT, unless the dump has no data;
* the schema of each of those: USAGE (a qualified name in a schema without it is ``permission denied for
  schema``);
* row-level security: pg_dump runs with ``row_security = off`` and refuses a table whose policies would hide
  rows from the role (neither superuser, nor BYPASSRLS, nor the owner of a table without FORCE ROW LEVEL
  SECURITY): ``query would be affected by row-level security policy``;
* large objects, when the whole database is dumped with data: SELECT on each (``pg_read_all_data`` does not
  cover them), unless ``lo_compat_privileges`` is on;
* the configuration tables of extensions (``pg_extension.extconfig``), whose data the whole-database dump
  includes: SELECT.

The scope follows pg_dump's own rules (``pg_dump --table`` makes ``--schema``/``--exclude-schema`` irrelevant;
``--exclude-table`` always applies) with the same pattern matching as the row counts (:mod:`pgmeta`).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ansible.module_utils.lifeboat import pgmeta
from ansible.module_utils.lifeboat.errors import PermissionDenied

#: at most this many objects are listed one by one in a message (all of them are in the returned list)
MESSAGE_LIMIT = 25

_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class Unreadable:
    """One object the backup role cannot read or lock, and how to fix it."""

    #: schema, table, sequence, row-level security, large object, extension table
    kind: str
    schema: str
    #: the object's name in its schema ('' for a schema, the OID for a large object)
    name: str
    #: the role that lacks the privilege (the backup's login)
    role: str
    #: the object's owner (who may GRANT)
    owner: str
    #: what is missing, e.g. "SELECT" or "USAGE"
    missing: str
    #: the backup option and the pattern that leave it out, e.g. {"exclude_tables": "app.secrets"} (empty when
    #: no option can leave it out alone)
    exclude: dict[str, str] = field(default_factory=dict)
    #: the statement that gives the role what it lacks (run by the owner or a superuser)
    grant: str = ""

    @property
    def qualified(self) -> str:
        if self.kind == "schema":
            return self.schema
        if self.kind == "large object":
            return self.name
        return dump_pattern(self.schema, self.name)

    def fix(self) -> str:
        """One line: exclude it (option and pattern) or grant it (statement)."""
        parts = []
        if self.exclude:
            opt, pat = next(iter(self.exclude.items()))
            parts.append(f"exclude it: add '{pat}' to {opt}")
        if self.grant:
            parts.append(f"or grant it (as '{self.owner}' or a superuser): {self.grant}" if parts
                         else f"grant it (as '{self.owner}' or a superuser): {self.grant}")
        return "; ".join(parts)

    def describe(self) -> str:
        return f"{self.kind} {self.qualified} (owner '{self.owner}'): role '{self.role}' lacks {self.missing}; " \
               + self.fix()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fix"] = self.fix()
        return out


def dump_pattern(*parts: str) -> str:
    """A pg_dump / psql pattern that matches exactly this name: plain lower-case names as they are, any other
    name double-quoted (so that capitals, spaces, dots, ``*`` and ``?`` are literal)."""
    def one(name: str) -> str:
        return name if _PLAIN_NAME.fullmatch(name) else '"' + name.replace('"', '""') + '"'

    return ".".join(one(p) for p in parts)


def _matches_table(schema: str, name: str, patterns: list[str]) -> bool:
    for pat in patterns:
        sch, tab = pgmeta.split_pattern(pat)
        if (sch is None or pgmeta.match_pattern(schema, sch)) and pgmeta.match_pattern(name, tab):
            return True
    return False


def _matches_schema(schema: str, patterns: list[str]) -> bool:
    return any(pgmeta.match_pattern(schema, pgmeta.split_pattern(p)[1]) for p in patterns)


RELATIONS_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text, pg_catalog.pg_get_userbyid(c.relowner),
       pg_catalog.quote_ident(n.nspname), pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
       pg_catalog.has_schema_privilege(n.oid, 'USAGE'),
       CASE WHEN c.relkind = 'S' THEN pg_catalog.has_sequence_privilege(c.oid, 'SELECT')
            ELSE pg_catalog.has_table_privilege(c.oid, 'SELECT') END,
       c.relkind = 'S' OR pg_catalog.has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE'),
       c.relrowsecurity, c.relforcerowsecurity, pg_catalog.pg_has_role(c.relowner, 'USAGE'),
       (SELECT d.refobjid FROM pg_catalog.pg_depend d
         WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
           AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1),
       EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE c.oid = ANY(e.extconfig)),
       EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'S')
   AND n.nspname <> ALL(%s)
   AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast%%'
 ORDER BY 2, 3
"""

LARGE_OBJECTS_SQL = """
SELECT l.oid, pg_catalog.pg_get_userbyid(l.lomowner)
  FROM pg_catalog.pg_largeobject_metadata l
 WHERE NOT pg_catalog.pg_has_role(l.lomowner, 'USAGE')
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.aclexplode(l.lomacl) a
                    WHERE a.privilege_type = 'SELECT'
                      AND (a.grantee = 0 OR pg_catalog.pg_has_role(a.grantee, 'USAGE')))
 ORDER BY 1
"""


def find_unreadable(conn: Any, *, include_schemas: list[str] | None = None,
                    exclude_schemas: list[str] | None = None, include_tables: list[str] | None = None,
                    exclude_tables: list[str] | None = None, schema_only: bool = False,
                    data_only: bool = False) -> list[Unreadable]:
    """Every object in a pg_dump's scope (these filters, as pg_dump takes them) that the connected role cannot
    read or lock, with the fix; an empty list when the dump can read everything.

    Catalog queries only: it may run in the snapshot's own read-only transaction before the snapshot is
    exported, and never raises a permission error itself.
    """
    include_schemas = list(include_schemas or [])
    exclude_schemas = list(exclude_schemas or [])
    include_tables = list(include_tables or [])
    exclude_tables = list(exclude_tables or [])
    with_data = not schema_only
    role, superuser, bypassrls, lo_compat = conn.execute(
        "SELECT current_user, r.rolsuper, r.rolbypassrls, "
        "pg_catalog.current_setting('lo_compat_privileges')::bool "
        "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user").fetchone()
    if superuser:
        return []
    whole_database = not include_tables and not include_schemas

    def selected(schema: str, name: str) -> bool:
        if include_tables:
            ok = _matches_table(schema, name, include_tables)   # -n / -N do not apply with -t
        else:
            ok = ((not include_schemas or _matches_schema(schema, include_schemas))
                  and not (exclude_schemas and _matches_schema(schema, exclude_schemas)))
        return ok and not (exclude_tables and _matches_table(schema, name, exclude_tables))

    rows = conn.execute(RELATIONS_SQL, (list(pgmeta.SYSTEM_SCHEMAS),)).fetchall()
    dumped: dict[int, tuple] = {}
    for row in rows:
        oid, schema, name, kind = row[0], row[1], row[2], row[3]
        ext_config, ext_member = row[14], row[15]
        if ext_member:
            # an extension's own tables are recreated by CREATE EXTENSION; only the data of its configuration
            # tables is dumped, and only with the whole database
            if ext_config and kind != "S" and whole_database and with_data \
                    and not (exclude_tables and _matches_table(schema, name, exclude_tables)):
                dumped[oid] = row
            continue
        if selected(schema, name):
            dumped[oid] = row
    # a dumped table's own sequences (serial, identity) are dumped with it, whatever the patterns say
    for row in rows:
        if row[3] == "S" and row[0] not in dumped and row[13] in dumped and not row[15]:
            dumped[row[0]] = row

    found: list[Unreadable] = []
    schemas_done: set[str] = set()
    for row in sorted(dumped.values(), key=lambda r: (r[1], r[2])):
        (_oid, schema, name, kind, owner, q_schema, q_name, usage, can_select, can_lock,
         rls, force_rls, is_owner, _owner_table, ext_config, _ext_member) = row
        needs = kind != "S" or with_data   # a sequence is read only for its value (data)
        if not needs:
            continue
        if not usage and schema not in schemas_done:
            schemas_done.add(schema)
            schema_owner = conn.execute(
                "SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace WHERE nspname = %s",
                (schema,)).fetchone()[0]
            exclude = {"exclude_schemas": dump_pattern(schema)} if not include_tables else {}
            if include_tables:
                exclude = {"exclude_tables": dump_pattern(schema) + ".*"}
            found.append(Unreadable("schema", schema, "", role, schema_owner, "USAGE", exclude,
                                    f"GRANT USAGE ON SCHEMA {q_schema} TO {_quote_role(role)};"))
        pattern = {"exclude_tables": dump_pattern(schema, name)}
        label = "sequence" if kind == "S" else ("extension table" if ext_config and _ext_member else "table")
        if kind == "S":
            if not can_select:
                found.append(Unreadable(label, schema, name, role, owner, "SELECT", pattern,
                                        f"GRANT SELECT ON SEQUENCE {q_name} TO {_quote_role(role)};"))
            continue
        if with_data and not can_select:
            found.append(Unreadable(label, schema, name, role, owner, "SELECT", pattern,
                                    f"GRANT SELECT ON TABLE {q_name} TO {_quote_role(role)};"))
        elif not with_data and not can_lock:
            found.append(Unreadable(label, schema, name, role, owner, "SELECT (LOCK TABLE ... IN ACCESS SHARE MODE)",
                                    pattern, f"GRANT SELECT ON TABLE {q_name} TO {_quote_role(role)};"))
        if with_data and rls and not bypassrls and (force_rls or not is_owner):
            found.append(Unreadable(
                "row-level security", schema, name, role, owner,
                "BYPASSRLS (pg_dump reads with row_security off and refuses a table whose row-level security "
                "policies would hide rows from the role; pg_read_all_data does not bypass them"
                + (", and FORCE ROW LEVEL SECURITY applies them to the owner too)" if force_rls else ")"),
                pattern, f"ALTER ROLE {_quote_role(role)} BYPASSRLS;"))
    if whole_database and with_data and not lo_compat:
        for oid, owner in conn.execute(LARGE_OBJECTS_SQL).fetchall():
            found.append(Unreadable("large object", "", str(oid), role, owner,
                                    "SELECT (pg_read_all_data does not cover large objects)", {},
                                    f"GRANT SELECT ON LARGE OBJECT {oid} TO {_quote_role(role)};"))
    return found


def _quote_role(role: str) -> str:
    return role if _PLAIN_NAME.fullmatch(role) else '"' + role.replace('"', '""') + '"'


def message(items: list[Unreadable], database: str, where: str) -> str:
    """The error text naming every object (up to :data:`MESSAGE_LIMIT`) with its fix."""
    role = items[0].role if items else "?"
    head = (f"the backup role '{role}' cannot read {len(items)} object(s) of database '{database}' at {where} "
            "that the dump includes (pg_dump would fail on the first): ")
    lines = [f"[{i}] {it.describe()}" for i, it in enumerate(items[:MESSAGE_LIMIT], 1)]
    if len(items) > MESSAGE_LIMIT:
        lines.append(f"... and {len(items) - MESSAGE_LIMIT} more")
    tail = (" -- exclude_tables / exclude_schemas are the lifeboat_pg_backup options (the item's keys in "
            "lifeboat_databases for playbooks/backup.yml); what is excluded is not in the backup")
    if any(it.kind == "large object" for it in items):
        tail += ("; large objects are left out only when the dump is limited to schemas or tables "
                 "(include_schemas / include_tables)")
    return head + " ".join(lines) + tail


def check(conn: Any, database: str, where: str, **scope: Any) -> list[Unreadable]:
    """:func:`find_unreadable`, raising :class:`PermissionDenied` (option ``exclude_tables`` or
    ``exclude_schemas``, and the list in ``partial['unreadable']``) when anything is unreadable."""
    items = find_unreadable(conn, **scope)
    if items:
        option = "exclude_schemas" if any("exclude_schemas" in it.exclude for it in items) else "exclude_tables"
        raise PermissionDenied(message(items, database, where), option).with_partial(
            {"unreadable": [it.as_dict() for it in items]})
    return items
