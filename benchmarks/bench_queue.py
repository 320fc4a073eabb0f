"""Queue time per request vs offered load on a real tritonserver, up to saturation; the HPA target.

Starts ``ctr triton`` (nvidia-pytriton's tritonserver, one instance) on a model repository of
``dcn_int8`` trained on generated data, then offers an open-loop load of score requests (100
candidates each, evenly spaced) at rising rates for ``--seconds`` each. For every step it reads
Triton's statistics endpoint before and after: queue time per request (the HPA's metric, in
ms) and the throughput achieved. A step whose throughput falls under 95 % of the offered load
is past saturation; the run stops there.

On a GPU machine (``--kind gpu``): a ``KIND_GPU`` instance scoring through ONNX Runtime's CUDA
provider, the load offered by ``--clients`` processes (one Python client saturates long before a
GPU does: a step the clients could not offer shows as "achieved < offered" like a saturated
server, so the client processes' own CPU share is printed beside each step); ``--repo`` serves an
existing repository (e.g. the fp32 ``dcn`` one a GPU pod serves) instead of training ``dcn_int8``.

The target rule: the queue time at 70 % of one pod's saturation — scaling starts while a pod
still has 30 % headroom, long before the API's deadline is at risk. Writes the curve as JSON
(``autoscaling/simulate.py --curve``) and prints the target.

    python benchmarks/bench_queue.py --out benchmarks/results/queue-curve.json
    python benchmarks/bench_queue.py --kind gpu --repo REPO --clients 8 --candidates 100 \
        --rates 500,1000,2000,4000,6000,8000 --out benchmarks/results/queue-curve-h200.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from ctr.data.synth import SynthArgs, synthesize
from ctr.net import free_port
from ctr.repository import MODEL_NAME, ModelRepository
from ctr.train import TrainSpec, train_and_publish

HEADROOM = 0.7  # the HPA target is the queue time at this share of saturation


def _stats(http_port: int) -> tuple[int, int, int]:
    """(requests succeeded, queued requests, queue ns) over all versions of the model."""
    body = httpx.get(f"http://127.0.0.1:{http_port}/v2/models/{MODEL_NAME}/stats", timeout=5).json()
    inference = [m["inference_stats"] for m in body["model_stats"]]
    return (
        sum(int(s["success"]["count"]) for s in inference),
        sum(int(s["queue"]["count"]) for s in inference),
        sum(int(s["queue"]["ns"]) for s in inference),
    )


async def _offer(grpc_port: int, rate: float, seconds: float, candidates: int = 100) -> list[float]:
    """Offer the requests on schedule (open loop); each answered request's latency in ms."""
    import tritonclient.grpc.aio as grpc

    client = grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    rng = np.random.default_rng(0)
    dense = rng.random((candidates, 13), dtype=np.float32)
    sparse = rng.integers(0, 2**31, (candidates, 26), dtype=np.int64)
    inputs = [
        grpc.InferInput("dense", [candidates, 13], "FP32"),
        grpc.InferInput("sparse", [candidates, 26], "INT64"),
    ]
    inputs[0].set_data_from_numpy(dense)
    inputs[1].set_data_from_numpy(sparse)

    async def timed() -> float:
        t0 = time.perf_counter()
        await client.infer(MODEL_NAME, inputs, client_timeout=10)
        return (time.perf_counter() - t0) * 1e3

    pending = []
    start = time.perf_counter()
    for k in range(int(rate * seconds)):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.ensure_future(timed()))
    answered = await asyncio.gather(*pending, return_exceptions=True)
    await client.close()
    return [a for a in answered if isinstance(a, float)]


def _client(grpc_port: int, rate: float, seconds: float, candidates: int) -> tuple[float, list[float]]:
    """One client process's share of a step: its CPU seconds and its requests' latencies (ms)."""
    t0 = time.process_time()
    latencies = asyncio.run(_offer(grpc_port, rate, seconds, candidates))
    return time.process_time() - t0, latencies


def _step(
    pool: ProcessPoolExecutor, clients: int, grpc_port: int, rate: float, seconds: float, n: int
) -> tuple[float, list[float]]:
    """Offer ``rate`` requests/s for ``seconds`` from ``clients`` processes: their mean CPU share
    and every answered request's latency (ms, as the client saw it: gRPC, queue and compute)."""
    shares = [f.result() for f in [pool.submit(_client, grpc_port, rate / clients, seconds, n) for _ in range(clients)]]
    return sum(cpu for cpu, _ in shares) / clients / seconds, [x for _, lat in shares for x in lat]


