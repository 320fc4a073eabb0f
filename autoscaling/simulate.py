"""The Kubernetes HPA algorithm, read from a rendered HorizontalPodAutoscaler, against a traffic step.

The controller (``autoscaling/v2``), every ``sync`` seconds (15 s by default):

* ``ratio = current metric / target``; within the tolerance (``|ratio − 1| ≤ 0.1``) nothing
  changes, else ``recommendation = ceil(current replicas × ratio)`` (``desired_replicas``);
* stabilisation: scaling up takes the lowest recommendation of the last
  ``scaleUp.stabilizationWindowSeconds``, scaling down the highest of the last
  ``scaleDown.stabilizationWindowSeconds`` (defaults 0 s and 300 s);
* rate limits: each policy allows ``Pods: value`` more (fewer) replicas, or ``Percent: value`` %
  of the replicas, than there were ``periodSeconds`` ago; ``selectPolicy: Max`` (the default)
  takes the most permissive, ``Min`` the least; defaults: up max(100 %, 4 pods) per 15 s, down
  100 % per 15 s;
* bounds ``[minReplicas, maxReplicas]``.

The simulation (``simulate``) feeds it a metric computed from the load per ready pod through a
queue-time curve (milliseconds of queue per request vs requests/s per pod, measured on a real
tritonserver), and starts pods ``provision_s`` after the HPA asks for them (node provisioning,
GPU device plugin, image pull: a parameter per overlay). A request is over the deadline when its
pod's queue time exceeds ``deadline_ms`` or the pod is past saturation.

    python autoscaling/simulate.py --overlay k8s/overlays/karpenter --curve curve.json --step 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TOLERANCE = 0.1
SYNC_S = 15.0


@dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: int
    period_s: float


@dataclass(frozen=True)
class Direction:
    stabilization_s: float
    policies: tuple[Policy, ...]
    select: str = "Max"  # Max, Min or Disabled


@dataclass(frozen=True)
class HpaSpec:
    min_replicas: int
    max_replicas: int
    target: float  # the metric's target average value per pod
    up: Direction = Direction(0.0, (Policy("Percent", 100, 15), Policy("Pods", 4, 15)))
    down: Direction = Direction(300.0, (Policy("Percent", 100, 15),))

    @classmethod
    def from_manifest(cls, hpa: dict[str, Any]) -> HpaSpec:
        """From an ``autoscaling/v2`` HorizontalPodAutoscaler with one Pods metric (AverageValue)."""
        spec = hpa["spec"]
        (metric,) = spec["metrics"]
        target = float(metric["pods"]["target"]["averageValue"])
        behavior = spec.get("behavior", {})
        default = cls(1, 1, 1.0)

        def direction(raw: dict[str, Any] | None, fallback: Direction) -> Direction:
            if not raw:
                return fallback
            policies = tuple(
                Policy(p["type"], int(p["value"]), float(p["periodSeconds"])) for p in raw.get("policies", [])
            )
            return Direction(
                float(raw.get("stabilizationWindowSeconds", fallback.stabilization_s)),
                policies or fallback.policies,
                raw.get("selectPolicy", "Max"),
            )

        return cls(
            int(spec.get("minReplicas", 1)),
            int(spec["maxReplicas"]),
            target,
            direction(behavior.get("scaleUp"), default.up),
            direction(behavior.get("scaleDown"), default.down),
        )


def desired_replicas(current: int, metric: float, target: float, tolerance: float = TOLERANCE) -> int:
    """The controller's recommendation before stabilisation, policies and bounds.

    >>> desired_replicas(4, 200.0, 100.0), desired_replicas(4, 105.0, 100.0), desired_replicas(4, 50.0, 100.0)
    (8, 4, 2)
    """
    ratio = metric / target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio)


@dataclass
class Hpa:
    """The controller's state: recommendations and replica counts of the recent past."""

    spec: HpaSpec
    replicas: int
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    history: deque[tuple[float, int]] = field(default_factory=deque)

    def _limit(self, now: float, d: Direction, up: bool) -> int:
        limits = []
        for p in d.policies:
            then = [r for t, r in self.history if t >= now - p.period_s]
            if up:  # from the replicas at the period's start
                base = then[0] if then else self.replicas
                change = p.value if p.kind == "Pods" else math.ceil(base * p.value / 100)
                limits.append(base + change)
            else:
                base = max(then or [self.replicas])
                change = p.value if p.kind == "Pods" else math.floor(base * p.value / 100)
                limits.append(base - change)
        if d.select == "Disabled" or not limits:
            return self.replicas
        pick = max if (d.select == "Max") == up else min
        return pick(limits)

    def sync(self, now: float, metric: float) -> int:
        """One controller pass at time ``now`` (seconds) with the pods' average ``metric``."""
        s = self.spec
        wanted = desired_replicas(self.replicas, metric, s.target)
        self.recommendations.append((now, wanted))
        horizon = max(s.up.stabilization_s, s.down.stabilization_s)
        while self.recommendations and self.recommendations[0][0] < now - horizon:
            self.recommendations.popleft()
        up_window = [r for t, r in self.recommendations if t >= now - s.up.stabilization_s] or [wanted]
        down_window = [r for t, r in self.recommendations if t >= now - s.down.stabilization_s] or [wanted]
        target = self.replicas
        if min(up_window) > self.replicas:
            target = min(min(up_window), self._limit(now, s.up, True))
        elif max(down_window) < self.replicas:
            target = max(max(down_window), self._limit(now, s.down, False))
        target = max(s.min_replicas, min(s.max_replicas, target))
        self.history.append((now, self.replicas))
        while self.history and self.history[0][0] < now - 3600:
            self.history.popleft()
        self.replicas = target
        return target


