"""The plan of a Supabase restore (restore/supabase.py): the archives' entries sorted into the one
transaction's order, and the SQL that transaction runs around them (objects moved aside, foreign keys and
counts checked). No database connection here.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ansible.module_utils.lifeboat.errors import ConfigError, RestoreError
from ansible.module_utils.lifeboat.pgmeta import GUC_LIST_QUOTE, split_guc_list

# The platform tables that hold the users' data (supabase/auth and supabase/storage migrations).
PLATFORM_TABLES = (
    ("auth", "users"), ("auth", "identities"), ("auth", "mfa_factors"), ("auth", "one_time_tokens"),
    ("auth", "sessions"), ("auth", "refresh_tokens"), ("auth", "audit_log_entries"),
    ("storage", "buckets"), ("storage", "objects"),
)

_DATA = {"TABLE DATA", "SEQUENCE SET", "BLOBS", "BLOB DATA", "LARGE OBJECT DATA"}
_POST = {"INDEX", "CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "RULE", "POLICY", "ROW SECURITY",
         "INDEX ATTACH", "MATERIALIZED VIEW DATA", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
         "STATISTICS", "EVENT TRIGGER", "DEFAULT"}
_LAST = {"ACL", "COMMENT", "SECURITY LABEL", "DEFAULT ACL"}
# Longest first: "TABLE DATA" before "TABLE", "FK CONSTRAINT" before "CONSTRAINT".
_TYPES = sorted(_DATA | _POST | _LAST | {
    "TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "SEQUENCE OWNED BY", "FUNCTION", "PROCEDURE",
    "AGGREGATE", "TYPE", "DOMAIN", "SCHEMA", "EXTENSION", "COLLATION", "CONVERSION", "OPERATOR",
    "OPERATOR CLASS", "OPERATOR FAMILY", "CAST", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
    "FOREIGN TABLE", "SERVER", "USER MAPPING", "PUBLICATION", "SUBSCRIPTION", "SHELL TYPE", "PROCEDURAL LANGUAGE",
    "FOREIGN DATA WRAPPER", "TRANSFORM", "ACCESS METHOD", "DATABASE", "DATABASE PROPERTIES", "ENCODING",
    "STDSTRINGS", "SEARCHPATH", "ROW SECURITY", "LARGE OBJECT",
}, key=len, reverse=True)
_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


@dataclass
class Entry:
    """One line of ``pg_restore -l``: ``<id>; <tableoid> <oid> <TYPE> <namespace> <tag> <owner>``."""

    line: str
    type: str
    rest: str          # "<namespace> <tag> <owner>" as printed (names are not quoted there)
    archive: str = ""  # the archive file it is in
    replace: bool = False  # a FUNCTION created with CREATE OR REPLACE (the live one is kept, same OID)

    def in_schema(self, schema: str) -> bool:
        return self.rest.startswith(schema + " ")

    def tag_after(self, schema: str) -> str:
        return self.rest[len(schema) + 1:]


def parse_toc(text: str, archive: str = "") -> list[Entry]:
    out = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue  # comments and headers
        body = m.group(4)
        kind = next((t for t in _TYPES if body.startswith(t + " ")), None)
        if kind is None:
            raise RestoreError(f"supabase restore: pg_restore listed an entry of a kind Lifeboat does not know: "
                               f"{raw!r}; report it", "backup")
        out.append(Entry(raw, kind, body[len(kind) + 1:], archive))
    return out


@dataclass
class Scope:
    """What the backup holds: the application schemas (schema and data) and the platform tables (data)."""

    app_schemas: list[str]
    platform_tables: list[tuple[str, str]] = field(default_factory=lambda: list(PLATFORM_TABLES))

    def platform_schemas(self) -> list[str]:
        return sorted({s for s, _ in self.platform_tables})

    def check(self) -> None:
        if not self.app_schemas:
            raise ConfigError("supabase restore: the backup names no application schema", "app_schemas")
        clash = sorted(set(self.app_schemas) & set(self.platform_schemas()))
        if clash:
            raise ConfigError(f"supabase restore: {', '.join(clash)} is both an application schema and a "
                              "platform schema", "app_schemas")


@dataclass
class Plan:
    """The archive's entries in the order the one transaction runs them."""

    app_pre: list[Entry]
    platform_data: list[Entry]
    app_data: list[Entry]
    app_post: list[Entry]
    platform_extras: list[Entry]   # the user's triggers/policies on platform tables (and their comments)
    app_last: list[Entry]          # grants, comments, default privileges of the application schemas
    created_schemas: list[str]     # application schemas the archive creates itself (CREATE SCHEMA)
    left_out: list[str]            # entries neither part (platform objects the project already has)
    skipped: list[str] = field(default_factory=list)  # application entries the target keeps its own of

    def phases(self) -> list[list[Entry]]:
        return [self.app_pre, self.platform_data, self.app_data, self.app_post, self.platform_extras,
                self.app_last]


