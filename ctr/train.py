"""``ctr train``: full and incremental training of DCN / DCN-v2 into a model repository.

* ``full``: fit the feature transform on the training days, train from scratch.
* ``incremental``: warm-start from a published version (default: the newest) with its
  architecture and transform; the vocabulary grows with values first frequent in the new
  days (new rows that start as the feature's OOV row, known rows kept); training mixes the new days with a replay
  share of older days (``replay_share`` of the mix, sampled row by row while streaming).

Memory is bounded by one parquet shard at a time: days are never loaded whole (the
validation day keeps only its labels and predictions, 5 bytes a row). Early stopping on
validation AUC keeps the best epoch; with ``recalibrate`` (the default) the kept model's logit is
then shifted so that its predicted clicks on the validation rows equal their clicks
(``ctr.recalibration``: one offset in the head's bias, the ranking unchanged). CPU runs are
deterministic under a seed; CUDA is used when present, with bf16 autocast.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import pickle
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import polars as pl
import torch
from numpy.typing import NDArray
from torch import nn

from ctr.config import BatchRamp, Experiment, load_experiment
from ctr.cowclip import clip_embedding_grad_
from ctr.cpus import usable_cores
from ctr.cuda_graph import GraphedSteps
from ctr.data.dataset import DayShards, available_days, check_days, iter_days, truth_auc
from ctr.data.encoded import CACHE_DIR_NAME, EncodedCache, check_cache_root
from ctr.data.feed import Part, ShardFeed, default_workers
from ctr.distributed import SINGLE, Rank, launch
from ctr.errors import ArtifactError, InputError, first_line
from ctr.features import OOV_ID, FeatureTransform
from ctr.metrics import calibration, log_loss, roc_auc
from ctr.model import DCN
from ctr.onnx_export import export_serving_onnx
from ctr.recalibration import fit_offset
from ctr.repository import (
    REFERENCE_FILE,
    TRANSFORM_DIR,
    WEIGHTS_FILE,
    ModelRepository,
)

log = logging.getLogger(__name__)
Mode = Literal["full", "incremental"]
REFERENCE_ROWS = 5_000
EVAL_BATCH = 65_536


@dataclass(frozen=True)
class TrainSpec:
    """What to train on and how (the ``ctr train`` flags)."""

    data_dir: Path
    train_days: Sequence[int]
    valid_day: int
    experiment: str = "dcn"
    mode: Mode = "full"
    base_version: int | None = None
    replay_days: Sequence[int] | None = None
    seed: int | None = None
    device: str | None = None
    nproc: int = 1  # data-parallel processes (one GPU each on CUDA, gloo on CPU)
    workers: int | None = None  # feed threads per process; None: ``CTR_TRAIN_WORKERS`` or cores - 1
    cache_dir: Path | None = None  # encoded shards; None: ``CTR_ENCODED_CACHE`` or DATA/.encoded


@dataclass
class StagedVersion:
    """A trained, exported, not yet published version in the repository's staging area."""

    staged: Path
    metadata: dict[str, Any]
    metrics: dict[str, float | int | None] = field(default_factory=dict)


def code_revision() -> str:
    """``CTR_CODE_REVISION`` if set (container images), else the git commit, else ``unknown``."""
    if rev := os.environ.get("CTR_CODE_REVISION"):
        return rev
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- data path
def _encoded_parts(cache: EncodedCache, days: Sequence[DayShards], keep: float, workers: int, rank: Rank) -> list[Part]:
    """This rank's share of the days' shards (every ``world``-th), encoded once."""
    shards = [s for day in days for s in day.shards][rank.index :: rank.world]
    encoded = cache.encode_all(shards, workers)
    return [Part(encoded[s], keep) for s in shards]


