"""Fresher models (issue 20, item 6; Monolith, arXiv 2209.07663, Table 2): batch-only vs periodic
incremental updates at three intervals, AUC over the last two days.

Generated world, 7 days × ``--rows-per-day`` rows, ``--drift`` from day 5. Batch: a full run on
days 0-3 (day 4 validates), published as version 1 and never replaced. Periodic: the same version
1, then every ``h`` simulated hours an incremental run (``train_and_publish``, mode incremental:
the function the pipeline's train and publish steps call) on the impressions of those ``h`` hours,
replaying the history and the slices seen so far at the experiment's ``replay_share`` (never a
slice still to come); the slice just before the window validates — early stopping between the
experiment's two passes only, and the parent version has trained on that slice (a slight
in-sample bias in which pass is kept, never data from the future). Days 5 and 6 are cut
into 30-minute slices in row order (a generated day's rows are exchangeable, so row order stands
for time); every slice is scored by the published ONNX graph serving at that time *before* any
update that includes it, as a server would. AUC of those scores over both days, per interval.

This is not ``ctr pipeline schedule`` end to end (event export, KFP, gate): 150 scheduled runs on
2 cores would take hours; it is the same training and publishing code on the same data cut.

Run: ``.venv/bin/python benchmarks/bench_freshness.py`` (about 4 minutes on 2 cores; ``--drift``, ``--seed``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ctr.data.dataset import day_shards, raw_arrays
from ctr.data.synth import SynthArgs, synthesize
from ctr.metrics import roc_auc
from ctr.onnx_export import onnx_predict, onnx_session
from ctr.repository import ONNX_FILE, ModelRepository
from ctr.schema import day_name
from ctr.train import TrainSpec, train_and_publish

SLICE_HOURS = 0.5
FIRST_SLICE = 100  # day number of the first 30-minute slice in the data directory


def cpu_model() -> str:
    """The CPU's model name and core count (``/proc/cpuinfo``), else the platform's machine."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]}, {len(names)} cores" if names else platform.machine()


def cut_slices(world: Path, days: list[int], rows_per_day: int) -> list[int]:
    """Write each day of ``days`` as 30-minute slice days (``day_100``, ...); returns their numbers."""
    per_day = int(24 / SLICE_HOURS)
    numbers = []
    for d in days:
        frame = day_shards(world, d).scan().collect()
        bounds = np.linspace(0, frame.height, per_day + 1).astype(int)
        for k in range(per_day):
            number = FIRST_SLICE + len(numbers)
            out = world / day_name(number)
            out.mkdir(exist_ok=True)
            frame[int(bounds[k]) : int(bounds[k + 1])].write_parquet(out / "part-00000.parquet")
            numbers.append(number)
    return numbers


def score(repo: ModelRepository, frame: pl.DataFrame) -> np.ndarray:
    dense, sparse = raw_arrays(frame)
    return onnx_predict(onnx_session(repo.version_dir(repo.served() or 1) / ONNX_FILE), dense, sparse)[0]


def replay(
    world: Path, batch: Path, work: Path, slices: list[int], hours: float | None, experiment: str
) -> dict[str, Any]:
    """Score every slice with the version serving then; update every ``hours`` (None: never)."""
    repo_dir = work / f"repo-{hours}"
    shutil.copytree(batch, repo_dir)
    repo = ModelRepository(repo_dir)
    step = None if hours is None else round(hours / SLICE_HOURS)
    labels, scores, updates, clock = [], [], 0, time.perf_counter()
    for j, number in enumerate(slices):
        if step is not None and j > 0 and j % step == 0:
            window = slices[j - step : j]
            valid = slices[j - step - 1] if j - step - 1 >= 0 else 4
            seen = [d for d in [0, 1, 2, 3, 4, *slices[: j - step]] if d != valid]  # never the future
            spec = TrainSpec(world, window, valid, experiment, "incremental", replay_days=seen, device="cpu")
            train_and_publish(spec, repo)
            updates += 1
        frame = day_shards(world, number).scan().collect()
        labels.append(frame["label"].to_numpy())
        scores.append(score(repo, frame))
    y, s = np.concatenate(labels), np.concatenate(scores)
    return {
        "interval_hours": hours,
        "updates": updates,
        "auc_last_two_days": round(roc_auc(y, s), 5),
        "wall_seconds": round(time.perf_counter() - clock, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows-per-day", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--drift", default="new-ads", choices=["new-ads", "concept", "popularity"])
    ap.add_argument("--intervals", default="5,1,0.5", help="update intervals in hours (multiples of 0.5)")
    ap.add_argument("--experiment", default="dcn_v2_demo")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/freshness-DRIFT-sSEED.json")
    args = ap.parse_args()
    out = Path(args.out or f"benchmarks/results/freshness-{args.drift}-s{args.seed}.json")
    intervals = [float(h) for h in args.intervals.split(",")]
    if any(h <= 0 or abs(h / SLICE_HOURS - round(h / SLICE_HOURS)) > 1e-9 for h in intervals):
        raise SystemExit(f"--intervals must be positive multiples of {SLICE_HOURS} h, got {args.intervals}")
    with tempfile.TemporaryDirectory(prefix="ctr-freshness-") as tmp:
        work = Path(tmp)
        world = work / "world"
        synthesize(SynthArgs(7, args.rows_per_day, args.seed, drift_day=5, drift=args.drift), world)  # type: ignore[arg-type]
        batch = work / "batch"
        clock = time.perf_counter()
        first = TrainSpec(world, [0, 1, 2, 3], 4, experiment=args.experiment, device="cpu")
        train_and_publish(first, ModelRepository(batch))
        batch_seconds = round(time.perf_counter() - clock, 1)
        slices = cut_slices(world, [5, 6], args.rows_per_day)
        runs = [replay(world, batch, work, slices, None, args.experiment)]
        for h in intervals:
            runs.append(replay(world, batch, work, slices, h, args.experiment))
            print(json.dumps(runs[-1]))
    base = runs[0]["auc_last_two_days"]
    for r in runs:
        r["gain_over_batch"] = round(r["auc_last_two_days"] - base, 5)
    result = {
        "command": "python benchmarks/bench_freshness.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": cpu_model(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "batch_train_seconds": batch_seconds,
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