def app_schema_of(entry: Entry, schemas: list[str]) -> str | None:
    for s in sorted(schemas, key=len, reverse=True):
        if entry.in_schema(s):
            return s
        if entry.type == "SCHEMA" and entry.rest.startswith(f"- {s} "):
            return s
        if entry.type in _LAST and entry.rest.startswith(f"- SCHEMA {s} "):
            return s
    return None


def platform_table_of(entry: Entry, tables: list[tuple[str, str]]) -> tuple[str, str] | None:
    for schema, table in sorted(tables, key=lambda t: (len(t[0]), len(t[1])), reverse=True):
        if entry.in_schema(schema):
            tag = entry.tag_after(schema)
            if tag.startswith(table + " "):
                return schema, table
    return None


def held_tables(entries: list[Entry], scope: Scope) -> set[tuple[str, str]]:
    """The platform tables of ``scope`` whose rows the archives hold (a table the backup does not have is never
    emptied by an in-place restore)."""
    out = set()
    for e in entries:
        table = platform_table_of(e, scope.platform_tables)
        if table is not None and e.type == "TABLE DATA":
            out.add(table)
    return out


def plan(entries: list[Entry], scope: Scope, existing_schemas: set[str] | frozenset[str] = frozenset(),
         actors: set[str] | None = None, foreign_schemas: set[str] | frozenset[str] = frozenset()) -> Plan:
    """``existing_schemas``: the target's schemas (their CREATE SCHEMA is skipped); ``actors``: the roles the
    login may act as (default privileges of other roles are the platform's and are skipped); ``foreign_schemas``:
    existing application schemas the login does not own (Supabase's ``public``: their comment and grants stay)."""
    scope.check()
    p = Plan([], [], [], [], [], [], [], [], [])
    for e in entries:
        schema = app_schema_of(e, scope.app_schemas)
        if schema is not None:
            if e.type == "SCHEMA":
                p.created_schemas.append(schema)
                if schema in existing_schemas:
                    p.skipped.append(f"schema {schema}: the project's own is kept (owner, grants, default "
                                     "privileges); its objects are restored into it")
                    continue
            if schema in foreign_schemas and e.type in _LAST and e.rest.startswith(f"- SCHEMA {schema} "):
                p.skipped.append(f"{e.type.lower()} on schema {schema}: the schema is the platform's (its owner is "
                                 "not the login); the project keeps its own")
                continue
            if e.type == "DEFAULT ACL" and actors is not None and e.rest.rsplit(" ", 1)[-1] not in actors:
                p.skipped.append(f"default privileges of role {e.rest.rsplit(' ', 1)[-1]} in schema {schema}: "
                                 "the platform's (the login cannot set them); the project keeps its own")
                continue
            if e.type in _DATA:
                p.app_data.append(e)
            elif e.type in _POST:
                p.app_post.append(e)
            elif e.type in _LAST:
                p.app_last.append(e)
            else:
                p.app_pre.append(e)
            continue
        table = platform_table_of(e, scope.platform_tables)
        if table is not None and e.type in ("TABLE DATA",):
            p.platform_data.append(e)
        elif table is not None and e.type in ("TRIGGER", "POLICY"):  # RLS on them is the platform's
            p.platform_extras.append(e)
        elif e.type == "SEQUENCE SET" and any(e.in_schema(s) for s in scope.platform_schemas()):
            p.platform_data.append(e)
        else:
            p.left_out.append(e.line)
    # The schemas and their grants first: a non-superuser may only give an object to a role that can create in
    # its schema (ALTER ... OWNER TO checks CREATE), so the schema's grants cannot wait for the other ACLs.
    schema_acls = [e for e in p.app_last if e.type == "ACL" and e.rest.startswith("- SCHEMA ")]
    p.app_last = [e for e in p.app_last if e not in schema_acls]
    p.app_pre = [e for e in p.app_pre if e.type == "SCHEMA"] + schema_acls + [
        e for e in p.app_pre if e.type != "SCHEMA"]
    return p


