"""The staged in-place Supabase restore: the slow part beside the live objects, a short swap at the end.

Still ONE transaction (a kill at any point before its COMMIT leaves the project as it was, and nothing of the
restore behind), in two parts:

1. **Staging** (no lock on anything the application uses): each application schema's backup objects are created in
   ``<schema>_lifeboat_new_<token>`` (pg_restore's SQL with the schema names rewritten, restore/sqlrewrite.py), its
   rows loaded, its indexes, constraints, triggers, policies, grants and comments made, its row counts checked; the
   platform tables' rows are loaded into copies in ``lifeboat_stage_<token>``. Foreign keys to tables outside the
   application schemas (``auth.users``) wait for the swap: adding one locks the table it references.
2. **Swap** (the application waits from here to the commit): the live objects are moved aside into
   ``<schema>_lifeboat_old_<token>`` and the staged ones into the schema (``ALTER ... SET SCHEMA``: catalog
   changes, whatever the data's size; owners, grants, policies, triggers, comments, sequences' values and
   dependencies go with each object); the functions that platform triggers call are replaced in place; the platform
   tables' rows are kept aside and replaced from their staged copies; the held-back foreign keys are added (checked)
   and every foreign key of a platform table checked; counts checked; commit.

The swap's time grows with the platform tables' rows (and the application rows that reference them), not with the
application's data. Object kinds the swap cannot move (operators and their classes and families, foreign tables,
anything outside ``SWAPPABLE``) make the restore take the single-transaction path instead
(``fallback_reason`` names why).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat.errors import RestoreError
from ansible.module_utils.lifeboat.restore.sqlrewrite import Rewriter, copy_columns, references_schema, statements
from ansible.module_utils.lifeboat.restore.supabase_plan import (
    MOVE_SQL,
    Entry,
    Plan,
    count_check_sql,
    fk_check_sql,
    lit,
    old_name,
    or_replace,
    qi,
    reset_grants_sql,
)

# The application entry kinds the swap can move (anything else: the single-transaction path).
SWAPPABLE = frozenset({
    "SCHEMA", "TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "SEQUENCE OWNED BY", "FUNCTION", "PROCEDURE",
    "AGGREGATE", "TYPE", "DOMAIN", "DEFAULT", "CONSTRAINT", "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "TRIGGER",
    "POLICY", "ROW SECURITY", "ACL", "COMMENT", "DEFAULT ACL", "TABLE DATA", "SEQUENCE SET",
    "MATERIALIZED VIEW DATA", "RULE", "STATISTICS", "COLLATION", "CONVERSION", "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
})


def new_name(schema: str, token: str) -> str:
    suffix = f"_lifeboat_new_{token}"
    return schema.encode("utf-8")[:63 - len(suffix)].decode("utf-8", "ignore") + suffix


def stage_schema(token: str) -> str:
    return f"lifeboat_stage_{token}"


def fallback_reason(p: Plan) -> str | None:
    """Why this backup cannot take the staged swap (None: it can)."""
    kinds = sorted({e.type for e in p.app_pre + p.app_data + p.app_post + p.app_last} - SWAPPABLE)
    if kinds:
        return (f"the backup's application schemas hold {', '.join(k.lower() for k in kinds)}, which the short swap "
                "does not move")
    return None


def live_names(conn: Any, schemas: list[str], keep_oids: list[int]) -> dict[str, set[str]]:
    """schema -> names that staged objects must keep referring to on the live schema: the functions platform
    triggers/policies call (kept and replaced in place, every overload of the name) and extensions' objects."""
    rows = conn.execute(
        """SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n
                  ON n.oid = p.pronamespace WHERE p.oid = ANY(%s::oid[])
           UNION SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
                  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_depend d
                  ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
                 WHERE n.nspname = ANY(%s)
           UNION SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p
                  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace JOIN pg_catalog.pg_depend d
                  ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
                 WHERE n.nspname = ANY(%s)
           UNION SELECT n.nspname, t.typname FROM pg_catalog.pg_type t
                  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace JOIN pg_catalog.pg_depend d
                  ON d.classid = 'pg_catalog.pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e'
                 WHERE n.nspname = ANY(%s)""",
        ([int(o) for o in keep_oids], schemas, schemas, schemas)).fetchall()
    out: dict[str, set[str]] = {}
    for schema, name in rows:
        out.setdefault(schema, set()).add(name)
    return out


