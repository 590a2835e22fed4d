"""What a database backup writes about itself: the manifest document and its stock-tool restore steps.

``build_manifest`` assembles the manifest (docs/manifest.md) from a finished run; ``restore_instructions``
gives the steps and one bash command that restore the artifact with stock tools alone (roles first, a
database with the recorded encoding and locale, its owner, grants, settings and comment, then the dump),
from ``createdb_command`` and ``database_sql``. Split from backup.py (the run itself), which re-exports
these names.
"""
from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from ansible.module_utils.lifeboat import TOOL_VERSION, crypto, manifest, pgmeta, pipeline
from ansible.module_utils.lifeboat.storage import S3Storage, Storage, stock_fetch_command

if TYPE_CHECKING:  # annotations only: backup.py imports this module
    from ansible.module_utils.lifeboat.backup import BackupRequest

def build_manifest(req: BackupRequest, storage: Storage, layout: manifest.Layout, comp: pipeline.Compression,
                   enc: crypto.Encryptor, result: pipeline.BackupResult, facts: dict[str, Any], snapshot: str,
                   started: Any, finished: Any, duration: float, version_num: int, version: str, pg_dump: str,
                   dump_version: str, dump_major: int) -> dict[str, Any]:
    restore = restore_instructions(req, storage, layout, comp, enc, facts.get("database_properties") or {},
                                   facts.get("roles") or {})
    if facts.get("supabase"):
        restore["supabase"] = supabase_restore_steps(req, storage, layout, comp, enc, facts["supabase"],
                                                     facts.get("roles") or {})
    return {
        "schema": manifest.SCHEMA,
        "kind": "postgresql",
        "backup_id": layout.backup_id,
        "database": req.target.database,
        "naming": req.naming,
        "server": {"version": version, "version_num": version_num, "host": req.target.host, "port": req.target.port},
        "pg_dump": {"path": pg_dump, "version": dump_version, "major": dump_major},
        "format": req.format,
        "jobs": req.jobs if req.format == "directory" else 1,
        "scope": {"schema_only": req.schema_only, "data_only": req.data_only,
                  "include_tables": list(req.include_tables), "exclude_tables": list(req.exclude_tables),
                  "include_schemas": list(req.include_schemas), "exclude_schemas": list(req.exclude_schemas)},
        "compression": comp.manifest(),
        "encryption": enc.manifest(),
        "artifact": {"key": layout.artifact_key, "uri": storage.uri(layout.artifact_key),
                     "size": result.size, "sha256": result.sha256,
                     "dump_size": result.source_size, "dump_sha256": result.source_sha256,
                     "dump_check": result.source_check},
        "started_at": manifest.iso(started),
        "finished_at": manifest.iso(finished),
        "duration_s": duration,
        "snapshot": snapshot,
        "tables": facts.get("tables", []),
        "schema_hash": facts.get("schema_hash"),
        "schema_hash_cross_major": facts.get("schema_hash_cross_major"),
        "privileges": facts.get("privileges") or {},
        "content_hashes": facts.get("content_hashes") or {},
        "database_properties": facts.get("database_properties") or {},
        "roles": facts.get("roles") or {},
        **({"supabase": facts["supabase"]} if facts.get("supabase") else {}),
        "tool": {"name": "lifeboat", "version": TOOL_VERSION},
        "tags": dict(req.tags or {}),
        "restore": restore,
    }


def decode_stream(storage: Storage, comp: pipeline.Compression, enc: crypto.Encryptor, key: str) -> str:
    """The stock-tool pipeline that fetches a stored object and undoes encryption and compression."""
    stages = [stock_fetch_command(storage, key)]
    if enc.method == "gpg":
        stages.append("gpg --decrypt")
    elif enc.method == "age":
        stages.append('age -d -i "$AGE_IDENTITY_FILE"')
    if comp.stock_decompress():
        stages.append(comp.stock_decompress() or "")
    return " | ".join(stages)


