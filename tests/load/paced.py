"""An open-loop load at a fixed rate: request ``k`` leaves at ``start + k / rate``, whatever
the answers before it took (so a stall shows up as latency, not as a slower offered load).

``paced(send, rate, count, workers)`` runs ``send(k)`` from ``workers`` threads and returns
one ``Sent`` per request, in order. ``send`` returns ``(status, body)``; an exception
counts as status 0 with the error's text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sent:
    k: int
    at: float  # seconds since the load started, when the request left
    latency: float  # seconds from when it was due (not when a free worker sent it) to its answer
    status: int
    body: Any


def paced(send: Callable[[int], tuple[int, Any]], rate: float, count: int, workers: int = 8) -> list[Sent]:
    start = time.monotonic() + 0.05
    results: list[Sent | None] = [None] * count
    next_k = iter(range(count))
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                k = next(next_k, None)
            if k is None:
                return
            due = start + k / rate
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                status, body = send(k)
            except Exception as exc:  # a transport error is a result of the load, not of the harness
                status, body = 0, str(exc)
            results[k] = Sent(k, due - start, time.monotonic() - due, status, body)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
