"""Deep & Cross Networks: DCN (vector cross) and DCN-v2 (matrix cross), in PyTorch.

Inputs are the outputs of ``ctr.features.FeatureTransform``: ``dense`` float32 ``(B, 13)``
and ``sparse`` int64 ``(B, 26)`` holding per-feature ids in ``[0, sizes[j])``. All 26
embedding tables live in one concatenated table; per-feature offsets are added inside the
model, so the ONNX graph takes the transform's ids unchanged.

``x0 = [dense, emb_1, …, emb_26]`` has width ``D = 13 + 26·d``.

* Vector cross (DCN, Wang et al. 2017): ``x_{l+1} = x0 · (x_lᵀ w_l) + b_l + x_l``,
  ``w_l, b_l ∈ R^D``.
* Matrix cross (DCN-v2, Wang et al. 2021): ``x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l``,
  ``W_l ∈ R^{D×D}`` or, with ``low_rank = r``, ``W_l = U_l V_lᵀ``, ``U_l, V_l ∈ R^{D×r}``.
* ``structure``: ``parallel`` (cross and MLP both read ``x0``, outputs concatenated) or
  ``stacked`` (the MLP reads the cross output). A final linear layer gives one logit.

``forward`` returns logits ``(B, 1)``; ``ProbabilityHead`` wraps a model for export and
returns pCTR ``(B, 1)``.

>>> m = DCN(ModelConfig(), sizes=[5] * 26)
>>> m(torch.zeros(4, 13), torch.zeros(4, 26, dtype=torch.long)).shape
torch.Size([4, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ctr.errors import InputError
from ctr.schema import N_DENSE, N_SPARSE


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. Defaults reproduce the original HugeCTR DCN."""

    cross_type: Literal["vector", "matrix"] = "vector"
    embedding_dim: int = 16
    cross_layers: int = 6
    low_rank: int | None = None
    structure: Literal["parallel", "stacked"] = "parallel"
    mlp: tuple[int, ...] = (1024, 1024)
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.cross_type not in ("vector", "matrix"):
            raise InputError(f"cross_type must be vector or matrix, got {self.cross_type!r}")
        if self.structure not in ("parallel", "stacked"):
            raise InputError(f"structure must be parallel or stacked, got {self.structure!r}")
        if self.low_rank is not None and self.cross_type != "matrix":
            raise InputError("low_rank applies to the matrix cross (DCN-v2) only")
        object.__setattr__(self, "mlp", tuple(self.mlp))


