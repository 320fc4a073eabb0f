"""The batch ramp (issue 18, item 3): ``batch_ramp: {start, share, lr}`` starts a run at a smaller
batch that doubles up to ``batch_size`` in equal shares of the run's first ``share`` of samples,
each step's rates following the rate rules at its batch (``lr: per_batch``, the default), at the
full batch (``final``) or at the first batch (``start``); bad values are refused by name."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch

import ctr.train as train_module
from ctr.config import BatchRamp, Experiment, load_experiment
from ctr.errors import InputError
from ctr.repository import ModelRepository
from ctr.train import ramp_batch_size, ramp_decay_factor, train_candidate
from tests.unit.tiny_training import tiny_spec


def _steps(total: int, batch_size: int, ramp: BatchRamp | None) -> list[int]:
    """The batch of every step of a run of ``total`` rows, cut as the training loop cuts it."""
    sizes, seen = [], 0
    while seen < total:
        size = ramp_batch_size(seen, total, ramp, batch_size)
        sizes.append(min(size, total - seen))
        seen += sizes[-1]
    return sizes


def test_the_batch_doubles_in_equal_shares_of_the_ramp_then_stays_at_the_batch_size() -> None:
    # 4096 rows, ramp over the first half: 256 for 1024 rows, 512 for 1024 rows, then 1024
    assert _steps(4096, 1024, BatchRamp(start=256, share=0.5)) == [256] * 4 + [512] * 2 + [1024] * 2
    # three doublings over the first 3/4: a quarter of the rows at each of 128, 256, 512
    assert _steps(4096, 1024, BatchRamp(start=128, share=0.75)) == [128] * 8 + [256] * 4 + [512] * 2 + [1024]
    assert _steps(4096, 1024, None) == [1024] * 4  # no ramp: the batch size throughout


def test_a_ramp_step_that_crosses_a_stage_boundary_keeps_its_size() -> None:
    # 200 → 400 → 800 → 1600: 3 stages over 3000 of 6000 rows, 1000 rows each; the 400-step from
    # 1800 runs to 2200, past the stage's end, and the next one is the next stage's
    assert _steps(6000, 1600, BatchRamp(start=200, share=0.5)) == [200] * 5 + [400] * 3 + [800] + [1600, 1400]


@pytest.mark.parametrize(
    ("ramp", "message", "batch_size"),
    [
        ({"start": 3000, "share": 0.5}, "batch_ramp start must be batch_size 4096 over a power of two", 4096),
        ({"start": 1024, "share": 0.5}, "batch_ramp start must be batch_size 3072 over a power of two", 3072),
        ({"start": 4096, "share": 0.5}, r"batch_ramp start must be an integer in \[1, batch_size 4096\)", 4096),
        ({"start": 0, "share": 0.5}, "batch_ramp start must be an integer", 4096),
        ({"start": 1024.0, "share": 0.5}, "batch_ramp start must be an integer", 4096),
        ({"start": True, "share": 0.5}, "batch_ramp start must be an integer", 4096),
        ({"start": 1024, "share": 0.0}, r"batch_ramp share must be a number in \(0, 1\)", 4096),
        ({"start": 1024, "share": 1.0}, "batch_ramp share must be a number", 4096),
        ({"start": 1024, "share": "half"}, "batch_ramp share must be a number", 4096),
        ({"start": 1024}, "batch_ramp must be null or a mapping of start, share and optionally lr", 4096),
        ({"start": 1024, "share": 0.5, "rate": "final"}, "batch_ramp must be null or a mapping", 4096),
        (
            {"start": 1024, "share": 0.5, "lr": "fixed"},
            r"batch_ramp lr must be one of \('per_batch', 'final', 'start'\), got 'fixed'",
            4096,
        ),
        ({"start": 1024, "share": 0.5, "lr": None}, "batch_ramp lr must be one of", 4096),
        (1024, "batch_ramp must be null or a mapping", 4096),
    ],
)
def test_bad_ramps_are_refused_by_name(ramp: object, message: str, batch_size: int) -> None:
    base = load_experiment("dcn_v2_small").to_dict() | {"batch_size": batch_size}
    with pytest.raises(InputError, match=message):
        Experiment.from_dict(base | {"batch_ramp": ramp})


def test_a_decay_after_a_ramp_runs_over_the_samples_after_it() -> None:
    ramp = BatchRamp(start=1024, share=0.25)
    assert [ramp_decay_factor(s, 100, ramp, "linear") for s in (0, 10, 25)] == [1.0, 1.0, 1.0]  # the ramp: held
    assert ramp_decay_factor(62.5, 100, ramp, "linear") == pytest.approx(0.5)  # half-way through the rest
    assert ramp_decay_factor(62.5, 100, ramp, "cosine") == pytest.approx(0.5)
    assert ramp_decay_factor(100, 100, ramp, "cosine") == pytest.approx(0.0)
    assert all(ramp_decay_factor(s, 100, ramp, "none") == 1.0 for s in (0, 50, 100))
    base = load_experiment("dcn_v2_small").to_dict() | {"batch_size": 4096, "lr_decay": "cosine"}
    exp = Experiment.from_dict(base | {"batch_ramp": {"start": 1024, "share": 0.5}})
    assert exp.lr_decay == "cosine" and Experiment.from_dict(exp.to_dict()) == exp


def test_a_ramp_survives_the_metadata_round_trip() -> None:
    exp = Experiment.from_dict(
        load_experiment("dcn_v2_small").to_dict() | {"batch_size": 4096, "batch_ramp": {"start": 512, "share": 0.25}}
    )
    assert exp.batch_ramp == BatchRamp(start=512, share=0.25, lr="per_batch")  # the rates' default
    assert Experiment.from_dict(exp.to_dict()) == exp
    assert load_experiment("dcn_v2").batch_ramp is None  # off unless asked for
    shipped = load_experiment("dcn_v2_gpu")  # the GPU experiment's rule: ramp from 8192, then annealed
    assert shipped.batch_ramp == BatchRamp(start=8192, share=pytest.approx(1 / 3), lr="final")
    assert shipped.lr_decay == "linear" and shipped.batch_size == 32768
    held = Experiment.from_dict(exp.to_dict() | {"batch_ramp": {"start": 512, "share": 0.25, "lr": "final"}})
    assert held.batch_ramp == BatchRamp(start=512, share=0.25, lr="final")
    assert Experiment.from_dict(held.to_dict()) == held


def _ramped_run(
    tmp_path: Path, monkeypatch: Any, settings: dict[str, Any]
) -> tuple[list[int], list[tuple[float, float]], dict[str, Any]]:
    """Each step's batch by the ramp, each step's (table, dense) rates, and the run's metadata."""
    sizes: list[int] = []
    rates: list[tuple[float, float]] = []
    ramp = train_module.ramp_batch_size

    def spy_ramp(seen: float, total: float, batch_ramp: BatchRamp | None, batch_size: int) -> int:
        sizes.append(ramp(seen, total, batch_ramp, batch_size))
        return sizes[-1]

    step = torch.optim.Adam.step

    def spy_step(self: torch.optim.Adam, *args: Any, **kw: Any) -> Any:
        rates.append((self.param_groups[0]["lr"], self.param_groups[1]["lr"]))
        return step(self, *args, **kw)

    monkeypatch.setattr(train_module, "ramp_batch_size", spy_ramp)
    monkeypatch.setattr(torch.optim.Adam, "step", spy_step)
    candidate = train_candidate(tiny_spec(tmp_path, settings), ModelRepository(tmp_path / "repo"))
    return sizes, rates, candidate.metadata


