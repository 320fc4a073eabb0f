"""Check on a CUDA device that replayed CUDA graphs train as eager steps do, and time both.

Two copies of one DCN-v2 (``dcn_v2``'s model, 26 × 20k-row vocabularies) take the same batches
(a ramp's 8192, 16384 and 32768 rows, with short shard-tail batches between) through
``bench_train.make_step``: one eagerly, one through ``ctr.cuda_graph.GraphedSteps``. Reports the
largest difference of any parameter after every step has run (dropout off, so both are the same
function; and dropout on, same seed), the replays, and the time per step at each size, eager and
replayed (a lower-level figure: the product's is ``bench_train.py --product``).

    python benchmarks/check_cuda_graph.py --out check.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import machine, make_step

from ctr.config import load_experiment
from ctr.cuda_graph import GraphedSteps
from ctr.errors import CtrError
from ctr.model import DCN

SIZES = (8192, 16384, 32768)
PLAN = [8192] * 6 + [5000] + [16384] * 6 + [1234] + [32768] * 8 + [777]


def batches(n: int, vocab: int, device: torch.device, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    dense = torch.randn(n, 13, generator=gen).to(device)
    ids = torch.randint(0, vocab, (n, 26), generator=gen).to(device)
    y = (torch.rand(n, generator=gen) < 0.25).float().to(device)
    return dense, ids, y


def agreement(dropout: float, device: torch.device) -> dict[str, object]:
    exp = load_experiment("dcn_v2")
    config = dataclasses.replace(exp.model, dropout=dropout)
    vocab = 20_000
    torch.manual_seed(0)
    eager_model = DCN(config, [vocab] * 26).to(device)
    graphed_model = copy.deepcopy(eager_model)
    eager = make_step(eager_model, 1e-3, (1e-4, 1e-5))
    graphed = make_step(graphed_model, 1e-3, (1e-4, 1e-5), SIZES)
    gen = torch.Generator().manual_seed(1)
    data = [batches(n, vocab, device, gen) for n in PLAN]
    for run, model in ((eager, eager_model), (graphed, graphed_model)):
        model.train()
        torch.cuda.manual_seed(7)
        for batch in data:
            run(*batch)
    torch.cuda.synchronize()
    diffs = [
        (a - b).abs().max().item() for a, b in zip(eager_model.parameters(), graphed_model.parameters(), strict=True)
    ]
    scale = max(p.abs().max().item() for p in eager_model.parameters())
    assert isinstance(graphed, GraphedSteps)
    return {
        "dropout": dropout,
        "steps": len(PLAN),
        "replays": graphed.replays,
        "graphs": sorted(graphed.graphs),
        "max_abs_param_diff": max(diffs),
        "max_abs_param": scale,
    }


def unrecordable(device: torch.device) -> dict[str, object]:
    """A step that reads a value back to the host cannot be recorded: the error must name the
    batch and the setting. Run last: a failed recording leaves CUDA's generator mid-capture."""
    total = torch.zeros((), device=device)

    def syncing(d: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> None:
        total.add_(y.sum())
        float(total.item())  # a host synchronisation: not recordable

    steps = GraphedSteps(syncing, sizes={64})
    y = torch.ones(64, device=device)
    try:
        for _ in range(6):
            steps(torch.zeros(64, 13, device=device), torch.zeros(64, 26, dtype=torch.long, device=device), y)
    except CtrError as exc:
        return {"error": str(exc), "eager_steps_before": total.item() / 64}
    return {"error": None}


def timing(device: torch.device, steps: int = 50) -> list[dict[str, object]]:
    exp = load_experiment("dcn_v2")
    vocab = 200_000
    gen = torch.Generator().manual_seed(2)
    rows = []
    for size in SIZES:
        batch = batches(size, vocab, device, gen)
        for graphs in (False, True):
            torch.manual_seed(0)
            model = DCN(exp.model, [vocab] * 26).to(device).train()
            run = make_step(model, 1e-3, (1e-4, 1e-5), SIZES if graphs else None)
            for _ in range(10):
                run(*batch)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                run(*batch)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) / steps * 1e3
            rows.append(
                {
                    "batch": size,
                    "cuda_graphs": graphs,
                    "ms_per_step": round(ms, 3),
                    "samples_per_s": round(size / ms * 1e3),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="check-cuda-graph.json")
    args = ap.parse_args()
    device = torch.device("cuda")
    result = {
        "machine": machine(),
        "torch": torch.__version__,
        "agreement": [agreement(0.0, device), agreement(0.2, device)],
        "timing": timing(device),
        "unrecordable": unrecordable(device),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
