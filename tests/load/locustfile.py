"""Locust scenario: an ad server scoring 100 generated candidates per request, users clicking.

Run headless against a local stack (127.0.0.1 only), bounded in time, e.g.::

    locust -f tests/load/locustfile.py --headless -u 20 -r 20 -t 60s --host http://127.0.0.1:8080

Each request takes a context and 100 candidates from the synthetic world (same marginals as
the training data); a share of the returned impressions is clicked, drawn from the true
click probability, and posted after a random delay. ``CTR_LOAD_RPS_PER_USER`` sets a constant
request rate per user (0 = as fast as possible); ``CTR_LOAD_CLICKS=0`` posts no clicks (to
measure what they cost); ``CTR_API_KEY`` adds the bearer token.
"""

from __future__ import annotations

import json
import os
import random
import time

import gevent
import numpy as np
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

from ctr.data.world import SyntheticWorld, WorldConfig
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS

CANDIDATES = int(os.environ.get("CTR_LOAD_CANDIDATES", "100"))
RATE = float(os.environ.get("CTR_LOAD_RPS_PER_USER", "0"))
CLICKS = os.environ.get("CTR_LOAD_CLICKS", "1") != "0"
CLICK_DELAY_S = (0.5, 5.0)
_world = SyntheticWorld(WorldConfig(seed=int(os.environ.get("CTR_LOAD_SEED", "7")), total_rows=1_000_000))
_pool = _world.sample(0, 20_000, np.random.default_rng(0))


def _features(row: int) -> dict[str, object]:
    features: dict[str, object] = {
        c: int(_pool.dense[row, i]) for i, c in enumerate(DENSE_COLUMNS) if not _pool.dense_missing[row, i]
    }
    features |= {
        c: f"{int(_pool.sparse[row, j]):08x}" for j, c in enumerate(SPARSE_COLUMNS) if _pool.sparse[row, j] >= 0
    }
    return features


def _request(seed: int) -> tuple[bytes, list[int]]:
    """A serialized score request (built once: the load generator should not be the bottleneck)."""
    rows = random.Random(seed).sample(range(_pool.label.size), CANDIDATES)
    body = {"candidates": [{"ad_id": f"ad-{r}", "features": _features(r)} for r in rows], "top_k": 10}
    return json.dumps(body).encode(), rows


_requests = [_request(seed) for seed in range(200)]


_KEY = os.environ.get("CTR_API_KEY")


def _paced(user: FastHttpUser) -> float:
    """Seconds to this user's next slot: one request per 1/RATE s at a random phase of its own.

    Users spawned together and paced from the end of each task (locust's constant_throughput)
    fall into lockstep and send one burst per period; fixed slots keep them spread, and a late
    user goes at once without bursting to catch up.
    """
    now = time.monotonic()
    slot = getattr(user, "_slot", None)
    slot = now + random.uniform(0, 1 / RATE) if slot is None else max(slot + 1 / RATE, now)
    user._slot = slot  # type: ignore[attr-defined]
    return slot - now


class AdServer(FastHttpUser):
    """geventhttpclient-based user: a cheap load generator, which matters on a 2-core machine."""

    wait_time = _paced if RATE > 0 else constant(0)
    default_headers = {"Authorization": f"Bearer {_KEY}"} if _KEY else None

    @task
    def score_and_click(self) -> None:
        body, _ = random.choice(_requests)
        headers = {"Content-Type": "application/json"}
        with self.client.post("/v1/score", data=body, headers=headers, name="/v1/score", catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")
                return
            shown = answer.json()["results"]
        clicked = [r["impression_id"] for r in shown if random.random() < _pool.p_true[int(r["ad_id"][3:])]]
        if clicked and CLICKS:
            gevent.spawn_later(random.uniform(*CLICK_DELAY_S), self._click, clicked)

    def _click(self, ids: list[str]) -> None:
        self.client.post("/v1/clicks", json={"impression_ids": ids}, name="/v1/clicks")
