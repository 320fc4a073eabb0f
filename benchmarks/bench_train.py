"""Training benchmarks: quality vs the Bayes AUC and DeepCTR-Torch, and throughput.

Quality (issue 3): generated data, ``--days`` × ``--rows-per-day`` (7 × 500k by default),
train on all days but the last, test on the last; our DCN and DCN-v2 and DeepCTR-Torch's DCN
(same embedding size, cross layers and MLP) for the same epochs. Rows come from
``SyntheticWorld.day_blocks``: the same rows ``ctr synth --seed S`` writes.

Speed (``--speed``, GPU): DCN-v2 with the Criteo 1TB cardinalities capped at 2^22 rows,
AMP (bf16), batch 16k-64k, end to end: encoded shards on disk → reader thread → pinned
host memory → GPU → step. Also the same step with batches already on the GPU.

Product (``--product DATA``, the headline): ``ctr train`` itself — ``train_candidate``, the
function the CLI calls — end to end from ``ctr data convert`` output (transform fit, encoding,
epochs, validation, export), twice (encoded cache cold, then warm), with the GPU's utilisation
sampled by ``nvidia-smi``; then, as an upper bound named as such, the lower-level loop of
``--speed`` (pinned arrays → GPU → step, no validation) on the very same encoded shards and
model sizes.

Versus DeepCTR-Torch (``--versus-deepctr DATA``, CPU): both from the same converted parquet
days, each with its own preprocessing, one epoch, wall time and test AUC.

Prints a JSON line per measurement and writes them all to ``--out``. Needs only numpy,
polars, torch, pyyaml (and deepctr-torch + scikit-learn for the comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from ctr.config import load_experiment
from ctr.data.world import SyntheticWorld, WorldConfig
from ctr.features import FeatureTransform
from ctr.metrics import log_loss, roc_auc
from ctr.model import DCN, ModelConfig
from ctr.schema import CRITEO_1TB_CARDINALITIES, DENSE_COLUMNS, N_DENSE, N_SPARSE, SPARSE_COLUMNS

RESULTS: list[dict[str, object]] = []


def record(**fields: object) -> None:
    fields["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.append(fields)
    print(json.dumps(fields), flush=True)


def run_rate(epoch_rates: list[float] | None) -> float | None:
    """Samples/s over a whole run from its epochs' rates, each epoch with the same rows: their
    harmonic mean (all samples over all epoch time; the plain mean weighs a slow epoch like a fast one)."""
    return len(epoch_rates) / sum(1 / r for r in epoch_rates) if epoch_rates else None


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (
        f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads), torch {torch.__version__}"
    )


# ------------------------------------------------------------------ data
def day_frame(world: SyntheticWorld, day: int, rows: int) -> tuple[pl.DataFrame, np.ndarray]:
    """A day as a frame with Criteo columns (nulls for missing) plus the truth p."""
    frames, truth = [], []
    for imp in world.day_blocks(day, rows):
        cols: dict[str, object] = {"label": imp.label}
        for i, c in enumerate(DENSE_COLUMNS):
            cols[c] = pl.Series(c, imp.dense[:, i]).set(pl.Series(imp.dense_missing[:, i]), None)
        for j, c in enumerate(SPARSE_COLUMNS):
            col = np.ascontiguousarray(imp.sparse[:, j])
            cols[c] = pl.Series(c, col).set(pl.Series(col < 0), None)
        frames.append(pl.DataFrame(cols))
        truth.append(imp.p_true)
    return pl.concat(frames), np.concatenate(truth)


def generated_split(seed: int, days: int, rows_per_day: int) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    """A generated world's days ``0..days-2`` as one training frame, and the last day as the test
    frame with its rows' true click probabilities."""
    world = SyntheticWorld(WorldConfig(seed=seed, total_rows=days * rows_per_day))
    frames = [day_frame(world, d, rows_per_day) for d in range(days)]
    test_frame, test_truth = frames[-1]
    return pl.concat([f for f, _ in frames[:-1]]), test_frame, test_truth


