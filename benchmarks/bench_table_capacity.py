"""How large an embedding table ``ctr train`` can hold on one GPU, measured.

``ctr train`` keeps the 26 tables as one dense table on the GPU, with a dense gradient and
Adam's two moments: 16 bytes per parameter (fp32 weight, gradient, first and second moment),
so ``rows × dim × 16`` bytes before activations. For each (rows, dim) this builds ``dcn_v2``
with the rows spread over 26 tables like Criteo 1TB's cardinalities (scaled), runs training
steps of the same form as ``ctr train`` (bf16 autocast, fused Adam, batch 64k, random ids), and
records the peak GPU memory and samples/s — or that it does not fit.

    python benchmarks/bench_table_capacity.py --out capacity.json
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from ctr.config import load_experiment
from ctr.model import DCN, ModelConfig
from ctr.schema import CRITEO_1TB_CARDINALITIES, N_DENSE


def sizes_for(rows: int) -> list[int]:
    total = sum(CRITEO_1TB_CARDINALITIES)
    return [max(3, round(c * rows / total)) for c in CRITEO_1TB_CARDINALITIES]


def measure(rows: int, dim: int, batch: int, steps: int) -> dict[str, object]:
    device = torch.device("cuda")
    exp = load_experiment("dcn_v2")
    config = ModelConfig(**{**exp.to_dict()["model"], "embedding_dim": dim})
    sizes = sizes_for(rows)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result: dict[str, object] = {"rows": sum(sizes), "dim": dim, "batch_size": batch}
    try:
        with torch.device(device):
            model = DCN(config, sizes)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        loss_fn = nn.BCEWithLogitsLoss()
        caps = torch.tensor(sizes, device=device)
        dense = torch.randn(batch, N_DENSE, device=device)
        label = (torch.rand(batch, device=device) < 0.03).float()
        times = []
        for i in range(steps + 3):
            ids = (torch.rand(batch, len(sizes), device=device) * caps).long()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_fn(model(dense, ids).float().squeeze(1), label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        result |= {
            "fits": True,
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
            "table_state_gib": round(sum(sizes) * dim * 16 / 2**30, 1),
            "samples_per_s": round(batch * len(times) / sum(times)),
        }
        del model, opt
    except torch.OutOfMemoryError as exc:
        result |= {"fits": False, "error": str(exc).splitlines()[0][:160]}
    torch.cuda.empty_cache()
    result |= {"gpu": torch.cuda.get_device_name(0), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="177944275x16,300000000x16,450000000x16,520000000x16,177944275x32,177944275x64")
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="capacity.json")
    args = ap.parse_args()
    results = []
    for shape in args.shapes.split(","):
        rows, dim = (int(x) for x in shape.split("x"))
        results.append(measure(rows, dim, args.batch, args.steps))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