class _Throughput:
    """Logs samples/s about every ``every`` seconds (a progress line per epoch)."""

    def __init__(self, epoch: int, total: int, every: float = 5.0) -> None:
        self.epoch, self.total, self.every = epoch, total, every
        self.start = self.last = time.perf_counter()
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            log.info("epoch %d: %d/%d rows, %.0f samples/s", self.epoch, self.done, self.total, self.rate)

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)


# ---------------------------------------------------------------- model steps
def predict(
    model: DCN, transform: FeatureTransform, shards: DayShards, device: torch.device
) -> tuple[NDArray[Any], NDArray[Any]]:
    """(labels, pCTR) over a day, streaming its shards."""
    model.eval()
    labels, probs = [], []
    with torch.no_grad(), _autocast(device):
        for shard in shards.shards:
            frame = pl.read_parquet(shard)
            dense, ids = transform.transform_frame(frame)
            for start in range(0, frame.height, EVAL_BATCH):
                d = torch.from_numpy(dense[start : start + EVAL_BATCH]).to(device)
                s = torch.from_numpy(ids[start : start + EVAL_BATCH]).to(device)
                probs.append(torch.sigmoid(model(d, s).float()).squeeze(1).cpu().numpy())
            labels.append(frame["label"].to_numpy())
    return np.concatenate(labels), np.concatenate(probs)


def score_day(
    model: DCN, transform: FeatureTransform, shards: DayShards, device: torch.device
) -> dict[str, float | int | None]:
    """AUC, log loss, calibration and (generated data) Bayes AUC on one day."""
    y, p = predict(model, transform, shards, device)
    return _day_metrics(y, p, shards)


def _day_metrics(y: NDArray[Any], p: NDArray[Any], shards: DayShards) -> dict[str, float | int | None]:
    return {
        "auc": round(roc_auc(y, p), 6),
        "logloss": round(log_loss(y, p), 6),
        "calibration": round(calibration(y, p), 6),
        "bayes_auc": truth_auc(shards, y),
        "rows": int(y.size),
    }


def _score_encoded(
    model: nn.Module, parts: Sequence[Part], shards: DayShards, device: torch.device, cpu_precision: str = "fp32"
) -> dict[str, float | int | None]:
    """``score_day`` from the day's encoded shards (no transform pass), in the training's
    precision (bf16 autocast on CUDA, and on CPU when the experiment trains in bf16)."""
    labels, logits = _encoded_logits(model, parts, device, cpu_precision)
    return _day_metrics(labels, _sigmoid(logits), shards)


def _encoded_logits(
    model: nn.Module, parts: Sequence[Part], device: torch.device, cpu_precision: str = "fp32"
) -> tuple[NDArray[Any], NDArray[Any]]:
    """(labels, logits) over encoded shards, in the training's precision."""
    model.eval()
    labels, logits = [], []
    with torch.no_grad(), _autocast(device, cpu_precision):
        for part in parts:
            dense, ids, label = part.shard.load()
            for start in range(0, label.size, EVAL_BATCH):
                d = torch.from_numpy(dense[start : start + EVAL_BATCH]).to(device)
                s = torch.from_numpy(ids[start : start + EVAL_BATCH]).to(device)
                logits.append(model(d, s).float().squeeze(1).cpu().numpy())
            labels.append(label)
    return np.concatenate(labels), np.concatenate(logits)


def _sigmoid(z: NDArray[Any]) -> NDArray[Any]:
    return np.asarray(1.0 / (1.0 + np.exp(-z.astype(np.float64))), dtype=np.float32)


def _recalibrate(
    model: DCN, parts: Sequence[Part], shards: DayShards, device: torch.device, exp: Experiment
) -> tuple[dict[str, float | int | None], dict[str, float]]:
    """Shift ``model``'s logit so the validation rows' predicted clicks equal their clicks
    (``ctr.recalibration``); returns the validation metrics after the shift and what it did."""
    labels, logits = _encoded_logits(model, parts, device, exp.cpu_precision)
    offset = fit_offset(logits, labels)
    with torch.no_grad():
        model.head.bias.add_(offset)
    shifted = _sigmoid(logits + offset)
    before, after = calibration(labels, _sigmoid(logits)), calibration(labels, shifted)
    done = {"offset": round(offset, 6), "valid_calibration_before": round(before, 6), "after": round(after, 6)}
    return _day_metrics(labels, shifted, shards), done


