"""Serving benchmark (issue 4): 100 candidates per request, everything on this machine.

(a) ONNX Runtime in-process, one thread — the floor; (b) Triton directly over gRPC, one
client in sequence, then 8 concurrent clients; (c) the score API with the SQLite event log
on, driven by locust (own process): a fixed 100 requests/s, then as fast as it goes.
Where the time goes inside the API comes from its ``ctr_api_stage_seconds`` histogram.

The model is the original DCN (embedding 16, 6 cross layers, MLP 1024-1024), trained briefly
on generated data. Run: ``.venv/bin/python benchmarks/bench_serving.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ctr.data.synth import SynthArgs, synthesize
from ctr.data.world import SyntheticWorld, WorldConfig
from ctr.export import onnx_predict, onnx_session
from ctr.repository import ModelRepository
from ctr.serving.local import LocalStack
from ctr.train import TrainSpec, train_and_publish

RESULTS: list[dict[str, object]] = []


def record(**fields: object) -> None:
    fields |= {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.append(fields)
    print(json.dumps(fields), flush=True)


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def request_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    imp = SyntheticWorld(WorldConfig(seed=7, total_rows=1_000_000)).sample(0, n, np.random.default_rng(1))
    dense = np.where(imp.dense_missing, np.nan, imp.dense).astype(np.float32)
    return dense, imp.sparse.astype(np.int64)


def triton_direct(port: int, dense: np.ndarray, sparse: np.ndarray, calls: int, clients: int, seconds: float) -> None:
    import tritonclient.grpc as g

    def one_call(client: g.InferenceServerClient) -> None:
        inputs = [g.InferInput("dense", list(dense.shape), "FP32"), g.InferInput("sparse", list(sparse.shape), "INT64")]
        inputs[0].set_data_from_numpy(dense)
        inputs[1].set_data_from_numpy(sparse)
        client.infer("dcn", inputs, outputs=[g.InferRequestedOutput("pctr"), g.InferRequestedOutput("model_version")])

    client = g.InferenceServerClient(f"127.0.0.1:{port}")
    for _ in range(50):
        one_call(client)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        one_call(client)
        times.append(time.perf_counter() - t)
    record(name="triton_grpc_sequential", requests=calls, **percentiles(times))
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        c = g.InferenceServerClient(f"127.0.0.1:{port}")
        while time.perf_counter() < stop:
            one_call(c)
            counts[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    record(name="triton_grpc_concurrent", clients=clients, requests_per_s=round(sum(counts) / seconds, 1))


def locust_run(api_port: int, users: int, rate_per_user: float, seconds: int, out: Path) -> dict[str, str]:
    env = {**os.environ, "CTR_LOAD_RPS_PER_USER": str(rate_per_user)}
    locust = Path(sys.executable).parent / "locust"
    subprocess.run(
        [
            str(locust),
            "-f",
            "tests/load/locustfile.py",
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            f"http://127.0.0.1:{api_port}",
            "--csv",
            str(out),
            "--only-summary",
        ],
        check=False,  # locust exits 1 when any request failed; the failures are reported below
        env=env,
        capture_output=True,
        timeout=seconds + 120,
    )
    with open(f"{out}_stats.csv") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}["/v1/score"]


def stage_means(api_port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics").read().decode()
    sums = dict(re.findall(r'ctr_api_stage_seconds_sum\{stage="(\w+)"\} ([0-9.e+-]+)', text))
    counts = dict(re.findall(r'ctr_api_stage_seconds_count\{stage="(\w+)"\} ([0-9.e+-]+)', text))
    return {k: round(float(sums[k]) / float(counts[k]) * 1e3, 3) for k in sums if float(counts[k])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/serving.json")
    ap.add_argument("--seconds", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthesize(SynthArgs(days=2, rows_per_day=50_000, seed=7), work / "data")
        repo = ModelRepository(work / "repo")
        train_and_publish(TrainSpec(work / "data", [0], 1, experiment="dcn"), repo)
        dense, sparse = request_arrays(100)

        session = onnx_session(repo.version_dir(1) / "model.onnx", threads=1)
        for _ in range(50):
            onnx_predict(session, dense, sparse)
        times = []
        for _ in range(2000):
            t = time.perf_counter()
            onnx_predict(session, dense, sparse)
            times.append(time.perf_counter() - t)
        record(name="onnxruntime_in_process", rows=100, threads=1, **percentiles(times))

        with LocalStack(
            repo.root,
            f"sqlite:///{work / 'events.db'}",
            api_port=18480,
            grpc_port=18401,
            http_port=18400,
            metrics_port=18402,
            log_dir=work / "logs",
        ) as stack:
            triton_direct(stack.grpc_port, dense, sparse, calls=1000, clients=8, seconds=10)
            fixed = locust_run(stack.api_port, users=20, rate_per_user=5.0, seconds=args.seconds, out=work / "fixed")
            record(
                name="score_api_100rps",
                target_rps=100,
                achieved_rps=round(float(fixed["Requests/s"]), 1),
                p50_ms=float(fixed["50%"]),
                p95_ms=float(fixed["95%"]),
                p99_ms=float(fixed["99%"]),
                failures=int(fixed["Failure Count"]),
                stage_mean_ms=stage_means(stack.api_port),
            )
            sat = locust_run(stack.api_port, users=32, rate_per_user=0, seconds=20, out=work / "sat")
            record(
                name="score_api_saturation",
                users=32,
                achieved_rps=round(float(sat["Requests/s"]), 1),
                p50_ms=float(sat["50%"]),
                p99_ms=float(sat["99%"]),
                failures=int(sat["Failure Count"]),
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(RESULTS, indent=2) + "\n")


if __name__ == "__main__":
    main()
