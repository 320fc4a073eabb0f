"""How much of a demo's recovery share is the retrain's own randomness (issue 20).

The demo's recovery compares one served retrain with one counterfactual full retrain, each a
single draw of a randomly initialised model. This replays both recipes offline on a finished
demo's event log, once per training seed, and scores every model on the demo's recovery window
(the impressions shown from ``recovery.from`` on, labelled by the attribution window, exported
from the event log as the pipeline exports them):

- ``pipeline``: the triggered run's full candidate as the pipeline trains it — the history days
  plus the first 70 % of the last ``--export-window`` before the first trigger, the next 15 %
  validating (the last 15 % is the gate's holdout, unused here); with ``--all-logged`` it also
  trains on every impression logged from the start of traffic up to that export (a variant: the
  pipeline does not do this);
- ``counterfactual``: the demo's yardstick (``ctr.demo.yardsticks.counterfactual_full``) — the
  history days plus every impression from the start of traffic to the first trigger, the newest
  20 % of the last exported day validating.

It prints and writes (``--out``) each model's AUC, each pipeline seed's recovery share against
the mean counterfactual, and the share of the means. The drifted model (version 1) and the
served retrain are scored too: the first seed of each recipe should reproduce the demo's own
figures (same seed, same data), which checks the replay.

Run: ``python benchmarks/bench_retrain_spread.py --workdir W --report R --seeds 2024,7,11,13``
after ``ctr demo --workdir W --report-dir R`` (the experiment's own seed is 2024). CPU only; about
20 s per model on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ctr.data.dataset import raw_arrays
from ctr.data.reader import ReadReport, iter_batches
from ctr.demo.yardsticks import counterfactual_full
from ctr.events.store import EventStore
from ctr.events.training_export import ExportWindow, export_days
from ctr.metrics import roc_auc
from ctr.onnx_export import onnx_score, onnx_session
from ctr.repository import ONNX_FILE, ModelRepository
from ctr.retrain import link_days, split_day
from ctr.retrain_request import ATTRIBUTION
from ctr.schema import day_name
from ctr.train import TrainSpec, train_candidate

FAR = datetime(2100, 1, 1, tzinfo=UTC)  # "now" for exports: every label has matured


def read_rows(directory: Path) -> pl.DataFrame:
    """Every exported day of ``directory`` as one frame, in time order."""
    days = sorted(p for p in directory.glob("day_*") if "." not in p.name and p.stat().st_size)
    return pl.concat([pl.concat(list(iter_batches(p, ReadReport()))) for p in days])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, required=True, help="a finished demo's --workdir")
    ap.add_argument("--report", type=Path, required=True, help="its --report-dir (summary.json)")
    ap.add_argument("--seeds", default="2024,7,11,13")
    ap.add_argument("--export-window", type=float, default=12.0, help="hours a triggered run exports (the demo's)")
    ap.add_argument(
        "--all-logged",
        action="store_true",
        help="the pipeline's candidate also trains on every impression logged from the start of traffic to its export",
    )
    ap.add_argument("--experiment", default="dcn_v2_demo")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/ctr-retrain-spread"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    summary = json.loads((args.report / "summary.json").read_text())
    trigger = datetime.fromisoformat(summary["counterfactual_trained_to"]["counterfactual"])
    start = datetime.fromisoformat(summary["simulated_from"])
    history = sorted(int(p.name[4:]) for p in (args.workdir / "data").glob("day_*") if "." not in p.name)
    db_url = f"sqlite:///{args.workdir / 'events.db'}"
    db = EventStore(db_url)
    shutil.rmtree(args.scratch, ignore_errors=True)
    since = datetime.fromisoformat(summary["recovery"]["from"])
    export_days(db, ExportWindow(since, since + timedelta(days=30), ATTRIBUTION, FAR), args.scratch / "recovery")
    rows = read_rows(args.scratch / "recovery")
    dense, sparse = raw_arrays(rows)
    label = rows["label"].to_numpy()

    def auc(graph: Path) -> float:
        return round(roc_auc(label, onnx_score(onnx_session(graph, threads=2), dense, sparse)), 4)

    result: dict[str, Any] = {
        "workdir": str(args.workdir),
        "trigger": trigger.isoformat(),
        "recovery_rows": rows.height,
        "drifted": auc(args.workdir / "repo" / "dcn" / "1" / ONNX_FILE),
        "served_first_retrain": auc(args.workdir / "repo" / "dcn" / "2" / ONNX_FILE),
        "pipeline": {},
        "counterfactual": {},
    }
    recent = args.scratch / "export-recent"
    export_days(db, ExportWindow(trigger - timedelta(hours=args.export_window), trigger, ATTRIBUTION, trigger), recent)
    older_days: list[Path] = []
    if args.all_logged and start < trigger - timedelta(hours=args.export_window):
        older = args.scratch / "export-older"
        window = ExportWindow(start, trigger - timedelta(hours=args.export_window), ATTRIBUTION, trigger)
        summary_older = export_days(db, window, older)
        older_days = [older / day_name(d["day"]) for d in summary_older["days"] if d["rows"] > 0]
    result["all_logged"] = args.all_logged
    base = max(history) + 1 + len(older_days)
    for seed in [int(s) for s in args.seeds.split(",")]:
        work = args.scratch / f"pipeline-{seed}"
        (work / "data").mkdir(parents=True)
        link_days(args.workdir / "data", history, work / "data")
        for k, path in enumerate(older_days):
            os.symlink(path.resolve(), work / "data" / day_name(max(history) + 1 + k))
        split = [(work / "data" / day_name(base + k), share) for k, share in enumerate((0.7, 0.15, 0.15))]
        split_day(recent / day_name(0), split)  # as ``ctr.retrain.prepare`` splits a single exported day
        days = [*history, *range(max(history) + 1, base + 1)]
        valid = base + 1
        spec = TrainSpec(work / "data", days, valid, experiment=args.experiment, mode="full", device="cpu", seed=seed)
        result["pipeline"][seed] = auc(train_candidate(spec, ModelRepository(work / "repo")).staged / ONNX_FILE)
        graph = counterfactual_full(
            db_url,
            args.workdir / "data",
            history,
            start,
            trigger,
            args.experiment,
            args.scratch / f"counterfactual-{seed}",
            ATTRIBUTION,
            seed=seed,
        )
        result["counterfactual"][seed] = auc(graph)
        print(json.dumps({"seed": seed, "pipeline": result["pipeline"][seed], "cf": result["counterfactual"][seed]}))
    drifted = result["drifted"]
    cf_mean = float(np.mean(list(result["counterfactual"].values())))
    pipe_mean = float(np.mean(list(result["pipeline"].values())))
    result["recovery_per_pipeline_seed"] = {
        s: round((a - drifted) / (cf_mean - drifted), 3) for s, a in result["pipeline"].items()
    }
    result["recovery_of_means"] = round((pipe_mean - drifted) / (cf_mean - drifted), 3)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