def _autocast(device: torch.device, cpu_precision: str = "fp32", cache: bool = True) -> torch.autocast:
    """bf16 autocast on CUDA; on CPU only when asked for and the CPU computes bf16 natively.
    ``cache=False`` inside a step recorded as a CUDA graph (autocast's cast cache must not be)."""
    enabled = device.type == "cuda" or (device.type == "cpu" and cpu_precision == "bf16" and _native_bf16())
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=cache)


@functools.cache
def _native_bf16() -> bool:
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    if not native:
        log.warning("cpu_precision bf16 asked for, but this CPU has no AVX512-BF16 or AMX: training in fp32")
    return native


def scaled_learning_rate(exp: Experiment, rate: float | None = None) -> float:
    """``rate`` (default: the experiment's ``learning_rate``) at the experiment's batch size.

    A learning rate is given for ``lr_reference_batch``; a larger batch takes fewer steps per
    epoch, so the rule scales the rate by ``k = batch_size / lr_reference_batch``: ``none``
    (×1), ``sqrt`` (×√k, the usual rule for Adam) or ``linear`` (×k, the rule for SGD).

    >>> from ctr.config import load_experiment
    >>> gpu = load_experiment("dcn_v2_gpu")  # batch 32768: k = 8
    >>> round(scaled_learning_rate(gpu) / gpu.learning_rate, 4)  # sqrt(8)
    2.8284
    """
    return float((exp.learning_rate if rate is None else rate) * scaling_factor(exp, exp.lr_scaling))


def scaling_factor(exp: Experiment, rule: str, batch_size: int | None = None) -> float:
    """The factor of ``rule`` (none / sqrt / linear) at ``k = batch_size / lr_reference_batch``
    (``batch_size``: the experiment's unless given)."""
    k = (exp.batch_size if batch_size is None else batch_size) / exp.lr_reference_batch
    return float({"none": 1.0, "sqrt": k**0.5, "linear": k}[rule])


