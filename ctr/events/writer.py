"""Group commit for impressions: many concurrent requests, one transaction, one fsync.

``await writer.write(rows)`` returns only after the rows are committed (or spooled), so an
answered request's impressions are durable; requests arriving while a commit is in progress
are gathered into the next one. On SQLite with ``synchronous=FULL`` this turns one fsync per
request into one per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

Rows = list[dict[str, Any]]


class GroupCommitWriter:
    """Batches ``write`` calls; ``sink`` (blocking, run in a thread) makes a batch durable."""

    def __init__(self, sink: Callable[[Rows], None], max_rows: int = 5000) -> None:
        self.sink = sink
        self.max_rows = max_rows
        self._queue: asyncio.Queue[tuple[Rows, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def write(self, rows: Rows) -> None:
        """Return once ``rows`` are durable; re-raises the sink's error for this batch."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, done))
        await done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            while not self._queue.empty() and size < self.max_rows:
                item = self._queue.get_nowait()
                batch.append(item)
                size += len(item[0])
            rows = [row for part, _ in batch for row in part]
            try:
                await asyncio.to_thread(self.sink, rows)
            except Exception as exc:  # handed to every waiting request, which answers 503
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
