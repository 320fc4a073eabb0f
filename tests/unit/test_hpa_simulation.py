"""``autoscaling/simulate.py``: the HPA algorithm against the documented examples, and the
manifest's own HPA read from ``kubectl kustomize``."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("simulate", ROOT / "autoscaling" / "simulate.py")
assert _spec and _spec.loader
sim = importlib.util.module_from_spec(_spec)
sys.modules["simulate"] = sim
_spec.loader.exec_module(sim)


def test_the_documented_ratio_examples() -> None:
    # 200m current vs 100m target doubles; 50m halves; within 10 % of the target nothing changes
    assert sim.desired_replicas(3, 200, 100) == 6
    assert sim.desired_replicas(4, 50, 100) == 2
    assert sim.desired_replicas(4, 105, 100) == 4 and sim.desired_replicas(4, 91, 100) == 4
    assert sim.desired_replicas(4, 111, 100) == 5  # ceil(4.44)


def _hpa(**kw: object) -> object:
    spec = sim.HpaSpec(1, 10, 100.0, **kw)
    return sim.Hpa(spec, 2)


def test_scale_up_is_limited_by_the_policies() -> None:
    up = sim.Direction(0.0, (sim.Policy("Pods", 2, 60),))
    hpa = _hpa(up=up)
    assert hpa.sync(0, 1000.0) == 4  # wants 20 (capped at 10), 2 pods per minute allowed
    assert hpa.sync(15, 1000.0) == 4  # still within the minute
    assert hpa.sync(61, 1000.0) == 6
    default = _hpa()  # defaults: max(100 %, 4 pods) per 15 s
    assert default.sync(0, 1000.0) == 6  # 2 + max(2, 4)
    assert default.sync(16, 1000.0) == 10  # 6 + max(6, 4) = 12, bounded by maxReplicas


def test_scale_down_waits_for_its_stabilisation_window() -> None:
    down = sim.Direction(300.0, (sim.Policy("Percent", 100, 15),))
    hpa = sim.Hpa(sim.HpaSpec(1, 10, 100.0, down=down), 8)
    assert hpa.sync(0, 100.0) == 8
    assert hpa.sync(15, 10.0) == 8  # the window still holds the recommendation of 8
    assert hpa.sync(290, 10.0) == 8
    assert hpa.sync(316, 10.0) == 1  # 300 s later the highest recommendation is 1


def test_select_min_takes_the_least_permissive_policy() -> None:
    up = sim.Direction(0.0, (sim.Policy("Pods", 4, 60), sim.Policy("Percent", 50, 60)), "Min")
    assert _hpa(up=up).sync(0, 1000.0) == 3  # min(2 + 4, 2 + ceil(1)) = 3


def test_a_step_without_enough_pods_puts_requests_over_the_deadline() -> None:
    curve = sim.Curve((0.0, 50.0, 100.0), (0.5, 5.0, 150.0))  # saturates at 100 req/s per pod
    spec = sim.HpaSpec(1, 8, 20.0)
    steps = sim.simulate(spec, curve, lambda t: 40.0 if t < 60 else 400.0, 200.0, 90.0, 600.0)
    before = [s for s in steps if s.t < 60]
    assert all(s.over_deadline == 0 for s in before)
    assert any(s.over_deadline == 1 for s in steps if 60 <= s.t < 150)  # new pods not ready yet
    assert steps[-1].ready >= 5 and steps[-1].over_deadline == 0  # 400 req/s over >= 5 pods
    share = sim.summary(steps)["share_over_deadline"]
    slow = sim.summary(sim.simulate(spec, curve, lambda t: 40.0 if t < 60 else 400.0, 200.0, 300.0, 600.0))
    assert 0 < share < slow["share_over_deadline"]  # slower provisioning, more late requests
    assert math.isinf(curve(100.0))


def test_the_spec_is_read_from_the_rendered_manifest() -> None:
    spec = sim.HpaSpec.from_manifest(sim.rendered_hpa(ROOT / "k8s" / "overlays" / "karpenter"))
    assert (spec.min_replicas, spec.max_replicas) == (1, 8)
    assert spec.up.policies == (sim.Policy("Pods", 2, 60.0),) and spec.up.stabilization_s == 30
    assert spec.down.stabilization_s == 600 and spec.down.policies == (sim.Policy("Pods", 1, 300.0),)
