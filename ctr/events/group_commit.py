"""Group commit: many concurrent requests, one transaction, one fsync.

``await writer.write(payload)`` returns only after the payload is durable (its result comes
back from the sink), so an answered request's events are durable; payloads arriving while a
commit is in progress are gathered into the next one. On SQLite with ``synchronous=FULL``
this turns one fsync per request into one per batch. The score API runs one writer for
impressions and clicks together (payload: the rows of a score request, or the clicks of a
click request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")


class GroupCommitWriter(Generic[P, R]):
    """Batches ``write`` calls; ``sink`` (blocking, run in a thread) makes a batch durable.

    ``sink(payloads)`` returns one result per payload, in order; a result that is an
    exception is raised to that payload's writer. If the sink raises, every payload of the
    batch gets the exception. ``size`` weighs a payload against
    ``max_size`` (a batch closes once it reaches it).
    """

    def __init__(self, sink: Callable[[list[P]], list[R]], size: Callable[[P], int], max_size: int = 5000) -> None:
        self.sink = sink
        self.size = size
        self.max_size = max_size
        self._queue: asyncio.Queue[tuple[P, asyncio.Future[R]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def write(self, payload: P) -> R:
        """Return the sink's result once ``payload`` is durable; re-raises the sink's error."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((payload, done))
        return await done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = self.size(batch[0][0])
            while not self._queue.empty() and size < self.max_size:
                item = self._queue.get_nowait()
                batch.append(item)
                size += self.size(item[0])
            try:
                results = await asyncio.to_thread(self.sink, [payload for payload, _ in batch])
            except Exception as exc:  # handed to every waiting request, which answers 503
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if done.done():
                    continue
                if isinstance(result, BaseException):
                    done.set_exception(result)
                else:
                    done.set_result(result)
