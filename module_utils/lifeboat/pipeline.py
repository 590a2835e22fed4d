"""Streaming pipelines: dump -> compress -> encrypt -> checksum -> store, and back.

Memory stays flat: data moves in bounded chunks (``CHUNK`` = 1 MiB) between
threads and child processes; nothing accumulates. Every child's exit status is
checked, its stderr is captured (bounded) and error lines on stderr count as a
failure even when the exit status is 0. On any failure every child is killed,
the storage writer is aborted (multipart upload aborted / ``*.lifeboat-partial`` removed)
and a typed error naming the cause is raised.

Public API (stable: backup, verify and restore build on it)
----------------------------------------------------------

Compression::

    comp = Compression("zstd", level=1, threads=2)     # "zstd" | "gzip" | "none"
    comp.extension          # ".zst" / ".gz" / ""
    comp.stock_decompress() # "zstd -d" / "gzip -d" / None
    comp.manifest()         # {"algorithm": "zstd", "level": 1, "threads": 2}

Backup direction (``run_backup_stream``)::

    result = run_backup_stream(
        source=ProcSpec("pg_dump", argv, env=env, error_prefixes=("pg_dump: error:",)),
        compression=comp, encryptor=crypto_encryptor_or_None,
        writer=storage.open_writer(key), secrets=[password])
    result.size, result.sha256          # the stored bytes
    result.source_size, result.source_sha256   # the source's bytes (pg_dump output)
    # the writer is closed (committed) only when every stage succeeded, else aborted

Restore direction (``run_restore_stream`` / ``open_restore_stream``)::

    # push: stored object -> sha256/size check -> decrypt -> decompress -> sink(bytes)
    result = run_restore_stream(storage, key, sink=fh.write, compression="zstd",
                                decryptor=crypto.prepare_decryptor(spec) or None,
                                expected_sha256=manifest["artifact"]["sha256"],
                                expected_size=manifest["artifact"]["size"])
    result.size, result.sha256, result.output_size, result.output_sha256

    # pull: a readable stream whose fileno() can feed pg_restore/psql directly
    with open_restore_stream(storage, key, compression="zstd", decryptor=dec,
                             expected_sha256=...) as stream:
        subprocess.run(["pg_restore", ...], stdin=stream, check=False)
    # leaving the block joins the pipeline and raises IntegrityError / EncryptionError /
    # StorageError if anything failed; stream.result holds the RestoreResult.

The sha256 of the stored bytes is known only at the end of the stream: the
restore direction raises ``IntegrityError`` after the data has been produced,
so callers restore into a new database and discard it on error. (gpg's MDC and
zstd's frame checksum also catch corruption while streaming.)
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import signal
import subprocess
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.lifeboat.errors import (
    DumpError,
    EncryptionError,
    IntegrityError,
    LifeboatError,
    StorageError,
)

from ansible.module_utils.lifeboat.compression import Compression, ProcSpec

CHUNK = 1024 * 1024
STDERR_LINES = 200


# --------------------------------------------------------------- building blocks

class Tap:
    """Counts and hashes the bytes that pass (sha256)."""

    def __init__(self, name: str = "tap"):
        self.name = name
        self.size = 0
        self._h = hashlib.sha256()

    def __call__(self, data: bytes) -> bytes:
        self.size += len(data)
        self._h.update(data)
        return data

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()



class Count:
    """Counts the bytes between two child processes without touching them: the kernel moves them from one
    pipe to the other (``os.splice``), Python only learns how many there were."""

    def __init__(self, name: str = "count"):
        self.name = name
        self.size = 0

    def __call__(self, data: bytes) -> bytes:   # where Python holds the bytes anyway (a reader source)
        self.size += len(data)
        return data


def _splice(src_fd: int, dst_fd: int, counter: Count) -> None:
    """Move every byte from pipe ``src_fd`` to pipe ``dst_fd`` in the kernel, counting them (read/write where
    os.splice is missing)."""
    splice = getattr(os, "splice", None)
    while True:
        if splice is not None:
            try:
                n = splice(src_fd, dst_fd, CHUNK)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                splice = None   # not a pipe, or a kernel without splice: copy instead
                continue
            if not n:
                return
            counter.size += n
            continue
        data = os.read(src_fd, CHUNK)
        if not data:
            return
        view = memoryview(data)
        while view:
            view = view[os.write(dst_fd, view):]
        counter.size += len(data)


class _Child:
    def __init__(self, spec: ProcSpec, popen: subprocess.Popen):
        self.spec = spec
        self.popen = popen
        self.head: list[str] = []
        self.tail: deque[str] = deque(maxlen=STDERR_LINES)
        self.error_lines: list[str] = []
        self.killed_by_us = False
        self.rc_before_kill: int | None = None
        self.thread = threading.Thread(target=self._read_stderr, name=f"lifeboat-stderr-{spec.name}",
                                       daemon=True)
        self.thread.start()

    def _read_stderr(self) -> None:
        stream = self.popen.stderr
        if stream is None:
            return
        for raw in iter(lambda: stream.readline(64 * 1024), b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if len(self.head) < 20:
                self.head.append(line)
            else:
                self.tail.append(line)
            if self.spec.error_prefixes and line.startswith(self.spec.error_prefixes) and len(self.error_lines) < 20:
                self.error_lines.append(line)
        stream.close()

    def stderr_text(self) -> str:
        return "\n".join(self.head + list(self.tail))


def _grow_pipe(stream: Any) -> None:
    """Best effort: a 1 MiB pipe buffer (Linux) means fewer context switches between stages."""
    if stream is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)
    except (OSError, ValueError):
        pass  # above /proc/sys/fs/pipe-max-size or not a pipe: the default 64 KiB works too


def mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class Pipeline:
    """A linear chain: source (reader or ProcSpec) -> elements -> sink.

    Elements are Transform/Tap (run in a Python pump thread) or ProcSpec
    (a child process). Consecutive child processes are connected by OS pipes;
    a pump thread moves bytes wherever Python code sits between two ends.
    """

    def __init__(self, source: Any, elements: list[Any], sink: Callable[[bytes], Any],
                 secrets: list[str] | None = None, error_class: type[LifeboatError] = DumpError,
                 chunk: int = CHUNK, sink_chunk: int = 0):
        self.source = source
        self.elements = [e for e in elements if e is not None]
        self.sink = sink
        self.secrets = [s for s in (secrets or []) if s]
        self.error_class = error_class
        self.chunk = chunk
        #: the read size of the last segment (the sink's): a whole S3 part at once, handed on without copies
        self.sink_chunk = sink_chunk
        self.children: list[_Child] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[tuple[int, BaseException]] = []
        self._lock = threading.Lock()
        self._aborted = False
        self._seq = 0

    # -- lifecycle -------------------------------------------------------------
    def _spawn(self, spec: ProcSpec, stdin: Any) -> _Child:
        try:
            if spec.filter is not None:
                popen = spec.filter.spawn(stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            else:
                popen = subprocess.Popen(spec.argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         env=spec.env, cwd=spec.cwd, pass_fds=spec.pass_fds, close_fds=True)
        except OSError as exc:
            raise self.error_class(f"{spec.name}: cannot start {spec.argv[0]}: {exc.strerror}") from None
        for stream in (popen.stdin, popen.stdout):
            _grow_pipe(stream)
        child = _Child(spec, popen)
        self.children.append(child)
        return child

    def _record(self, exc: BaseException) -> None:
        with self._lock:
            self._seq += 1
            self.errors.append((self._seq, exc))
        self.abort()

    def abort(self) -> None:
        """Kill every child that is still running (remembering which ones had already exited)."""
        with self._lock:
            if self._aborted:
                return
            self._aborted = True
        for child in self.children:
            rc = child.popen.poll()
            if rc is None:
                child.killed_by_us = True
                try:
                    child.popen.kill()
                except OSError:
                    pass
            else:
                child.rc_before_kill = rc

    def _pump(self, reader: Any, items: list[Any], writer: Callable[[bytes], Any],
              close: Callable[[], None] | None, size: int = 0) -> None:
        try:
            # full chunks (read, not read1): ~16x fewer calls through hash/compress than 64 KiB pipe reads
            read = reader.read
            size = size or self.chunk
            while True:
                data = read(size)
                if not data:
                    break
                if self._aborted:
                    return
                for item in items:
                    data = item(data) if isinstance(item, (Tap, Count)) else item.fn(data)
                    if not data:
                        break
                if data:
                    writer(data)
            if self._aborted:
                return
            # end of stream: flush the transforms in order
            tail = b""
            for item in items:
                if isinstance(item, (Tap, Count)):
                    tail = item(tail) if tail else tail
                else:
                    tail = (item.fn(tail) if tail else b"") + item.finish()
            if tail:
                writer(tail)
            if close:
                close()
        except BaseException as exc:  # noqa: BLE001 - recorded and re-raised by run()
            if not self._aborted:
                self._record(exc)
            elif not isinstance(exc, (BrokenPipeError, ValueError, OSError)):
                self._record(exc)

    def run(self) -> None:
        """Run to completion; raise a typed error naming the first real cause on any failure."""
        try:
            self._start()
            for t in self.threads:
                t.join()
            for child in self.children:
                child.popen.wait()
                child.thread.join()
        except BaseException:
            self.abort()
            for child in self.children:
                try:
                    child.popen.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            raise
        finally:
            for child in self.children:
                for stream in (child.popen.stdout, child.popen.stdin):
                    if stream is not None:
                        try:
                            stream.close()
                        except OSError:
                            pass
        failure = self.failure()
        if failure is not None:
            raise failure

    def _start(self) -> None:
        # segments: python items between process boundaries
        src = self.source
        if isinstance(src, ProcSpec):
            first = self._spawn(src, subprocess.DEVNULL)
            reader: Any = first.popen.stdout
            prev_child: _Child | None = first
        else:
            reader = src
            prev_child = None
        items: list[Any] = []
        for element in self.elements:
            if isinstance(element, ProcSpec):
                if prev_child is not None and items and all(isinstance(i, Count) for i in items):
                    # process to process, counted on the way: the kernel moves the bytes (no copy in Python)
                    child = self._spawn(element, subprocess.PIPE)
                    self._relay(prev_child, child, items)
                elif items or prev_child is None:
                    child = self._spawn(element, subprocess.PIPE)
                    stdin = child.popen.stdin
                    assert stdin is not None
                    self._thread(reader, items, stdin.write, stdin.close)
                else:
                    child = self._spawn(element, prev_child.popen.stdout)
                    # the child owns the read end now; the parent's copy must go
                    assert prev_child.popen.stdout is not None
                    prev_child.popen.stdout.close()
                reader = child.popen.stdout
                prev_child = child
                items = []
            else:
                items.append(element)
        self._thread(reader, items, self.sink, None, self.sink_chunk)

    def _thread(self, reader: Any, items: list[Any], writer: Callable[[bytes], Any],
                close: Callable[[], None] | None, size: int = 0) -> None:
        t = threading.Thread(target=self._pump, args=(reader, list(items), writer, close, size),
                             name=f"lifeboat-pump-{len(self.threads)}", daemon=True)
        self.threads.append(t)
        t.start()

    def _relay(self, src: _Child, dst: _Child, counters: list[Any]) -> None:
        out, inp = src.popen.stdout, dst.popen.stdin
        assert out is not None and inp is not None

        def relay() -> None:
            try:
                counter = counters[0]
                _splice(out.fileno(), inp.fileno(), counter)
                for extra in counters[1:]:
                    extra.size = counter.size
                inp.close()
            except BaseException as exc:  # noqa: BLE001 - recorded and re-raised by run()
                if isinstance(exc, BrokenPipeError):
                    # the next stage closed its input: it is exiting; let it finish dying so that its own exit
                    # status (not 'killed by us') names the cause
                    try:
                        dst.popen.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        pass
                if not self._aborted or not isinstance(exc, OSError):
                    self._record(exc)
            finally:
                # nobody reads it any more: a writer still holding it (a grandchild of a killed stage) gets
                # EPIPE instead of blocking forever on a full pipe with our stderr reader waiting on it
                for stream in (out, inp):
                    try:
                        stream.close()
                    except OSError:
                        pass

        t = threading.Thread(target=relay, name=f"lifeboat-relay-{len(self.threads)}", daemon=True)
        self.threads.append(t)
        t.start()

    # -- diagnosis -------------------------------------------------------------
    def failure(self) -> LifeboatError | None:
        """The error that explains the failure, or None when everything succeeded."""
        real = [e for _, e in sorted(self.errors, key=lambda t: t[0])
                if not isinstance(e, (BrokenPipeError,))]
        for exc in real:
            if isinstance(exc, LifeboatError):
                return type(exc)(mask(str(exc), self.secrets), exc.option)
        failed = []
        for child in self.children:
            if child.killed_by_us:
                continue  # we killed it because something else failed
            rc = child.rc_before_kill if child.rc_before_kill is not None else child.popen.returncode
            if rc != 0 or child.error_lines:
                failed.append((child, rc))
        # a stage killed by SIGPIPE only wrote to a later stage that had already died: that one is the cause
        for child, rc in sorted(failed, key=lambda f: f[1] == -signal.SIGPIPE):
            return self._child_error(child, rc)
        for exc in real:
            return self.error_class(mask(f"pipeline failed: {exc.__class__.__name__}: {exc}", self.secrets))
        if self.errors:
            return self.error_class("pipeline failed: a stage closed its input early (broken pipe)")
        return None

    def _child_error(self, child: _Child, rc: int | None) -> LifeboatError:
        name = child.spec.name
        if child.error_lines:
            detail = "; ".join(child.error_lines[:3])
        else:
            lines = [ln for ln in child.head + list(child.tail) if ln.strip()]
            detail = "; ".join(lines[-3:]) if lines else ""
        if rc is not None and rc < 0:
            try:
                signame = signal.Signals(-rc).name
            except ValueError:
                signame = f"signal {-rc}"
            status = f"killed by {signame}"
        else:
            status = f"exit status {rc}"
        msg = f"{name} failed ({status})" + (f": {detail}" if detail else "")
        cls = self.error_class
        if child.spec.filter is not None:
            cls = EncryptionError
        return cls(mask(msg, self.secrets))


# ------------------------------------------------------------------- backup side

@dataclass
class BackupResult:
    size: int
    sha256: str
    source_size: int
    source_sha256: str | None
    #: how the source's own bytes are checked at restore: "sha256" (source_sha256) or the compressor's
    #: checksum of them ("zstd-frame-checksum": XXH64 in the zstd frame; "gzip-crc32": each member's CRC32)
    source_check: str = "sha256"


FRAME_CHECKS = {"zstd": "zstd-frame-checksum", "gzip": "gzip-crc32"}
_M_MMAP_THRESHOLD = -3


def _steady_allocator(threshold: int = CHUNK) -> None:
    """Buffers of a MiB and more are mapped and unmapped, never kept in the heap (glibc; best effort).

    glibc raises its mmap threshold each time a large mapped buffer is freed (up to 32 MiB), after which the
    8 MiB parts of an upload come from the heaps of the threads that read and upload them, and their freed
    memory stays resident: measured +22 MB of peak RSS in a backup's Python process (bench/run.py), the
    difference between a flat and a growing peak. A fixed threshold keeps each part's memory returned when
    its upload ends. Elsewhere (musl, macOS) nothing changes."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)
    except (OSError, AttributeError, TypeError):
        pass


