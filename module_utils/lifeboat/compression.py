"""Compression stages of the streaming pipelines (``Compression``) and the stage definitions they build on:
an in-process ``Transform`` or a child process (``ProcSpec``).
"""
from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    StorageError,
)

try:
    import zstandard

    HAS_ZSTANDARD = True
except ImportError:  # pragma: no cover - the zstd binary is used instead
    HAS_ZSTANDARD = False

ZSTD_JOB_SIZE = 2 * 1024 * 1024
#: zstd levels up to this one also look for long-distance matches in a 1 MiB window (zstd --long=20): on pg_dump
#: output (rows repeating far apart) level 1 then stores ~4% less than gzip -6 instead of ~0.7% more, for ~+40%
#: zstd CPU, the same memory (17 MB), and a frame that stock ``zstd -d`` reads without options (docs/benchmarks.md)
ZSTD_LONG_MAX_LEVEL = 2
ZSTD_LONG_WINDOW_LOG = 20
ALGORITHMS = ("zstd", "gzip", "none")


@dataclass
class Transform:
    """An in-process byte transform: ``fn(chunk) -> bytes`` then ``finish() -> bytes`` at EOF."""

    name: str
    fn: Callable[[bytes], bytes]
    finish: Callable[[], bytes] = field(default=lambda: b"")