def supabase_restore_steps(req: BackupRequest, storage: Storage, layout: manifest.Layout, comp: pipeline.Compression,
                           enc: crypto.Encryptor, sb: dict[str, Any], roles_doc: dict[str, Any]) -> dict[str, Any]:
    """Stock-tool steps that put the supabase profile's three parts into a NEW Supabase project (database
    "$TARGET_DB", the platform present and empty) as its postgres login, in the order it needs: the roles, the
    platform's user data (auth users before the profiles that reference them), then the user's schemas without
    what the project already has (the TOC filter)."""
    steps = []
    if roles_doc.get("key"):
        steps += [f"{decode_stream(storage, comp, enc, roles_doc['key'])} > roles.sql",
                  'psql -X -q -d "$TARGET_DB" -f roles.sql']
    if sb.get("extensions_sql"):
        steps.append(f'psql -X -q -v ON_ERROR_STOP=1 -d "$TARGET_DB" -c {shlex.quote(sb["extensions_sql"])}')
    steps += [f"{decode_stream(storage, comp, enc, sb['platform_data']['key'])} > platform.dump",
              sb["data_list_command"],
              'pg_restore --data-only --exit-on-error -L platform.list -d "$TARGET_DB" platform.dump',
              f"{decode_stream(storage, comp, enc, layout.artifact_key)} > app.dump",
              f"pg_restore -l app.dump | {sb['toc_filter']} > app.list",
              'pg_restore --exit-on-error -L app.list -d "$TARGET_DB" app.dump']
    if sb.get("publication_sql"):
        steps.append(f'psql -X -q -v ON_ERROR_STOP=1 -d "$TARGET_DB" -c {shlex.quote(sb["publication_sql"])}')
    notes = ("Run with bash, in an empty directory, as the new project's postgres login: point libpq at it with "
             "PGHOST, PGPORT, PGUSER=postgres and a password file (PGPASSFILE or ~/.pgpass), TARGET_DB=postgres. "
             "Order: the application's roles (created when missing: psql reports 'already exists' for the others "
             "and goes on; no passwords: set them with ALTER ROLE ... PASSWORD; the login's default privileges are "
             "cleared until the dump restores the source's), the source's extensions (CREATE EXTENSION IF NOT "
             "EXISTS: the project may lack one an index needs), the platform's user data (data only, into the "
             "project's empty auth and storage tables), then the user's "
             "schemas and their data (without event triggers, the platform's publication, comments on extensions "
             "and what platform roles own: the project has them), then the user's tables back into the platform's "
             "publications. What was left out is in the manifest's "
             "supabase.left_out; policies the application made on platform tables are there with their CREATE "
             "POLICY statement. The database's own settings (database_properties.settings) need the database's "
             "owner: set them in the project's settings. The files in storage are restored separately.")
    notes += (" The files are named as docs/supabase.md's restore expects them: app.dump, platform.dump, "
              "roles.sql.")
    return {"steps": steps, "command": "set -eo pipefail; " + " && ".join(steps), "notes": notes}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def database_sql(props: dict[str, Any]) -> list[str]:
    """psql statements that give ``:"TARGET_DB"`` the recorded owner, grants, settings and comment (a new
    database gets none of them from pg_restore without --create)."""
    out = []
    if props.get("owner"):
        out.append(f'ALTER DATABASE :"TARGET_DB" OWNER TO {quote_ident(props["owner"])};')
    if not props.get("default_acl", True):
        out.append('REVOKE ALL ON DATABASE :"TARGET_DB" FROM PUBLIC;')
        for grantee, priv, grantable in props.get("acl", []):
            who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
            out.append(f'GRANT {priv} ON DATABASE :"TARGET_DB" TO {who}'
                       + (" WITH GRANT OPTION;" if grantable else ";"))

    def setting(item: str) -> str:
        key, _, value = item.partition("=")
        if key.lower() in pgmeta.GUC_LIST_QUOTE:
            return f"{quote_ident(key)} = " + ", ".join(quote_literal(v) for v in pgmeta.split_guc_list(value))
        return f"{quote_ident(key)} = {quote_literal(value)}"

    for item in props.get("settings", []):
        out.append(f'ALTER DATABASE :"TARGET_DB" SET {setting(item)};')
    for role, item in props.get("role_settings", []):
        out.append(f'ALTER ROLE {quote_ident(role)} IN DATABASE :"TARGET_DB" SET {setting(item)};')
    if props.get("comment"):
        out.append(f'COMMENT ON DATABASE :"TARGET_DB" IS {quote_literal(props["comment"])};')
    return out


def createdb_command(props: dict[str, Any]) -> str:
    """``createdb`` with the recorded encoding and locale (template0: a template's locale cannot change)."""
    parts = ["createdb", "--template=template0"]
    if props.get("encoding"):
        parts.append(f"--encoding={shlex.quote(props['encoding'])}")
    provider = props.get("locale_provider")
    if provider:
        parts.append(f"--locale-provider={shlex.quote(provider)}")
    if props.get("collate"):
        parts.append(f"--lc-collate={shlex.quote(props['collate'])}")
    if props.get("ctype"):
        parts.append(f"--lc-ctype={shlex.quote(props['ctype'])}")
    if provider == "icu" and props.get("icu_locale"):
        parts.append(f"--icu-locale={shlex.quote(props['icu_locale'])}")
    if provider == "builtin" and props.get("locale"):
        parts.append(f"--builtin-locale={shlex.quote(props['locale'])}")
    return " ".join(parts) + ' "$TARGET_DB"'


