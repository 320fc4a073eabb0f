"""Locust scenario: an ad server scoring candidate ads for one context per request, users clicking.

Run headless against a local stack (127.0.0.1 only), bounded in time, e.g.::

    locust -f tests/load/locustfile.py --headless -u 20 -r 20 -t 60s --host http://127.0.0.1:8080

or distributed (one master, N workers; ``k8s/components/loadtest`` runs the same on a cluster)::

    locust -f tests/load/locustfile.py --master --headless --expect-workers 2 -u 20 -r 20 -t 60s --host URL
    locust -f tests/load/locustfile.py --worker --master-host 127.0.0.1   # twice

Each request is what an ad server sends: a fresh ``request_id`` and ``CTR_LOAD_CANDIDATES``
candidates that belong together — one context (the integer features and the user/page-side
categoricals) with different ads (``SyntheticWorld.requests``, the training data's world). A
returned impression is clicked with its true click probability, posted after a random delay.
``CTR_LOAD_RPS_PER_USER`` sets a constant request rate per user (0 = as fast as possible);
``CTR_LOAD_CLICKS=0`` posts no clicks (to measure what they cost); ``CTR_API_KEY`` (or the file
``CTR_API_KEY_FILE`` names) adds the bearer token.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

import gevent
import numpy as np
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

from ctr.data.world import SyntheticWorld, WorldConfig
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS
from ctr.settings import env_or_file

CANDIDATES = int(os.environ.get("CTR_LOAD_CANDIDATES", "100"))
RATE = float(os.environ.get("CTR_LOAD_RPS_PER_USER", "0"))
CLICKS = os.environ.get("CTR_LOAD_CLICKS", "1") != "0"
CLICK_DELAY_S = (0.5, 5.0)
N_CONTEXTS = 200  # distinct requests, built once: the load generator should not be the bottleneck
_world = SyntheticWorld(WorldConfig(seed=int(os.environ.get("CTR_LOAD_SEED", "7")), total_rows=1_000_000))
_pool = _world.requests(0, N_CONTEXTS, CANDIDATES, np.random.default_rng(0))


def _features(row: int) -> dict[str, object]:
    features: dict[str, object] = {
        c: int(_pool.dense[row, i]) for i, c in enumerate(DENSE_COLUMNS) if not _pool.dense_missing[row, i]
    }
    features |= {
        c: f"{int(_pool.sparse[row, j]):08x}" for j, c in enumerate(SPARSE_COLUMNS) if _pool.sparse[row, j] >= 0
    }
    return features


def _candidates(context: int) -> str:
    """The candidates of one context as JSON (the body around them gets its own request_id)."""
    rows = range(context * CANDIDATES, (context + 1) * CANDIDATES)
    return json.dumps([{"ad_id": f"ad-{r}", "features": _features(r)} for r in rows])


_contexts = [_candidates(k) for k in range(N_CONTEXTS)]


def request_body(context: int) -> bytes:
    """A score request for one context with a fresh ``request_id``."""
    return f'{{"request_id": "{uuid.uuid4().hex}", "top_k": 10, "candidates": {_contexts[context]}}}'.encode()


_KEY = env_or_file("CTR_API_KEY")


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
        body = request_body(random.randrange(N_CONTEXTS))
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
