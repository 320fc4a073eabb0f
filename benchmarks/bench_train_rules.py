"""Two training rules measured through ``ctr train`` itself (``train_candidate``), on generated data.

Large batch: ``dcn_v2`` (batch 4096) against the 64k rule ``dcn_v2_gpu`` shipped until 2026-12-07
(``GPU_64K``: batch 64k, learning rate scaled by sqrt(16) with a 20-step linear warm-up; the base of
rows 1-66) and two other scaling rules, on the 7 × 500k split (days
0-5 train, day 6 validates and is the day the AUC is reported on; best of the same 3 epochs for
every run). Then (issue 18, item 3, rows 10-16) rules for 64k against instability and too few
steps: gradient clipping by global norm, a cosine decay after the warm-up with a higher peak,
Adam's beta2 at 0.99; ``--best-at 32768`` then runs the best 64k row of the run at batch 32k.
Rows 17-23 follow CowClip (``ctr.cowclip``): the embedding table keeps the reference rate, the
dense weights are scaled, a one-epoch warm-up, column-wise clipping of the table's gradient;
rows 24-29 add less dropout, and a 1.5× base rate (dense and table) to it. Rows 30-33 (fifth
round) grow the batch over the run's first samples (``batch_ramp``, Smith et al. 2017: the batch
doubles from ``start`` up to 64k over the first ``share`` of the samples, each step's rates the
rules' at its batch), alone and with the best CowClip rule of row 27; each run records its
optimizer steps, the share of samples trained at the full batch, and its samples/s over all epochs.
Rows 34-36 (sixth round) hold the ramp's rates (``batch_ramp.lr``): the full batch's from the
first step (``final``) or the first batch's throughout (``start``), to 64k over the first third,
and 8192 to 32k over the first third (epochs 2-3 at 32k). ``--seeds N`` then reruns row 0 and the
best 64k row whose best epoch trained at the full batch with N more training seeds (same data).
Each run records its best epoch and whether that epoch trained wholly at the full batch.
Rows 37-42 (seventh round) ramp 4096 to 64k over the first half and the first two thirds with
``lr: final``, with ``compile: true`` too, and with training seed 2025.
Rows 53-58 (tenth round) anneal the rate over the samples after the ramp (``lr_decay`` with a
``batch_ramp``): linear or cosine to 0 over the full batch's epochs. Rows 59-66 (eleventh round):
the seed spread of rows 53 and 58, and ramps that start at 8192 or end after a quarter of the run.
Row 67 is ``dcn_v2_gpu`` as shipped since: row 58's rule (batch 32k, ramp from 8192, annealed);
rows 68-71 start its ramp at 16384 (three seeds) and compile it; rows 72-73 ramp over a quarter.

Min count: ``dcn`` with vocabulary thresholds 2, 10, 50, 200 and 500 on 2 × 60k, 2 × 300k and
6 × 500k training rows; the gap to the Bayes AUC (the AUC of the true click probabilities on the
same day).

    python benchmarks/bench_train_rules.py --device cuda --out train-rules.json
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,1,10-16 --best-at 32768
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,1,10,17-23 --best-at 32768
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,21,22,24-29 --best-at 32768
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,27,30-33 --best-at 32768
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,34-36 --seeds 2
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,34,37-42
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,43-48 --seeds 2
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,49-52
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,34,53-58 --seeds 2
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 59-66
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 0,67
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 68-71
    python benchmarks/bench_train_rules.py --device cuda --skip min-count --rules 67,66,72,73
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_train import RESULTS, _user_experiment, machine, record, run_rate

from ctr.config import load_experiment
from ctr.data.synth import SynthArgs, synthesize
from ctr.repository import ModelRepository
from ctr.train import TrainSpec, train_candidate

LARGE_BATCH: list[tuple[str, dict[str, object]]] = [
    ("dcn_v2", {}),
    ("dcn_v2_gpu", {}),
    ("dcn_v2_gpu", {"lr_scaling": "linear"}),
    ("dcn_v2_gpu", {"lr_scaling": "none", "warmup_steps": 0}),
    ("dcn_v2_gpu", {"warmup_steps": 0}),
    ("dcn_v2_gpu", {"warmup_steps": 50}),
    ("dcn_v2_gpu", {"learning_rate": 0.002}),
    ("dcn_v2_gpu", {"batch_size": 32768}),
    ("dcn_v2_gpu", {"epochs": 5}),
    ("dcn_v2", {"epochs": 5}),
    ("dcn_v2_gpu", {"grad_clip_norm": 0.1}),
    ("dcn_v2_gpu", {"lr_scaling": "linear", "grad_clip_norm": 0.1}),
    ("dcn_v2_gpu", {"lr_decay": "cosine"}),
    ("dcn_v2_gpu", {"lr_decay": "cosine", "learning_rate": 0.002}),
    ("dcn_v2_gpu", {"lr_decay": "cosine", "lr_scaling": "linear", "grad_clip_norm": 0.1}),
    ("dcn_v2_gpu", {"lr_decay": "cosine", "learning_rate": 0.002, "adam_beta2": 0.99}),
    ("dcn_v2_gpu", {"adam_beta2": 0.99}),
    # third round (rows 17-23), after CowClip: the embedding table at the reference rate while the
    # dense weights are scaled, a one-epoch warm-up (46 steps at 64k), column-wise clipping
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none"}),
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none", "warmup_steps": 46}),
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none", "lr_scaling": "linear", "warmup_steps": 46}),
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none", "grad_clip_norm": 0.1}),
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none", "cowclip_ratio": 1e-4}),
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none", "cowclip_ratio": 3e-5, "warmup_steps": 46}),
    ("dcn_v2_gpu", {"cowclip_ratio": 1e-4, "grad_clip_norm": 0.1}),
    # fourth round (rows 24-29): 64k under-fits in 3 epochs (AUC still climbing): less dropout,
    # a 1.5× base rate with CowClip (dense and table), the clippings together
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none", "cowclip_ratio": 1e-4, "model": {"dropout": 0.1}}),
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none", "cowclip_ratio": 1e-4, "model": {"dropout": 0.0}}),
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none", "cowclip_ratio": 1e-4, "grad_clip_norm": 0.1, "warmup_steps": 46}),
    ("dcn_v2_gpu", {"embedding_lr_scaling": "none", "cowclip_ratio": 1e-4, "learning_rate": 0.0015}),
    ("dcn_v2_gpu", {"cowclip_ratio": 1e-4}),
    (
        "dcn_v2_gpu",
        {"embedding_lr_scaling": "none", "cowclip_ratio": 1e-4, "grad_clip_norm": 0.1, "model": {"dropout": 0.1}},
    ),
]
# the best 64k rule of round 4 (row 27): CowClip 1e-4, the table at the reference rate, base rate 0.0015
COWCLIP: dict[str, object] = {"embedding_lr_scaling": "none", "cowclip_ratio": 1e-4, "learning_rate": 0.0015}
LARGE_BATCH += [
    # fifth round (rows 30-33): a batch ramp, 4096 doubling to 64k over the first third of the run
    # (one epoch) / two thirds, and 8192 over the first half (which should keep >= 3.5 M samples/s)
    ("dcn_v2_gpu", {"batch_ramp": {"start": 4096, "share": 1 / 3}}),
    ("dcn_v2_gpu", {**COWCLIP, "batch_ramp": {"start": 4096, "share": 1 / 3}}),
    ("dcn_v2_gpu", {**COWCLIP, "batch_ramp": {"start": 4096, "share": 2 / 3}}),
    ("dcn_v2_gpu", {**COWCLIP, "batch_ramp": {"start": 8192, "share": 0.5}}),
    # sixth round (rows 34-36): the ramp's rates held, so the dense rate does not step up at each
    # doubling: the full batch's from the start (Smith et al.'s constant rate) or the first batch's;
    # and 32k from 8192 over the first third (two epochs really at 32k, >= 3.5 M samples/s expected)
    ("dcn_v2_gpu", {**COWCLIP, "batch_ramp": {"start": 4096, "share": 1 / 3, "lr": "final"}}),
    ("dcn_v2_gpu", {**COWCLIP, "batch_ramp": {"start": 4096, "share": 1 / 3, "lr": "start"}}),
    ("dcn_v2_gpu", {**COWCLIP, "batch_size": 32768, "batch_ramp": {"start": 8192, "share": 1 / 3, "lr": "final"}}),
]
# seventh round (rows 37-42): longer ramps with the rate held at the full batch's (lr final), 4096 to 64k
# over the first half and the first two thirds, seeds 2024 and 2025; the same with compile: true (the
# cross network and the MLP compiled), to see whether compilation pays for the longer ramp's slower steps
RAMP_HALF: dict[str, object] = {**COWCLIP, "batch_ramp": {"start": 4096, "share": 0.5, "lr": "final"}}
RAMP_TWO_THIRDS: dict[str, object] = {**COWCLIP, "batch_ramp": {"start": 4096, "share": 2 / 3, "lr": "final"}}
LARGE_BATCH += [
    ("dcn_v2_gpu", RAMP_HALF),
    ("dcn_v2_gpu", RAMP_TWO_THIRDS),
    ("dcn_v2_gpu", {**RAMP_HALF, "compile": True}),
    ("dcn_v2_gpu", {**RAMP_TWO_THIRDS, "compile": True}),
    ("dcn_v2_gpu", {**RAMP_HALF, "seed": 2025}),
    ("dcn_v2_gpu", {**RAMP_TWO_THIRDS, "seed": 2025}),
]
# eighth round (rows 43-48): in rows 34 and 37-42 the AUC falls in the last epoch, at the full batch's
# dense rate (0.006 at 64k): a lower base rate under the ramp, and no ramp with the rate decaying to 0
RAMP_THIRD: dict[str, object] = {**COWCLIP, "batch_ramp": {"start": 4096, "share": 1 / 3, "lr": "final"}}
LARGE_BATCH += [
    ("dcn_v2_gpu", {**RAMP_THIRD, "learning_rate": 0.001}),
    ("dcn_v2_gpu", {**RAMP_THIRD, "learning_rate": 0.00075}),
    ("dcn_v2_gpu", {**RAMP_TWO_THIRDS, "learning_rate": 0.001}),
    ("dcn_v2_gpu", {**COWCLIP, "warmup_steps": 46, "lr_decay": "linear"}),
    ("dcn_v2_gpu", {**COWCLIP, "warmup_steps": 46, "lr_decay": "cosine"}),
    ("dcn_v2_gpu", {**COWCLIP, "learning_rate": 0.001, "warmup_steps": 46, "lr_decay": "cosine"}),
]
# ninth round (rows 49-52): the table's rate, which CowClip leaves unscaled, raised with the ramp of row 34;
# the dense rate unscaled beside it; a looser column-wise clip; a shorter second-moment memory
LARGE_BATCH += [
    ("dcn_v2_gpu", {**RAMP_THIRD, "learning_rate": 0.003, "lr_scaling": "none"}),
    ("dcn_v2_gpu", {**RAMP_THIRD, "learning_rate": 0.003}),
    ("dcn_v2_gpu", {**RAMP_THIRD, "cowclip_ratio": 3e-4}),
    ("dcn_v2_gpu", {**RAMP_THIRD, "adam_beta2": 0.99}),
]
# tenth round (rows 53-58): the rate annealed over the samples after the ramp (lr_decay with a batch_ramp):
# the ramp's small batches make the start, the full batch's epochs then settle at a falling rate instead
# of the held one (whose last epoch lost AUC in rows 34 and 37-42); linear and cosine, base 0.0015,
# 0.001 and 0.002; the half ramp; and 32k from 8192 (row 36) annealed
LARGE_BATCH += [
    ("dcn_v2_gpu", {**RAMP_THIRD, "lr_decay": "linear"}),
    ("dcn_v2_gpu", {**RAMP_THIRD, "lr_decay": "cosine"}),
    ("dcn_v2_gpu", {**RAMP_THIRD, "learning_rate": 0.001, "lr_decay": "linear"}),
    ("dcn_v2_gpu", {**RAMP_THIRD, "learning_rate": 0.002, "lr_decay": "linear"}),
    ("dcn_v2_gpu", {**RAMP_HALF, "lr_decay": "linear"}),
    (
        "dcn_v2_gpu",
        {
            **COWCLIP,
            "batch_size": 32768,
            "batch_ramp": {"start": 8192, "share": 1 / 3, "lr": "final"},
            "lr_decay": "linear",
        },
    ),
]
# eleventh round (rows 59-66): the annealed ramps' seed spread (rows 53 and 58 with seeds 2025, 2026), and
# shorter or later-starting ramps, which keep more of the run at the full batch (faster)
ANNEALED_THIRD: dict[str, object] = {**RAMP_THIRD, "lr_decay": "linear"}
ANNEALED_32K: dict[str, object] = {
    **COWCLIP,
    "batch_size": 32768,
    "batch_ramp": {"start": 8192, "share": 1 / 3, "lr": "final"},
    "lr_decay": "linear",
}
LARGE_BATCH += [
    ("dcn_v2_gpu", {**ANNEALED_THIRD, "seed": 2025}),
    ("dcn_v2_gpu", {**ANNEALED_THIRD, "seed": 2026}),
    ("dcn_v2_gpu", {**ANNEALED_32K, "seed": 2025}),
    ("dcn_v2_gpu", {**ANNEALED_32K, "seed": 2026}),
    ("dcn_v2_gpu", {**COWCLIP, "batch_ramp": {"start": 8192, "share": 1 / 3, "lr": "final"}, "lr_decay": "linear"}),
    ("dcn_v2_gpu", {**COWCLIP, "batch_ramp": {"start": 8192, "share": 0.5, "lr": "final"}, "lr_decay": "linear"}),
    ("dcn_v2_gpu", {**COWCLIP, "batch_ramp": {"start": 4096, "share": 0.25, "lr": "final"}, "lr_decay": "linear"}),
    ("dcn_v2_gpu", {**ANNEALED_32K, "batch_ramp": {"start": 8192, "share": 0.25, "lr": "final"}}),
]
# Rows 1-66 were measured on the dcn_v2_gpu of their day (batch 64k, sqrt rule, 20-step warm-up), which
# the annealed ramp of rows 58, 61 and 62 replaced on 2026-12-07: they keep that base, spelled out.
GPU_64K: dict[str, object] = {"batch_size": 65536, "lr_scaling": "sqrt", "warmup_steps": 20}
LARGE_BATCH = [(b, {**GPU_64K, **o}) if b == "dcn_v2_gpu" else (b, o) for b, o in LARGE_BATCH]
LARGE_BATCH += [("dcn_v2_gpu", {})]  # row 67: dcn_v2_gpu as shipped since (row 58's rule)
# twelfth round (rows 68-71): the shipped rule's ramp from 16384 (one doubling: a faster first epoch),
# three seeds; and the shipped rule compiled
RAMP_16K: dict[str, object] = {"batch_ramp": {"start": 16384, "share": 1 / 3, "lr": "final"}}
LARGE_BATCH += [
    ("dcn_v2_gpu", RAMP_16K),
    ("dcn_v2_gpu", {**RAMP_16K, "seed": 2025}),
    ("dcn_v2_gpu", {**RAMP_16K, "seed": 2026}),
    ("dcn_v2_gpu", {"compile": True}),
]
# thirteenth round (rows 72-73): the shipped rule with its ramp over the first quarter (row 66) at seeds
# 2025 and 2026: fewer small-batch steps, a faster run, if the AUC holds
RAMP_QUARTER: dict[str, object] = {"batch_ramp": {"start": 8192, "share": 0.25, "lr": "final"}}
LARGE_BATCH += [("dcn_v2_gpu", {**RAMP_QUARTER, "seed": 2025}), ("dcn_v2_gpu", {**RAMP_QUARTER, "seed": 2026})]
MIN_COUNTS = (2, 10, 50, 200, 500)


def world(work: Path, days: int, rows: int, seed: int) -> Path:
    out = work / f"world-{days}x{rows}-s{seed}"
    if not (out / "manifest.json").exists():
        synthesize(SynthArgs(days=days, rows_per_day=rows, seed=seed), out)
    return out


def pick(spec: str, count: int) -> list[int]:
    """``--rules``: indices into LARGE_BATCH, comma-separated, ``a-b`` for a range; empty: all."""
    if not spec:
        return list(range(count))
    chosen: list[int] = []
    for item in spec.split(","):
        first, _, last = item.partition("-")
        chosen += range(int(first), int(last or first) + 1)
    if bad := [i for i in chosen if not 0 <= i < count]:
        raise SystemExit(f"--rules: no row {bad} (0-{count - 1})")
    return chosen


def run(
    data: Path, days: list[int], valid: int, base: str, overrides: dict[str, object], work: Path, device: str
) -> tuple[float, bool]:
    """Train ``base`` with ``overrides`` and record the run; returns its AUC and whether its best
    epoch trained wholly at the full batch (after a batch ramp's end; always so without a ramp)."""
    experiment = _user_experiment(base, overrides, work) if overrides else base
    repo = ModelRepository(work / "repo")
    t0 = time.perf_counter()
    candidate = train_candidate(TrainSpec(data, days, valid, experiment=experiment, device=device), repo)
    wall = time.perf_counter() - t0
    repo.discard(candidate.staged)
    meta, m = candidate.metadata, candidate.metrics
    rates = meta["epoch_samples_per_second"]  # each epoch has the same rows: the run's rate is their harmonic mean
    aucs = meta["auc_by_epoch"]
    best_epoch = aucs.index(max(aucs)) + 1  # the one ctr train keeps (the first of equals)
    ramp = meta["experiment"].get("batch_ramp")
    # the best epoch began once the ramp had ended: every one of its samples at the full batch
    honest = ramp is None or best_epoch - 1 >= ramp["share"] * meta["experiment"]["epochs"] - 1e-9
    record(
        kind="rule",
        config=base,
        overrides=overrides,
        train_rows=meta["data"]["train_rows"],
        batch_size=meta["experiment"]["batch_size"],
        learning_rate=meta["learning_rate"],
        min_count=meta["min_count"],
        auc=m["auc"],
        auc_by_epoch=aucs,
        best_epoch=best_epoch,
        best_epoch_at_full_batch=honest,
        seed=meta["seed"],
        bayes_auc=m["bayes_auc"],
        gap_to_bayes=round(float(m["bayes_auc"]) - float(m["auc"]), 4) if m["bayes_auc"] else None,
        wall_seconds=round(wall, 1),
        samples_per_s_in_epochs=meta["samples_per_second"],
        # the run's rate over all its epochs (the mean above weighs a slow ramp epoch like a fast one)
        samples_per_s_run=None if (rate := run_rate(rates)) is None else round(rate, 1),
        epoch_samples_per_s=meta["epoch_samples_per_second"],
        optimizer_steps=meta.get("optimizer_steps"),
        full_batch_share=meta.get("full_batch_share"),
        machine=machine(),
    )
    return float(m["auc"] or 0.0), honest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workdir", default="/tmp/ctr-bench-rules")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip", default="", help="large-batch and/or min-count")
    ap.add_argument("--out", default="train-rules.json")
    ap.add_argument("--rules", default="", help="LARGE_BATCH rows to run, e.g. 0,1,10-16 (default: all)")
    ap.add_argument("--best-at", type=int, default=0, help="then run the best 64k row at this batch size")
    ap.add_argument("--rows-per-day", type=int, default=500_000, help="the large-batch world's (a smoke test)")
    ap.add_argument(
        "--seeds",
        type=int,
        default=0,
        help="then rerun row 0 and the best 64k row whose best epoch is at the full batch with N more training seeds",
    )
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    big = world(work, 7, args.rows_per_day, args.seed)
    if "large-batch" not in args.skip:
        tried: list[tuple[float, bool, dict[str, object]]] = []  # 64k rows at the same epochs
        for i in pick(args.rules, len(LARGE_BATCH)):
            base, overrides = LARGE_BATCH[i]
            auc, honest = run(big, [0, 1, 2, 3, 4, 5], 6, base, overrides, work, args.device)
            if overrides.get("batch_size") == 65536 and "epochs" not in overrides:
                tried.append((auc, honest, overrides))
        if args.best_at and tried:
            best = max(tried, key=lambda t: t[0])[2]
            run(big, [0, 1, 2, 3, 4, 5], 6, "dcn_v2", {**best, "batch_size": args.best_at}, work, args.device)
        if args.seeds:
            # the best 64k row whose best epoch trained at 64k (any 64k row if none did), and the reference
            rows = [("dcn_v2", {})]
            if tried:
                rows.append(("dcn_v2", max(tried, key=lambda t: (t[1], t[0]))[2]))
            for base, overrides in rows:
                first = load_experiment(base).seed
                for seed in range(first + 1, first + 1 + args.seeds):
                    run(big, [0, 1, 2, 3, 4, 5], 6, base, {**overrides, "seed": seed}, work, args.device)
    if "min-count" not in args.skip:
        for data, days, valid in (
            (world(work, 3, 60_000, args.seed), [0, 1], 2),
            (world(work, 3, 300_000, args.seed), [0, 1], 2),
            (big, [0, 1, 2, 3, 4, 5], 6),
        ):
            for count in MIN_COUNTS:
                run(data, days, valid, "dcn", {"min_count": count}, work, args.device)
    Path(args.out).write_text(json.dumps(RESULTS, indent=2) + "\n")


if __name__ == "__main__":
    main()
