"""Pipeline benchmark (issue 5): a local full run vs a local incremental run, same data.

Generated data, 7 days × ``--rows-per-day`` rows, ``new-ads`` drift from day 4.
Version 1: full on days 0-2 (valid 3, holdout 6). Then, on the drifted data:
* incremental: warm start from v1 on day 4 (+ replay of 0-3), valid 5, holdout 6;
* full retrain on the same days: days 0-2 and 4 from scratch, valid 5, holdout 6.
Reports each run's wall time, its peak RSS (largest component process) and the holdout AUC.
Run: ``.venv/bin/python benchmarks/bench_pipeline.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ctr.data.synth import SynthArgs, synthesize
from ctr.repository import ModelRepository


def pipeline(
    repo: Path, data: Path, work: Path, mode: str, train: str, valid: int, holdout: int, config: str
) -> dict[str, object]:
    """One `ctr pipeline run --local` under GNU time: wall time and the largest process's peak RSS.

    kfp.local runs each component in its own process, so the peak is that of the biggest step.
    """
    ctr = Path(sys.executable).parent / "ctr"
    with tempfile.NamedTemporaryFile(suffix=".time") as timing:
        args = [
            "/usr/bin/time",
            "-f",
            "%M",
            "-o",
            timing.name,
            str(ctr),
            "pipeline",
            "run",
            "--local",
            "--mode",
            mode,
            "--repo",
            str(repo),
            "--data",
            str(data),
            "--train-days",
            train,
            "--valid-day",
            str(valid),
            "--holdout-day",
            str(holdout),
            "--config",
            config,
            "--work-dir",
            str(work),
            "--json",
        ]
        t0 = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"pipeline run failed ({done.returncode}): {done.stderr[-2000:]}")
        driver_kb = int(Path(timing.name).read_text().split()[-1])
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    outcome = json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith('{"run_id"')))
    return {
        "wall_s": round(wall, 1),
        "driver_peak_rss_mb": round(driver_kb / 1024),
        "max_step_peak_rss_mb_so_far": round(children_kb / 1024),
        **outcome,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows-per-day", type=int, default=100_000)
    ap.add_argument("--config", default="dcn_v2_small")
    ap.add_argument("--out", default="benchmarks/results/pipeline.json")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        synthesize(SynthArgs(days=7, rows_per_day=a.rows_per_day, seed=11, drift_day=4, drift="new-ads"), data)
        inc_repo, full_repo = root / "inc", root / "full"
        base = pipeline(inc_repo, data, root / "w", "full", "0-2", 3, 6, a.config)
        results.append({"name": "v1_full_days_0-2", **base})
        inc = pipeline(inc_repo, data, root / "w", "incremental", "4", 5, 6, a.config)
        results.append({"name": "incremental_day_4_plus_replay", **inc})
        full = pipeline(full_repo, data, root / "w", "full", "0-2,4", 5, 6, a.config)
        results.append({"name": "full_retrain_days_0-2_and_4", **full})
        meta_inc = ModelRepository(inc_repo).metadata(2)
        results.append(
            {
                "name": "summary",
                "rows_per_day": a.rows_per_day,
                "config": a.config,
                "incremental_wall_share_of_full": round(inc["wall_s"] / full["wall_s"], 3),
                "incremental_holdout_auc": inc["candidate_auc"],
                "full_retrain_holdout_auc": full["candidate_auc"],
                "auc_ratio": round(inc["candidate_auc"] / full["candidate_auc"], 4),
                "incremental_train_rows": meta_inc["data"]["train_rows"],
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
    for r in results:
        print(json.dumps(r))
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
