"""The simulated ad server and its users: score requests with candidate sets of the current
simulated day, the top ads shown, clicks drawn from the planted true probabilities and posted
after a random delay. Every shown impression is also kept in a ``ShownLog`` (features, true
probability, served pCTR and version, label) for the report's yardsticks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from ctr.data.world import Impressions, SyntheticWorld
from ctr.demo.scenario import EPOCH, DemoConfig, Timeline
from ctr.demo.yardsticks import ShownLog
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS


def _candidates(imp: Impressions, rows: NDArray[Any]) -> list[dict[str, Any]]:
    out = []
    for r in rows.tolist():
        features: dict[str, Any] = {
            c: int(imp.dense[r, i]) for i, c in enumerate(DENSE_COLUMNS) if not imp.dense_missing[r, i]
        }
        features |= {c: f"{int(imp.sparse[r, j]):08x}" for j, c in enumerate(SPARSE_COLUMNS) if imp.sparse[r, j] >= 0}
        out.append({"ad_id": f"ad-{r}", "features": features})
    return out


class TrafficSimulator:
    """The ad server and its users: score requests now, clicks later, on simulated time."""

    def __init__(self, cfg: DemoConfig, world: SyntheticWorld, api_url: str, timeline: Timeline) -> None:
        self.cfg, self.world, self.timeline = cfg, world, timeline
        self.client = httpx.Client(base_url=api_url, timeout=10)
        self.pending_clicks: list[tuple[datetime, str]] = []
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.pool = ThreadPoolExecutor(cfg.clients)
        self.shown = ShownLog()

    def _one_request(self, at: datetime, imp: Impressions, rows: NDArray[Any]) -> list[tuple[str, int, float, int]]:
        """(impression id, row of ``imp``, served pCTR, served version) of each shown ad."""
        body = {"event_time": at.isoformat(), "candidates": _candidates(imp, rows), "top_k": self.cfg.top_k}
        answer = self.client.post("/v1/score", json=body)
        if answer.status_code != 200:
            self.timeline.requests_failed += 1
            return []
        reply = answer.json()
        version = int(reply["model_version"])
        return [(r["impression_id"], int(r["ad_id"][3:]), float(r["pctr"]), version) for r in reply["results"]]

    def tick(self, start: datetime) -> None:
        """Send one tick of score requests and post the clicks whose time has come."""
        day = int((start - EPOCH) / timedelta(days=1))
        n = self.cfg.requests_per_tick * self.cfg.candidates
        imp = self.world.sample(day, n, self.rng)
        offsets = np.sort(self.rng.uniform(0, self.cfg.tick.total_seconds(), self.cfg.requests_per_tick))
        jobs = [
            self.pool.submit(
                self._one_request,
                start + timedelta(seconds=float(o)),
                imp,
                np.arange(k * self.cfg.candidates, (k + 1) * self.cfg.candidates),
            )
            for k, o in enumerate(offsets)
        ]
        attribution = self.cfg.attribution_window
        for job, offset in zip(jobs, offsets, strict=True):
            shown = job.result()
            self.timeline.impressions_sent += len(shown)
            at = start + timedelta(seconds=float(offset))
            for impression_id, row, pctr, version in shown:
                p_true = float(imp.p_true[row])
                clicked = False
                if self.rng.random() < p_true:
                    delay = timedelta(minutes=float(self.rng.exponential(6.0)))
                    self.pending_clicks.append((at + delay, impression_id))
                    clicked = delay <= attribution
                self.shown.add(at, imp, row, p_true, pctr, version, clicked)
        self.post_due_clicks(start + self.cfg.tick)

    def post_due_clicks(self, now: datetime) -> None:
        due = sorted((c for c in self.pending_clicks if c[0] <= now), key=lambda c: c[0])
        self.pending_clicks = [c for c in self.pending_clicks if c[0] > now]
        for at, impression_id in due:
            self.client.post("/v1/clicks", json={"impression_ids": [impression_id], "clicked_at": at.isoformat()})

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()
