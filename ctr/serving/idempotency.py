"""Answers of score requests by ``request_id``, so a retried request gets the first answer.

An ad server that times out and retries with the same ``request_id`` must not log the ads
twice or see other impression ids. ``RecentAnswers`` keeps each answer for ``window_s``
seconds (bounded by ``max_bytes`` in all, oldest dropped first); a repeat that arrives while
the first is still being answered waits for it. A request that failed (no answer) is
forgotten, so its retry runs afresh. The memory is this process's: with several replicas a
retry that lands on another replica is scored again (at-least-once).

>>> import asyncio
>>> async def demo() -> list[bytes | None]:
...     answers = RecentAnswers(window_s=60, max_bytes=1000)
...     first = await answers.claim("r1")          # None: nobody answered r1 yet
...     answers.resolve("r1", b'{"ok":1}')
...     return [first, await answers.claim("r1")]
>>> asyncio.run(demo())
[None, b'{"ok":1}']
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict


class RecentAnswers:
    def __init__(self, window_s: float = 600.0, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.window_s = window_s
        self.max_bytes = max_bytes
        self._answers: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # oldest first
        self._pending: dict[str, asyncio.Future[bytes | None]] = {}
        self._bytes = 0

    async def claim(self, request_id: str) -> bytes | None:
        """The answer already given to ``request_id``; ``None`` if the caller is to answer it
        (and must then call ``resolve`` or ``forget``)."""
        self._expire()
        kept = self._answers.get(request_id)
        if kept is not None:
            return kept[1]
        pending = self._pending.get(request_id)
        if pending is not None:
            answer = await asyncio.shield(pending)
            return answer if answer is not None else await self.claim(request_id)
        self._pending[request_id] = asyncio.get_running_loop().create_future()
        return None

    def resolve(self, request_id: str, answer: bytes) -> None:
        """Keep ``answer`` for ``request_id`` and hand it to repeats waiting for it."""
        self._settle(request_id, answer)
        if len(answer) > self.max_bytes:
            return
        self._answers[request_id] = (time.monotonic() + self.window_s, answer)
        self._bytes += len(answer)
        while self._bytes > self.max_bytes:
            self._drop_oldest()

    def forget(self, request_id: str) -> None:
        """The request failed: a repeat (waiting or later) is answered afresh."""
        self._settle(request_id, None)

    def _settle(self, request_id: str, answer: bytes | None) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None and not pending.done():
            pending.set_result(answer)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._answers and next(iter(self._answers.values()))[0] <= now:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, (_, answer) = self._answers.popitem(last=False)
        self._bytes -= len(answer)