def lit(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on in every supported server)."""
    return "'" + value.replace("'", "''") + "'"


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fk_check_sql(schemas: list[str], tables: list[tuple[str, str]], skip_child_schemas: list[str] | None = None) -> str:
    """A DO block: every foreign key from or to a table of ``schemas`` or one of ``tables`` is checked by an
    anti-join; any violation aborts the transaction naming the constraint, the tables and how many rows.
    ``skip_child_schemas``: foreign keys of those schemas' tables are left out (added, hence checked, just before)."""
    skip = "ARRAY[" + ", ".join(lit(s) for s in skip_child_schemas or []) + "]::text[]"
    schema_arr = "ARRAY[" + ", ".join(lit(s) for s in schemas) + "]::text[]" if schemas else "ARRAY[]::text[]"
    pairs = ", ".join(f"({lit(s)}, {lit(t)})" for s, t in tables) or "(NULL, NULL)"
    # every name below is a literal made by lit(); the block builds its queries with format('%I')
    return f"""DO $lifeboat_fk$
DECLARE r record; n bigint; bad text := '';
BEGIN
  FOR r IN
    SELECT k.conname, format('%I.%I', cn.nspname, c.relname) AS child, format('%I.%I', pn.nspname, p.relname) AS parent,
           (SELECT string_agg(format('c.%I IS NOT NULL', a.attname), ' AND ' ORDER BY u.o)
              FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
              JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n) AS notnull,
           (SELECT string_agg(format('p.%I = c.%I', pa.attname, ca.attname), ' AND ' ORDER BY u.o)
              FROM unnest(k.conkey, k.confkey) WITH ORDINALITY u(cn, pn, o)
              JOIN pg_catalog.pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = u.cn
              JOIN pg_catalog.pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = u.pn) AS joins
      FROM pg_catalog.pg_constraint k
      JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
      JOIN pg_catalog.pg_class p ON p.oid = k.confrelid JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
     WHERE k.contype = 'f' AND k.conparentid = 0
       AND (cn.nspname = ANY({schema_arr}) OR pn.nspname = ANY({schema_arr})
            OR (cn.nspname, c.relname) IN (VALUES {pairs}) OR (pn.nspname, p.relname) IN (VALUES {pairs}))
       AND cn.nspname NOT LIKE '%\\_lifeboat\\_old\\_%' AND pn.nspname NOT LIKE '%\\_lifeboat\\_old\\_%'
       AND NOT (cn.nspname = ANY({skip}))
     ORDER BY 2, 1
  LOOP
    EXECUTE format('SELECT count(*) FROM %s c WHERE %s AND NOT EXISTS (SELECT 1 FROM %s p WHERE %s)',
                   r.child, r.notnull, r.parent, r.joins) INTO n;
    IF n > 0 THEN
      bad := bad || format('%s row(s) of %s have no match in %s (foreign key %I); ', n, r.child, r.parent, r.conname);
    END IF;
  END LOOP;
  IF bad <> '' THEN
    RAISE EXCEPTION 'lifeboat: foreign keys broken after the restore, nothing was changed: %', bad;
  END IF;
END
$lifeboat_fk$;
"""  # noqa: S608


def count_check_sql(expected: dict[str, int] | None, tables: Iterable[tuple[str, str]],
                    staged: dict[str, str] | None = None) -> str:
    """A DO block comparing each table's rows with the manifest's count; a difference aborts the transaction.
    ``staged``: schema -> the schema the table is counted in (its staged copy), named by its own name."""
    if not expected:
        return ""
    lines = []
    for schema, table in tables:
        want = expected.get(f"{schema}.{table}")
        if want is None:
            continue
        lines.append(f"  SELECT count(*) INTO n FROM {qi((staged or {}).get(schema, schema))}.{qi(table)};\n"  # noqa: S608 - quoted (qi)
                     f"  IF n <> {int(want)} THEN bad := bad || format('%s has %s rows, the manifest says %s; ', "
                     f"{lit(schema + '.' + table)}, n, {int(want)}); END IF;")
    if not lines:
        return ""
    body = "\n".join(lines)
    return f"""DO $lifeboat_counts$
DECLARE n bigint; bad text := '';
BEGIN
{body}
  IF bad <> '' THEN
    RAISE EXCEPTION 'lifeboat: restored rows differ from the backup''s manifest, nothing was changed: %', bad;
  END IF;
END
$lifeboat_counts$;
"""



def old_name(schema: str, token: str) -> str:
    suffix = f"_lifeboat_old_{token}"
    base = schema.encode("utf-8")[:63 - len(suffix)].decode("utf-8", "ignore")
    return base + suffix


