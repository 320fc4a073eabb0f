"""A bounded on-disk spool for impressions the database could not take right now.

Each batch is one file written with ``fsync`` before ``/v1/score`` answers, so an answered
request's impressions are durable even while the database is down. ``replay`` moves spooled
batches into the store oldest first, several files per transaction up to ``max_rows``, and
deletes the files only after their commit (a crash in between replays them again; inserts
are idempotent). ``append`` and ``replay`` never wait on each other: a long drain does not
stall the requests that keep spooling meanwhile. Rows the database refuses for their
content are quarantined by the store, so a poison batch is never retried forever. When the
spool holds ``max_bytes`` or more, ``append`` raises ``SpoolFull`` and the API answers 503
rather than acknowledging something it could lose.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctr.errors import CtrError
from ctr.events.store import EventStore, StoreUnavailable
from ctr.ids import uuid7
from ctr.paths import output_dir

log = logging.getLogger(__name__)


_PREFIX, _SUFFIX = "batch-", ".json"  # a batch file; ``.part`` while it is being written
_UNREADABLE = "unreadable-"  # a batch file that is not JSON (disk damage): kept aside, never replayed


class SpoolFull(CtrError):
    """The spool reached its size bound."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # guards ``_bytes`` and file creation
        self._draining = threading.Lock()  # one replay at a time
        output_dir(directory)
        self._bytes = sum(_size(p) for p in self.files())

    def files(self) -> list[Path]:
        """Batch files, oldest first (their names are UUIDv7s)."""
        return sorted(self.directory.glob(f"{_PREFIX}*{_SUFFIX}"))

    def holds_batches(self) -> bool:
        """Whether any batch waits (cheaper than ``files``: asked before every commit)."""
        with os.scandir(self.directory) as entries:
            return any(e.name.startswith(_PREFIX) and e.name.endswith(_SUFFIX) for e in entries)

    def size_bytes(self) -> int:
        return self._bytes

    def is_full(self) -> bool:
        return self._bytes >= self.max_bytes

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Durably keep ``rows``; ``SpoolFull`` when the bound is reached."""
        payload = json.dumps(list(rows), separators=(",", ":")).encode()
        with self._lock:
            if self._bytes + len(payload) > self.max_bytes:
                raise SpoolFull(f"impression spool {self.directory} is full ({self.max_bytes} bytes)")
            final = self.directory / f"{_PREFIX}{uuid7()}{_SUFFIX}"
            tmp = final.with_suffix(".part")
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(self.directory)
            self._bytes += len(payload)

    def replay(self, store: EventStore, max_rows: int = 2000) -> int:
        """Move spooled batches into ``store`` until none is left; returns the rows moved.

        Files go oldest first, as many per transaction as fit in ``max_rows`` (at least one);
        stops at the first ``StoreUnavailable``. Returns 0 at once if another replay runs.
        """
        if not self._draining.acquire(blocking=False):
            return 0
        moved = 0
        try:
            while files := self.files():
                chunk, rows = self._take(files, max_rows)
                try:
                    store.log_impressions(rows)
                except StoreUnavailable:
                    break
                for path in chunk:
                    self._remove(path)
                moved += len(rows)
        finally:
            self._draining.release()
        if moved:
            log.info("replayed %d spooled impressions into the event log", moved)
        return moved

    def _take(self, files: list[Path], max_rows: int) -> tuple[list[Path], list[dict[str, Any]]]:
        """The oldest files whose rows fit in ``max_rows`` (at least one file), and their rows.

        A file that is not valid JSON is renamed ``unreadable-…`` and logged, never replayed."""
        chunk: list[Path] = []
        rows: list[dict[str, Any]] = []
        for path in files:
            if chunk and len(rows) >= max_rows:
                break
            try:
                batch = json.loads(path.read_bytes())
                if not isinstance(batch, list) or not all(isinstance(row, dict) for row in batch):
                    raise ValueError("not a list of rows")
            except (ValueError, OSError) as exc:
                log.error("spool file %s is unreadable (%s); kept aside, not replayed", path, exc)
                self._remove(path, aside=path.with_name(_UNREADABLE + path.name))
                continue
            chunk.append(path)
            rows.extend(batch)
        return chunk, rows

    def _remove(self, path: Path, aside: Path | None = None) -> None:
        """Delete ``path`` (or rename it to ``aside``) and take it off the spool's size."""
        size = _size(path)
        if aside is None:
            path.unlink(missing_ok=True)
        else:
            path.rename(aside)
        with self._lock:
            self._bytes -= size


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