def kept_overloads(conn: Any, keep: dict[str, int]) -> list[int]:
    """Every function OID of the kept functions' names (a name is kept or staged as a whole)."""
    if not keep:
        return []
    return [r[0] for r in conn.execute(
        """SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_proc k ON k.proname = p.proname
              AND k.pronamespace = p.pronamespace WHERE k.oid = ANY(%s::oid[])""",
        ([int(o) for o in keep.values()],)).fetchall()]


@dataclass
class Staged:
    """The staged transaction's parts, built before anything runs."""

    steps: list[tuple[str, Any]]               # ("sql", text) | (kind, (archive, entries)) in order
    live: list[str]                             # application schemas the project has (swapped)
    created: list[str]                          # application schemas it lacks (the staged one is renamed)
    mapping: dict[str, str]                     # schema -> staged schema
    platform: list[tuple[str, str]]             # platform tables whose rows are replaced, in stage-table order
    kept: dict[str, set[str]] = field(default_factory=dict)  # schema -> names staged objects refer to live
    moved: dict[str, str] = field(default_factory=dict)  # live schema -> where its objects are kept
    rows_aside: str = ""                        # the schema where the replaced platform rows are kept


def _is_schema_level(e: Entry, schema: str) -> bool:
    return e.rest.startswith((f"- SCHEMA {schema} ", f"{schema} DEFAULT PRIVILEGES "))


def _is_kept_function(e: Entry, keep: dict[str, set[str]], schema: str) -> bool:
    names = keep.get(schema, set())
    if e.type in ("FUNCTION", "PROCEDURE"):
        return any(e.rest.startswith(f"{schema} {n}(") for n in names)
    if e.type in ("ACL", "COMMENT"):
        return any(e.rest.startswith((f"{schema} FUNCTION {n}(", f"{schema} PROCEDURE {n}(")) for n in names)
    return False


def build(p: Plan, scope_schemas: list[str], live_schemas: set[str], platform: list[tuple[str, str]],
          token: str, kept: dict[str, set[str]], kept_functions: set[str]) -> Staged:
    """Sort the plan's entries into the staged transaction. ``kept``: schema -> names not rewritten (live);
    ``kept_functions``: schema -> function names replaced in place (subset of ``kept``)."""
    mapping = {s: new_name(s, token) for s in scope_schemas}
    live = [s for s in scope_schemas if s in live_schemas]
    created = [s for s in scope_schemas if s not in live_schemas]
    fn_keep = {s: {n for n in kept.get(s, set()) if f"{s}.{n}" in kept_functions} for s in scope_schemas}
    steps: list[tuple[str, Any]] = []

    def schema_of(e: Entry) -> str:
        for s in sorted(scope_schemas, key=len, reverse=True):
            if e.in_schema(s) or e.rest.startswith((f"- {s} ", f"- SCHEMA {s} ")):
                return s
        return ""

    def add(kind: str, e: Entry) -> None:
        last = steps[-1] if steps else None
        if kind != "data" and last and last[0] == kind and last[1][0] == e.archive \
                and (e.type == "ACL") == (last[1][1][-1].type == "ACL"):
            last[1][1].append(e)
        else:
            steps.append((kind, (e.archive, [e])))

    def route(e: Entry) -> str:
        s = schema_of(e)
        if s in live and (_is_schema_level(e, s) or e.type == "DEFAULT ACL"):
            return "defer"        # the live schema's own grants/comment/default privileges: it stays
        if _is_kept_function(e, fn_keep, s):
            return "defer_replace" if e.type in ("FUNCTION", "PROCEDURE") else "defer"
        return "stage"

    for e in p.app_pre:
        add(route(e), e)
    for e in p.platform_data:
        if e.type == "TABLE DATA":
            add("data", e)
        else:
            add("defer", e)      # the platform's sequences: set in the swap
    for e in p.app_data:
        add("data" if e.type == "TABLE DATA" else "stage", e)
    for e in p.app_post:
        add("fk" if e.type == "FK CONSTRAINT" else route(e), e)
    for e in p.platform_extras:
        add("defer_extra", e)
    steps.append(("sql", reset_grants_sql([mapping[s] for s in scope_schemas])))
    for e in p.app_last:
        add(route(e), e)
    st = Staged(steps, live, created, mapping, list(platform), kept, {s: old_name(s, token) for s in live})
    if platform:
        st.rows_aside = st.moved[live[0]] if live else old_name(created[0], token)
    return st