MOVE_SQL = """DO $lifeboat_move$
DECLARE s text := %(schema)s; old text := %(old)s; keep oid[] := %(keep)s; r record;
BEGIN
  IF %(create)s THEN
    EXECUTE format('CREATE SCHEMA %%I', old);
  END IF;
  FOR r IN SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
                                 AND d.objid = c.oid AND d.deptype IN ('a', 'i', 'e'))
  LOOP
    EXECUTE format('ALTER %%s %%I.%%I SET SCHEMA %%I',
                   CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                                  WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, s, r.relname, old);
  END LOOP;
  FOR r IN SELECT p.oid::pg_catalog.regprocedure::text AS sig, p.prokind FROM pg_catalog.pg_proc p
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = s AND p.oid <> ALL(keep) AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER %%s %%s SET SCHEMA %%I', CASE r.prokind WHEN 'a' THEN 'AGGREGATE' ELSE 'ROUTINE' END,
                   r.sig, old);
  END LOOP;
  FOR r IN SELECT t.typname, t.typtype FROM pg_catalog.pg_type t
             JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = s AND t.typtype IN ('c', 'd', 'e', 'r')
              AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_type'::regclass
                                 AND d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER %%s %%I.%%I SET SCHEMA %%I', CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                   s, r.typname, old);
  END LOOP;
  FOR r IN WITH ns AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = s)
           SELECT 'TEXT SEARCH CONFIGURATION' AS kind, x.cfgname::text AS name,
                  'pg_catalog.pg_ts_config'::regclass AS cls, x.oid
                  FROM pg_catalog.pg_ts_config x WHERE x.cfgnamespace = (SELECT oid FROM ns)
           UNION ALL SELECT 'TEXT SEARCH DICTIONARY', x.dictname::text, 'pg_catalog.pg_ts_dict'::regclass, x.oid
                  FROM pg_catalog.pg_ts_dict x WHERE x.dictnamespace = (SELECT oid FROM ns)
           UNION ALL SELECT 'COLLATION', x.collname::text, 'pg_catalog.pg_collation'::regclass, x.oid
                  FROM pg_catalog.pg_collation x WHERE x.collnamespace = (SELECT oid FROM ns)
           UNION ALL SELECT 'STATISTICS', x.stxname::text, 'pg_catalog.pg_statistic_ext'::regclass, x.oid
                  FROM pg_catalog.pg_statistic_ext x WHERE x.stxnamespace = (SELECT oid FROM ns)
           UNION ALL SELECT 'CONVERSION', x.conname::text, 'pg_catalog.pg_conversion'::regclass, x.oid
                  FROM pg_catalog.pg_conversion x WHERE x.connamespace = (SELECT oid FROM ns)
  LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = r.cls AND d.objid = r.oid
                      AND d.deptype = 'e') THEN
      EXECUTE format('ALTER %%s %%I.%%I SET SCHEMA %%I', r.kind, s, r.name, old);
    END IF;
  END LOOP;
END
$lifeboat_move$;
"""



def or_replace(script: bytes) -> bytes:
    """pg_restore's text of one FUNCTION entry, creating it with CREATE OR REPLACE (the statement starts a line)."""
    return re.sub(rb"(?m)^CREATE FUNCTION ", b"CREATE OR REPLACE FUNCTION ", script, count=1)



def dump_argv(pg_dump: str, scope: Scope, part: str, snapshot: str | None = None) -> list[str]:
    """pg_dump's arguments for one part of a Supabase-shaped backup: ``app`` (the application schemas, schema and
    data) or ``platform`` (the platform tables: their rows and the user's triggers and policies on them).
    pg_dump ignores ``--schema`` once ``--table`` is given, hence two runs (of one exported snapshot)."""
    argv = [pg_dump, "-Fc", "--no-password"] + ([f"--snapshot={snapshot}"] if snapshot else [])
    if part == "app":
        return argv + [f"--schema={dump_pattern(s)}" for s in scope.app_schemas]
    return argv + [f"--table={dump_pattern(s)}.{dump_pattern(t)}" for s, t in scope.platform_tables]



def dump_pattern(name: str) -> str:
    """A pg_dump pattern matching exactly ``name`` (quoted, so case and wildcards are literal)."""
    return '"' + name.replace('"', '""') + '"'