def encode(transform: FeatureTransform, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dense, ids = transform.transform_frame(frame)
    return dense, ids, frame["label"].to_numpy().astype(np.float32)


# ------------------------------------------------------------------ ours
def train_ours(
    config: ModelConfig,
    sizes: list[int],
    train: tuple[np.ndarray, ...],
    test: tuple[np.ndarray, ...],
    epochs: int,
    batch: int,
    lr: float,
    device: torch.device,
    seed: int,
    amp: bool,
) -> dict[str, object]:
    """Our DCN, our loop; ``amp``: bf16 autocast (on CUDA always; on CPU when asked)."""
    torch.manual_seed(seed)
    model = DCN(config, sizes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")
    loss_fn = nn.BCEWithLogitsLoss()
    dense, ids, y = (torch.from_numpy(a) for a in train)
    if device.type == "cuda":
        dense, ids, y = dense.to(device), ids.to(device), y.to(device)
    n = y.shape[0]
    per_epoch = []
    aucs = []
    g = torch.Generator(device=dense.device).manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, device=dense.device, generator=g)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            sel = perm[start : start + batch]
            d, s, t = dense[sel].to(device), ids[sel].to(device), y[sel].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(d, s).float().squeeze(1), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_epoch.append(n / (time.perf_counter() - t0))
        aucs.append(evaluate_ours(model, test, device))
    return {
        "auc": aucs[-1][0],
        "logloss": aucs[-1][1],
        "auc_by_epoch": [a[0] for a in aucs],
        "samples_per_s": round(float(np.mean(per_epoch))),
    }


@torch.no_grad()
def evaluate_ours(model: DCN, test: tuple[np.ndarray, ...], device: torch.device) -> tuple[float, float]:
    model.eval()
    dense, ids, y = test
    out = []
    for start in range(0, y.size, 65536):
        d = torch.from_numpy(dense[start : start + 65536]).to(device)
        s = torch.from_numpy(ids[start : start + 65536]).to(device)
        out.append(torch.sigmoid(model(d, s).float()).squeeze(1).cpu().numpy())
    p = np.concatenate(out)
    return round(roc_auc(y, p), 5), round(log_loss(y, p), 5)


# ------------------------------------------------------------------ DeepCTR-Torch
def train_deepctr(
    config: ModelConfig,
    sizes: list[int],
    train: tuple[np.ndarray, ...],
    test: tuple[np.ndarray, ...],
    epochs: int,
    batch: int,
    lr: float,
    device: torch.device,
    seed: int,
    amp: bool,
) -> dict[str, object]:
    """DeepCTR-Torch's DCN through its own ``fit`` (fp32: it has no mixed precision)."""
    del amp
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import DCN as DeepCtrDCN

    torch.manual_seed(seed)
    sparse_cols = [
        SparseFeat(c, vocabulary_size=sizes[j], embedding_dim=config.embedding_dim)
        for j, c in enumerate(SPARSE_COLUMNS)
    ]
    dense_cols = [DenseFeat(c, 1) for c in DENSE_COLUMNS]
    columns = sparse_cols + dense_cols
    model = DeepCtrDCN(
        columns,
        columns,
        cross_num=config.cross_layers,
        cross_parameterization="vector" if config.cross_type == "vector" else "matrix",
        dnn_hidden_units=config.mlp,
        dnn_dropout=config.dropout,
        seed=seed,
        device=str(device),
    )
    model.compile(torch.optim.Adam(model.parameters(), lr=lr), "binary_crossentropy")

    def as_input(part: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        dense, ids, _ = part
        x = {c: ids[:, j] for j, c in enumerate(SPARSE_COLUMNS)}
        x |= {c: dense[:, i] for i, c in enumerate(DENSE_COLUMNS)}
        return x

    x_train, x_test = as_input(train), as_input(test)
    rates, aucs = [], []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.fit(x_train, train[2], batch_size=batch, epochs=1, verbose=0)
        rates.append(train[2].size / (time.perf_counter() - t0))
        p = model.predict(x_test, batch_size=65536).reshape(-1)
        aucs.append((round(roc_auc(test[2], p), 5), round(log_loss(test[2], p), 5)))
    return {
        "auc": aucs[-1][0],
        "logloss": aucs[-1][1],
        "auc_by_epoch": [a[0] for a in aucs],
        "samples_per_s": round(float(np.mean(rates))),
    }


def quality(args: argparse.Namespace, device: torch.device) -> None:
    total = args.days * args.rows_per_day
    t0 = time.perf_counter()
    train_frame, test_frame, test_truth = generated_split(args.seed, args.days, args.rows_per_day)
    transform = FeatureTransform.fit(train_frame.lazy(), min_count=args.min_count)
    train, test = encode(transform, train_frame), encode(transform, test_frame)
    bayes = round(roc_auc(test[2], test_truth), 5)
    record(
        kind="data",
        rows=total,
        seconds=round(time.perf_counter() - t0, 1),
        bayes_auc_test=bayes,
        vocab_rows=int(transform.sizes.sum()),
        machine=machine(),
    )
    sizes = transform.sizes.tolist()
    for name in args.configs.split(","):
        exp = load_experiment(name)
        on_cpu = device.type == "cpu"
        runs = [(train_ours, "ours", not on_cpu)]
        runs += [(train_ours, "ours", True)] if on_cpu and args.cpu_bf16 else []
        runs += [(train_deepctr, "deepctr-torch", False)] if args.deepctr and exp.model.structure == "parallel" else []
        for runner, label, amp in runs:
            try:
                res = runner(
                    exp.model,
                    sizes,
                    train,
                    test,
                    args.epochs,
                    args.batch_size,
                    exp.learning_rate,
                    device,
                    args.seed,
                    amp,
                )
            except ImportError as exc:  # deepctr-torch or scikit-learn absent on this machine
                record(kind="quality", impl=label, config=name, skipped=f"import failed: {exc}")
                continue
            record(
                kind="quality",
                impl=label,
                config=name,
                precision="bf16 autocast" if amp else "fp32",
                seed=args.seed,
                epochs=args.epochs,
                batch_size=args.batch_size,
                train_rows=int(train[2].size),
                test_rows=int(test[2].size),
                bayes_auc=bayes,
                machine=machine(),
                **res,
            )


# ------------------------------------------------------------------ speed (GPU)
def write_encoded_shards(directory: Path, rows: int, shard_rows: int, caps: list[int], seed: int) -> list[Path]:
    """Encoded shards as a trained transform would write them: int32 ids, fp16 dense, uint8 labels."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(rows // shard_rows):
        ids = np.empty((shard_rows, N_SPARSE), dtype=np.int32)
        for j, cap in enumerate(caps):  # Zipf-like popularity over each table
            u = rng.random(shard_rows, dtype=np.float32)
            ids[:, j] = np.minimum((cap**u).astype(np.int64) - 1, cap - 1)
        path = directory / f"shard-{k:04d}.npz"
        np.savez(
            path,
            ids=ids,
            dense=rng.standard_normal((shard_rows, N_DENSE), dtype=np.float32).astype(np.float16),
            label=(rng.random(shard_rows) < 0.03).astype(np.uint8),
        )
        paths.append(path)
    return paths


def pinned_batches(paths: list[Path], batch: int, depth: int = 4) -> queue.Queue[tuple[torch.Tensor, ...] | None]:
    """A reader thread: shard files → pinned host tensors, one batch per queue item."""
    q: queue.Queue[tuple[torch.Tensor, ...] | None] = queue.Queue(maxsize=depth)

    def run() -> None:
        for path in paths:
            with np.load(path) as z:
                ids = torch.from_numpy(z["ids"]).pin_memory()
                dense = torch.from_numpy(z["dense"]).pin_memory()
                label = torch.from_numpy(z["label"]).pin_memory()
            for start in range(0, ids.shape[0] - batch + 1, batch):
                q.put((dense[start : start + batch], ids[start : start + batch], label[start : start + batch]))
        q.put(None)

    threading.Thread(target=run, daemon=True).start()
    return q


def make_step(
    model: DCN,
    lr: float = 1e-3,
    cowclip: tuple[float, float] | None = None,
    graph_sizes: Collection[int] | None = None,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]:
    """One AMP (bf16) training step with fused dense Adam; ``cowclip`` (ratio, bound): the table's
    gradient clipped column-wise first, as ``ctr train`` does for an experiment with ``cowclip_ratio``;
    ``graph_sizes``: those batch sizes' steps recorded and replayed as CUDA graphs (``cuda_graphs``)."""
    from ctr.cowclip import clip_embedding_grad_
    from ctr.cuda_graph import GraphedSteps

    graphed = graph_sizes is not None
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True, capturable=graphed)
    loss_fn = nn.BCEWithLogitsLoss()
    table = model.embedding.weight

    def step(d: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphed):
            loss = loss_fn(model(d, s).float().squeeze(1), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cowclip is not None and table.grad is not None:
            clip_embedding_grad_(table, table.grad, s + model.offsets, *cowclip)
        opt.step()

    return step if graph_sizes is None else GraphedSteps(step, graph_sizes)


def speed(args: argparse.Namespace, device: torch.device) -> None:
    caps = [min(c, 2**22) for c in CRITEO_1TB_CARDINALITIES]
    exp = load_experiment(args.speed_config)
    shard_rows = 1 << 20
    paths = write_encoded_shards(Path(args.workdir), args.speed_rows, shard_rows, caps, args.seed)
    for batch in (16384, 32768, 65536):
        for compiled in (False, True):
            torch.manual_seed(0)
            model = DCN(exp.model, caps).to(device)
            if compiled:
                model.cross = torch.compile(model.cross)
                model.deep = torch.compile(model.deep)
            step = make_step(model)

            # end to end: disk → pinned → GPU → step (all shards, after a warm-up shard)
            q = pinned_batches(paths, batch)
            seen, t0 = 0, None
            warm = shard_rows // batch
            i = 0
            while (item := q.get()) is not None:
                d, s, t = (x.to(device, non_blocking=True) for x in item)
                step(d.float(), s.long(), t.float())
                i += 1
                if i == warm:
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                elif i > warm:
                    seen += batch
            torch.cuda.synchronize()
            e2e = seen / (time.perf_counter() - t0)
            # batches already on the GPU
            d = torch.randn(batch, N_DENSE, device=device)
            s = torch.stack([torch.randint(0, c, (batch,), device=device) for c in caps], dim=1)
            t = (torch.rand(batch, device=device) < 0.03).float()
            for _ in range(10):
                step(d, s, t)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            steps = 50
            for _ in range(steps):
                step(d, s, t)
            torch.cuda.synchronize()
            resident = steps * batch / (time.perf_counter() - t1)
            record(
                kind="speed",
                config=args.speed_config,
                batch_size=batch,
                compiled=compiled,
                amp="bf16",
                embedding_rows=sum(caps),
                end_to_end_samples_per_s=round(e2e),
                on_gpu_samples_per_s=round(resident),
                rows=seen,
                machine=machine(),
            )
            del model, step
            torch.cuda.empty_cache()


# ------------------------------------------------------------------ product: ctr train itself
class GpuUtilisation:
    """``nvidia-smi`` sampling GPU 0's utilisation every 100 ms while the block runs; each sample
    is stamped on arrival, so a phase of the run (the epochs) can be cut out of it."""

    def __enter__(self) -> GpuUtilisation:
        self.samples: list[tuple[float, int]] = []
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
            stdout=subprocess.PIPE,
            text=True,
        )

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.strip().isdigit():
                    self.samples.append((time.perf_counter(), int(line)))

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)

    def summary(self, start: float = 0.0, stop: float = float("inf")) -> dict[str, object]:
        s = np.array([u for t, u in self.samples if start <= t <= stop] or [0])
        return {"gpu_util_mean": round(float(s.mean()), 1), "gpu_util_p50": float(np.median(s)), "samples": int(s.size)}


