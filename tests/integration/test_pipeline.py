"""The retraining pipeline: compiled spec, and real local runs through kfp.local.SubprocessRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from ctr import storage
from ctr.data.reader import ReadReport, iter_batches
from ctr.data.writer import frame_table, write_criteo
from ctr.errors import InputError
from ctr.lease import LEASE_FILE, acquire, holder
from ctr.repository import ModelRepository
from ctr.retrain_request import RetrainRequest
from pipelines.runner import PipelineError, compile_pipeline, run_local

pytestmark = pytest.mark.slow
CONFIG = "dcn_v2_small"


def params(data: Path, repo: Path, work: Path, mode: str, train: str, valid: int, holdout: int) -> RetrainRequest:
    return RetrainRequest(
        repo=str(repo),
        data_dir=str(data),
        train_days=train,
        valid_day=valid,
        holdout_day=holdout,
        work_dir=str(work),
        mode=mode,
        experiment=CONFIG,
    )


def test_compiled_spec_takes_one_request_and_holds_the_cluster_settings(tmp_path: Path) -> None:
    spec, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml").read_text())
    assert list(spec["root"]["inputDefinitions"]["parameters"]) == ["request"]  # the one retrain request
    components = json.dumps(spec["components"])
    for branch in ("gate-passed", "gate-refused"):
        assert f'"name": "{branch}"' in components, branch
    finish = spec["root"]["dag"]["tasks"]["finish-op"]  # the exit handler runs after any outcome
    assert finish["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert "full-retrain" not in components  # one training path: prepare settles the mode
    executors = json.dumps(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"])
    assert "nvidia.com/gpu" in executors and "ctr-loop/pool" in executors and storage.CLAIM in executors
    assert "karpenter.sh/do-not-disrupt" in executors and '"secretName": "ctr-db"' in executors.replace("'", '"')
    train = [e for e in spec["deploymentSpec"]["executors"].values() if "train_op" in json.dumps(e)]
    assert train and all(e["container"]["resources"]["accelerator"]["resourceCount"] for e in train)
    assert all("pip install" not in json.dumps(e) for e in spec["deploymentSpec"]["executors"].values())


def test_the_train_step_can_ask_for_several_gpus_of_one_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def train_resources(path: Path) -> dict[str, object]:
        spec, _ = yaml.safe_load_all(path.read_text())
        (train,) = [e for e in spec["deploymentSpec"]["executors"].values() if "train_op" in json.dumps(e)]
        return dict(train["container"]["resources"])

    four = train_resources(compile_pipeline(tmp_path / "four.yaml", train_gpus=4))
    assert four["accelerator"]["resourceCount"] == "4" and four["cpuRequest"] == 16  # type: ignore[index]
    monkeypatch.setenv("CTR_PIPELINE_TRAIN_GPUS", "2")
    assert train_resources(compile_pipeline(tmp_path / "two.yaml"))["accelerator"]["resourceCount"] == "2"  # type: ignore[index]
    monkeypatch.setenv("CTR_PIPELINE_TRAIN_GPUS", "two")
    with pytest.raises(InputError, match="CTR_PIPELINE_TRAIN_GPUS must be a positive integer, got 'two'"):
        compile_pipeline(tmp_path / "bad.yaml")
    monkeypatch.delenv("CTR_PIPELINE_TRAIN_GPUS")
    with pytest.raises(InputError, match=r"pipeline_train_gpus \(CTR_PIPELINE_TRAIN_GPUS\) must be at least 1, got 0"):
        compile_pipeline(tmp_path / "zero.yaml", train_gpus=0)
    monkeypatch.setenv("CTR_PIPELINE_IMAGE", "registry.example/ctr-pipeline:9")
    spec, _ = yaml.safe_load_all(compile_pipeline(tmp_path / "image.yaml").read_text())
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/ctr-pipeline:9"}  # read when compiling, not when importing


@pytest.fixture(scope="module")
def loop_repo(pipeline_days: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepository, Path]:
    work = tmp_path_factory.mktemp("pipeline")
    repo = ModelRepository(work / "repo")
    first = run_local(params(pipeline_days, repo.root, work / "w", "full", "0-1", 2, 3))
    assert first["published"] and first["version"] == 1
    return repo, work


def test_local_full_run_publishes_version_1(loop_repo: tuple[ModelRepository, Path]) -> None:
    repo, _ = loop_repo
    meta = repo.metadata(1)
    assert meta["mode"] == "full" and meta["parent_version"] is None
    assert meta["pipeline"]["run_id"].startswith("local-")
    assert meta["pipeline"]["gate"]["serving_version"] is None
    assert not (repo.model_dir / LEASE_FILE).exists() and repo.staged() == []


def test_local_incremental_after_drift_publishes_version_2(
    pipeline_days: Path, loop_repo: tuple[ModelRepository, Path]
) -> None:
    repo, work = loop_repo
    outcome = run_local(params(pipeline_days, repo.root, work / "w", "incremental", "4", 5, 6))
    assert outcome["published"] and outcome["version"] == 2 and outcome["parent_version"] == 1
    gate = repo.metadata(2)["pipeline"]["gate"]
    assert gate["serving_version"] == 1 and gate["holdout_day"] == 6
    assert gate["candidate_auc"] > gate["serving_auc"] + 0.01, gate
    assert repo.metadata(2)["data"]["replay_days"] == [0, 1, 2, 3]


def _shuffled_copy(source: Path, dest: Path, day: int) -> None:
    report = ReadReport()
    frame = pl.concat(list(iter_batches(source / f"day_{day}", report)))
    labels = np.random.default_rng(0).permutation(frame["label"].to_numpy())
    with open(dest / f"day_{day}", "wb") as f:
        write_criteo(f, frame_table(frame.with_columns(pl.Series("label", labels))))


def test_gate_rejects_a_candidate_trained_on_shuffled_labels(
    pipeline_days: Path, tmp_path: Path, loop_repo: tuple[ModelRepository, Path]
) -> None:
    repo_src, _ = loop_repo
    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(repo_src.root, repo.root)
    data = tmp_path / "data"
    data.mkdir()
    for day in range(7):
        if day == 4:
            _shuffled_copy(pipeline_days, data, day)
        else:
            shutil.copy2(pipeline_days / f"day_{day}", data / f"day_{day}")
    before = repo.versions()
    outcome = run_local(params(data, repo.root, tmp_path / "w", "incremental", "4", 5, 6))
    assert not outcome["published"]
    assert repo.versions() == before and repo.staged() == []
    assert holder(repo) is None


def test_a_failing_step_leaves_the_repository_as_it_was(
    pipeline_days: Path, tmp_path: Path, loop_repo: tuple[ModelRepository, Path]
) -> None:
    repo_src, _ = loop_repo
    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(repo_src.root, repo.root)
    before = sorted(p.name for p in repo.model_dir.rglob("*"))
    data = tmp_path / "data"  # the days, and a holdout day 9 whose one shard is corrupt
    data.mkdir()
    for day in pipeline_days.glob("day_*"):
        (data / day.name).symlink_to(day)
    (data / "day_9").mkdir()
    (data / "day_9" / "part-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(PipelineError, match="evaluate-op"):  # trains, then the holdout day cannot be read
        run_local(params(data, repo.root, tmp_path / "w", "incremental", "4", 5, 9))
    assert sorted(p.name for p in repo.model_dir.rglob("*")) == before  # the exit handler removed .staging/<run>
    assert holder(repo) is None


def test_incremental_without_serving_version_fails_clearly(pipeline_days: Path, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "empty")
    with pytest.raises(PipelineError, match="prepare-op"):
        run_local(params(pipeline_days, repo.root, tmp_path / "w", "incremental", "4", 5, 6))
    assert repo.versions() == []


def test_an_unknown_mode_is_refused_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--mode must be one of full, incremental, got 'nightly'"):
        params(tmp_path, tmp_path / "repo", tmp_path / "w", "nightly", "0", 1, 2)


def test_a_second_run_is_refused_while_one_holds_the_lease(
    pipeline_days: Path, tmp_path: Path, loop_repo: tuple[ModelRepository, Path]
) -> None:
    repo_src, _ = loop_repo
    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(repo_src.root, repo.root)
    acquire(repo, "other-run")  # a run in flight
    before = repo.versions()
    with pytest.raises(PipelineError, match="prepare-op"):
        run_local(params(pipeline_days, repo.root, tmp_path / "w", "incremental", "4", 5, 6))
    assert repo.versions() == before
    assert holder(repo)["run_id"] == "other-run"  # the other run's lease is untouched


def test_a_missing_holdout_day_fails_before_the_lease_and_any_training(pipeline_days: Path, tmp_path: Path) -> None:
    from ctr.lease import holder
    from ctr.retrain import prepare

    repo = ModelRepository(tmp_path / "repo")
    request = params(pipeline_days, repo.root, tmp_path / "work", "incremental", "1", 2, 9).replace(run_id="r1")
    with pytest.raises(InputError, match=r"day\(s\) 9 not found"):
        prepare(request)
    assert holder(repo) is None and not (tmp_path / "work").exists()


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_an_event_log_run_lays_out_history_and_exported_days(
    mode: str, pipeline_days: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full run trains from scratch on the history days and the exported ones; an incremental
    run trains on the exported days and replays the history."""
    from datetime import UTC, datetime, timedelta

    from ctr.data.dataset import day_shards
    from ctr.events.store import EventStore
    from ctr.ids import uuid7
    from ctr.retrain import prepare
    from ctr.timeutil import to_us
    from ctr.train import TrainSpec, train_and_publish

    repo = ModelRepository(tmp_path / "repo")
    if mode == "incremental":
        train_and_publish(TrainSpec(pipeline_days, [0, 1], 2, experiment="lr"), repo)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    store = EventStore(url)
    store.migrate()
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    frame = day_shards(pipeline_days, 4).scan().head(400).collect()
    rows = [
        {
            "impression_id": uuid7(),
            "request_id": "r",
            "ad_id": "a",
            "served_at_us": to_us(t0 + timedelta(seconds=172_800 * k / frame.height)),
            "model_version": 1,
            "pctr": 0.25,
            **{f"i{i}": row[f"I{i}"] for i in range(1, 14)},
            **{f"c{j}": row[f"C{j}"] for j in range(1, 27)},
        }
        for k, row in enumerate(frame.iter_rows(named=True))
    ]
    store.log_impressions(rows)
    monkeypatch.setenv("CTR_DB_URL", url)
    request = RetrainRequest(
        repo=str(repo.root),
        data_dir=str(pipeline_days),
        work_dir=str(tmp_path / "work"),
        mode=mode,
        events=True,
        since="-2d",
        now=(t0 + timedelta(days=2, hours=1)).isoformat(),
        run_id="r1",
    )
    prepared = prepare(request)
    history = list(range(7))
    if mode == "full":  # and its second candidate: the exported day alone
        assert (prepared.train_days, prepared.replay_days, prepared.recent_days) == ([*history, 7], None, [7])
    else:
        assert (prepared.train_days, prepared.replay_days, prepared.recent_days) == ([7], history, None)
    assert (prepared.valid_day, prepared.holdout_day) == (8, 9)


