"""Two training rules measured through ``ctr train`` itself (``train_candidate``), on generated data.

Large batch: ``dcn_v2`` (batch 4096) against ``dcn_v2_gpu`` (batch 64k, learning rate scaled by
sqrt(16) with a 20-step linear warm-up) and two other scaling rules, on the 7 × 500k split (days
0-5 train, day 6 validates and is the day the AUC is reported on; best of the same 3 epochs for
every run).

Min count: ``dcn`` with vocabulary thresholds 2, 10, 50, 200 and 500 on 2 × 60k, 2 × 300k and
6 × 500k training rows; the gap to the Bayes AUC (the AUC of the true click probabilities on the
same day).

    python benchmarks/bench_train_rules.py --device cuda --out train-rules.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_train import RESULTS, _user_experiment, machine, record

from ctr.data.synth import SynthArgs, synthesize
from ctr.repository import ModelRepository
from ctr.train import TrainSpec, train_candidate

LARGE_BATCH = [
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
]
MIN_COUNTS = (2, 10, 50, 200, 500)


def world(work: Path, days: int, rows: int, seed: int) -> Path:
    out = work / f"world-{days}x{rows}-s{seed}"
    if not (out / "manifest.json").exists():
        synthesize(SynthArgs(days=days, rows_per_day=rows, seed=seed), out)
    return out


def run(
    data: Path, days: list[int], valid: int, base: str, overrides: dict[str, object], work: Path, device: str
) -> None:
    experiment = _user_experiment(base, overrides, work) if overrides else base
    repo = ModelRepository(work / "repo")
    t0 = time.perf_counter()
    candidate = train_candidate(TrainSpec(data, days, valid, experiment=experiment, device=device), repo)
    wall = time.perf_counter() - t0
    repo.discard(candidate.staged)
    meta, m = candidate.metadata, candidate.metrics
    record(
        kind="rule",
        config=base,
        overrides=overrides,
        train_rows=meta["data"]["train_rows"],
        batch_size=meta["experiment"]["batch_size"],
        learning_rate=meta["learning_rate"],
        min_count=meta["min_count"],
        auc=m["auc"],
        auc_by_epoch=meta["auc_by_epoch"],
        bayes_auc=m["bayes_auc"],
        gap_to_bayes=round(float(m["bayes_auc"]) - float(m["auc"]), 4) if m["bayes_auc"] else None,
        wall_seconds=round(wall, 1),
        samples_per_s_in_epochs=meta["samples_per_second"],
        machine=machine(),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workdir", default="/tmp/ctr-bench-rules")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip", default="", help="large-batch and/or min-count")
    ap.add_argument("--out", default="train-rules.json")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    big = world(work, 7, 500_000, args.seed)
    if "large-batch" not in args.skip:
        for base, overrides in LARGE_BATCH:
            run(big, [0, 1, 2, 3, 4, 5], 6, base, overrides, work, args.device)
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