def _user_experiment(base: str, overrides: dict[str, object], workdir: Path) -> str:
    """``FILE#NAME``: the packaged experiment ``base`` with ``overrides``, as a user file."""
    import yaml

    from ctr.config import BUILTIN

    blocks = yaml.safe_load((Path(__file__).parents[1] / "ctr" / "configs" / BUILTIN).read_text())
    merged = dict(blocks.get(base) or {})
    if "<<" in merged:
        merged = {**merged.pop("<<"), **merged}
    for key, value in overrides.items():  # a nested block (model, incremental) merges key by key
        nested = merged.get(key)
        merged[key] = {**nested, **value} if isinstance(nested, dict) and isinstance(value, dict) else value
    path = workdir / f"{base}-bench.yaml"
    path.write_text(yaml.safe_dump({"Base": blocks["Base"], base: merged}))
    return f"{path}#{base}"


def product(args: argparse.Namespace, device: torch.device) -> None:
    from ctr.data.dataset import day_shards, parse_days
    from ctr.data.encoded import EncodedCache
    from ctr.features import FeatureTransform
    from ctr.repository import ModelRepository
    from ctr.train import TrainSpec, ramp_batch_size, ramp_batch_sizes, scaled_learning_rate, train_candidate

    data, work = Path(args.product), Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    train_days, valid_day = parse_days(args.train_days), args.valid_day
    cache_dir = work / "encoded"
    shutil.rmtree(cache_dir, ignore_errors=True)
    repo = ModelRepository(work / "repo")
    for config in args.product_configs.split(","):
        base, _, extra = config.partition("+")
        variants = {"compile": {"compile": True, "cuda_graphs": False}, "eager": {"cuda_graphs": False}}
        if extra and extra not in variants:
            raise SystemExit(f"unknown variant +{extra} of {base}: one of {sorted(variants)}")
        experiment = _user_experiment(base, variants[extra], work) if extra else base
        transform = None
        for run in ("first run: encodes the shards", "second run: reuses the encoded shards"):
            spec = TrainSpec(
                data, train_days, valid_day, experiment=experiment, device=str(device), cache_dir=cache_dir
            )
            util = GpuUtilisation() if device.type == "cuda" else contextlib.nullcontext()
            t0 = time.perf_counter()
            with util:
                candidate = train_candidate(spec, repo)
            wall = time.perf_counter() - t0
            meta = candidate.metadata
            phases = meta["seconds"]
            train_start = t0 + phases["transform"] + phases["encode"]
            util_fields = (
                {
                    **{f"whole_run_{k}": v for k, v in util.summary().items()},
                    **{f"epochs_{k}": v for k, v in util.summary(train_start, train_start + phases["train"]).items()},
                }
                if isinstance(util, GpuUtilisation)
                else {}
            )
            rows = meta["data"]["train_rows"]
            epochs_run = len(meta.get("epoch_samples_per_second", [])) or meta["experiment"]["epochs"]
            record(
                kind="product",
                command=f"ctr train --config {config} --device {device}",
                run=run,
                train_rows=rows,
                epochs=epochs_run,
                wall_seconds=round(wall, 2),
                seconds=meta["seconds"],
                samples_per_s_in_epochs=meta["samples_per_second"],
                epoch_samples_per_s=meta.get("epoch_samples_per_second"),
                samples_per_s_run=None
                if (rate := run_rate(meta.get("epoch_samples_per_second"))) is None
                else round(rate),
                samples_per_s_wall=round(rows * epochs_run / wall),
                auc=meta["metrics"]["auc"],
                auc_by_epoch=meta.get("auc_by_epoch"),
                bayes_auc=meta["metrics"]["bayes_auc"],
                batch_size=meta["experiment"]["batch_size"],
                learning_rate=meta["learning_rate"],
                machine=machine(),
                **util_fields,
            )
            transform = FeatureTransform.load(candidate.staged / "transform")
            repo.discard(candidate.staged)
        if device.type != "cuda" or transform is None:
            continue
        # upper bound: the lower-level loop on the same encoded shards, sizes and batch
        exp = load_experiment(experiment)
        cache = EncodedCache(cache_dir, transform)
        shards = [s for d in train_days for s in day_shards(data, d).shards]
        arrays = [a for a in map(cache.lookup, shards) if a is not None]
        if len(arrays) != len(shards):  # the product runs above encoded every shard
            raise SystemExit(f"an encoded shard is missing from {cache_dir}")
        torch.manual_seed(0)
        model = DCN(exp.model, transform.sizes.tolist()).to(device)
        if exp.compile:
            model.cross.compile()
            model.deep.compile()
        cowclip = None if exp.cowclip_ratio is None else (exp.cowclip_ratio, exp.cowclip_bound)
        sizes = ramp_batch_sizes(exp.batch_ramp, exp.batch_size) if exp.cuda_graphs else None
        step = make_step(model, scaled_learning_rate(exp), cowclip, sizes)
        # the product's schedule: its epochs, and a batch ramp's smaller steps cut from full batches
        q = pinned_encoded(arrays * exp.epochs, exp.batch_size)
        run_rows = exp.epochs * sum(a.rows for a in arrays)
        fed, seen, t0, i, warm = 0, 0, 0.0, 0, 10
        while (item := q.get()) is not None:
            d, s, t = (x.to(device, non_blocking=True) for x in item)
            cut = 0
            while cut < t.shape[0]:
                size = ramp_batch_size(fed, run_rows, exp.batch_ramp, exp.batch_size)
                label = t[cut : cut + size]
                step(d[cut : cut + size], s[cut : cut + size], label.float())
                n = int(label.shape[0])
                cut, fed, i = cut + size, fed + n, i + 1
                if i == warm:
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                elif i > warm:
                    seen += n
        torch.cuda.synchronize()
        record(
            kind="upper_bound",
            what="lower-level loop (encoded arrays in pinned memory → GPU → step, the experiment's epochs, "
            "batch ramp, CowClip and CUDA graphs; no validation)",
            cuda_graphs=exp.cuda_graphs,
            config=config,
            batch_size=exp.batch_size,
            epochs=exp.epochs,
            batch_ramp=None if exp.batch_ramp is None else vars(exp.batch_ramp),
            samples_per_s=round(seen / (time.perf_counter() - t0)),
            machine=machine(),
        )
        del model, step
        torch.cuda.empty_cache()