@pytest.mark.parametrize(("drift", "kept"), [("concept", "recent"), (None, "history+recent")])
def test_a_full_run_keeps_the_data_window_that_validates_better(drift: str | None, kept: str, tmp_path: Path) -> None:
    """After a concept drift the old days' labels mislead and the recent day alone validates
    better; without drift the history helps. Either way one candidate stays staged."""
    from ctr.data.synth import SynthArgs, synthesize
    from ctr.retrain import Prepared, train

    data = tmp_path / "data"  # days 0-1: history; day 2: the recent (exported) day; day 3 validates
    drift_day = 2 if drift else None
    synthesize(SynthArgs(days=4, rows_per_day=12_000, seed=3, drift_day=drift_day, drift=drift), data)  # type: ignore[arg-type]
    repo = ModelRepository(tmp_path / "repo")
    request = RetrainRequest(repo=str(repo.root), train_days="0-2", experiment="dcn_v2_demo", mode="full")
    staged = Path(train(Prepared("r1", "full", str(data), [0, 1, 2], 3, 3, None, [2]), request))
    meta = json.loads((staged / "metadata.json").read_text())
    window = meta["window"]
    aucs = window["validation_auc"]
    assert window["chosen"] == kept, window
    assert aucs[kept] > aucs[({"recent", "history+recent"} - {kept}).pop()], aucs
    assert meta["data"]["train_days"] == ([2] if kept == "recent" else [0, 1, 2])
    assert [p for p in staged.parent.iterdir() if p.is_dir()] == [staged]  # the other candidate was discarded


