"""CUDA graphs of a training step: each batch size's whole step (forward, backward, gradient
clipping, optimizer) recorded once and replayed as one launch.

Why: a DCN-v2 step issues some 160 operators from Python before the optimizer (a profile of the
step: forward, autograd's backward, CowClip), each one or more kernels. At batch 8192 the GPU
finishes them faster than eager PyTorch issues them, so small batches run far below the GPU's rate
(a batch ramp's first steps in particular), at a speed set by the host's CPU. A replayed graph
issues the same kernels with one call. Measured on an H200 (torch 2.11, 6 M rows,
``dcn_v2_gpu``): 5.10 M samples/s over ``ctr train``'s run with graphs against 3.37 M eager
(epoch 1, the ramp's 8k and 16k batches: 4.50 against 2.15 M); the parameters after replayed and
eager steps are bitwise equal, dropout included (``benchmarks/check_cuda_graph.py``).

Contract. ``step(dense, ids, labels) -> None`` runs one whole optimizer step on tensors of one
CUDA device: dense ``(B, 13)`` float, ids ``(B, 26)`` integer, labels ``(B,)`` float. To be
recordable it must not synchronise with the host (no ``.item()``, no data-dependent shapes), its
optimizer must be built with ``capturable=True`` and take its learning rates as device tensors
(changed between steps with ``fill_``, never replaced), and autocast inside it must run with
``cache_enabled=False``. :class:`GraphedSteps` then runs a batch whose size is in ``sizes``
eagerly for its first ``warmup`` occurrences (real steps, on a side stream: they create the
optimizer's state and the libraries' workspaces), records the step at the next occurrence and
replays it from then on: the batch is copied into the graph's own input tensors (three device
copies) and the graph is replayed. Any other size (a shard's short last batch) always runs
eagerly. Eager or replayed, each call is one optimizer step on the same parameters and state, in
stream order; only a recording waits for the GPU (once per size). Recording is thread-local:
other threads (the reader pinning host memory) go on using CUDA meanwhile.

Failure modes: a step that cannot be recorded (one that synchronises with the host:
``cudaErrorStreamCaptureInvalidated``) raises ``CtrError`` naming the batch size, the CUDA error
and the setting to turn off (``cuda_graphs``), at that size's first recording: within the first
steps of the run or of its ramp's stage. It does not fall back to eager steps: a failed
recording leaves the process's CUDA random generator mid-capture, and every later dropout step
fails (measured on an H100, torch 2.11). Each graph keeps its own memory pool (the step's
activations and gradients at that batch, a table-sized gradient among them) until
:meth:`GraphedSteps.keep_only` drops it: a batch ramp's smaller sizes once the ramp is over.

>>> steps = GraphedSteps(step, sizes={8192, 16384, 32768})  # doctest: +SKIP
>>> steps(dense, ids, labels)  # eager, recorded or replayed by the batch's size  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from ctr.errors import CtrError, first_line

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


class GraphedSteps:
    """One CUDA graph per batch size in ``sizes`` (module docstring); ``warmup`` eager steps each first."""

    def __init__(self, step: Step, sizes: Collection[int], warmup: int = 3) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the optimizer's state is created eagerly), got {warmup}")
        self.step = step
        self.sizes = frozenset(int(s) for s in sizes)
        self.warmup = warmup
        self.seen: dict[int, int] = {}
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]]] = {}
        self.replays = 0
        self._side: torch.cuda.Stream | None = None

    def __call__(self, dense: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> None:
        size = int(labels.shape[0])
        if size not in self.sizes:
            self.step(dense, ids, labels)
            return
        recorded = self.graphs.get(size)
        if recorded is not None:
            graph, inputs = recorded
            for static, batch in zip(inputs, (dense, ids, labels), strict=True):
                static.copy_(batch, non_blocking=True)
            graph.replay()
            self.replays += 1
            return
        count = self.seen.get(size, 0)
        self.seen[size] = count + 1
        if count < self.warmup:
            self._on_side_stream(dense, ids, labels)
            return
        self._record(size, dense, ids, labels)

    def _on_side_stream(self, dense: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> None:
        """An eager step on a side stream, ordered after and before the current stream's work."""
        if self._side is None:
            self._side = torch.cuda.Stream(device=labels.device)  # type: ignore[no-untyped-call]  # unannotated in torch
        current = torch.cuda.current_stream(labels.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            self.step(dense, ids, labels)
        current.wait_stream(self._side)

    def keep_only(self, sizes: Collection[int]) -> None:
        """Graph only ``sizes`` from now on; the others' graphs and memory are released."""
        self.sizes = frozenset(int(s) for s in sizes)
        for size in [s for s in self.graphs if s not in self.sizes]:
            del self.graphs[size]

    def _record(self, size: int, dense: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> None:
        """Record the step at ``size`` into a new graph, then replay it on this batch."""
        inputs = tuple(t.clone() for t in (dense, ids, labels))
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.step(*inputs)
        except RuntimeError as exc:
            raise CtrError(
                f"the training step at batch {size} could not be recorded as a CUDA graph "
                f"({first_line(exc)}); set cuda_graphs: false in the experiment to train without"
            ) from exc
        self.graphs[size] = (graph, inputs)
        graph.replay()  # recording runs nothing: this batch's step is the first replay
        self.replays += 1