def pinned_encoded(shards: list[object], batch: int, depth: int = 4) -> queue.Queue[tuple[torch.Tensor, ...] | None]:
    """A reader thread: encoded shards → pinned tensors, one batch per queue item (shuffled rows)."""
    q: queue.Queue[tuple[torch.Tensor, ...] | None] = queue.Queue(maxsize=depth)

    def run() -> None:
        rng = np.random.default_rng(0)
        for shard in shards:
            dense, ids, label = shard.load()  # type: ignore[attr-defined]
            order = rng.permutation(label.size)
            dense, ids, label = (torch.from_numpy(np.take(a, order, axis=0)).pin_memory() for a in (dense, ids, label))
            for start in range(0, label.shape[0], batch):
                q.put((dense[start : start + batch], ids[start : start + batch], label[start : start + batch]))
        q.put(None)

    threading.Thread(target=run, daemon=True).start()
    return q


def versus_deepctr(args: argparse.Namespace) -> None:
    """``ctr train`` vs DeepCTR-Torch's DCN on CPU, each from the same parquet days with its own
    preprocessing (DeepCTR-Torch: its README's Criteo recipe — LabelEncoder per categorical
    column fitted on train + test rows, MinMaxScaler on the integers), 1 epoch, batch 4096."""
    import pandas as pd
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import DCN as DeepCtrDCN
    from sklearn.preprocessing import LabelEncoder, MinMaxScaler

    from ctr.data.dataset import day_shards, parse_days
    from ctr.repository import ModelRepository
    from ctr.train import TrainSpec, train_candidate

    data, work = Path(args.versus_deepctr), Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    train_days, test_day = parse_days(args.train_days), args.valid_day
    for precision in args.cpu_precisions.split(","):
        for run in range(args.repeats):
            cache = work / f"encoded-{precision}-{run}"
            shutil.rmtree(cache, ignore_errors=True)
            experiment = _user_experiment(args.deepctr_config, {"epochs": 1, "cpu_precision": precision}, work)
            t0 = time.perf_counter()
            spec = TrainSpec(data, train_days, test_day, experiment=experiment, device="cpu", cache_dir=cache)
            candidate = train_candidate(spec, ModelRepository(work / "repo"))
            ours = time.perf_counter() - t0
            ModelRepository(work / "repo").discard(candidate.staged)
            record(
                kind="versus_deepctr",
                impl="ctr train",
                config=args.deepctr_config,
                cpu_precision=precision,
                wall_seconds=round(ours, 2),
                seconds=candidate.metadata["seconds"],
                auc=candidate.metrics["auc"],
                min_count=candidate.metadata["min_count"],
                train_rows=candidate.metadata["data"]["train_rows"],
                machine=machine(),
            )
    exp = load_experiment(args.deepctr_config)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        frames = {
            part: pl.concat([pl.read_parquet(s) for d in days for s in day_shards(data, d).shards]).to_pandas()
            for part, days in (("train", train_days), ("test", [test_day]))
        }
        train_df, test_df = frames["train"], frames["test"]
        both = pd.concat([train_df, test_df])
        for c in SPARSE_COLUMNS:
            both[c] = LabelEncoder().fit_transform(both[c].fillna(-1).astype("int64"))
        both[list(DENSE_COLUMNS)] = MinMaxScaler((0, 1)).fit_transform(both[list(DENSE_COLUMNS)].fillna(0))
        train_df, test_df = both.iloc[: len(train_df)], both.iloc[len(train_df) :]
        columns = [
            SparseFeat(c, vocabulary_size=int(both[c].max()) + 1, embedding_dim=exp.model.embedding_dim)
            for c in SPARSE_COLUMNS
        ] + [DenseFeat(c, 1) for c in DENSE_COLUMNS]
        prep = time.perf_counter() - t0
        torch.manual_seed(args.seed)
        model = DeepCtrDCN(
            columns,
            columns,
            cross_num=exp.model.cross_layers,
            cross_parameterization="vector" if exp.model.cross_type == "vector" else "matrix",
            dnn_hidden_units=exp.model.mlp,
            dnn_dropout=exp.model.dropout,
            seed=args.seed,
            device="cpu",
        )
        model.compile(torch.optim.Adam(model.parameters(), lr=exp.learning_rate), "binary_crossentropy")
        names = [*SPARSE_COLUMNS, *DENSE_COLUMNS]
        model.fit(
            {c: train_df[c].values for c in names}, train_df["label"].values, batch_size=4096, epochs=1, verbose=0
        )
        p = model.predict({c: test_df[c].values for c in names}, batch_size=65536).reshape(-1)
        wall = time.perf_counter() - t0
        record(
            kind="versus_deepctr",
            impl="deepctr-torch",
            config=args.deepctr_config,
            wall_seconds=round(wall, 2),
            preprocessing_seconds=round(prep, 2),
            auc=round(roc_auc(test_df["label"].values, p), 6),
            train_rows=len(train_df),
            machine=machine(),
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--rows-per-day", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--min-count", type=int, default=200, help="as in the dcn and dcn_v2 experiments")
    ap.add_argument("--configs", default="dcn,dcn_v2")
    ap.add_argument("--deepctr", action="store_true", help="also run DeepCTR-Torch's DCN")
    ap.add_argument("--cpu-bf16", action="store_true", help="on CPU, also run ours with bf16 autocast")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--speed", action="store_true", help="GPU throughput at batch 16k-64k")
    ap.add_argument("--speed-config", default="dcn_v2")
    ap.add_argument("--speed-rows", type=int, default=24 << 20)
    ap.add_argument("--workdir", default="/tmp/ctr-bench-shards")
    ap.add_argument("--device", default=None)
    ap.add_argument("--product", metavar="DATA", help="time ctr train on converted days in DATA (headline)")
    ap.add_argument("--product-configs", default="dcn_v2_gpu,dcn_v2_gpu+eager")
    ap.add_argument("--train-days", default="0-2")
    ap.add_argument("--valid-day", type=int, default=3)
    ap.add_argument("--versus-deepctr", metavar="DATA", help="ctr train vs DeepCTR-Torch on CPU from DATA")
    ap.add_argument("--deepctr-config", default="dcn")
    ap.add_argument("--cpu-precisions", default="fp32,bf16")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="bench-train.json")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.product or args.versus_deepctr:
        if args.product:
            product(args, device)
        if args.versus_deepctr:
            versus_deepctr(args)
        Path(args.out).write_text(json.dumps(RESULTS, indent=2) + "\n")
        return
    if not args.no_quality:
        quality(args, device)
    if args.speed:
        speed(args, device)
    Path(args.out).write_text(json.dumps(RESULTS, indent=2) + "\n")


if __name__ == "__main__":
    main()
