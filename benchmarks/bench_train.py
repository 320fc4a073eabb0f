"""Training benchmarks: quality vs the Bayes AUC and DeepCTR-Torch, and throughput.

Quality (issue 3): generated data, ``--days`` × ``--rows-per-day`` (7 × 500k by default),
train on all days but the last, test on the last; our DCN and DCN-v2 and DeepCTR-Torch's DCN
(same embedding size, cross layers and MLP) for the same epochs. Rows come from
``SyntheticWorld.day_blocks``: the same rows ``ctr synth --seed S`` writes.

Speed (``--speed``, GPU): DCN-v2 with the Criteo 1TB cardinalities capped at 2^22 rows,
AMP (bf16), batch 16k-64k, end to end: encoded shards on disk → reader thread → pinned
host memory → GPU → step. Also the same step with batches already on the GPU.

Prints a JSON line per measurement and writes them all to ``--out``. Needs only numpy,
polars, torch, pyyaml (and deepctr-torch + scikit-learn for the comparison).
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import threading
import time
from collections.abc import Callable
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


def make_step(model: DCN) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]:
    """One AMP (bf16) training step with fused dense Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = nn.BCEWithLogitsLoss()

    def step(d: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(d, s).float().squeeze(1), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


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
    ap.add_argument("--out", default="bench-train.json")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not args.no_quality:
        quality(args, device)
    if args.speed:
        speed(args, device)
    Path(args.out).write_text(json.dumps(RESULTS, indent=2) + "\n")


if __name__ == "__main__":
    main()
