"""The HPA's metric, proven on a real tritonserver: the prometheus-adapter's query evaluated on two
scrapes of Triton's ``/metrics`` gives the same queue time per request, in milliseconds, as
Triton's own statistics endpoint over the same interval."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from ctr.repository import MODEL_NAME
from ctr.serving.local import LocalStack

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def _counters(text: str, name: str) -> float:
    """Sum over the model's versions of a counter, as ``sum by (pod)`` does for one pod."""
    pattern = re.compile(rf'^{name}\{{[^}}]*model="{MODEL_NAME}"[^}}]*\}} ([0-9.e+]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def _stats(http_port: int) -> tuple[int, int]:
    """(queued requests, queue nanoseconds) from Triton's statistics endpoint, all versions."""
    body = httpx.get(f"http://127.0.0.1:{http_port}/v2/models/{MODEL_NAME}/stats", timeout=5).json()
    queue = [m["inference_stats"]["queue"] for m in body["model_stats"]]
    return sum(int(q["count"]) for q in queue), sum(int(q["ns"]) for q in queue)


def _load(stack: LocalStack, seconds: float, threads: int) -> int:
    import tritonclient.grpc as grpc

    done, stop = [], time.monotonic() + seconds
    rng = np.random.default_rng(0)
    dense = rng.random((100, 13), dtype=np.float32)
    sparse = rng.integers(0, 2**31, (100, 26), dtype=np.int64)

    def worker() -> None:
        client = grpc.InferenceServerClient(f"127.0.0.1:{stack.grpc_port}")
        inputs = [grpc.InferInput("dense", [100, 13], "FP32"), grpc.InferInput("sparse", [100, 26], "INT64")]
        inputs[0].set_data_from_numpy(dense)
        inputs[1].set_data_from_numpy(sparse)
        n = 0
        while time.monotonic() < stop:
            client.infer(MODEL_NAME, inputs)
            n += 1
        done.append(n)
        client.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done)


def test_the_adapter_query_equals_tritons_own_queue_statistics(stack: LocalStack) -> None:
    """On this module's own stack (the ``stack`` fixture is per module): no other test's traffic."""
    metrics_url = f"http://127.0.0.1:{stack.metrics_port}/metrics"
    query = yaml.safe_load((ROOT / "autoscaling/prometheus-adapter/values.yaml").read_text())["rules"]["custom"][0]
    assert "/ 1000" in query["metricsQuery"] and "nv_inference_request_success" in query["metricsQuery"]
    _load(stack, 1.0, 4)  # warm up
    time.sleep(1.5)  # Triton refreshes its metrics about every second
    first, count0 = httpx.get(metrics_url, timeout=5).text, _stats(stack.http_port)
    sent = _load(stack, 4.0, 16)  # more concurrent requests than one instance serves: they queue
    time.sleep(1.5)
    second, count1 = httpx.get(metrics_url, timeout=5).text, _stats(stack.http_port)
    assert sent > 50
    # the adapter's query on the two samples: (rate(queue_us) / 1000) / rate(success), per pod
    queue_us = _counters(second, "nv_inference_queue_duration_us") - _counters(first, "nv_inference_queue_duration_us")
    success = _counters(second, "nv_inference_request_success") - _counters(first, "nv_inference_request_success")
    adapter_ms = (queue_us / 1000) / max(success, 1e-9)  # the interval's length cancels
    # Triton's statistics endpoint over the same interval
    stats_ms = (count1[1] - count0[1]) / 1e6 / max(count1[0] - count0[0], 1)
    assert success == count1[0] - count0[0] >= sent * 0.9
    assert adapter_ms > 0.05, adapter_ms  # requests did queue
    print(
        f"queue per request: adapter query {adapter_ms:.3f} ms, statistics endpoint {stats_ms:.3f} ms, {sent} requests"
    )
    assert adapter_ms == pytest.approx(stats_ms, rel=0.02), (adapter_ms, stats_ms)
