"""Serving benchmark (issue 4): 100 candidates per request, everything on this machine.

(a) ONNX Runtime in-process, one thread — the floor; (b) Triton directly over gRPC, one
client in sequence, then 8 concurrent clients; (c) the score API with the SQLite event log
on, driven by locust (own process): a fixed 100 requests/s, then as fast as it goes; the
API's request decoding alone (CPU per 100-candidate body); and, first, the machine's own
latency tail (``host_jitter``) against which the percentiles above should be read.
Where the time goes: the API's ``ctr_api_stage_seconds`` histogram and Triton's own counters
over each locust run, CPU cores per process over it (locust's own too: the load generator
shares the cores it measures), the share of the VM's CPU time the host stole meanwhile
(``steal_share``, from ``/proc/stat``), and the same 100 requests/s without clicks
(``score_api_100rps_no_clicks``: what the click traffic costs).

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
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ctr.data.synth import SynthArgs, synthesize
from ctr.data.world import SyntheticWorld, WorldConfig
from ctr.onnx_export import onnx_predict, onnx_session
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


def timed(call: Callable[[int], object], calls: int, warmup: int = 50) -> list[float]:
    """Seconds of each of ``calls`` calls of ``call(k)``, after ``warmup`` untimed ones."""
    for k in range(warmup):
        call(k)
    times = []
    for k in range(calls):
        t = time.perf_counter()
        call(k)
        times.append(time.perf_counter() - t)
    return times


def request_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    imp = SyntheticWorld(WorldConfig(seed=7, total_rows=1_000_000)).sample(0, n, np.random.default_rng(1))
    dense = np.where(imp.dense_missing, np.nan, imp.dense).astype(np.float32)
    return dense, imp.sparse.astype(np.int64)


def triton_direct(
    port: int, precision: str, dense: np.ndarray, sparse: np.ndarray, calls: int, clients: int, seconds: float
) -> None:
    import tritonclient.grpc as g

    def one_call(client: g.InferenceServerClient) -> None:
        inputs = [g.InferInput("dense", list(dense.shape), "FP32"), g.InferInput("sparse", list(sparse.shape), "INT64")]
        inputs[0].set_data_from_numpy(dense)
        inputs[1].set_data_from_numpy(sparse)
        client.infer("dcn", inputs, outputs=[g.InferRequestedOutput("pctr"), g.InferRequestedOutput("model_version")])

    client = g.InferenceServerClient(f"127.0.0.1:{port}")
    times = timed(lambda _: one_call(client), calls)
    record(name="triton_grpc_sequential", precision=precision, requests=calls, **percentiles(times))
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
    rate = round(sum(counts) / seconds, 1)
    record(name="triton_grpc_concurrent", precision=precision, clients=clients, requests_per_s=rate)


def locust_run(
    api_port: int, users: int, rate_per_user: float, seconds: int, out: Path, clicks: bool = True
) -> dict[str, dict[str, str]]:
    """locust's summary rows by request name (``/v1/score``, ``/v1/clicks``, ``Aggregated``)."""
    env = {**os.environ, "CTR_LOAD_RPS_PER_USER": str(rate_per_user), "CTR_LOAD_CLICKS": "1" if clicks else "0"}
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
        return {row["Name"]: row for row in csv.DictReader(f)}


def metrics_page(port: int) -> str:
    """The Prometheus text page served at ``127.0.0.1:port/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        return response.read().decode()


def triton_counters(metrics_port: int) -> dict[str, float]:
    """Triton's cumulative per-request counters (µs; ``nv_inference_*``) summed over its models."""
    text = metrics_page(metrics_port)
    names = ("request_success", "request_duration_us", "queue_duration_us", "compute_infer_duration_us")
    return {
        n: sum(float(v) for v in re.findall(rf"^nv_inference_{n}{{[^}}]*}} ([0-9.e+]+)", text, re.MULTILINE))
        for n in names
    }


def process_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    import psutil

    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def host_cpu() -> tuple[float, float]:
    """(steal, total) jiffies of the whole VM so far (``/proc/stat``): CPU time the hypervisor gave
    to someone else while this VM had work, against all time counted."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)


def steal_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of the VM's CPU time stolen by the host between two ``host_cpu`` readings."""
    return round((after[0] - before[0]) / max(after[1] - before[1], 1.0), 3)