def run_backup_stream(source: Any, writer: Any, compression: Compression | None = None, encryptor: Any = None,
                      secrets: list[str] | None = None, chunk: int = CHUNK,
                      error_class: type[LifeboatError] = DumpError, source_check: str = "sha256") -> BackupResult:
    """Stream ``source`` (a ProcSpec such as pg_dump, or a readable) through compression and
    encryption into ``writer`` (a storage.Writer). The writer is closed only on full success;
    on any failure every child is killed, ``writer.abort()`` runs and a typed error is raised.

    ``source_check="frame"``: where the source and the compressor are child processes, they are connected
    process to process (the bytes counted by ``os.splice`` in the kernel: Python never reads them) and the
    dump's own bytes are checked at restore by the compressor's checksum (zstd's frame checksum, gzip's CRC32)
    instead of a sha256 that Python would have to read them all for. Python then reads only the final
    (encrypted) stream, a whole S3 part at a time, for its sha256 and the upload. Anything else (an in-process
    source or compressor, no compression): the source's sha256, as with ``source_check="sha256"``.
    """
    comp = (compression or Compression("none")).resolve()
    out_tap = Tap("stored")
    proc = comp.compressor_proc(prefer_process=True) if source_check == "frame" else None
    if proc is not None and isinstance(source, ProcSpec):
        src_tap: Tap | Count = Count("source")
        elements: list[Any] = [src_tap, proc]
        check = FRAME_CHECKS[comp.algorithm]
    else:
        src_tap = Tap("source")
        elements = [src_tap]
        check = "sha256"
        transform = comp.compressor()
        elements.append(transform if transform is not None else comp.compressor_proc())
    if encryptor is not None and getattr(encryptor, "active", False):
        elements.append(ProcSpec.from_filter(encryptor))
    elements.append(out_tap)
    sink_chunk = int(getattr(writer, "read_size", 0) or 0)
    if sink_chunk >= CHUNK:
        _steady_allocator()
    pipe = Pipeline(source, elements, writer.write, secrets=secrets, error_class=error_class, chunk=chunk,
                    sink_chunk=sink_chunk)
    try:
        pipe.run()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    source_sha = src_tap.sha256 if isinstance(src_tap, Tap) else None
    return BackupResult(out_tap.size, out_tap.sha256, src_tap.size, source_sha, check)