@dataclass
class ProcSpec:
    """A child process of a pipeline: argv list (never a secret), env, and stderr error prefixes."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    error_prefixes: tuple[str, ...] = ()
    cwd: str | None = None
    pass_fds: tuple[int, ...] = ()
    #: a prepared crypto Filter (its spawn() handles passphrase fds and GNUPGHOME)
    filter: Any = None

    @classmethod
    def from_filter(cls, flt: Any) -> "ProcSpec":
        return cls(flt.name, list(flt.argv), error_prefixes=tuple(flt.error_patterns), filter=flt)


# ------------------------------------------------------------------ compression

def _check_complete(algorithm: str, partial: bool) -> None:
    """A compressed stream must end with a complete frame/member: a partial one means it is truncated.

    (An empty input is left to the consumer: it is also what a failed decryption produces, whose own error
    must name the cause.)
    """
    if partial:
        raise StorageError(f"{algorithm} decompression failed: unexpected end of the compressed stream (the "
                           "artifact is truncated)")


@dataclass
class Compression:
    """A compression choice; ``impl`` is filled by :meth:`resolve` ("zstandard", "zstd", "pigz", "gzip", "zlib")."""

    algorithm: str = "zstd"
    level: int | None = None
    threads: int = 0
    impl: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"compression: '{self.algorithm}' is not one of {', '.join(ALGORITHMS)}",
                              "compression")
        if self.level is None:
            # zstd 1: on pg_dump output (hex, uuids, jsonb, text) it is ~3x cheaper than level 3 and as small
            # or smaller (measured on the lab and bench databases), and still smaller than gzip -6
            self.level = {"zstd": 1, "gzip": 6, "none": 0}[self.algorithm]
        if self.algorithm == "zstd" and not 1 <= int(self.level) <= 19:
            raise ConfigError(f"compression_level: {self.level} is outside zstd's 1..19", "compression_level")
        if self.algorithm == "gzip" and not 1 <= int(self.level) <= 9:
            raise ConfigError(f"compression_level: {self.level} is outside gzip's 1..9", "compression_level")
        if self.threads < 0:
            raise ConfigError("compression_threads: must be 0 (automatic) or more", "compression_threads")

    @property
    def extension(self) -> str:
        return {"zstd": ".zst", "gzip": ".gz", "none": ""}[self.algorithm]

    def long_window(self) -> bool:
        """zstd's long-distance matching (ZSTD_LONG_MAX_LEVEL): for the fast levels only, whose own window is
        no larger than 1 MiB (higher levels keep their larger windows)."""
        return self.algorithm == "zstd" and int(self.level or 1) <= ZSTD_LONG_MAX_LEVEL

    def effective_threads(self) -> int:
        return self.threads or max(1, min(4, os.cpu_count() or 1))

    def resolve(self) -> "Compression":
        if self.impl:
            return self
        if self.algorithm == "zstd":
            self.impl = "zstandard" if HAS_ZSTANDARD else ("zstd" if shutil.which("zstd") else None)
            if not self.impl:
                raise ConfigError("compression: zstd needs the python 'zstandard' package or the zstd binary",
                                  "compression")
        elif self.algorithm == "gzip":
            self.impl = "pigz" if shutil.which("pigz") else ("gzip" if shutil.which("gzip") else "zlib")
        else:
            self.impl = "none"
        return self

    def manifest(self) -> dict[str, Any]:
        if self.algorithm == "none":
            return {"algorithm": "none"}
        out: dict[str, Any] = {"algorithm": self.algorithm, "level": int(self.level or 0)}
        if self.algorithm == "zstd" or self.impl == "pigz":
            out["threads"] = self.effective_threads()
        if self.long_window():
            out["long_window_log"] = ZSTD_LONG_WINDOW_LOG
        return out

    def stock_decompress(self) -> str | None:
        return {"zstd": "zstd -d", "gzip": "gzip -d", "none": None}[self.algorithm]

    # in-process transforms ---------------------------------------------------
    def compressor(self) -> "Transform | None":
        self.resolve()
        if self.impl == "zstandard":
            # multithreaded zstd with 2 MiB jobs: ~25 MB of buffers instead of ~85 MB with the default job
            # size (4x the window), for the same ratio
            extra: dict[str, Any] = {}
            if self.long_window():
                extra = {"enable_ldm": True, "window_log": ZSTD_LONG_WINDOW_LOG}
            params = zstandard.ZstdCompressionParameters.from_level(
                int(self.level or 1), threads=self.effective_threads(), job_size=ZSTD_JOB_SIZE, write_checksum=True,
                **extra)
            cctx = zstandard.ZstdCompressor(compression_params=params)
            obj = cctx.compressobj(size=-1)
            return Transform("zstd", obj.compress, lambda: obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
        if self.impl == "zlib":
            zobj = zlib.compressobj(int(self.level or 6), zlib.DEFLATED, 31)
            return Transform("gzip", zobj.compress, zobj.flush)
        return None

    def compressor_proc(self, prefer_process: bool = False) -> "ProcSpec | None":
        """The compressor as a child process; with ``prefer_process`` the zstd binary (when installed) even
        where the zstandard module could compress in-process (so the dump can flow process to process)."""
        self.resolve()
        zstd = shutil.which("zstd") if (self.impl == "zstd" or (prefer_process and self.algorithm == "zstd")) else None
        if zstd:
            # --check: the frame carries a checksum of the dump's bytes, which zstd -d (and zstandard) verify
            argv = [zstd, "-q", "-c", f"-{self.level}", f"-T{self.effective_threads()}", "--check"]
            if self.long_window():
                argv.append(f"--long={ZSTD_LONG_WINDOW_LOG}")
            return ProcSpec("zstd", argv, error_prefixes=("zstd: error",))
        if self.impl == "pigz":
            return ProcSpec("pigz", [shutil.which("pigz") or "pigz", "-c", f"-{self.level}",
                                     "-p", str(self.effective_threads())])
        if self.impl == "gzip":
            return ProcSpec("gzip", [shutil.which("gzip") or "gzip", "-c", f"-{self.level}"])
        return None

    def decompressor(self) -> "Transform | None":
        """In-process decompression (zstandard / zlib); None for 'none'."""
        if self.algorithm == "zstd":
            if not HAS_ZSTANDARD:
                return None
            dctx = zstandard.ZstdDecompressor()
            state = {"obj": dctx.decompressobj(), "fed": False}

            def dec(data: bytes) -> bytes:
                out = []
                while data:
                    obj = state["obj"]
                    state["fed"] = True
                    out.append(obj.decompress(data))
                    data = obj.unused_data if obj.eof else b""
                    if obj.eof:
                        state.update(obj=dctx.decompressobj(), fed=False)
                return b"".join(out)

            def zflush() -> bytes:
                _check_complete("zstd", state["fed"])
                return b""

            return Transform("zstd -d", dec, zflush)
        if self.algorithm == "gzip":
            state = {"obj": zlib.decompressobj(47), "fed": False}

            def gdec(data: bytes) -> bytes:
                out = []
                while data:
                    obj = state["obj"]
                    state["fed"] = True
                    try:
                        out.append(obj.decompress(data))
                    except zlib.error as exc:
                        raise StorageError(f"gzip decompression failed: {exc} - the data is not gzip or is "
                                           "damaged") from None
                    data = obj.unused_data if obj.eof else b""
                    if obj.eof:  # concatenated gzip members (pigz, appended files)
                        state.update(obj=zlib.decompressobj(47), fed=False)
                return b"".join(out)

            def gflush() -> bytes:
                rest = state["obj"].flush()
                _check_complete("gzip", state["fed"] and not state["obj"].eof)
                return rest

            return Transform("gzip -d", gdec, gflush)
        return None

    def decompressor_proc(self) -> "ProcSpec | None":
        if self.algorithm == "zstd" and not HAS_ZSTANDARD:
            return ProcSpec("zstd -d", [shutil.which("zstd") or "zstd", "-q", "-d", "-c"],
                            error_prefixes=("zstd: error",))
        return None