class VectorCrossNet(nn.Module):
    """DCN cross network: ``x_{l+1} = x0 · (x_lᵀ w_l) + b_l + x_l``; shape ``(B, D) → (B, D)``.

    Computed in closed form rather than layer by layer. By induction every layer's output is
    ``x_l = c_l · x0 + β_l`` with a per-row scalar ``c_l`` (``c_0 = 1``) and ``β_l = Σ_{k<l} b_k``,
    so ``x_lᵀ w_l = c_l · (x0ᵀ w_l) + β_lᵀ w_l`` and ``c_{l+1} = c_l + x_lᵀ w_l``. One
    ``(B, D) × (D, L)`` product gives every ``x0ᵀ w_l``; the recursion runs on ``(B, 1)``
    columns; the output is one multiply-add over ``(B, D)``. Same function and parameters as the
    layered form (the test compares both), without ``L`` passes over ``(B, D)`` tensors forward
    and backward. The product runs in fp32 even under autocast: the recursion multiplies its
    errors.
    """

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(width) / width**0.5) for _ in range(layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        if not self.weights:
            return x0
        w = torch.stack(list(self.weights), dim=1)  # (D, L)
        b = torch.stack(list(self.biases))  # (L, D)
        beta = torch.cat([torch.zeros_like(b[:1]), b.cumsum(0)])  # (L + 1, D): β_0 … β_L
        beta_dot_w = (beta[:-1] * w.T).sum(1)  # (L,): β_lᵀ w_l
        with torch.autocast(x0.device.type, enabled=False):
            x0_dot_w = x0.to(w.dtype) @ w  # (B, L)
        c = torch.ones_like(x0_dot_w[:, :1])
        for layer in range(w.shape[1]):
            c = c + c * x0_dot_w[:, layer : layer + 1] + beta_dot_w[layer]
        return torch.addcmul(beta[-1], x0, c)


class MatrixCrossNet(nn.Module):
    """DCN-v2 cross network: ``x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l``; ``(B, D) → (B, D)``.

    With ``low_rank = r`` each ``W_l`` is factored as ``U_l V_lᵀ`` (``2·D·r`` parameters).
    """

    def __init__(self, width: int, layers: int, low_rank: int | None) -> None:
        super().__init__()
        if low_rank is None:
            self.maps = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        else:
            self.maps = nn.ModuleList(
                nn.Sequential(nn.Linear(width, low_rank, bias=False), nn.Linear(low_rank, width)) for _ in range(layers)
            )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for m in self.maps:
            x = x0 * m(x) + x
        return x


class BitMaskDropout(nn.Module):
    """Inverted dropout: in training each element is kept with probability ``1 − p`` and scaled
    by ``1 / (1 − p)``; in eval the identity. Any shape in, the same shape out.

    On CPU the keep mask comes from 16 random bits per element, drawn from torch's default
    generator in 64-bit words and compared with ``round((1 − p) · 2¹⁶)``: the keep probability
    is ``1 − p`` rounded to a multiple of 2⁻¹⁶ (exact for ``p = 0.5``). PyTorch's own CPU
    dropout draws one ``bernoulli_`` float per element, ~75 ms for a 4096 × 1024 batch on a
    2-core Xeon against ~10 ms here — half of a DCN training step. Other devices use
    ``torch.nn.functional.dropout`` (fused there). Seeded by ``torch.manual_seed`` either way.
    """

    _BITS = 16

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        # int16 lanes are signed: keep when bits < threshold, bits uniform on [-2¹⁵, 2¹⁵).
        self._threshold = round((1.0 - p) * 2**self._BITS) - 2 ** (self._BITS - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        keep = words.view(torch.int16)[: x.numel()].view(x.shape) < self._threshold
        out: torch.Tensor = x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _mlp(width: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(BitMaskDropout(dropout))
        width = h
    return nn.Sequential(*layers), width


class _CpuEmbeddingLookup(torch.autograd.Function):
    """``weight[ids]`` (``(N, d)``, ``(B, F)`` → ``(B, F, d)``) with a backward that sums the rows'
    gradients by ``index_add_``: PyTorch's CPU ``embedding_dense_backward`` builds the same dense
    ``(N, d)`` gradient 3-4× slower (4096 × 26 ids: ~17 ms against ~5 ms on a 2-core Xeon)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]  # type: ignore[attr-defined]  # autograd's ctx takes attributes
        return weight[ids]

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ids,) = ctx.saved_tensors  # type: ignore[attr-defined]  # FunctionCtx's stub lacks it
        dim = grad.shape[-1]
        table_grad = grad.new_zeros(ctx.rows, dim)  # type: ignore[attr-defined]  # set in forward
        return table_grad.index_add_(0, ids.reshape(-1), grad.reshape(-1, dim)), None


class DCN(nn.Module):
    """DCN / DCN-v2 over one concatenated embedding table (see the module docstring)."""

    def __init__(self, config: ModelConfig, sizes: Sequence[int]) -> None:
        super().__init__()
        if len(sizes) != N_SPARSE or min(sizes) < 1:
            raise InputError(f"need {N_SPARSE} positive vocabulary sizes, got {list(sizes)}")
        self.config = config
        self.sizes = [int(s) for s in sizes]
        d = config.embedding_dim
        self.embedding = nn.Embedding(sum(self.sizes), d)
        nn.init.normal_(self.embedding.weight, std=0.01)
        self.register_buffer("offsets", self._offsets(self.sizes), persistent=False)
        width = N_DENSE + N_SPARSE * d
        if config.cross_type == "vector":
            self.cross: nn.Module = VectorCrossNet(width, config.cross_layers)
        else:
            self.cross = MatrixCrossNet(width, config.cross_layers, config.low_rank)
        self.deep, deep_out = _mlp(width, config.mlp, config.dropout)
        head_in = deep_out if config.structure == "stacked" else width + deep_out
        self.head = nn.Linear(head_in, 1)

    @staticmethod
    def _offsets(sizes: Sequence[int]) -> torch.Tensor:
        return torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0)

    def embed(self, sparse: torch.Tensor) -> torch.Tensor:
        """sparse (B, 26) int64 per-feature ids → embeddings (B, 26·d), from the one table."""
        rows = sparse + self.offsets
        if self.training and rows.device.type == "cpu":
            looked_up: torch.Tensor = _CpuEmbeddingLookup.apply(self.embedding.weight, rows)  # type: ignore[no-untyped-call]  # torch's Function.apply is unannotated
            return looked_up.flatten(1)
        embedded: torch.Tensor = self.embedding(rows)
        return embedded.flatten(1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense (B, 13) float, sparse (B, 26) int64 ids → logits (B, 1)."""
        x0 = torch.cat([dense, self.embed(sparse)], dim=1)
        crossed = self.cross(x0)
        if self.config.structure == "stacked":
            stacked: torch.Tensor = self.head(self.deep(crossed))
            return stacked
        # head([crossed, deep]) without building the (B, D + h) concatenation, which under
        # autocast would also mix fp32 and bf16 halves: two products with the weight's halves.
        w_cross, w_deep = torch.split(
            self.head.weight, [crossed.shape[1], self.head.in_features - crossed.shape[1]], dim=1
        )
        return nn.functional.linear(crossed, w_cross) + nn.functional.linear(self.deep(x0), w_deep, self.head.bias)

    @torch.no_grad()
    def grow(self, sizes: Sequence[int], start_from: int | None = None) -> None:
        """Give each feature ``sizes[j] - self.sizes[j]`` new trainable rows; known rows kept.

        New rows of feature ``j`` start as a copy of its row ``start_from`` — the
        out-of-vocabulary id, through which the model scored those values until now, so the
        grown model scores every input exactly as before and training moves each new value
        away from there on its own rows — or, with ``None``, like fresh embeddings
        (N(0, 0.01²)). Shrinking is refused.
        """
        new = [int(s) for s in sizes]
        if any(n < o for n, o in zip(new, self.sizes, strict=True)):
            raise InputError("a vocabulary cannot shrink when warm-starting a model")
        old_w = self.embedding.weight
        table = torch.empty(sum(new), old_w.shape[1], dtype=old_w.dtype, device=old_w.device)
        nn.init.normal_(table, std=0.01)
        old_off, new_off = self._offsets(self.sizes).tolist(), self._offsets(new).tolist()
        for j, size in enumerate(self.sizes):
            table[new_off[j] : new_off[j] + size] = old_w[old_off[j] : old_off[j] + size]
            if start_from is not None and new[j] > size:
                table[new_off[j] + size : new_off[j] + new[j]] = old_w[old_off[j] + start_from]
        self.embedding = nn.Embedding.from_pretrained(table, freeze=False)  # type: ignore[no-untyped-call]  # unannotated in torch
        self.offsets = self._offsets(new).to(old_w.device)
        self.sizes = new


class ProbabilityHead(nn.Module):
    """Export wrapper: ``(dense, sparse) → sigmoid(logit)``, shape ``(B, 1)``."""

    def __init__(self, model: DCN) -> None:
        super().__init__()
        self.model = model

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(dense, sparse))
