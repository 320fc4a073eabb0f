"""A bounded on-disk spool for impressions the database could not take right now.

Each batch is one file written with ``fsync`` before ``/v1/score`` answers, so an answered
request's impressions are durable even while the database is down. ``replay`` moves spooled
batches into the store (idempotent inserts) and deletes each file only after its commit.
When the spool holds ``max_bytes`` or more, ``append`` raises ``SpoolFull`` and the API
answers 503 rather than acknowledging something it could lose.
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


class SpoolFull(CtrError):
    """The spool reached its size bound."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        output_dir(directory)

    def files(self) -> list[Path]:
        return sorted(self.directory.glob(f"{_PREFIX}*{_SUFFIX}"))

    def holds_batches(self) -> bool:
        """Whether any batch waits (cheaper than ``files``: asked before every commit)."""
        with os.scandir(self.directory) as entries:
            return any(e.name.startswith(_PREFIX) and e.name.endswith(_SUFFIX) for e in entries)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Durably keep ``rows``; ``SpoolFull`` when the bound is reached."""
        payload = json.dumps(list(rows), separators=(",", ":")).encode()
        with self._lock:
            if self.size_bytes() + len(payload) > self.max_bytes:
                raise SpoolFull(f"impression spool {self.directory} is full ({self.max_bytes} bytes)")
            final = self.directory / f"{_PREFIX}{uuid7()}{_SUFFIX}"
            tmp = final.with_suffix(".part")
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def replay(self, store: EventStore) -> int:
        """Insert spooled batches oldest first; returns rows moved. Stops at the first failure."""
        moved = 0
        with self._lock:
            for path in self.files():
                rows = json.loads(path.read_bytes())
                try:
                    store.log_impressions(rows)
                except StoreUnavailable:
                    break
                path.unlink()
                moved += len(rows)
        if moved:
            log.info("replayed %d spooled impressions into the event log", moved)
        return moved