def reset_grants_sql(schemas: list[str]) -> str:
    """A DO block giving every table, sequence and function of ``schemas`` its built-in default privileges (owner
    only; functions also EXECUTE to PUBLIC) before the backup's grants run. The project's default privileges
    (Supabase grants ALL to anon, authenticated and service_role on whatever ``postgres`` creates in ``public``)
    would otherwise add grants the backup never had: pg_dump writes grants relative to the built-in default."""
    arr = "ARRAY[" + ", ".join(lit(s) for s in schemas) + "]::text[]"
    return f"""DO $lifeboat_acl$
DECLARE r record;
BEGIN
  FOR r IN SELECT DISTINCT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
                  format('%I.%I', n.nspname, c.relname) AS name,
                  CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                       ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END AS who
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
                  LATERAL pg_catalog.aclexplode(c.relacl) a
            WHERE n.nspname = ANY({arr}) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND a.grantee <> c.relowner
  LOOP
    EXECUTE format('REVOKE ALL ON %s %s FROM %s', r.kind, r.name, r.who);
  END LOOP;
  FOR r IN SELECT DISTINCT p.oid::pg_catalog.regprocedure::text AS name,
                  quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) AS who
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace,
                  LATERAL pg_catalog.aclexplode(p.proacl) a
            WHERE n.nspname = ANY({arr}) AND a.grantee NOT IN (0, p.proowner) AND p.prokind IN ('f', 'p')
  LOOP
    EXECUTE format('REVOKE ALL ON ROUTINE %s FROM %s', r.name, r.who);
  END LOOP;
END
$lifeboat_acl$;
"""  # noqa: S608


def publications_sql(moved: dict[str, str]) -> str:
    """A DO block: a table kept aside that was in a publication (Supabase Realtime's ``supabase_realtime``) is
    replaced there by the restored table of the same name (when the login owns the publication)."""
    if not moved:
        return ""
    pairs = ", ".join(f"({lit(live)}, {lit(old)})" for live, old in moved.items())
    return f"""DO $lifeboat_pub$
DECLARE r record;
BEGIN
  FOR r IN SELECT pb.pubname, m.live, c.relname, m.old
             FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication pb ON pb.oid = pr.prpubid
             JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             JOIN (VALUES {pairs}) AS m (live, old) ON m.old = n.nspname
            WHERE pg_catalog.pg_has_role(pb.pubowner, 'USAGE')
  LOOP
    IF to_regclass(format('%I.%I', r.live, r.relname)) IS NOT NULL THEN
      EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', r.pubname, r.live, r.relname);
    END IF;
    EXECUTE format('ALTER PUBLICATION %I DROP TABLE %I.%I', r.pubname, r.old, r.relname);
  END LOOP;
END
$lifeboat_pub$;
"""  # noqa: S608


def publication_add_sql(pub: str, schema: str, table: str) -> str:
    """Put a restored table back into a publication (Realtime's ``supabase_realtime``) unless it is there already:
    a DO block, so that a membership the project kept (in place) is not an error."""
    rel = f"{qi(schema)}.{qi(table)}"
    return f"""DO $lifeboat_pubadd$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                  WHERE p.pubname = {lit(pub)} AND pr.prrelid = {lit(rel)}::regclass) THEN
    ALTER PUBLICATION {qi(pub)} ADD TABLE ONLY {rel};
  END IF;
END
$lifeboat_pubadd$;
"""  # noqa: S608 - names quoted (qi, lit)


_PUB_SQL = re.compile(r'ALTER PUBLICATION ("(?:[^"]|"")+") ADD TABLE ONLY ("(?:[^"]|"")+")\.("(?:[^"]|"")+");')


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"')


def publications_of(supabase_doc: dict) -> list[tuple[str, str, str]]:
    """(publication, schema, table) of the manifest's ``supabase`` section: ``publication_tables``, or for a backup
    written before it was recorded, the statements of ``publication_sql`` (always quoted identifiers)."""
    rows = supabase_doc.get("publication_tables")
    if isinstance(rows, list):
        return [(str(p), str(s), str(t)) for p, s, t in rows]
    return [(_unquote(p), _unquote(s), _unquote(t))
            for p, s, t in _PUB_SQL.findall(str(supabase_doc.get("publication_sql") or ""))]


def setting_sql(database: str, item: str) -> str:
    """``ALTER DATABASE ... SET`` of one recorded database setting (``key=value``, as pg_db_role_setting holds it;
    a list setting such as search_path keeps its items)."""
    key, _, value = item.partition("=")
    if key.lower() in GUC_LIST_QUOTE:
        val = ", ".join(lit(v) for v in split_guc_list(value))
    else:
        val = lit(value)
    return f"ALTER DATABASE {qi(database)} SET {qi(key)} = {val};"
