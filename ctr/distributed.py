"""Data-parallel training processes: one rank per process, PyTorch DDP underneath.

``launch(fn, nproc, *args)`` starts ``nproc`` processes (spawned, so CUDA is safe) that rendezvous
over TCP on 127.0.0.1 and calls ``fn(rank, *args)`` in each; the backend is NCCL when every rank
has a GPU of its own, gloo otherwise. A rank that raises makes ``launch`` raise (the others are
stopped by torch's process context). ``SINGLE`` is the rank of a run without processes: its
collectives do nothing.

Contract of the training code built on it: every rank reads its own slice of the shards
(every ``world``-th), the global batch is split evenly (``batch_size / world`` per rank, so the
learning-rate rule sees the same batch), rank 0 validates, exports and publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ctr.errors import InputError
from ctr.net import free_port

TIMEOUT = timedelta(minutes=30)  # rank 0 validates and exports while the others wait


@dataclass(frozen=True)
class Rank:
    """This process's place in the run: ``index`` in ``[0, world)``."""

    index: int = 0
    world: int = 1

    @property
    def leader(self) -> bool:
        return self.index == 0

    def broadcast(self, objects: list[Any]) -> None:
        """Replace ``objects`` on every rank with rank 0's (picklable values)."""
        if self.world > 1:
            dist.broadcast_object_list(objects, src=0)

    def device(self, requested: torch.device) -> torch.device:
        """The device of this rank: ``cuda:index`` when training on GPUs, else ``requested``."""
        if requested.type == "cuda" and self.world > 1:
            return torch.device("cuda", self.index)
        return requested


SINGLE = Rank()


def backend_for(device: torch.device, world: int) -> str:
    """``nccl`` for one GPU per rank, ``gloo`` on CPU; refuses more ranks than GPUs."""
    if device.type != "cuda":
        return "gloo"
    if world > torch.cuda.device_count():
        raise InputError(f"--nproc {world} asks for more GPUs than the {torch.cuda.device_count()} present")
    return "nccl"


def _entry(index: int, world: int, port: int, backend: str, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    rank = Rank(index, world)
    if backend == "nccl":
        torch.cuda.set_device(index)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=index, world_size=world, timeout=TIMEOUT
    )
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., None], nproc: int, device: torch.device, *args: Any) -> None:
    """Run ``fn(rank, *args)`` in ``nproc`` processes joined by a process group."""
    if nproc < 2:
        raise InputError(f"launch needs at least 2 processes, got {nproc}")
    backend = backend_for(device, nproc)
    mp.start_processes(  # type: ignore[attr-defined, no-untyped-call]  # torch.multiprocessing re-exports it untyped
        _entry, args=(nproc, free_port(), backend, fn, args), nprocs=nproc, join=True, start_method="spawn"
    )
