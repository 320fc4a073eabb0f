"""The served graph on each device: per-request latency and candidates/s, GPU beside CPU.

Scores a served ``model.onnx`` (the graph Triton loads, feature transform included) through the
product's own session (``ctr.onnx_export.onnx_session`` with ``device`` ``cuda`` or ``cpu``, the
providers Triton's onnxruntime backend uses for a ``KIND_GPU`` / ``KIND_CPU`` instance) and its
scoring call (``onnx_predict``), in process: no network, no queue, no dynamic batching.

- latency: one request at a time of 100 and of 500 candidates (``--requests`` each after a
  warm-up), p50 / p99 / mean in ms;
- throughput: back-to-back calls of 4,096 and 65,536 candidates, candidates/s (the best is a
  device's ceiling with one session);
- agreement: the GPU's pCTR against the CPU's on the same rows (max absolute difference).

Inputs are real rows: ``--rows`` is an ``.npz`` with ``dense`` ``(n, 13)`` float32 (NaN where
missing) and ``sparse`` ``(n, 26)`` int64 hashes, as the score API sends them; ``--make-rows
DAY_FILE`` writes one from a Criteo-layout day. On a machine whose ONNX Runtime has no CUDA
provider, ``--device cuda`` fails with the session's error, never a silent CPU run.

    python benchmarks/bench_graph_devices.py --graph repo/dcn/1/model.onnx --rows rows.npz \\
        --device cuda --device cpu --out benchmarks/results/graph-devices-h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ctr.onnx_export import onnx_predict, onnx_session

LATENCY_SIZES = (100, 500)
THROUGHPUT_SIZES = (4_096, 65_536)


def _rows(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of the file, repeated if it holds fewer."""
    data = np.load(path)
    dense, sparse = data["dense"].astype(np.float32), data["sparse"].astype(np.int64)
    reps = -(-n // len(dense))
    return np.tile(dense, (reps, 1))[:n], np.tile(sparse, (reps, 1))[:n]


def make_rows(day_file: Path, out: Path, n: int = 8_192) -> None:
    """Write ``n`` rows of a Criteo-layout day as the score API's raw arrays."""
    from ctr.data.dataset import raw_arrays
    from ctr.data.reader import ReadReport, iter_batches

    frames = []
    for frame in iter_batches(day_file, ReadReport()):
        frames.append(frame)
        if sum(f.height for f in frames) >= n:
            break
    import polars as pl

    dense, sparse = raw_arrays(pl.concat(frames).head(n))
    np.savez(out, dense=dense, sparse=sparse)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_model() -> str | None:
    try:
        import torch

        return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None
    except ImportError:
        return None


def measure(graph: Path, rows: Path, device: str, requests: int, threads: int) -> dict[str, Any]:
    session = onnx_session(graph, threads=threads, device=device)
    out: dict[str, Any] = {"device": device, "providers": session.get_providers(), "threads": threads}
    latency = {}
    for size in LATENCY_SIZES:
        dense, sparse = _rows(rows, size)
        for _ in range(50):
            onnx_predict(session, dense, sparse)
        times = np.empty(requests)
        for k in range(requests):
            t0 = time.perf_counter()
            onnx_predict(session, dense, sparse)
            times[k] = time.perf_counter() - t0
        ms = times * 1e3
        latency[str(size)] = {
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3),
            "candidates_per_s": round(size / float(times.mean())),
        }
    out["latency"] = latency
    throughput = {}
    for size in THROUGHPUT_SIZES:
        dense, sparse = _rows(rows, size)
        onnx_predict(session, dense, sparse)
        calls, t0 = 0, time.perf_counter()
        while calls < 5 or time.perf_counter() - t0 < 3.0:
            onnx_predict(session, dense, sparse)
            calls += 1
        throughput[str(size)] = round(size * calls / (time.perf_counter() - t0))
    out["candidates_per_s"] = throughput
    dense, sparse = _rows(rows, 4_096)
    out["pctr"] = onnx_predict(session, dense, sparse)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", type=Path, action="append", help="served model.onnx (repeatable)")
    parser.add_argument("--rows", type=Path, help=".npz with dense and sparse arrays")
    parser.add_argument("--make-rows", type=Path, help="write --rows from this Criteo-layout day and stop")
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"], help="repeatable; default cpu")
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU provider's threads")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.make_rows:
        make_rows(args.make_rows, args.rows)
        return
    results = []
    for graph in args.graph:
        by_device = {d: measure(graph, args.rows, d, args.requests, args.threads) for d in args.device or ["cpu"]}
        if "cuda" in by_device and "cpu" in by_device:
            diff = np.abs(by_device["cuda"]["pctr"] - by_device["cpu"]["pctr"])
            agreement = {"rows": int(diff.size), "max_abs_diff": float(diff.max())}
        else:
            agreement = None
        for m in by_device.values():
            m.pop("pctr")
        results.append({"graph": str(graph), "devices": by_device, "gpu_vs_cpu": agreement})
        print(json.dumps(results[-1]))
    import onnxruntime as ort

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_model(),
        "onnxruntime": ort.__version__,
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
