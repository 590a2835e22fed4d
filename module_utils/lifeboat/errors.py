"""Typed errors raised by the Lifeboat engine.

Every message names the option (or the object) and the cause, and never
contains a secret. Modules turn them into a failed task the same way everywhere
(``module.LifeboatModule.fail_error``). An error raised after part of the work was done
declares that part with ``with_partial(result)``: the module returns it with the failure.
"""
from __future__ import annotations


class LifeboatError(Exception):
    """Base class of every error the engine raises on purpose."""

    #: the module option the error is about, when there is one
    option: str | None = None
    #: what was done before the failure (returned with the failed task), when there is something
    partial: dict | None = None

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        if option is not None:
            self.option = option

    def with_partial(self, result: dict) -> "LifeboatError":
        """Declare the partial result (a plain dict of return values); returns ``self`` to raise."""
        self.partial = result
        return self


class ConfigError(LifeboatError):
    """An input is missing, malformed or contradicts another input."""


class ConnectionFailed(LifeboatError):
    """A server (PostgreSQL, S3 endpoint) could not be reached or refused us."""


class AuthError(ConnectionFailed):
    """Credentials were rejected."""


class NotFound(LifeboatError):
    """A database, bucket, object or backup does not exist."""


class StorageError(LifeboatError):
    """Reading or writing the backup storage failed."""


class AlreadyExists(StorageError):
    """An exclusive write found the object already there (another run wrote it first)."""


class ConditionFailed(StorageError):
    """A conditional write found the object changed since it was compared (or there when it was absent):
    nothing was replaced."""


class DeadlineExceeded(LifeboatError):
    """The run's overall deadline passed (a server stopped answering); the run was ended cleanly."""


class LockHeld(LifeboatError):
    """Another run holds the lock of this database and destination."""


class PermissionDenied(LifeboatError):
    """The connected role lacks a privilege the operation needs (the message names each object and the fix)."""


class DumpError(LifeboatError):
    """pg_dump (or another child process of a pipeline) failed."""


class VersionMismatch(LifeboatError):
    """No client binary is new enough for the server."""


class EncryptionError(LifeboatError):
    """A key is missing or unusable, or decryption failed."""


class IntegrityError(LifeboatError):
    """A checksum, size or row count does not match what the manifest says."""


class RestoreError(LifeboatError):
    """A restore step failed."""


class SafetyError(LifeboatError):
    """A destructive action was refused (missing confirmation, target in use...)."""


# Causes that are the drill's environment, not the backup: keys, permissions, the drill server.
_ENVIRONMENT = ("permission denied", "must be superuser", "must be owner", "could not connect",
                "connection refused", "connection to server", "password authentication failed",
                "no pg_hba.conf entry", "too many connections", "server closed the connection",
                "ssl connection has been closed unexpectedly", "ssl syscall error",
                "the database system is", "wrong decryption key", "no secret key")


def environmental(exc: LifeboatError) -> bool:
    """True when ``exc`` says a drill could not run (key, permission, server), not that the backup is bad."""
    if isinstance(exc, (EncryptionError, ConnectionFailed)):
        return True
    if isinstance(exc, ConfigError):  # a missing key option or key directory: the backup was not looked at
        return True
    return any(s in str(exc).lower() for s in _ENVIRONMENT)
