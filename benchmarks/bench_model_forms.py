"""Training speed of the DCN's reworked forms against the textbook ones, on any device.

``VectorCrossNet`` runs in closed form and the parallel head multiplies its weight's halves
(``ctr/model.py``); this times a bf16-autocast training step of the HugeCTR-sized ``dcn``
(vector cross, 6 layers, MLP 1024-1024) with each combination of cross form (``layered``:
``x_{l+1} = x0 · (x_lᵀ w_l) + b_l + x_l`` layer by layer; ``closed``) and head (``cat``: one
linear layer over ``[cross, deep]``; ``split``), eager and, on CUDA, under ``torch.compile``.
Run: ``python benchmarks/bench_model_forms.py --device cuda --batches 4096,65536``.
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

import ctr.model as model_module
from ctr.model import DCN, ModelConfig, VectorCrossNet


def layered_cross(self: VectorCrossNet, x0: torch.Tensor) -> torch.Tensor:
    x = x0
    for w, b in zip(self.weights, self.biases, strict=True):
        x = x0 * (x @ w).unsqueeze(1) + b + x
    return x


def cat_head(self: DCN, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    x0 = torch.cat([dense, self.embed(sparse)], dim=1)
    return self.head(torch.cat([self.cross(x0), self.deep(x0)], dim=1))


def samples_per_s(device: torch.device, batch: int, compiled: bool, steps: int = 30) -> int:
    torch.manual_seed(0)
    model = DCN(ModelConfig(), [1000] * 26).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    step_model = torch.compile(model) if compiled else model
    dense = torch.randn(batch, 13, device=device)
    sparse = torch.randint(0, 1000, (batch, 26), device=device)
    label = torch.rand(batch, device=device).round()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(step_model(dense, sparse).float().squeeze(1), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(5):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return round(steps * batch / (time.perf_counter() - t))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default="4096,65536")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    crosses: dict[str, Callable[..., torch.Tensor]] = {"layered": layered_cross, "closed": VectorCrossNet.forward}
    heads: dict[str, Callable[..., torch.Tensor]] = {"cat": cat_head, "split": DCN.forward}
    for cross_name, cross in crosses.items():
        for head_name, head in heads.items():
            model_module.VectorCrossNet.forward = cross  # type: ignore[method-assign]
            model_module.DCN.forward = head  # type: ignore[method-assign]
            for batch in (int(b) for b in args.batches.split(",")):
                for compiled in (False, True) if device.type == "cuda" else (False,):
                    torch._dynamo.reset()
                    rate = samples_per_s(device, batch, compiled)
                    line = {"cross": cross_name, "head": head_name, "batch": batch, "compiled": compiled}
                    print(json.dumps(line | {"samples_per_s": rate, "device": name, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