def head_sql(st: Staged, token: str, live_acl_from: list[str]) -> str:
    """Staging: the staged schemas (a live schema's staged twin gets its grants, so that objects can be given to
    the same roles) and the platform tables' copies."""
    out = []
    for s in st.live:
        out.append(f"CREATE SCHEMA {qi(st.mapping[s])};")
    if live_acl_from:
        pairs = ", ".join(f"({lit(s)}, {lit(st.mapping[s])})" for s in live_acl_from)
        out.append(f"""DO $lifeboat_stage_acl$
DECLARE r record;
BEGIN
  FOR r IN SELECT m.staged, a.privilege_type,
                  CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                       ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END AS who
             FROM pg_catalog.pg_namespace n JOIN (VALUES {pairs}) AS m (live, staged) ON m.live = n.nspname,
                  LATERAL pg_catalog.aclexplode(n.nspacl) a
            WHERE a.grantee <> (SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = m.staged)
  LOOP
    EXECUTE format('GRANT %s ON SCHEMA %I TO %s', r.privilege_type, r.staged, r.who);
  END LOOP;
END
$lifeboat_stage_acl$;""")  # noqa: S608 - names are literals (lit)
    stage = stage_schema(token)
    out.append(f"CREATE SCHEMA {qi(stage)};")
    for i, (s, t) in enumerate(st.platform):
        out.append(f"CREATE TABLE {qi(stage)}.{qi(f't{i}')} (LIKE {qi(s)}.{qi(t)});")
    return "\n".join(out) + "\n"


def swap_sql(st: Staged, token: str, keep_oids: list[int], deferred: list[str], extras: list[str], fks: list[str],
             columns: dict[tuple[str, str], str], dropped: list[tuple[str, str, str, str]]) -> str:
    """The swap: from the first lock to the last object put in place. ``dropped``: (kind, schema, table, name) of
    the user's triggers/policies on platform tables replaced by the backup's (``extras``)."""
    stage = stage_schema(token)
    out = ["SET lock_timeout = '30s';", "SET session_replication_role = replica;", "SET search_path = '';"]
    if st.platform:
        out.append("LOCK TABLE " + ", ".join(f"{qi(s)}.{qi(t)}" for s, t in st.platform)
                   + " IN SHARE ROW EXCLUSIVE MODE;")
    if st.live:
        arr = "ARRAY[" + ", ".join(lit(s) for s in st.live) + "]::text[]"
        out.append(f"""DO $lifeboat_lock$
DECLARE names text;
BEGIN
  SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ' ORDER BY n.nspname, c.relname) INTO names
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = ANY({arr}) AND c.relkind IN ('r', 'p');
  IF names IS NOT NULL THEN
    EXECUTE 'LOCK TABLE ' || names || ' IN ACCESS EXCLUSIVE MODE';
  END IF;
END
$lifeboat_lock$;""")  # noqa: S608 - names are literals (lit)
    keep_arr = "ARRAY[" + ", ".join(str(int(o)) for o in keep_oids) + "]::oid[]"
    for s in st.live:
        out.append(MOVE_SQL % {"schema": lit(s), "old": lit(st.moved[s]), "keep": keep_arr, "create": "true"})
    for s in st.live:
        out.append(MOVE_SQL % {"schema": lit(st.mapping[s]), "old": lit(s), "keep": "ARRAY[]::oid[]",
                               "create": "false"})
        out.append(f"DROP SCHEMA {qi(st.mapping[s])};")
    for s in st.created:
        out.append(f"ALTER SCHEMA {qi(st.mapping[s])} RENAME TO {qi(s)};")
    if keep_oids:
        out.append(_reset_routines_sql(keep_oids))
    out.extend(deferred)
    if st.platform:
        keep_rows = st.rows_aside
        out.append(f"CREATE SCHEMA IF NOT EXISTS {qi(keep_rows)};")
        for s, t in st.platform:
            out.append(f"CREATE TABLE {qi(keep_rows)}.{qi(f'{s}.{t}')} AS SELECT * FROM {qi(s)}.{qi(t)};")  # noqa: S608
        for s, t in st.platform:
            out.append(f"DELETE FROM {qi(s)}.{qi(t)};")  # noqa: S608 - identifiers quoted (qi)
        for i, (s, t) in enumerate(st.platform):
            cols = columns.get((s, t))
            if cols is None:
                continue
            out.append(f"INSERT INTO {qi(s)}.{qi(t)} ({cols}) OVERRIDING SYSTEM VALUE "  # noqa: S608
                       f"SELECT {cols} FROM {qi(stage)}.{qi(f't{i}')};")
    for kind, s, t, name in dropped:
        out.append(f"DROP {kind} {qi(name)} ON {qi(s)}.{qi(t)};")
    out.extend(extras)
    out.extend(fks)
    out.append(f"DROP SCHEMA {qi(stage)} CASCADE;")
    return "\n".join(out) + "\n"


