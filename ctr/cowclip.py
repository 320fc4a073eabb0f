"""Adaptive column-wise clipping (CowClip) of an embedding table's gradient, for large batches.

A large batch sums many samples' gradients into the rows of frequent ids, while a rare id's row
gets one sample's worth: one global rate cannot suit both. CowClip bounds each row's gradient by
the size of the row itself, times how often the id occurs in the batch:

    t_i  = r · max(‖w_i‖₂, ζ) · c_i          c_i: occurrences of row i in the batch
    g_i ← g_i · min(1, t_i / ‖g_i‖₂)

with ``r`` the ratio and ``ζ`` the bound that keeps near-zero rows trainable. The rule comes with
a rate rule: the embedding table keeps the reference batch's learning rate (``embedding_lr_scaling:
none``) while the dense weights are scaled (``lr_scaling``); the keys are ``cowclip_ratio`` and
``cowclip_bound`` of an experiment (``ctr/configs/experiments.yaml``).

Units: ``grad`` is the gradient of the batch-mean loss, so a row's gradient is (1/B)·Σ over its
samples; measured on a 2k-row smoke run of ``dcn_v2_small`` (batch 4096), ‖g_i‖ / (‖w_i‖·c_i) is
~5e-5 (median) to 2e-4 (max): the paper's r = 1 never binds at this scale, r ~ 1e-4 does.

Shapes: ``weight`` and ``grad`` (R, d) fp32, ``rows`` any shape of int64 in [0, R). Rows absent
from the batch have a zero gradient and stay zero. The counts are this process's batch: with
data-parallel training the gradient would be all ranks', so ``ctr train --nproc N`` refuses it.
Cost per step: three passes over the table (weight norms, gradient norms, the scaling) and a
table-sized count, without a device-to-host synchronisation (``index_add_``, not ``bincount``).

>>> w = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
>>> g = torch.tensor([[30.0, 40.0], [1.0, 0.0]])
>>> clip_embedding_grad_(w, g, torch.tensor([0, 0, 1]), ratio=1.0, bound=0.1)
>>> g  # row 0: ‖g‖ 50 > 1·5·2 = 10; row 1: ‖g‖ 1 > 1·0.1·1
tensor([[6.0000, 8.0000],
        [0.1000, 0.0000]])
"""

from __future__ import annotations

import torch


def clip_embedding_grad_(
    weight: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor, ratio: float, bound: float
) -> None:
    """Clip ``grad`` in place, row by row, as the module docstring states; ``ratio`` and ``bound`` > 0."""
    flat = rows.reshape(-1)
    # index_add_ rather than bincount: on CUDA bincount reads the largest id back to the host to
    # size its output, a synchronisation every step that stalls the queue of kernels
    counts = torch.zeros(weight.shape[0], dtype=grad.dtype, device=grad.device)
    counts.index_add_(0, flat, torch.ones_like(flat, dtype=grad.dtype))
    limit = ratio * weight.detach().norm(dim=1).clamp_min(bound) * counts
    norm = grad.norm(dim=1)
    scale = torch.where(norm > limit, limit / norm.clamp_min(torch.finfo(grad.dtype).tiny), 1.0)
    grad.mul_(scale.unsqueeze(1))
