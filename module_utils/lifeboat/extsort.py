"""External sort: sort a stream bigger than memory (sorted runs spilled to 0600 JSON-lines files, merged).
"""
from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def external_sort(items: Iterable[Any], key: Callable[[Any], Any], dump: Callable[[Any], list],
                  load: Callable[[list], Any], tmp: str, name: str, chunk: int) -> Iterator[Any]:
    """``items`` sorted by ``key``, holding at most ``chunk`` of them in memory.

    Beyond ``chunk`` items, sorted runs are spilled to 0600 JSON-lines files in
    ``tmp`` and merged with heapq.merge.
    """
    runs = sorted_runs(items, key, dump, tmp, name, chunk)
    return merge_runs(runs, key, load)


def sorted_runs(items: Iterable[Any], key: Callable[[Any], Any], dump: Callable[[Any], list], tmp: str,
                name: str, chunk: int) -> tuple[list[str], list[Any]]:
    """Phase 1 of the external sort: (spilled run files, the last run sorted in memory)."""
    buf: list[Any] = []
    files: list[str] = []
    for item in items:
        buf.append(item)
        if len(buf) >= chunk:
            files.append(_spill(buf, key, dump, tmp, f"{name}-{len(files)}"))
            buf = []
    buf.sort(key=key)
    return files, buf


def merge_runs(runs: tuple[list[str], list[Any]], key: Callable[[Any], Any],
               load: Callable[[list], Any]) -> Iterator[Any]:
    """Phase 2 of the external sort: merge the runs lazily."""
    files, buf = runs
    if not files:
        yield from buf
        return
    handles = [open(f, encoding="utf-8") for f in files]  # noqa: SIM115 - closed below
    try:
        streams = [(load(json.loads(line)) for line in h) for h in handles]
        yield from heapq.merge(*streams, iter(buf), key=key)
    finally:
        for h in handles:
            h.close()


def _spill(buf: list[Any], key: Callable[[Any], Any], dump: Callable[[Any], list], tmp: str, name: str) -> str:
    buf.sort(key=key)
    path = os.path.join(tmp, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for item in buf:
            fh.write(json.dumps(dump(item)) + "\n")
    return path
