"""A tiny training run for trainer tests: ``dcn_v2_small`` with overridden settings on 2 small
generated days, on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ctr.data.synth import SynthArgs, synthesize
from ctr.train import TrainSpec

EXPERIMENTS = Path(__file__).parents[2] / "ctr" / "configs" / "experiments.yaml"


def tiny_spec(tmp_path: Path, settings: dict[str, Any]) -> TrainSpec:
    """``dcn_v2_small`` with ``settings`` on 2 generated days of 2k rows (day 2 validates), on CPU."""
    data = tmp_path / "data"
    synthesize(SynthArgs(days=3, rows_per_day=2_000, seed=3), data)
    config = tmp_path / "exp.yaml"
    builtin = yaml.safe_load(EXPERIMENTS.read_text())
    config.write_text(yaml.safe_dump({"tiny": {**builtin["dcn_v2_small"], **settings}}))
    return TrainSpec(data, [0, 1], 2, experiment=f"{config}#tiny", device="cpu", workers=0)