def score_load(
    stack: LocalStack, users: int, rate_per_user: float, seconds: int, out: Path, clicks: bool
) -> dict[str, object]:
    """One locust run against the stack, with what it cost: the API's stage means and CPU cores
    per process group over the run, and Triton's own time per request (from its counters),
    beside the client's percentiles."""
    assert stack.api is not None and stack.triton is not None
    pids = {"api": stack.api.pid, "triton": stack.triton.pid}
    stages0, tri0 = stage_totals(stack.api_port), triton_counters(stack.metrics_port)
    cpu0, t0 = {k: process_seconds(p) for k, p in pids.items()}, time.time()
    children0, host0 = resource.getrusage(resource.RUSAGE_CHILDREN), host_cpu()
    rows = locust_run(stack.api_port, users, rate_per_user, seconds, out, clicks)
    wall = time.time() - t0
    cpu = {k: round((process_seconds(p) - cpu0[k]) / wall, 2) for k, p in pids.items()}
    children1, host1 = resource.getrusage(resource.RUSAGE_CHILDREN), host_cpu()
    spent = children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime
    cpu["locust"] = round(spent / wall, 2)  # the load generator shares the cores it measures
    tri1, stages1 = triton_counters(stack.metrics_port), stage_totals(stack.api_port)
    stage_ms = {}
    for stage, (seconds_after, count_after) in stages1.items():
        seconds_before, count_before = stages0.get(stage, (0.0, 0.0))
        if count_after > count_before:
            stage_ms[stage] = round((seconds_after - seconds_before) / (count_after - count_before) * 1e3, 3)
    n = max(tri1["request_success"] - tri0["request_success"], 1.0)
    score, clicked = rows["/v1/score"], rows.get("/v1/clicks")
    return {
        "achieved_rps": round(float(score["Requests/s"]), 1),
        "p50_ms": float(score["50%"]),
        "p95_ms": float(score["95%"]),
        "p99_ms": float(score["99%"]),
        "failures": int(score["Failure Count"]),
        "requests": int(score["Request Count"]),
        "click_rps": round(float(clicked["Requests/s"]), 1) if clicked else 0.0,
        "stage_mean_ms": stage_ms,
        "cpu_cores": cpu,
        "steal_share": steal_share(host0, host1),
        "triton_ms_per_request": {
            k.removesuffix("_duration_us"): round((tri1[k] - tri0[k]) / n / 1e3, 2)
            for k in ("request_duration_us", "queue_duration_us", "compute_infer_duration_us")
        },
    }


def stage_totals(api_port: int) -> dict[str, tuple[float, float]]:
    """(seconds, count) so far of each stage of the API's ``ctr_api_stage_seconds`` histogram."""
    text = metrics_page(api_port)
    sums = dict(re.findall(r'ctr_api_stage_seconds_sum\{stage="(\w+)"\} ([0-9.e+-]+)', text))
    counts = dict(re.findall(r'ctr_api_stage_seconds_count\{stage="(\w+)"\} ([0-9.e+-]+)', text))
    return {k: (float(sums[k]), float(counts[k])) for k in sums}


def api_sequential(api_port: int, calls: int) -> None:
    """One client, keep-alive, the locust scenario's bodies: the API's latency without load."""
    import http.client

    bodies = score_bodies()
    conn = http.client.HTTPConnection("127.0.0.1", api_port)

    def one_call(k: int) -> None:
        conn.request("POST", "/v1/score", body=bodies[k % len(bodies)], headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"score API answered {answer.status}")

    record(name="score_api_sequential", requests=calls, **percentiles(timed(one_call, calls)))


def score_body(dense: np.ndarray, sparse: np.ndarray, first_id: int) -> dict[str, object]:
    """A score request as the locust scenario sends it (one candidate per row, top 10)."""
    candidates = []
    for k in range(dense.shape[0]):
        features: dict[str, object] = {f"I{i + 1}": int(v) for i, v in enumerate(dense[k]) if not np.isnan(v)}
        features |= {f"C{j + 1}": f"{int(v):08x}" for j, v in enumerate(sparse[k]) if v >= 0}
        candidates.append({"ad_id": f"ad-{first_id + k}", "features": features})
    return {"candidates": candidates, "top_k": 10}


def score_bodies(n: int = 20, candidates: int = 100) -> list[bytes]:
    """``n`` serialized score requests of ``candidates`` generated candidates each."""
    dense, sparse = request_arrays(n * candidates)
    rows = range(0, n * candidates, candidates)
    return [json.dumps(score_body(dense[k : k + candidates], sparse[k : k + candidates], k)).encode() for k in rows]


def request_decoding(calls: int) -> None:
    """CPU cost of turning one locust body (100 candidates) into arrays, against validating it with pydantic alone."""
    from ctr.serving.request import ScoreRequest, decode_score_request

    bodies = score_bodies()
    for name, call in (
        ("decode_score_request", decode_score_request),
        ("pydantic_validation_only", ScoreRequest.model_validate_json),
    ):
        times = timed(lambda k, call=call: call(bodies[k % len(bodies)]), calls)
        record(name=name, candidates=100, body_bytes=len(bodies[0]), **percentiles(times))


