"""The large-batch keys (issue 18): ``grad_clip_norm`` bounds every step's gradient norm,
``lr_decay`` takes the rate down after the warm-up, ``adam_beta2`` reaches the optimiser, CowClip
bounds each embedding row's gradient by its norm and count, and the embedding table can keep the
reference batch's rate while the dense weights are scaled."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ctr.config import Experiment, load_experiment
from ctr.cowclip import clip_embedding_grad_
from ctr.errors import InputError
from ctr.repository import ModelRepository
from ctr.train import decay_factor, train_candidate
from tests.unit.tiny_training import tiny_spec


def test_decay_factor_runs_from_one_after_the_warm_up_to_zero_at_the_end() -> None:
    assert [decay_factor(s, 2, 6, "linear") for s in range(6)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert decay_factor(7, 2, 6, "cosine") == 0.0
    assert all(decay_factor(s, 2, 6, "none") == 1.0 for s in range(8))


def test_cowclip_bounds_each_row_by_its_norm_times_its_count() -> None:
    weight = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    grad = torch.tensor([[30.0, 40.0], [1.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
    clip_embedding_grad_(weight, grad, torch.tensor([[0, 1], [0, 2]]), ratio=1.0, bound=0.1)
    # row 0 seen twice: 50 → 1·5·2; row 1 is near zero: the bound, 0.1; row 2 is under 1·1·1 and
    # stays; row 3 is not in the batch and keeps its zero gradient (no division by zero)
    assert torch.allclose(grad, torch.tensor([[6.0, 8.0], [0.1, 0.0], [0.5, 0.0], [0.0, 0.0]]))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("grad_clip_norm", 0.0),
        ("adam_beta2", 1.0),
        ("lr_decay", "step"),
        ("embedding_lr_scaling", "cube"),
        ("cowclip_ratio", -1.0),
    ],
)
def test_bad_values_are_refused_by_name(key: str, value: object) -> None:
    with pytest.raises(InputError, match=key):
        Experiment.from_dict(load_experiment("dcn_v2_small").to_dict() | {key: value})


def test_clipping_bounds_the_gradient_norm_and_the_rate_decays(tmp_path: Path, monkeypatch: Any) -> None:
    settings = {
        "grad_clip_norm": 0.05,
        "lr_decay": "linear",
        "warmup_steps": 2,
        "adam_beta2": 0.99,
        "epochs": 2,
        "early_stopping_patience": 2,  # both epochs run: the last step is the schedule's last
    }
    before: list[float] = []
    after: list[float] = []
    rates: list[float] = []
    clip = nn.utils.clip_grad_norm_

    def spy(params: Iterable[torch.Tensor], max_norm: float, **kw: Any) -> torch.Tensor:
        params = list(params)
        norm = clip(params, max_norm, **kw)
        before.append(float(norm))
        after.append(
            float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        )
        return norm

    step = torch.optim.Adam.step

    def spy_step(self: torch.optim.Adam, *args: Any, **kw: Any) -> Any:
        rates.append(self.param_groups[0]["lr"])
        assert self.param_groups[0]["betas"] == (0.9, 0.99)
        return step(self, *args, **kw)

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", spy)
    monkeypatch.setattr(torch.optim.Adam, "step", spy_step)
    train_candidate(tiny_spec(tmp_path, settings), ModelRepository(tmp_path / "repo"))
    assert before and max(before) > 0.05  # the gradients were larger than the bound...
    assert max(after) <= 0.05 * 1.001  # ...and every step saw them clipped to it
    assert rates[1] == pytest.approx(0.001) and rates[-1] < 0.1 * rates[1]  # warm-up done, then decayed


def test_cowclip_runs_on_the_table_which_keeps_the_reference_rate(tmp_path: Path, monkeypatch: Any) -> None:
    settings = {
        "batch_size": 4096,
        "lr_reference_batch": 1024,  # k = 4: dense ×2 under sqrt, the table ×1
        "lr_scaling": "sqrt",
        "embedding_lr_scaling": "none",
        "cowclip_ratio": 1e-5,  # small enough to bind: with the batch-mean loss a row gets ~5e-5 of norm x count
        "cowclip_bound": 1e-5,
        "epochs": 1,
    }
    calls: list[tuple[float, float]] = []  # (gradient norm before, after) of the table
    rates: list[tuple[float, float]] = []
    import ctr.train as train_module

    def spy(weight: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor, ratio: float, bound: float) -> None:
        assert grad.shape == weight.shape and int(rows.max()) < weight.shape[0]
        before = float(grad.norm())
        clip_embedding_grad_(weight, grad, rows, ratio, bound)
        calls.append((before, float(grad.norm())))

    step = torch.optim.Adam.step

    def spy_step(self: torch.optim.Adam, *args: Any, **kw: Any) -> Any:
        rates.append((self.param_groups[0]["lr"], self.param_groups[1]["lr"]))
        return step(self, *args, **kw)

    monkeypatch.setattr(train_module, "clip_embedding_grad_", spy)
    monkeypatch.setattr(torch.optim.Adam, "step", spy_step)
    train_candidate(tiny_spec(tmp_path, settings), ModelRepository(tmp_path / "repo"))
    assert calls and len(calls) == len(rates)  # every step
    assert any(after < before for before, after in calls)  # and it clipped
    assert all(r == (pytest.approx(0.001), pytest.approx(0.002)) for r in rates)


def test_cowclip_is_refused_with_several_processes(tmp_path: Path) -> None:
    # each rank would clip the all-reduced gradient by its own batch's counts
    spec = replace(tiny_spec(tmp_path, {"cowclip_ratio": 1e-4}), nproc=2)
    with pytest.raises(InputError, match="cowclip_ratio is not supported with --nproc > 1"):
        train_candidate(spec, ModelRepository(tmp_path / "repo"))