# ------------------------------------------------------------------ restore side

@dataclass
class RestoreResult:
    size: int               # stored bytes read
    sha256: str             # of the stored bytes
    output_size: int        # bytes after decryption and decompression
    output_sha256: str


def _restore_pipeline(reader: Any, sink: Callable[[bytes], Any], compression: str | Compression,
                      decryptor: Any, chunk: int) -> tuple[Pipeline, Tap, Tap]:
    comp = compression if isinstance(compression, Compression) else Compression(compression or "none")
    in_tap = Tap("stored")
    out_tap = Tap("output")
    elements: list[Any] = [in_tap]
    if decryptor is not None and getattr(decryptor, "active", False):
        elements.append(ProcSpec.from_filter(decryptor))
    dec = comp.decompressor()
    elements.append(dec if dec is not None else comp.decompressor_proc())
    elements.append(out_tap)
    return Pipeline(reader, elements, sink, error_class=StorageError, chunk=chunk), in_tap, out_tap


def _check(in_tap: Tap, expected_sha256: str | None, expected_size: int | None, what: str) -> None:
    if expected_size is not None and in_tap.size != int(expected_size):
        raise IntegrityError(f"{what}: size is {in_tap.size} bytes, the manifest says {expected_size}")
    if expected_sha256 and in_tap.sha256 != expected_sha256.lower():
        raise IntegrityError(f"{what}: sha256 is {in_tap.sha256}, the manifest says {expected_sha256}")