def ramp_batch_size(seen: float, total: float, ramp: BatchRamp | None, batch_size: int) -> int:
    """The batch of the step after ``seen`` of a run's ``total`` samples: with a ramp, ``ramp.start``
    doubling up to ``batch_size`` in equal shares of the first ``ramp.share`` of the samples, then
    ``batch_size``; without one, ``batch_size``.

    >>> ramp = BatchRamp(start=1024, share=0.5)  # 1024, 2048 each over a quarter of the run
    >>> [ramp_batch_size(s, 100, ramp, 4096) for s in (0, 24, 25, 49, 50, 99)]
    [1024, 1024, 2048, 2048, 4096, 4096]
    """
    if ramp is None or total <= 0 or seen >= ramp.share * total:
        return batch_size
    stages = (batch_size // ramp.start).bit_length() - 1  # doublings from start to batch_size
    stage = min(stages - 1, int(seen / (ramp.share * total) * stages))
    return ramp.start << stage


def ramp_batch_sizes(ramp: BatchRamp | None, batch_size: int, full: int | None = None) -> set[int]:
    """Every batch size of a run's full-size steps: ``batch_size``, and with a ramp each of its
    smaller batches, ``ramp.start`` doubling up to ``batch_size`` (``ramp.start`` is given at
    ``full``, the whole batch over all ranks; default ``batch_size``).

    >>> sorted(ramp_batch_sizes(BatchRamp(start=1024, share=0.5), 4096))
    [1024, 2048, 4096]
    """
    start = batch_size if ramp is None else ramp.start * batch_size // (full or batch_size)
    return {batch_size >> k for k in range((batch_size // start).bit_length())}


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then 1."""
    return 1.0 if step >= warmup_steps else (step + 1) / warmup_steps


def decay_factor(step: int, warmup_steps: int, total_steps: int, decay: str) -> float:
    """After the warm-up, the share of the peak rate left at ``step`` of ``total_steps``:
    ``cosine`` (``(1 + cos(πt)) / 2``) or ``linear`` (``1 − t``), ``t`` going from 0 at the
    warm-up's end to 1 at ``total_steps``; ``none``: 1.

    >>> [round(decay_factor(s, 2, 6, "cosine"), 2) for s in range(6)]
    [1.0, 1.0, 1.0, 0.85, 0.5, 0.15]
    """
    if decay == "none" or step < warmup_steps or total_steps <= warmup_steps:
        return 1.0
    t = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return _decayed(t, decay)


def ramp_decay_factor(seen: float, total: float, ramp: BatchRamp, decay: str) -> float:
    """With a batch ramp, the share of the rate left after ``seen`` of a run's ``total`` samples:
    1 through the ramp, then ``cosine`` or ``linear`` to 0 over the samples after it (the full
    batch's phase: the rate anneals only once the batch has stopped growing); ``none``: 1.

    >>> ramp = BatchRamp(start=1024, share=0.5)
    >>> [ramp_decay_factor(s, 100, ramp, "linear") for s in (0, 49, 50, 75, 100)]
    [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    start = ramp.share * total
    if decay == "none" or seen <= start or total <= start:
        return 1.0
    return _decayed(min(1.0, (seen - start) / (total - start)), decay)


def _decayed(t: float, decay: str) -> float:
    """``cosine`` (``(1 + cos(πt)) / 2``) or ``linear`` (``1 − t``) at ``t`` in [0, 1]."""
    return 0.5 * (1.0 + math.cos(math.pi * t)) if decay == "cosine" else 1.0 - t


def _fit(
    model: nn.Module,
    feed: ShardFeed,
    valid: Sequence[Part],
    valid_day: DayShards,
    exp: Experiment,
    epochs: int,
    lr: float,
    device: torch.device,
    rng: np.random.Generator,
    rank: Rank,
) -> tuple[dict[str, float | int | None], list[float], list[float], dict[str, float]]:
    """Train with early stopping on validation AUC; returns the best epoch's metrics, each
    epoch's samples/s (all ranks) and validation AUC, and the optimizer steps taken and the share
    of samples trained at the full batch (below 1 with a ``batch_ramp``).

    With a ``batch_ramp`` each batch of ``feed`` is cut into the ramp's smaller batches, and each
    step's rates are the rate rules' at its batch (``lr: per_batch``), at the full batch
    (``final``) or at the ramp's first batch (``start``).

    With several ranks ``model`` is the DDP wrapper; rank 0 validates and decides, the others
    follow its decision (the best state is the same on every rank).
    """
    core: DCN = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model  # type: ignore[assignment]  # a DCN or its DDP wrapper
    table = core.embedding.weight
    offsets: torch.Tensor = core.offsets
    # the embedding table may follow its own rate rule (CowClip keeps it at the reference rate)
    emb_rule = exp.embedding_lr_scaling or exp.lr_scaling
    emb_lr = lr
    if emb_rule != exp.lr_scaling:
        emb_lr = lr * scaling_factor(exp, emb_rule) / scaling_factor(exp, exp.lr_scaling)
    base_lrs = [emb_lr, lr]
    local = feed.batch_size  # this rank's rows of a step at the full batch

    def rates_at(size: int) -> list[float]:
        """The two groups' rates at a step of ``size`` of this rank's rows (a batch ramp's smaller
        batches), before warm-up and decay: each group's rule at that batch."""
        batch = size * exp.batch_size // local
        return [
            base * scaling_factor(exp, rule, batch) / scaling_factor(exp, rule)
            for base, rule in zip(base_lrs, (emb_rule, exp.lr_scaling), strict=True)
        ]

    groups = [
        {"params": [table], "lr": base_lrs[0]},
        {"params": [p for p in model.parameters() if p is not table], "lr": base_lrs[1]},
    ]
    graphed = exp.cuda_graphs and device.type == "cuda"
    if graphed:  # a recorded step reads its rates from device tensors, refilled before each step
        for group in groups:
            group["lr"] = torch.tensor(group["lr"], dtype=torch.float32, device=device)
    optimizer = torch.optim.Adam(groups, betas=(0.9, exp.adam_beta2), fused=device.type == "cuda", capturable=graphed)
    loss_fn = nn.BCEWithLogitsLoss()

    def train_step(dense: torch.Tensor, ids: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step, without host synchronisation (recordable as a CUDA graph)."""
        with _autocast(device, exp.cpu_precision, cache=not graphed):
            loss = loss_fn(model(dense, ids).float().squeeze(1), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if exp.cowclip_ratio is not None and table.grad is not None:
            clip_embedding_grad_(table, table.grad, ids + offsets, exp.cowclip_ratio, exp.cowclip_bound)
        if exp.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), exp.grad_clip_norm, foreach=True)
        optimizer.step()

    run_step = (
        GraphedSteps(train_step, ramp_batch_sizes(exp.batch_ramp, local, exp.batch_size)) if graphed else train_step
    )
    # the schedule's length: every epoch's batches (a shard's last one may be short)
    total_steps = epochs * sum(math.ceil(p.expected_rows / feed.batch_size) for p in feed.parts)
    total = feed.expected_rows
    best: dict[str, float | int | None] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale, step = 0, 0
    run_rows, seen, at_full = epochs * feed.expected_rows, 0, 0  # the batch ramp's progress
    ramp, hold = exp.batch_ramp, None  # hold: the batch whose rates every step takes; None: each step's own
    if ramp is not None and ramp.lr == "final":
        hold = local
    elif ramp is not None and ramp.lr == "start":
        hold = ramp.start * local // exp.batch_size
    ramp_rates = {local: base_lrs if hold is None or hold == local else rates_at(hold)}
    rates: list[float] = []
    aucs: list[float] = []
    for epoch in range(1, epochs + 1):
        model.train()
        meter = _Throughput(epoch, total)
        with model.join() if rank.world > 1 else contextlib.nullcontext():  # type: ignore[operator]  # DDP only
            for batch in feed.epoch(rng):
                cut = 0
                while cut < batch[2].shape[0]:  # one step, unless a batch ramp cuts the batch smaller
                    size = ramp_batch_size(seen, run_rows, exp.batch_ramp, local)
                    if isinstance(run_step, GraphedSteps) and size == local and len(run_step.sizes) > 1:
                        run_step.keep_only({local})  # past the ramp: its smaller steps' graphs free their memory
                    dense, ids, y = (t[cut : cut + size] for t in batch)
                    cut += size
                    if (
                        (exp.warmup_steps and step <= exp.warmup_steps)
                        or exp.lr_decay != "none"
                        or exp.batch_ramp is not None
                    ):
                        if size not in ramp_rates:
                            ramp_rates[size] = ramp_rates[local] if hold == local else rates_at(hold or size)
                        factor = warmup_factor(step, exp.warmup_steps)
                        if exp.batch_ramp is None:
                            factor *= decay_factor(step, exp.warmup_steps, total_steps, exp.lr_decay)
                        else:
                            factor *= ramp_decay_factor(seen, run_rows, exp.batch_ramp, exp.lr_decay)
                        for group, base_lr in zip(optimizer.param_groups, ramp_rates[size], strict=True):
                            if graphed:
                                cast(torch.Tensor, group["lr"]).fill_(base_lr * factor)
                            else:
                                group["lr"] = base_lr * factor
                    run_step(dense, ids, y)
                    meter.update(y.shape[0])
                    step += 1
                    seen += y.shape[0]
                    at_full += y.shape[0] if size == local else 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(meter.rate * rank.world)
        decision: list[object] = [None]
        if rank.leader:
            metrics = _score_encoded(core, valid, valid_day, device, exp.cpu_precision)
            log.info(
                "epoch %d: valid AUC %.4f, log loss %.4f, %.0f samples/s",
                epoch,
                metrics["auc"],
                metrics["logloss"],
                rates[-1],
            )
            improved = best is None or float(metrics["auc"] or 0) > float(best["auc"] or 0)
            decision = [(metrics, improved)]
        rank.broadcast(decision)
        metrics, improved = decision[0]  # type: ignore[misc]  # set by the leader
        aucs.append(float(metrics["auc"] or 0.0))
        if improved:
            best, best_state, stale = metrics, copy.deepcopy(core.state_dict()), 0
        else:
            stale += 1
            if stale > exp.early_stopping_patience - 1:
                log.info("early stop after epoch %d (best AUC %.4f)", epoch, best["auc"])  # type: ignore[index]  # set after epoch 1
                break
    assert best is not None and best_state is not None
    core.load_state_dict(best_state)
    return best, rates, aucs, {"optimizer_steps": step, "full_batch_share": round(at_full / max(seen, 1), 4)}


# ---------------------------------------------------------------- orchestration
def _replay_rate(new: Sequence[DayShards], old: Sequence[DayShards], share: float) -> float:
    """Sampling rate of old rows so that they make up ``share`` of the training mix."""
    if not old or share <= 0:
        return 0.0
    new_rows, old_rows = sum(d.rows for d in new), sum(d.rows for d in old)
    return min(1.0, share / (1.0 - share) * new_rows / max(old_rows, 1))


def _reference_sample(days: Sequence[DayShards], rng: np.random.Generator) -> pl.DataFrame:
    frame = pl.concat([day.scan() for day in days]).head(200_000).collect()
    take = np.sort(rng.choice(frame.height, min(REFERENCE_ROWS, frame.height), replace=False))
    return frame[take]


def load_version(
    repo: ModelRepository, version: int, device: torch.device | None = None
) -> tuple[DCN, FeatureTransform, dict[str, Any]]:
    """Model, transform and metadata of a published version (``ArtifactError`` if corrupt)."""
    path = repo.version_dir(version)
    meta = repo.metadata(version)
    transform = FeatureTransform.load(path / TRANSFORM_DIR)
    exp = Experiment.from_dict(meta["experiment"])
    model = DCN(exp.model, transform.sizes.tolist())
    try:
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ArtifactError(
            f"weights of version {version} ({path / WEIGHTS_FILE}) are corrupt: {first_line(exc)}"
        ) from exc
    return model.to(device or torch.device("cpu")), transform, meta


def train_candidate(spec: TrainSpec, repo: ModelRepository) -> StagedVersion:
    """Train per ``spec`` and stage (not publish) the result in ``repo``.

    Checks what the run needs before any work: the days, the experiment, a writable encoded
    cache, the process count. With ``spec.nproc > 1`` the run is data-parallel
    (``ctr.distributed``) and rank 0 stages the candidate.
    """
    if spec.valid_day in spec.train_days:
        raise InputError(f"validation day {spec.valid_day} is also a training day")
    if not spec.train_days:
        raise InputError("no training days given")
    exp = load_experiment(spec.experiment, seed=spec.seed)
    if spec.nproc < 1 or exp.batch_size % spec.nproc:
        raise InputError(f"--nproc must be >= 1 and divide the batch size {exp.batch_size}, got {spec.nproc}")
    if spec.nproc > 1 and exp.cowclip_ratio is not None:  # its counts would be one rank's, its gradient all ranks'
        raise InputError(f"cowclip_ratio is not supported with --nproc > 1 (experiment {exp.name!r})")
    if spec.nproc > 1 and exp.batch_ramp is not None:  # each rank would follow its own rows' progress
        raise InputError(f"batch_ramp is not supported with --nproc > 1 (experiment {exp.name!r})")
    if spec.nproc > 1 and exp.cuda_graphs:  # a recorded step would hold DDP's gradient all-reduce
        raise InputError(f"cuda_graphs is not supported with --nproc > 1 (experiment {exp.name!r})")
    if spec.mode not in ("full", "incremental"):
        raise InputError(f"--mode must be full or incremental, got {spec.mode!r}")
    days = [*spec.train_days, spec.valid_day, *(spec.replay_days or [])]
    check_days(spec.data_dir, days)
    check_cache_root(_cache_root(spec))
    if spec.nproc == 1:
        candidate = _train(spec, repo, SINGLE)
        assert candidate is not None
        return candidate
    with tempfile.TemporaryDirectory(prefix="ctr-train-") as tmp:
        out = Path(tmp) / "candidate.json"
        launch(_train_rank, spec.nproc, pick_device(spec.device), spec, repo, out)
        result = json.loads(out.read_text())
    return StagedVersion(Path(result["staged"]), result["metadata"], result["metrics"])


def _train_rank(rank: Rank, spec: TrainSpec, repo: ModelRepository, out: Path) -> None:
    torch.set_num_threads(max(1, usable_cores() // rank.world))
    candidate = _train(spec, repo, rank)
    if candidate is not None:
        out.write_text(json.dumps({"staged": str(candidate.staged), **asdict(candidate)}, default=str))


def _cache_root(spec: TrainSpec) -> Path:
    if spec.cache_dir is not None:
        return spec.cache_dir
    if env := os.environ.get("CTR_ENCODED_CACHE"):
        return Path(env)
    return spec.data_dir / CACHE_DIR_NAME


def _train(spec: TrainSpec, repo: ModelRepository, rank: Rank) -> StagedVersion | None:
    """One rank's run; returns the staged candidate on rank 0, None on the others."""
    exp = load_experiment(spec.experiment, seed=spec.seed)
    device = rank.device(pick_device(spec.device))
    workers = default_workers() if spec.workers is None else spec.workers
    torch.manual_seed(exp.seed)
    rng = np.random.default_rng([exp.seed, rank.index])
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    train = list(iter_days(spec.data_dir, spec.train_days))
    (valid,) = iter_days(spec.data_dir, [spec.valid_day])
    parent: int | None = None
    growth: list[int] = []
    replay_days: list[int] = []
    replay: list[DayShards] = []
    rate = 0.0
    box: list[object] = [None]
    if spec.mode == "full":
        if rank.leader:
            box = [FeatureTransform.fit(pl.concat([d.scan() for d in train]), exp.min_count)]
        rank.broadcast(box)
        transform = box[0]
        assert isinstance(transform, FeatureTransform)
        model = DCN(exp.model, transform.sizes.tolist())
        epochs, lr = exp.epochs, scaled_learning_rate(exp)
    else:
        parent = spec.base_version if spec.base_version is not None else repo.latest()
        if parent is None:
            raise InputError(f"incremental training needs a published base version; {repo.model_dir} has none")
        model, base_transform, base_meta = load_version(repo, parent)
        if rank.leader:
            box = [base_transform.extend(pl.concat([d.scan() for d in train]), exp.incremental.min_count)]
        rank.broadcast(box)
        transform = box[0]
        assert isinstance(transform, FeatureTransform)
        growth = (transform.sizes - base_transform.sizes).tolist()
        model.grow(transform.sizes.tolist(), start_from=OOV_ID)  # new values start where the parent scored them
        exp = Experiment.from_dict({**exp.to_dict(), "model": base_meta["experiment"]["model"]})
        if spec.replay_days is not None:
            replay_days = list(spec.replay_days)
        else:
            first = min(spec.train_days)
            replay_days = [d for d in available_days(spec.data_dir) if d < first and d != spec.valid_day]
        replay = list(iter_days(spec.data_dir, replay_days))
        rate = _replay_rate(train, replay, exp.incremental.replay_share)
        epochs, lr = exp.incremental.epochs, scaled_learning_rate(exp, exp.incremental.learning_rate)
    timings["transform"] = time.perf_counter() - clock

    clock = time.perf_counter()
    cache = EncodedCache(_cache_root(spec), transform)
    parts = _encoded_parts(cache, train, 1.0, workers, rank)
    if rate > 0:
        parts += _encoded_parts(cache, replay, rate, workers, rank)
    valid_parts = _encoded_parts(cache, [valid], 1.0, workers, SINGLE) if rank.leader else []
    if rank.leader:
        cache.prune()
    timings["encode"] = time.perf_counter() - clock

    model = model.to(device)
    if exp.compile:
        model.cross.compile()
        model.deep.compile()
    trained: nn.Module = model
    if rank.world > 1:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    feed = ShardFeed(parts, exp.batch_size // rank.world, device, workers)
    clock = time.perf_counter()
    metrics, rates, aucs, schedule = _fit(trained, feed, valid_parts, valid, exp, epochs, lr, device, rng, rank)
    timings["train"] = time.perf_counter() - clock
    if not rank.leader:
        return None
    recalibration: dict[str, float] | None = None
    if exp.recalibrate:
        metrics, recalibration = _recalibrate(model, valid_parts, valid, device, exp)
        log.info("recalibrated on the validation rows: %s", recalibration)

    clock = time.perf_counter()
    served = DCN(exp.model, transform.sizes.tolist())  # plain modules: the trained ones may be compiled
    served.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    staged = repo.stage()
    try:
        export_serving_onnx(served, transform, staged / "model.onnx", precision=exp.serving_precision)
        torch.save(served.state_dict(), staged / WEIGHTS_FILE)
        transform.save(staged / TRANSFORM_DIR)
        _reference_sample(train, rng).write_parquet(staged / REFERENCE_FILE)
    except BaseException:
        repo.discard(staged)
        raise
    timings["export"] = time.perf_counter() - clock
    metadata = {
        "model": repo.name,
        "created_at": datetime.now(UTC).isoformat(),
        "mode": spec.mode,
        "parent_version": parent,
        "metrics": metrics,
        "recalibration": recalibration,
        "data": {
            "dir": str(spec.data_dir.resolve()),
            "train_days": list(spec.train_days),
            "valid_day": spec.valid_day,
            "replay_days": replay_days,
            "train_rows": int(sum(p.expected_rows for p in parts)) * rank.world,
        },
        "vocabulary_growth": growth,
        "min_count": transform.min_count if spec.mode == "full" else exp.incremental.min_count or transform.min_count,
        "experiment": exp.to_dict(),
        "learning_rate": lr,
        "seed": exp.seed,
        "code_revision": code_revision(),
        "device": str(device),
        "processes": rank.world,
        "train_seconds": round(timings["train"], 2),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "samples_per_second": round(float(np.mean(rates)), 1),
        "epoch_samples_per_second": [round(r, 1) for r in rates],
        "auc_by_epoch": aucs,
        **schedule,
    }
    return StagedVersion(staged, metadata, metrics)


def train_and_publish(spec: TrainSpec, repo: ModelRepository) -> tuple[int, StagedVersion]:
    """``train_candidate`` then publish it as the next version."""
    candidate = train_candidate(spec, repo)
    try:
        version = repo.publish(candidate.staged, candidate.metadata)
    except BaseException:
        repo.discard(candidate.staged)
        raise
    return version, candidate
