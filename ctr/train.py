"""``ctr train``: full and incremental training of DCN / DCN-v2 into a model repository.

* ``full``: fit the feature transform on the training days, train from scratch.
* ``incremental``: warm-start from a published version (default: the newest) with its
  architecture and transform; the vocabulary grows with values first frequent in the new
  days (fresh trainable rows, known rows kept); training mixes the new days with a replay
  share of older days (``replay_share`` of the mix, sampled row by row while streaming).

Memory is bounded by one parquet shard at a time: days are never loaded whole (the
validation day keeps only its labels and predictions, 5 bytes a row). Early stopping on
validation AUC keeps the best epoch. CPU runs are deterministic under a seed; CUDA is used
when present, with bf16 autocast.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import pickle
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch
from torch import nn

from ctr.config import Experiment, load_experiment
from ctr.data.dataset import DayShards, available_days, iter_days, truth_auc
from ctr.errors import ArtifactError, InputError, first_line
from ctr.export import export_serving_onnx
from ctr.features import FeatureTransform
from ctr.metrics import calibration, log_loss, roc_auc
from ctr.model import DCN
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


@dataclass
class Candidate:
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
@dataclass(frozen=True)
class _Source:
    shard: Path
    keep: float  # Bernoulli sampling rate for this shard (1.0 = every row)


def _encoded(
    source: _Source, transform: FeatureTransform, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = pl.read_parquet(source.shard)
    if source.keep < 1.0:
        frame = frame.filter(pl.Series(rng.random(frame.height) < source.keep))
    dense, ids = transform.transform_frame(frame)
    return dense, ids, frame["label"].to_numpy().astype(np.float32)


def _batches(
    sources: Sequence[_Source], transform: FeatureTransform, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Shuffled mini-batches: shard order shuffled, rows shuffled within each shard."""
    for k in rng.permutation(len(sources)):
        dense, ids, y = _encoded(sources[k], transform, rng)
        order = rng.permutation(y.size)
        for start in range(0, y.size, batch_size):
            sel = order[start : start + batch_size]
            yield dense[sel], ids[sel], y[sel]


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
) -> tuple[np.ndarray, np.ndarray]:
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
    bayes = truth_auc(shards, y)
    return {
        "auc": round(roc_auc(y, p), 6),
        "logloss": round(log_loss(y, p), 6),
        "calibration": round(calibration(y, p), 6),
        "bayes_auc": bayes,
        "rows": int(y.size),
    }


def _autocast(device: torch.device, cpu_precision: str = "fp32") -> torch.autocast:
    """bf16 autocast on CUDA; on CPU only when asked for and the CPU computes bf16 natively."""
    enabled = device.type == "cuda" or (device.type == "cpu" and cpu_precision == "bf16" and _native_bf16())
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@functools.cache
def _native_bf16() -> bool:
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    if not native:
        log.warning("cpu_precision bf16 asked for, but this CPU has no AVX512-BF16 or AMX: training in fp32")
    return native


def _source_rows(sources: Sequence[_Source]) -> int:
    """Rows the sources yield in one epoch (expected count for sampled shards), from parquet footers."""
    return int(sum(pq.ParquetFile(s.shard).metadata.num_rows * s.keep for s in sources))