def host_jitter(seconds: float = 15.0, rate: float = 100.0) -> None:
    """The machine's own latency tail, before anything of ours runs: a fixed piece of pure-Python
    CPU work (~1 ms) at ``rate`` per second. Its p99 over its p50 is how much a shared VM (steal,
    host-side pauses) stretches any request's CPU time; a latency target tighter than that tail
    times the request's CPU cost cannot be met on such a machine, whatever the service does."""

    def work() -> int:
        total = 0
        for i in range(20_000):
            total += i
        return total

    times, slow_at = [], []
    host0 = host_cpu()
    start = time.perf_counter()
    next_slot = start
    while next_slot - start < seconds:
        time.sleep(max(0.0, next_slot - time.perf_counter()))
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)
        slow_at.append(t - start)
        next_slot += 1 / rate
    stats = percentiles(times)
    slow = [at for at, took in zip(slow_at, times, strict=True) if took * 1e3 > 4 * stats["p50_ms"]]
    windows = sum(1 for k, at in enumerate(slow) if k == 0 or at - slow[k - 1] > 0.5)
    record(
        name="host_jitter",
        work="20k-iteration Python loop",
        rate_per_s=rate,
        seconds=seconds,
        **stats,
        max_ms=round(max(times) * 1e3, 2),
        slow_calls=len(slow),
        slow_windows=windows,
        steal_share=steal_share(host0, host_cpu()),
    )


def in_process(repo: ModelRepository, precision: str, dense: np.ndarray, sparse: np.ndarray) -> None:
    session = onnx_session(repo.version_dir(1) / "model.onnx", threads=1)
    times = timed(lambda _: onnx_predict(session, dense, sparse), 2000)
    record(name="onnxruntime_in_process", precision=precision, rows=100, threads=1, **percentiles(times))


def holdout_auc(repo: ModelRepository, data: Path) -> float:
    """AUC of the served graph on the held-out day (what int8 costs in ranking quality)."""
    from ctr.data.dataset import day_shards
    from ctr.metrics import roc_auc
    from ctr.retrain import score_served_graph

    labels, pctr = score_served_graph(repo.version_dir(1) / "model.onnx", day_shards(data, 1))
    return round(roc_auc(labels, pctr), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/serving.json")
    ap.add_argument("--seconds", type=int, default=30)
    args = ap.parse_args()
    host_jitter()
    request_decoding(calls=1000)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synthesize(SynthArgs(days=2, rows_per_day=50_000, seed=7), work / "data")
        dense, sparse = request_arrays(100)
        repos = {}
        for precision, experiment in (("fp32", "dcn"), ("int8", "dcn_int8")):
            repos[precision] = ModelRepository(work / f"repo-{precision}")
            train_and_publish(TrainSpec(work / "data", [0], 1, experiment=experiment), repos[precision])
            in_process(repos[precision], precision, dense, sparse)
            auc = holdout_auc(repos[precision], work / "data")
            record(name="served_graph_auc", precision=precision, day=1, auc=auc)

        ports = {"api_port": 18480, "grpc_port": 18401, "http_port": 18400, "metrics_port": 18402}
        logs = work / "logs"
        with LocalStack(repos["fp32"].root, "sqlite:///unused.db", start_api=False, log_dir=logs, **ports) as stack:
            triton_direct(stack.grpc_port, "fp32", dense, sparse, calls=1000, clients=8, seconds=10)
        db = f"sqlite:///{work / 'events.db'}"
        with LocalStack(repos["int8"].root, db, log_dir=work / "logs", spool_dir=work / "spool", **ports) as stack:
            triton_direct(stack.grpc_port, "int8", dense, sparse, calls=1000, clients=8, seconds=10)
            api_sequential(stack.api_port, calls=1000)
            for name, clicks in (("score_api_100rps", True), ("score_api_100rps_no_clicks", False)):
                load = score_load(stack, 20, 5.0, args.seconds, work / name, clicks=clicks)
                record(name=name, precision="int8", target_rps=100, **load)
            sat = locust_run(stack.api_port, users=32, rate_per_user=0, seconds=20, out=work / "sat")["/v1/score"]
            answered = int(sat["Request Count"])
            record(
                name="score_api_saturation",
                precision="int8",
                users=32,
                achieved_rps=round(float(sat["Requests/s"]), 1),
                ok_rps=round(float(sat["Requests/s"]) * (answered - int(sat["Failure Count"])) / max(answered, 1), 1),
                p50_ms=float(sat["50%"]),
                p99_ms=float(sat["99%"]),
                failures=int(sat["Failure Count"]),
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(RESULTS, indent=2) + "\n")


if __name__ == "__main__":
    main()