def restore_instructions(req: BackupRequest, storage: Storage, layout: manifest.Layout,
                         comp: pipeline.Compression, enc: crypto.Encryptor,
                         props: dict[str, Any] | None = None, roles_doc: dict[str, Any] | None = None
                         ) -> dict[str, Any]:
    """Stock-tool steps and one bash command that restore the artifact into "$TARGET_DB", keeping owners and
    privileges: the roles first (the roles file beside the dump), a database with the recorded encoding and
    locale, its owner/grants/settings/comment, then the dump without --no-owner/--no-privileges.

    The command reads the target connection from libpq's environment (PGHOST, PGPORT,
    PGUSER, PGPASSFILE or ~/.pgpass), never from argv.
    """
    props = props or {}
    stream = decode_stream(storage, comp, enc, layout.artifact_key)
    db = manifest.safe_name(req.target.database or "db")
    restore_flags = "--exit-on-error"
    lossy_flags = "--no-owner --no-privileges --exit-on-error"
    local_name = {"custom": f"{db}.dump", "plain": f"{db}.sql", "directory": f"{db}.tar"}[req.format]
    if req.format == "custom":
        command = f'set -o pipefail; {stream} | pg_restore {restore_flags} -d "$TARGET_DB"'
        last = f'pg_restore {restore_flags} -d "$TARGET_DB" {local_name}'
        no_owner = f'set -o pipefail; {stream} | pg_restore {lossy_flags} -d "$TARGET_DB"'
    elif req.format == "plain":
        command = f'set -o pipefail; {stream} | psql -X -q -v ON_ERROR_STOP=1 -d "$TARGET_DB"'
        last = f'psql -X -v ON_ERROR_STOP=1 -d "$TARGET_DB" -f {local_name}'
        no_owner = None
    else:
        jobs = max(1, req.jobs)
        command = (f'set -o pipefail; d="$(mktemp -d)" && {stream} | tar -x -C "$d" && '
                   f'pg_restore {restore_flags} -j {jobs} -d "$TARGET_DB" "$d/{db}" && rm -rf "$d"')
        last = f'mkdir restore && tar -x -C restore -f {local_name} && ' \
               f'pg_restore {restore_flags} -j {jobs} -d "$TARGET_DB" restore/{db}'
        no_owner = (f'set -o pipefail; d="$(mktemp -d)" && {stream} | tar -x -C "$d" && '
                    f'pg_restore {lossy_flags} -j {jobs} -d "$TARGET_DB" "$d/{db}" && rm -rf "$d"')
    steps = []
    roles_command = None
    if roles_doc and roles_doc.get("key"):
        roles_stream = decode_stream(storage, comp, enc, roles_doc["key"])
        steps.append(f"{roles_stream} > roles.sql")
        steps.append("psql -X -d postgres -f roles.sql")
        roles_command = f"set -o pipefail; {roles_stream} | psql -X -q -d postgres -f -"
    steps += [f"{stream} > {local_name}", createdb_command(props)]
    dbsql = database_sql(props)
    database_command = None
    if dbsql:
        database_command = ("printf '%s\\n' " + " ".join(shlex.quote(s) for s in dbsql)
                            + ' | psql -X -q -v ON_ERROR_STOP=1 -v TARGET_DB="$TARGET_DB" -d postgres -f -')
        steps.append(database_command)
    steps.append(last)
    notes = ("Run with bash. Set TARGET_DB to the name of the new database and point libpq at the target server "
             "with PGHOST, PGPORT, PGUSER and a password file (PGPASSFILE or ~/.pgpass): never a password in argv. "
             "The steps keep owners and privileges: first the roles (roles.sql, pg_dumpall --roles-only "
             "--no-role-passwords of the source server: psql reports 'already exists' for the roles this server "
             "has and goes on, but also runs their ALTER ROLE and GRANT lines, giving an existing role its "
             "attributes and memberships of backup time back (on such a server keep only the missing roles' "
             "lines); set passwords afterwards with ALTER ROLE ... PASSWORD), then the database with the "
             "source's encoding and locale (createdb fails, naming the locale, when this server lacks it), its "
             "owner, grants, settings and comment, then the dump. 'command' restores the dump into the existing "
             "empty $TARGET_DB (run 'roles_command' first on a server that lacks the roles).")
    if no_owner:
        notes += (" 'no_owner_command' is the alternative when the roles cannot be created: it LOSES owners and "
                  "privileges (everything owned by the restoring user; GRANTs and REVOKEs not restored, so a "
                  "function whose EXECUTE was revoked from PUBLIC becomes callable by everyone, and the "
                  "application's role may get 'permission denied').")
    if isinstance(storage, S3Storage):
        notes += (" aws reads its credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile "
                  "(GetObject on the backup prefix is enough).")
    if enc.method == "gpg" and enc.mode == "public-key":
        notes += (" gpg needs the secret key of one of the recipients (" + ", ".join(enc.recipients)
                  + ") in its keyring (GNUPGHOME).")
    elif enc.method == "gpg":
        notes += " gpg asks for the backup passphrase."
    elif enc.method == "age":
        notes += " Set AGE_IDENTITY_FILE to the age identity (secret key) file of a recipient."
    if req.format == "plain":
        notes += " A plain dump recreates owners and grants: the roles it names must exist on the target."
    if req.data_only:
        notes += " This is a data-only dump: restore it into a database that already has the schema."
    out: dict[str, Any] = {"steps": steps, "command": command, "notes": notes,
                           "sha256": "sha256sum of the stored object must equal artifact.sha256"}
    if roles_command:
        out["roles_command"] = roles_command
    if database_command:
        out["database_command"] = database_command
    if no_owner:
        out["no_owner_command"] = no_owner
    return out