RAMPED = {
    "batch_size": 1024,
    "lr_reference_batch": 256,  # k = 4 at the full batch: dense ×2 under sqrt, the table ×1
    "lr_scaling": "sqrt",
    "embedding_lr_scaling": "none",
    "warmup_steps": 0,
    "batch_ramp": {"start": 256, "share": 0.5},  # 256, 512 over a quarter of the run each, then 1024
    "epochs": 2,
    "early_stopping_patience": 2,  # both epochs run
}


def test_training_follows_the_ramp_with_each_steps_rates_at_its_batch(tmp_path: Path, monkeypatch: Any) -> None:
    sizes, rates, meta = _ramped_run(tmp_path, monkeypatch, RAMPED)
    assert len(sizes) == len(rates) == meta["optimizer_steps"]
    assert sizes[0] == 256 and sizes[-1] == 1024 and sizes == sorted(sizes)  # it grows, never shrinks
    assert set(sizes) == {256, 512, 1024}
    for size, (table_rate, dense_rate) in zip(sizes, rates, strict=True):
        assert table_rate == pytest.approx(0.001)  # the table's rule: none, at every batch
        assert dense_rate == pytest.approx(0.001 * (size / 256) ** 0.5)  # sqrt at the step's own batch
    # the first stage is a quarter of the run's 2 epochs: half an epoch's rows, to within a step
    assert sum(s for s in sizes if s == 256) == pytest.approx(meta["data"]["train_rows"] / 2, abs=256)
    # half the run's samples at the full batch, less the rows of steps cut short at a shard's end
    assert 0.4 <= meta["full_batch_share"] <= 0.5
    assert meta["experiment"]["batch_ramp"] == {"start": 256, "share": 0.5, "lr": "per_batch"}