@dataclass(frozen=True)
class Curve:
    """Queue time per request (ms) vs offered load per pod (req/s), measured; past the last point
    a pod is saturated."""

    load: tuple[float, ...]
    queue_ms: tuple[float, ...]

    def __call__(self, per_pod: float) -> float:
        if per_pod >= self.load[-1]:
            return math.inf
        points = list(zip(self.load, self.queue_ms, strict=True))
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if x0 <= per_pod <= x1:
                return y0 + (y1 - y0) * (per_pod - x0) / (x1 - x0)
        return self.queue_ms[0]


@dataclass(frozen=True)
class Step:
    t: float
    traffic: float
    ready: int
    wanted: int
    queue_ms: float
    over_deadline: float  # share of this step's requests over the deadline


def simulate(
    spec: HpaSpec,
    curve: Callable[[float], float],
    traffic: Callable[[float], float],
    deadline_ms: float,
    provision_s: float,
    duration_s: float,
    dt: float = 1.0,
    sync_s: float = SYNC_S,
) -> list[Step]:
    """Replicas and the share of requests over the deadline, second by second."""
    hpa = Hpa(spec, spec.min_replicas)
    starting: list[float] = []  # when each asked-for pod becomes ready
    ready = spec.min_replicas
    steps: list[Step] = []
    t, next_sync = 0.0, 0.0
    while t <= duration_s:
        ready += sum(1 for s in starting if s <= t)
        starting = [s for s in starting if s > t]
        load = traffic(t)
        queue = curve(load / ready)
        metric = min(queue, 10 * deadline_ms) if math.isfinite(queue) else 10 * deadline_ms
        if t >= next_sync:
            next_sync += sync_s
            wanted = hpa.sync(t, metric)
            pending = ready + len(starting)
            starting += [t + provision_s] * max(wanted - pending, 0)
            if wanted < ready:
                ready = wanted  # scale-down removes pods at once
        over = 1.0 if not math.isfinite(queue) or queue > deadline_ms else 0.0
        steps.append(Step(t, load, ready, hpa.replicas, queue, over))
        t += dt
    return steps


def rendered_hpa(overlay: Path, name: str = "triton") -> dict[str, Any]:
    """The HorizontalPodAutoscaler ``name`` as ``kubectl kustomize overlay`` renders it."""
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc.get("kind") == "HorizontalPodAutoscaler" and doc["metadata"]["name"] == name:
            return dict(doc)
    raise LookupError(f"no HorizontalPodAutoscaler {name!r} in {overlay}")


def summary(steps: Sequence[Step]) -> dict[str, float]:
    total = sum(s.traffic for s in steps)
    late = sum(s.traffic * s.over_deadline for s in steps)
    return {"share_over_deadline": late / total if total else 0.0, "max_replicas": max(s.ready for s in steps)}


def plot(runs: dict[str, list[Step]], out: Path, deadline_ms: float) -> None:
    """Replicas ready over time and the share of each second's requests over the deadline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), dpi=110, sharex=True)
    for label, steps in runs.items():
        t = [s.t / 60 for s in steps]
        top.plot(t, [s.ready for s in steps], label=label)
        bottom.plot(t, [s.over_deadline * 100 for s in steps], label=label)
    top.set_ylabel("Triton pods ready")
    bottom.set_ylabel(f"% over {deadline_ms:.0f} ms")
    bottom.set_xlabel("minutes")
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--overlay", type=Path, required=True)
    ap.add_argument("--curve", type=Path, required=True, help='JSON {"load": [...], "queue_ms": [...]}')
    ap.add_argument("--base", type=float, default=50.0, help="requests/s before the step")
    ap.add_argument("--step", type=float, default=10.0, help="traffic multiplier at t = 60 s")
    ap.add_argument("--deadline-ms", type=float, default=200.0)
    ap.add_argument("--provision-s", type=float, default=90.0)
    ap.add_argument("--duration-s", type=float, default=900.0)
    ap.add_argument("--ramp-s", type=float, default=0.0, help="reach the step's traffic over this long (0: at once)")
    ap.add_argument("--plot", type=Path, help="write replicas and late requests over time (PNG)")
    args = ap.parse_args()
    raw = json.loads(args.curve.read_text())

    def traffic(t: float) -> float:
        share = 1.0 if args.ramp_s <= 0 else min(max(t - 60, 0) / args.ramp_s, 1.0)
        return args.base * (1 + (args.step - 1) * share) if t >= 60 else args.base

    steps = simulate(
        HpaSpec.from_manifest(rendered_hpa(args.overlay)),
        Curve(tuple(raw["load"]), tuple(raw["queue_ms"])),
        traffic,
        args.deadline_ms,
        args.provision_s,
        args.duration_s,
    )
    print(json.dumps(summary(steps)))
    if args.plot:
        plot({f"{args.overlay.name}, provisioning {args.provision_s:.0f} s": steps}, args.plot, args.deadline_ms)


if __name__ == "__main__":
    main()