def _machine(kind: str, experiment: str) -> str:
    cpu = platform.processor() or platform.machine()
    if kind == "gpu":
        try:
            gpu = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, check=True, timeout=30,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            gpu = "GPU (nvidia-smi not found)"
        return f"{gpu}; {os.cpu_count()} CPU cores, tritonserver (nvidia-pytriton), KIND_GPU, {experiment}"
    return f"{cpu}, {os.cpu_count()} cores, tritonserver (nvidia-pytriton), KIND_CPU, {experiment}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="25,50,100,150,200,250,300,350,400,500,600")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", default="queue-curve.json")
    ap.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="Triton instance kind")
    ap.add_argument("--repo", type=Path, help="serve this model repository (default: train dcn_int8 here)")
    ap.add_argument("--clients", type=int, default=1, help="load-generating processes")
    ap.add_argument("--candidates", type=int, default=100, help="candidates per request")
    ap.add_argument("--instances", type=int, default=1, help="Triton model instances (stub processes)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ctr-queue-"))
    if args.repo is None:
        synthesize(SynthArgs(days=2, rows_per_day=20_000, seed=7), work / "data")
        repo = ModelRepository(work / "repo")
        train_and_publish(TrainSpec(work / "data", [0], 1, experiment="dcn_int8"), repo)
    else:
        repo = ModelRepository(args.repo)
    served = repo.served()
    experiment = str(repo.metadata(served)["experiment"]["name"]) if served is not None else "?"
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    triton = subprocess.Popen(
        [sys.executable, "-m", "ctr", "triton", "--repo", str(repo.root), "--http-port", str(http_port),
         "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), "--kind", args.kind,
         "--instances", str(args.instances)],
        stdout=subprocess.DEVNULL, stderr=(work / "triton.log").open("wb"),
    )  # fmt: skip
    pool = ProcessPoolExecutor(args.clients)
    curve = []
    try:
        for _ in range(120):
            if triton.poll() is not None:
                log = (work / "triton.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"ctr triton stopped with {triton.returncode} before it was ready:\n{log}")
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        _step(pool, args.clients, grpc_port, 20 * args.clients, 2, args.candidates)  # warm-up
        for rate in (float(r) for r in args.rates.split(",")):
            before, t0 = _stats(http_port), time.perf_counter()
            client_cpu, latencies = _step(pool, args.clients, grpc_port, rate, args.seconds, args.candidates)
            after, elapsed = _stats(http_port), time.perf_counter() - t0
            done = after[0] - before[0]
            point = {
                "offered_rps": rate,
                "achieved_rps": round(done / elapsed, 1),
                "queue_ms": round((after[2] - before[2]) / 1e6 / max(after[1] - before[1], 1), 3),
                "client_cpu_share": round(client_cpu, 2),
                "latency_ms_p50": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
                "latency_ms_p99": round(float(np.percentile(latencies, 99)), 3) if latencies else None,
            }
            print(json.dumps(point), flush=True)
            curve.append(point)
            if done < 0.95 * rate * args.seconds:
                break
    finally:
        pool.shutdown()
        triton.terminate()
        triton.wait(timeout=30)
    sustained = [p for p in curve if p["achieved_rps"] >= 0.95 * p["offered_rps"]]
    saturation = sustained[-1]["offered_rps"] if sustained else 0.0
    at = HEADROOM * saturation
    below = [p for p in sustained if p["offered_rps"] <= at]
    target = below[-1]["queue_ms"] if below else sustained[0]["queue_ms"]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(args.kind, experiment),
        "candidates_per_request": args.candidates,
        "clients": args.clients,
        "instances": args.instances,
        "curve": curve,
        "saturation_rps": saturation,
        "target_rule": f"queue ms per request at {HEADROOM:.0%} of saturation",
        "target_ms": target,
        # for autoscaling/simulate.py: load per pod → queue ms; past the last point, saturated
        "load": [p["offered_rps"] for p in sustained],
        "queue_ms": [p["queue_ms"] for p in sustained],
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("curve", "load", "queue_ms")}))


if __name__ == "__main__":
    main()