@pytest.mark.parametrize(
    ("lr", "dense_rate"),
    [
        ("final", 0.002),  # the full batch's (1024 = 4 × 256: sqrt ×2) from the first step: no step up
        ("start", 0.001),  # the first batch's (256: ×1) throughout, at the full batch too
    ],
)
def test_a_held_ramp_rate_is_the_same_at_every_batch(
    tmp_path: Path, monkeypatch: Any, lr: str, dense_rate: float
) -> None:
    ramp = {"start": 256, "share": 0.5, "lr": lr}
    sizes, rates, meta = _ramped_run(tmp_path, monkeypatch, RAMPED | {"batch_ramp": ramp})
    assert len(sizes) == len(rates) == meta["optimizer_steps"]
    assert set(sizes) == {256, 512, 1024}  # the batch still grows
    assert rates == [pytest.approx((0.001, dense_rate))] * len(rates)  # the table's rule is none: 0.001
    assert meta["experiment"]["batch_ramp"] == ramp


def test_a_warm_up_still_applies_to_a_held_ramp_rate(tmp_path: Path, monkeypatch: Any) -> None:
    settings = RAMPED | {"warmup_steps": 4, "batch_ramp": {"start": 256, "share": 0.5, "lr": "final"}}
    sizes, rates, _ = _ramped_run(tmp_path, monkeypatch, settings)
    assert sizes[:4] == [256] * 4
    assert [dense for _, dense in rates[:5]] == pytest.approx([0.002 * (s + 1) / 4 for s in range(4)] + [0.002])
    assert [table for table, _ in rates[:5]] == pytest.approx([0.001 * (s + 1) / 4 for s in range(4)] + [0.001])


