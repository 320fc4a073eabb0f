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
    """DCN cross network: ``x_{l+1} = x0 · (x_lᵀ w_l) + b_l + x_l``; shape ``(B, D) → (B, D)``."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(width) / width**0.5) for _ in range(layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.weights, self.biases, strict=True):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return x


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


def _mlp(width: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    return nn.Sequential(*layers), width


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

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense (B, 13) float, sparse (B, 26) int64 ids → logits (B, 1)."""
        emb = self.embedding(sparse + self.offsets).flatten(1)
        x0 = torch.cat([dense, emb], dim=1)
        crossed = self.cross(x0)
        if self.config.structure == "stacked":
            return self.head(self.deep(crossed))
        return self.head(torch.cat([crossed, self.deep(x0)], dim=1))

    @torch.no_grad()
    def grow(self, sizes: Sequence[int]) -> None:
        """Give each feature ``sizes[j] - self.sizes[j]`` new trainable rows; known rows kept.

        New rows start like fresh embeddings (N(0, 0.01²)). Shrinking is refused.
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
        self.embedding = nn.Embedding.from_pretrained(table, freeze=False)
        self.offsets = self._offsets(new).to(old_w.device)
        self.sizes = new


class ProbabilityHead(nn.Module):
    """Export wrapper: ``(dense, sparse) → sigmoid(logit)``, shape ``(B, 1)``."""

    def __init__(self, model: DCN) -> None:
        super().__init__()
        self.model = model

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(dense, sparse))