def _reset_routines_sql(oids: list[int]) -> str:
    arr = "ARRAY[" + ", ".join(str(int(o)) for o in oids) + "]::oid[]"
    return f"""DO $lifeboat_fnacl$
DECLARE r record;
BEGIN
  FOR r IN SELECT DISTINCT p.oid::pg_catalog.regprocedure::text AS name,
                  quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) AS who
             FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
            WHERE p.oid = ANY({arr}) AND a.grantee NOT IN (0, p.proowner)
  LOOP
    EXECUTE format('REVOKE ALL ON ROUTINE %s FROM %s', r.name, r.who);
  END LOOP;
END
$lifeboat_fnacl$;"""  # noqa: S608 - OIDs are integers


def staged_count_sql(expected: dict[str, int] | None, tables: list[tuple[str, str]], mapping: dict[str, str]) -> str:
    return count_check_sql(expected, tables, staged=mapping)


def platform_fk_sql(app_schemas: list[str], platform: list[tuple[str, str]]) -> str:
    """Every foreign key from or to a platform table, except those of application tables just added (checked
    when added)."""
    return fk_check_sql([], platform, skip_child_schemas=app_schemas)


def _send(pipe: Any, data: bytes) -> None:
    pipe.write(data)
    pipe.flush()


def run(target: Any, pg_restore: str, psql: str, st: Staged, head: str, swap: Any, token: str) -> None:
    """Run the staged transaction through one psql session: BEGIN, ``head``, the steps (pg_restore's SQL rewritten
    onto the staged schemas; data streamed with only its COPY line changed), then ``swap(deferred, fks,
    columns)``'s SQL and COMMIT. psql gets COMMIT only when everything before it succeeded: if this process dies,
    psql reads the end of its input without a COMMIT and the server rolls the transaction back."""
    rw = Rewriter(st.mapping, st.kept)
    stage = stage_schema(token)
    with target.child_env() as env:
        private = os.path.dirname(env["PGPASSFILE"])
        env["PGAPPNAME"] = f"lifeboat-supabase-restore-{token}"
        with open(os.path.join(private, "psql.err"), "w+b") as err, \
                open(os.path.join(private, "pg_restore.err"), "w+b") as dump_err:
            proc = subprocess.Popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=err, env=env)
            assert proc.stdin is not None
            failed = ""
            deferred: list[str] = []
            extras: list[str] = []
            fks: list[str] = []
            columns: dict[tuple[str, str], str] = {}
            try:
                _send(proc.stdin, b"BEGIN;\n" + head.encode("utf-8"))
                for n, (kind, item) in enumerate(st.steps):
                    if kind == "sql":
                        _send(proc.stdin, item.encode("utf-8"))
                        continue
                    archive, entries = item
                    listfile = os.path.join(private, f"restore-{n}.list")
                    with open(listfile, "w", encoding="utf-8") as fh:
                        fh.write("\n".join(e.line for e in entries) + "\n")
                    argv = [pg_restore, "-L", listfile, "-f", "-", archive]
                    if kind == "data":
                        failed = _stream_data(argv, env, dump_err, proc.stdin, entries[0], st, rw, stage, columns)
                    else:
                        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=dump_err, env=env, check=False)
                        if out.returncode != 0:
                            failed = f"pg_restore of {entries[0].line!r} exited {out.returncode}"
                        text = out.stdout.decode("utf-8")
                        if kind == "stage":
                            _send(proc.stdin, rw.sql(text).encode("utf-8"))
                        elif kind == "fk":
                            for stmt in statements(text):
                                if references_schema(stmt) in st.mapping or "FOREIGN KEY" not in stmt:
                                    _send(proc.stdin, rw.sql(stmt).encode("utf-8"))
                                else:
                                    fks.append(_bare(stmt))
                        else:
                            (extras if kind == "defer_extra" else deferred).append(_bare(
                                or_replace(out.stdout).decode("utf-8") if kind == "defer_replace" else text))
                    if failed:
                        break
                if not failed:
                    _send(proc.stdin, swap(deferred, extras, fks, columns).encode("utf-8") + b"COMMIT;\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass
            finally:
                if failed and proc.poll() is None:
                    proc.kill()  # never let a partial script reach COMMIT
                proc.wait()
            err.seek(0)
            text = err.read().decode("utf-8", "replace").strip()
            dump_err.seek(0)
            dump_text = dump_err.read().decode("utf-8", "replace").strip()
        if proc.returncode != 0 or failed:
            raise rolled_back(text, failed, dump_text)


def rolled_back(psql_stderr: str, what_failed: str, dump_stderr: str) -> RestoreError:
    """The error of a restore transaction that did not commit: psql's ERROR/FATAL/DETAIL lines, else the end of its
    output, else what failed on the dump's side (``what_failed``) with the end of pg_restore's output."""
    lines = [ln for ln in psql_stderr.splitlines() if "ERROR" in ln or "FATAL" in ln or "DETAIL" in ln]
    cause = " | ".join(lines[-4:]) or psql_stderr[-600:] or (what_failed + ": " + dump_stderr[-600:])
    return RestoreError("supabase restore: the transaction was rolled back, nothing was changed: " + cause, "archive")


def _bare(text: str) -> str:
    """pg_restore's SQL without its leading session settings and its psql restrict lines (run later, in the swap;
    a function body's own lines are kept as they are)."""
    lines = [ln for ln in text.splitlines() if not ln.startswith(("\\restrict ", "\\unrestrict "))]
    i = 0
    header = ("--", "SET ", "SELECT pg_catalog.set_config")
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith(header)):
        i += 1
    return "\n".join(lines[i:]).strip() + "\n"