def test_a_challenged_incremental_run_keeps_the_candidate_that_validates_best(tmp_path: Path) -> None:
    """``challenge``: two full candidates from scratch challenge the warm start; the staged one
    is the highest validation AUC, carries its own mode and days, and the others are discarded."""
    from ctr.data.synth import SynthArgs, synthesize
    from ctr.retrain import Prepared, train
    from ctr.train import TrainSpec, train_and_publish

    data = tmp_path / "data"  # days 0-1: history (v1 learns them); day 2: recent, after the shift; day 3 validates
    synthesize(SynthArgs(days=4, rows_per_day=12_000, seed=3, drift_day=2, drift="popularity"), data)
    repo = ModelRepository(tmp_path / "repo")
    train_and_publish(TrainSpec(data, [0, 1], 2, experiment="dcn_v2_demo"), repo)
    request = RetrainRequest(repo=str(repo.root), train_days="2", experiment="dcn_v2_demo", challenge=True)
    staged = Path(train(Prepared("r1", "incremental", str(data), [2], 3, 3, [0, 1]), request))
    meta = json.loads((staged / "metadata.json").read_text())
    window = meta["window"]
    aucs, chosen = window["validation_auc"], window["chosen"]
    assert set(aucs) == {"incremental", "history+recent", "recent"}, window
    assert aucs[chosen] == max(aucs.values()), window
    assert meta["mode"] == ("incremental" if chosen == "incremental" else "full")
    assert meta["data"]["train_days"] == {"incremental": [2], "history+recent": [0, 1, 2], "recent": [2]}[chosen]
    assert [p for p in staged.parent.iterdir() if p.is_dir()] == [staged]  # the two others were discarded