def run_restore_stream(storage: Any, key: str, sink: Callable[[bytes], Any], compression: str | Compression = "none",
                       decryptor: Any = None, expected_sha256: str | None = None,
                       expected_size: int | None = None, chunk: int = CHUNK) -> RestoreResult:
    """Read ``key`` from ``storage``, check size/sha256, decrypt, decompress, push to ``sink``.

    Raises IntegrityError (checksum/size), EncryptionError (decryption failed),
    StorageError (reading, decompressing) or whatever ``sink`` raised.
    """
    what = storage.uri(key)
    reader = storage.open_reader(key)
    pipe, in_tap, out_tap = _restore_pipeline(reader, sink, compression, decryptor, chunk)
    try:
        pipe.run()
    except LifeboatError:
        raise
    except zlib.error as exc:
        raise StorageError(f"{what}: decompression failed: {exc}") from None
    finally:
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - best effort
            pass
    _check(in_tap, expected_sha256, expected_size, what)
    return RestoreResult(in_tap.size, in_tap.sha256, out_tap.size, out_tap.sha256)


class RestoreStream:
    """A readable end of a restore pipeline (see :func:`open_restore_stream`)."""

    def __init__(self, storage: Any, key: str, compression: str | Compression, decryptor: Any,
                 expected_sha256: str | None, expected_size: int | None, chunk: int):
        self.what = storage.uri(key)
        self.result: RestoreResult | None = None
        self.error: BaseException | None = None
        rfd, wfd = os.pipe()
        self._r = os.fdopen(rfd, "rb", buffering=0)
        self._w = os.fdopen(wfd, "wb", buffering=0)
        self._args = (storage, key, compression, decryptor, expected_sha256, expected_size, chunk)
        self._thread = threading.Thread(target=self._run, name="lifeboat-restore-stream", daemon=True)
        self._thread.start()

    def _write(self, data: bytes) -> None:
        self._w.write(data)

    def _run(self) -> None:
        storage, key, compression, decryptor, sha, size, chunk = self._args
        try:
            self.result = run_restore_stream(storage, key, self._write, compression, decryptor, sha, size, chunk)
        except BaseException as exc:  # noqa: BLE001 - re-raised by close()
            self.error = exc
        finally:
            try:
                self._w.close()
            except OSError:
                pass

    def fileno(self) -> int:
        return self._r.fileno()

    def read(self, n: int = -1) -> bytes:
        return self._r.read(n) if n >= 0 else self._r.readall()

    def close(self) -> RestoreResult:
        """Join the pipeline; raise its error if it failed. Returns the RestoreResult."""
        try:
            self._r.close()  # a consumer that stopped early makes the pump fail with EPIPE
        except OSError:
            pass
        self._thread.join()
        if self.error is not None:
            if isinstance(self.error, BrokenPipeError):
                raise StorageError(f"{self.what}: the consumer stopped reading before the end of the stream")
            raise self.error
        assert self.result is not None
        return self.result

    def __enter__(self) -> "RestoreStream":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except BaseException:  # noqa: BLE001 - the body's exception wins
                pass


def open_restore_stream(storage: Any, key: str, compression: str | Compression = "none", decryptor: Any = None,
                        expected_sha256: str | None = None, expected_size: int | None = None,
                        chunk: int = CHUNK) -> RestoreStream:
    """A readable stream of the restored bytes (decrypted, decompressed).

    Pass it as ``stdin=`` to pg_restore/psql/tar, or ``read()`` it. Closing it (or leaving
    the ``with`` block) waits for the pipeline and raises its error, if any: check that
    before trusting what the consumer produced.
    """
    return RestoreStream(storage, key, compression, decryptor, expected_sha256, expected_size, chunk)