def _stream_data(argv: list[str], env: dict, dump_err: Any, sink: Any, entry: Entry, st: Staged, rw: Rewriter,
                 stage: str, columns: dict[tuple[str, str], str]) -> str:
    """One TABLE DATA entry: pg_restore's output with its COPY line pointed at the staged table, the rows copied
    as they are. Anything else before the COPY line than settings and comments is refused (it would run on the
    live objects)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=dump_err, env=env)
    assert proc.stdout is not None
    problem = ""
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                problem = f"pg_restore wrote no COPY for {entry.line!r}"
                break
            text = line.decode("utf-8")
            if text.startswith("COPY "):
                platform = next(((i, k) for i, k in enumerate(st.platform)
                                 if entry.in_schema(k[0]) and entry.tag_after(k[0]).startswith(k[1] + " ")), None)
                if platform is not None:
                    cols = copy_columns(text) or ""
                    columns[platform[1]] = cols
                    head = f"COPY {qi(stage)}.{qi(f't{platform[0]}')} ({cols}) FROM stdin;\n"
                else:
                    head = rw.sql(text)
                    if head == text:
                        problem = f"the COPY line of {entry.line!r} names no application schema"
                        break
                _send(sink, head.encode("utf-8"))
                shutil.copyfileobj(proc.stdout, sink, 1 << 20)
                sink.flush()
                break
            if text.strip() and not text.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict",
                                                     "\\unrestrict")):
                problem = f"pg_restore wrote {text.strip()[:80]!r} before the COPY of {entry.line!r}"
                break
            _send(sink, line)
    finally:
        if problem and proc.poll() is None:
            proc.kill()
        rc = proc.wait()
    if problem:
        return problem
    return f"pg_restore of {entry.line!r} exited {rc}" if rc != 0 else ""
