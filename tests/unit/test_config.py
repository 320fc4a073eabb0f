"""Experiment configurations as data: every built-in merges, bad values are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ctr.config import Experiment, load_experiment
from ctr.errors import InputError

BUILTIN = yaml.safe_load((Path(__file__).parents[2] / "ctr" / "configs" / "experiments.yaml").read_text())


@pytest.mark.parametrize("name", [n for n in BUILTIN if n != "Base"])
def test_every_builtin_experiment_loads_and_round_trips(name: str) -> None:
    exp = load_experiment(name)
    assert exp.name == name
    assert Experiment.from_dict(exp.to_dict()) == exp


def test_int8_serving_is_an_override_of_the_same_model() -> None:
    dcn, int8 = load_experiment("dcn"), load_experiment("dcn_int8")
    assert (dcn.serving_precision, int8.serving_precision) == ("fp32", "int8")
    same = {"name", "serving_precision"}
    assert {k: v for k, v in dcn.to_dict().items() if k not in same} == {
        k: v for k, v in int8.to_dict().items() if k not in same
    }


@pytest.mark.parametrize(("key", "value"), [("serving_precision", "fp16"), ("cpu_precision", "int4")])
def test_unknown_precision_is_refused_by_name(key: str, value: str) -> None:
    d = load_experiment("dcn").to_dict() | {key: value}
    with pytest.raises(InputError, match=key):
        Experiment.from_dict(d)


def test_metadata_written_before_precisions_existed_still_loads() -> None:
    d = load_experiment("dcn").to_dict()
    del d["serving_precision"], d["cpu_precision"]
    exp = Experiment.from_dict(d)
    assert (exp.serving_precision, exp.cpu_precision) == ("fp32", "fp32")


def test_a_misspelt_key_in_an_experiments_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text("dcn_fast:\n  learning_rte: 0.01\n")
    with pytest.raises(InputError, match=r"experiment 'dcn_fast': unknown key\(s\) learning_rte; known: seed, "):
        load_experiment(f"{path}#dcn_fast")


def test_a_user_file_inherits_the_packaged_base(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("wide:\n  batch_size: 2048\n  model:\n    mlp: [256, 128]\n")
    exp = load_experiment(f"{path}#wide")
    base = load_experiment("dcn_small")  # any packaged experiment shares Base's seed and rates
    assert exp.batch_size == 2048 and exp.model.mlp == (256, 128)
    assert exp.seed == base.seed and exp.learning_rate == load_experiment("dcn").learning_rate
    assert exp.model.embedding_dim == 16  # from the packaged Base's model block, merged key by key