def test_a_decaying_rate_anneals_only_after_the_ramp(tmp_path: Path, monkeypatch: Any) -> None:
    settings = RAMPED | {"lr_decay": "linear", "batch_ramp": {"start": 256, "share": 0.5, "lr": "final"}}
    sizes, rates, meta = _ramped_run(tmp_path, monkeypatch, settings)
    ramp_steps = [k for k, size in enumerate(sizes) if size < 1024]
    full = [k for k, size in enumerate(sizes) if size == 1024]
    assert ramp_steps and full and max(ramp_steps) < min(full)
    assert [rates[k] for k in ramp_steps] == [pytest.approx((0.001, 0.002))] * len(ramp_steps)  # held in the ramp
    dense = [rates[k][1] for k in full]
    assert dense[0] == pytest.approx(0.002, rel=0.02)  # the full batch starts at its peak...
    assert all(a > b for a, b in pairwise(dense))  # ...and anneals step by step
    assert dense[-1] < 0.002 * 1024 * 2 / (meta["data"]["train_rows"] * 2 * 0.5)  # to ~0 by the last step
    assert [rates[k][0] / rates[k][1] for k in full] == pytest.approx([0.5] * len(full))  # both groups alike


def test_without_a_ramp_every_sample_is_at_the_full_batch(tmp_path: Path) -> None:
    candidate = train_candidate(tiny_spec(tmp_path, {"epochs": 1}), ModelRepository(tmp_path / "repo"))
    assert candidate.metadata["full_batch_share"] == 1.0
    assert candidate.metadata["optimizer_steps"] >= 1


def test_a_ramp_is_refused_with_several_processes(tmp_path: Path) -> None:
    spec = replace(tiny_spec(tmp_path, {"batch_ramp": {"start": 128, "share": 0.5}}), nproc=2)
    with pytest.raises(InputError, match="batch_ramp is not supported with --nproc > 1"):
        train_candidate(spec, ModelRepository(tmp_path / "repo"))


def test_the_shipped_gpu_rule_scaled_down_runs_every_part_together(tmp_path: Path, monkeypatch: Any) -> None:
    """``dcn_v2_gpu``'s training settings at 1/32 of their batch sizes (the tiny run's 4k rows):
    warm-up, the ramp at the full batch's rates, CowClip on every step, then the anneal to ~0."""
    gpu = load_experiment("dcn_v2_gpu")
    assert gpu.batch_ramp is not None
    settings = {
        "batch_size": gpu.batch_size // 32,
        "lr_reference_batch": gpu.lr_reference_batch // 32,
        "lr_scaling": gpu.lr_scaling,
        "learning_rate": gpu.learning_rate,
        "warmup_steps": 2,
        "embedding_lr_scaling": gpu.embedding_lr_scaling,
        "cowclip_ratio": gpu.cowclip_ratio,
        "batch_ramp": {"start": gpu.batch_ramp.start // 32, "share": gpu.batch_ramp.share, "lr": gpu.batch_ramp.lr},
        "lr_decay": gpu.lr_decay,
        "epochs": gpu.epochs,
        "early_stopping_patience": gpu.epochs,  # every epoch runs: the anneal reaches its end
    }
    clipped: list[int] = []
    clip = train_module.clip_embedding_grad_

    def spy_clip(*args: Any) -> None:
        clipped.append(1)
        clip(*args)

    monkeypatch.setattr(train_module, "clip_embedding_grad_", spy_clip)
    sizes, rates, meta = _ramped_run(tmp_path, monkeypatch, settings)
    full, dense_peak = 1024, gpu.learning_rate * 8**0.5  # k = 1024 / 128 = 8, as 32768 / 4096
    assert len(clipped) == len(sizes) == meta["optimizer_steps"]  # CowClip on every step
    assert sizes[0] == 256 and set(sizes) == {256, 512, full}
    ramp_steps = [k for k, size in enumerate(sizes) if size < full]
    assert [rates[k] for k in ramp_steps[2:]] == [pytest.approx((gpu.learning_rate, dense_peak))] * (
        len(ramp_steps) - 2
    )  # after the warm-up, the full batch's rates through the ramp; the table unscaled
    dense = [rates[k][1] for k, size in enumerate(sizes) if size == full]
    assert all(a > b for a, b in pairwise(dense))  # at the full batch the rate falls step by step...
    assert dense[-1] < 0.2 * dense_peak  # ...to its last step's share of the ~8 steps there
    assert len(meta["auc_by_epoch"]) == gpu.epochs
