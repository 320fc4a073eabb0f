"""The ``cuda_graphs`` setting: parsed and checked as data, refused where a recorded step cannot
run (with ``compile``, with several processes), ignored on CPU, and ``GraphedSteps`` leaving any
batch size it has no graph for to the eager step.

Recording and replaying needs a CUDA device: ``benchmarks/check_cuda_graph.py`` compares replayed
and eager steps there (RESULTS.md, "CUDA graphs").
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ctr.config import Experiment, load_experiment
from ctr.cuda_graph import GraphedSteps
from ctr.errors import InputError
from ctr.repository import WEIGHTS_FILE, ModelRepository
from ctr.train import ramp_batch_sizes, train_candidate
from tests.unit.tiny_training import tiny_spec


def _settings(**changes: object) -> dict[str, object]:
    return {**load_experiment("dcn_v2_small").to_dict(), **changes}


def test_the_gpu_experiment_ships_with_graphs_and_the_base_without() -> None:
    assert load_experiment("dcn_v2_gpu").cuda_graphs is True
    assert load_experiment("dcn_v2").cuda_graphs is False


def test_graphs_and_compile_together_are_refused_by_name() -> None:
    with pytest.raises(InputError, match="compile and cuda_graphs cannot be combined"):
        Experiment.from_dict(_settings(cuda_graphs=True, compile=True))


def test_a_setting_that_is_not_a_boolean_is_refused() -> None:
    with pytest.raises(InputError, match="cuda_graphs must be true or false, got 'yes'"):
        Experiment.from_dict(_settings(cuda_graphs="yes"))


def test_graphs_are_refused_with_several_processes(tmp_path: Path) -> None:
    spec = replace(tiny_spec(tmp_path, {"cuda_graphs": True}), nproc=2)
    with pytest.raises(InputError, match="cuda_graphs is not supported with --nproc > 1"):
        train_candidate(spec, ModelRepository(tmp_path / "repo"))


def test_on_cpu_the_setting_changes_nothing(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    runs = [
        train_candidate(tiny_spec(tmp_path / str(flag), {"epochs": 1, "cuda_graphs": flag}), repo)
        for flag in (False, True)
    ]
    off, on = (torch.load(c.staged / WEIGHTS_FILE, weights_only=True) for c in runs)
    assert off.keys() == on.keys()
    assert all(torch.equal(off[k], on[k]) for k in off)
    assert runs[0].metadata["metrics"]["auc"] == runs[1].metadata["metrics"]["auc"]


def test_the_graphed_sizes_are_the_ramps_batches() -> None:
    ramp = load_experiment("dcn_v2_gpu").batch_ramp
    assert sorted(ramp_batch_sizes(ramp, 32768)) == [8192, 16384, 32768]
    assert ramp_batch_sizes(None, 4096) == {4096}
    assert sorted(ramp_batch_sizes(ramp, 16384, full=32768)) == [4096, 8192, 16384]  # one of two ranks


def test_a_size_without_a_graph_runs_the_eager_step_itself() -> None:
    calls: list[int] = []
    steps = GraphedSteps(lambda d, s, y: calls.append(int(y.shape[0])), sizes={8192})
    steps(torch.zeros(5, 13), torch.zeros(5, 26, dtype=torch.long), torch.zeros(5))
    assert calls == [5]
    assert steps.graphs == {} and steps.replays == 0


def test_at_least_one_eager_step_precedes_recording() -> None:
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        GraphedSteps(lambda d, s, y: None, sizes={8}, warmup=0)