def _fit(
    model: DCN,
    transform: FeatureTransform,
    sources: Sequence[_Source],
    valid: DayShards,
    exp: Experiment,
    epochs: int,
    lr: float,
    device: torch.device,
    rng: np.random.Generator,
) -> tuple[dict[str, float | int | None], float]:
    """Train with early stopping on validation AUC; returns best metrics and samples/s."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")
    loss_fn = nn.BCEWithLogitsLoss()
    total = _source_rows(sources)
    best: dict[str, float | int | None] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale, rates = 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        meter = _Throughput(epoch, total)
        for dense, ids, y in _batches(sources, transform, exp.batch_size, rng):
            d = torch.from_numpy(dense).to(device, non_blocking=True)
            s = torch.from_numpy(ids).to(device, non_blocking=True)
            t = torch.from_numpy(y).to(device, non_blocking=True).unsqueeze(1)
            with _autocast(device, exp.cpu_precision):
                loss = loss_fn(model(d, s).float(), t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            meter.update(y.size)
        rates.append(meter.rate)
        metrics = score_day(model, transform, valid, device)
        log.info(
            "epoch %d: valid AUC %.4f, log loss %.4f, %.0f samples/s",
            epoch,
            metrics["auc"],
            metrics["logloss"],
            meter.rate,
        )
        if best is None or float(metrics["auc"]) > float(best["auc"]):  # type: ignore[arg-type]
            best, best_state, stale = metrics, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale > exp.early_stopping_patience - 1:
                log.info("early stop after epoch %d (best AUC %.4f)", epoch, best["auc"])
                break
    assert best is not None and best_state is not None
    model.load_state_dict(best_state)
    return best, float(np.mean(rates))


# ---------------------------------------------------------------- orchestration
def _sources(days: Sequence[DayShards], keep: float) -> list[_Source]:
    return [_Source(s, keep) for day in days for s in day.shards]


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


def train_candidate(spec: TrainSpec, repo: ModelRepository) -> Candidate:
    """Train per ``spec`` and stage (not publish) the result in ``repo``."""
    if spec.valid_day in spec.train_days:
        raise InputError(f"validation day {spec.valid_day} is also a training day")
    if not spec.train_days:
        raise InputError("no training days given")
    exp = load_experiment(spec.experiment, seed=spec.seed)
    device = pick_device(spec.device)
    torch.manual_seed(exp.seed)
    rng = np.random.default_rng(exp.seed)
    train = list(iter_days(spec.data_dir, spec.train_days))
    (valid,) = iter_days(spec.data_dir, [spec.valid_day])
    parent: int | None = None
    growth: list[int] = []
    replay_days: list[int] = []
    if spec.mode == "full":
        transform = FeatureTransform.fit(pl.concat([d.scan() for d in train]), exp.min_count)
        model = DCN(exp.model, transform.sizes.tolist()).to(device)
        sources = _sources(train, 1.0)
        epochs, lr = exp.epochs, exp.learning_rate
    elif spec.mode == "incremental":
        parent = spec.base_version if spec.base_version is not None else repo.latest()
        if parent is None:
            raise InputError(f"incremental training needs a published base version; {repo.model_dir} has none")
        model, base_transform, base_meta = load_version(repo, parent, device)
        transform = base_transform.extend(pl.concat([d.scan() for d in train]), exp.incremental.min_count)
        growth = (transform.sizes - base_transform.sizes).tolist()
        model.grow(transform.sizes.tolist())
        exp = Experiment.from_dict({**exp.to_dict(), "model": base_meta["experiment"]["model"]})
        if spec.replay_days is not None:
            replay_days = list(spec.replay_days)
        else:
            first = min(spec.train_days)
            replay_days = [d for d in available_days(spec.data_dir) if d < first and d != spec.valid_day]
        replay = list(iter_days(spec.data_dir, replay_days))
        rate = _replay_rate(train, replay, exp.incremental.replay_share)
        sources = _sources(train, 1.0) + (_sources(replay, rate) if rate > 0 else [])
        epochs, lr = exp.incremental.epochs, exp.incremental.learning_rate
    else:
        raise InputError(f"--mode must be full or incremental, got {spec.mode!r}")

    started = time.perf_counter()
    metrics, rate = _fit(model, transform, sources, valid, exp, epochs, lr, device, rng)
    seconds = time.perf_counter() - started
    staged = repo.stage()
    try:
        export_serving_onnx(model.to("cpu"), transform, staged / "model.onnx", precision=exp.serving_precision)
        torch.save(model.to("cpu").state_dict(), staged / WEIGHTS_FILE)
        transform.save(staged / TRANSFORM_DIR)
        _reference_sample(train, rng).write_parquet(staged / REFERENCE_FILE)
    except BaseException:
        repo.discard(staged)
        raise
    metadata = {
        "model": repo.name,
        "created_at": datetime.now(UTC).isoformat(),
        "mode": spec.mode,
        "parent_version": parent,
        "metrics": metrics,
        "data": {
            "dir": str(spec.data_dir.resolve()),
            "train_days": list(spec.train_days),
            "valid_day": spec.valid_day,
            "replay_days": replay_days,
            "train_rows": _source_rows(sources),
        },
        "vocabulary_growth": growth,
        "experiment": exp.to_dict(),
        "seed": exp.seed,
        "code_revision": code_revision(),
        "device": str(device),
        "train_seconds": round(seconds, 2),
        "samples_per_second": round(rate, 1),
    }
    return Candidate(staged, metadata, metrics)


def train_and_publish(spec: TrainSpec, repo: ModelRepository) -> tuple[int, Candidate]:
    """``train_candidate`` then publish it as the next version."""
    candidate = train_candidate(spec, repo)
    try:
        version = repo.publish(candidate.staged, candidate.metadata)
    except BaseException:
        repo.discard(candidate.staged)
        raise
    return version, candidate
