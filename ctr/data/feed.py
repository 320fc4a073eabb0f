"""Feeding the training step: encoded shards → shuffled batches on the device, overlapped.

Worker threads load the next shards' arrays (``ctr.data.encoded``), draw the shard's row sample
(replay shards keep a share ``keep`` of their rows) and its shuffle, gather the rows in that
order and, for CUDA, pin the result; the training thread copies a whole shard to the device
asynchronously and yields contiguous slices of it as batches. At most ``workers + 1`` shards are
in flight (bounded memory: ~157 bytes a row each).

Order and sampling come only from the epoch's ``rng``: the shard order and one seed per shard are
drawn before any worker starts, so a run is reproducible whatever the number of workers or
their timing.

Shapes: each batch is ``(dense float32 (b, 13), ids int32 (b, 26), label float32 (b,))`` with
``b ≤ batch_size`` (a shard's last batch may be short).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ctr.cpus import usable_cores
from ctr.data.encoded import EncodedShard
from ctr.errors import InputError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def default_workers() -> int:
    """``CTR_TRAIN_WORKERS`` if set, else the cores present less one for the training thread
    (at least 1, at most 8: more buys nothing once the device is fed)."""
    if raw := os.environ.get("CTR_TRAIN_WORKERS"):
        try:
            value = int(raw)
        except ValueError as exc:
            raise InputError(f"CTR_TRAIN_WORKERS must be an integer, got {raw!r}") from exc
        if value < 0:
            raise InputError(f"CTR_TRAIN_WORKERS must be >= 0, got {value}")
        return value
    return max(1, min(8, usable_cores() - 1))


@dataclass(frozen=True)
class Part:
    """An encoded shard and the share of its rows an epoch draws (1.0: all)."""

    shard: EncodedShard
    keep: float = 1.0

    @property
    def expected_rows(self) -> float:
        return self.shard.rows * self.keep


def _prepare(part: Part, seed: int, pin: bool) -> tuple[torch.Tensor, ...]:
    dense, ids, label = part.shard.load()
    rng = np.random.default_rng(seed)
    if part.keep < 1.0:
        chosen = np.flatnonzero(rng.random(label.size) < part.keep)
        order = chosen[rng.permutation(chosen.size)]
    else:
        order = rng.permutation(label.size)
    tensors = tuple(torch.from_numpy(np.take(a, order, axis=0)) for a in (dense, ids, label))
    return tuple(t.pin_memory() for t in tensors) if pin else tensors


class ShardFeed:
    """Shuffled batches of ``parts`` on ``device``, ``workers`` threads ahead (0: inline)."""

    def __init__(self, parts: Sequence[Part], batch_size: int, device: torch.device, workers: int) -> None:
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.parts = list(parts)
        self.batch_size = batch_size
        self.device = device
        self.workers = workers

    @property
    def expected_rows(self) -> int:
        return int(sum(p.expected_rows for p in self.parts))

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        order = rng.permutation(len(self.parts))
        seeds = rng.integers(0, 2**63 - 1, size=len(self.parts))
        jobs = [(self.parts[k], int(seeds[i])) for i, k in enumerate(order)]
        pin = self.device.type == "cuda"
        if self.workers <= 0:
            for part, seed in jobs:
                yield from self._slices(_prepare(part, seed, pin))
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ctr-feed") as pool:
            pending: deque[Future[tuple[torch.Tensor, ...]]] = deque()
            todo = iter(jobs)
            try:
                for part, seed in todo:
                    pending.append(pool.submit(_prepare, part, seed, pin))
                    if len(pending) > self.workers:
                        break
                while pending:
                    ready = pending.popleft().result()
                    if (nxt := next(todo, None)) is not None:
                        pending.append(pool.submit(_prepare, nxt[0], nxt[1], pin))
                    yield from self._slices(ready)
            finally:
                for future in pending:
                    future.cancel()

    def _slices(self, shard: tuple[torch.Tensor, ...]) -> Iterator[Batch]:
        dense, ids, label = (t.to(self.device, non_blocking=True) for t in shard)
        label = label.float()
        for start in range(0, label.shape[0], self.batch_size):
            stop = start + self.batch_size
            yield dense[start:stop], ids[start:stop], label[start:stop]
