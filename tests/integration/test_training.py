"""Full and incremental training into a real model repository, on generated data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from ctr.data.dataset import day_shards
from ctr.errors import ArtifactError, InputError
from ctr.metrics import roc_auc
from ctr.onnx_export import onnx_predict, onnx_session
from ctr.repository import ModelRepository
from ctr.train import TrainSpec, load_version, pick_device, score_day, train_and_publish

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(drift_days: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """v1: full on days 0-2 (valid 3); v2: incremental on post-drift day 4 (valid 5)."""
    repo = ModelRepository(tmp_path_factory.mktemp("repo"))
    train_and_publish(TrainSpec(drift_days, [0, 1, 2], 3, experiment="dcn_v2_small"), repo)
    train_and_publish(TrainSpec(drift_days, [4], 5, experiment="dcn_v2_small", mode="incremental"), repo)
    return repo


def test_full_run_beats_logistic_regression(drift_days: Path, trained: ModelRepository, tmp_path: Path) -> None:
    lr_repo = ModelRepository(tmp_path)
    _, lr = train_and_publish(TrainSpec(drift_days, [0, 1, 2], 3, experiment="lr"), lr_repo)
    dcn = trained.metadata(1)["metrics"]
    assert dcn["auc"] > lr.metrics["auc"] + 0.003, (dcn, lr.metrics)
    assert dcn["auc"] < dcn["bayes_auc"]  # the ceiling is a ceiling


def test_incremental_recovers_after_new_ads_drift(drift_days: Path, trained: ModelRepository) -> None:
    meta = trained.metadata(2)
    assert meta["mode"] == "incremental" and meta["parent_version"] == 1
    assert meta["data"]["replay_days"] == [0, 1, 2, 3]
    device = pick_device(None)
    post_drift = day_shards(drift_days, 5)
    old_model, old_transform, _ = load_version(trained, 1, device)
    new_model, new_transform, _ = load_version(trained, 2, device)
    old = score_day(old_model, old_transform, post_drift, device)["auc"]
    new = score_day(new_model, new_transform, post_drift, device)["auc"]
    assert new > old + 0.01, (old, new)


def test_new_values_get_rows(trained: ModelRepository) -> None:
    meta = trained.metadata(2)
    growth = np.array(meta["vocabulary_growth"])
    assert growth.sum() > 0
    _, t1, _ = load_version(trained, 1)
    _, t2, _ = load_version(trained, 2)
    np.testing.assert_array_equal(t2.sizes - t1.sizes, growth)


def test_published_onnx_matches_pytorch(drift_days: Path, trained: ModelRepository) -> None:
    import polars as pl
    import torch

    from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS

    model, transform, _ = load_version(trained, 2)
    frame = day_shards(drift_days, 5).scan().head(500).collect()
    dense = frame.select([pl.col(c).cast(pl.Float64) for c in DENSE_COLUMNS]).to_numpy()
    sparse = frame.select([pl.col(c).fill_null(-1) for c in SPARSE_COLUMNS]).to_numpy()
    x, ids = transform.transform(dense, sparse)
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(torch.from_numpy(x), torch.from_numpy(ids))).squeeze(1).numpy()
    pctr, version = onnx_predict(onnx_session(trained.version_dir(2) / "model.onnx"), dense, sparse)
    np.testing.assert_allclose(pctr, expected, atol=1e-5, rtol=0)
    assert set(version.tolist()) == {2}


def test_version_layout_and_metadata(trained: ModelRepository) -> None:
    assert trained.versions() == [1, 2]
    config = (trained.model_dir / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "dynamic_batching" in config
    for v in (1, 2):
        path = trained.version_dir(v)
        expected = {"model.onnx", "weights.pt", "transform", "metadata.json", "reference.parquet"}
        assert {p.name for p in path.iterdir()} >= expected
        meta = trained.metadata(v)
        assert meta["version"] == v and meta["seed"] == 2024 and meta["experiment"]["name"] == "dcn_v2_small"
        assert {"auc", "logloss", "calibration", "bayes_auc"} <= set(meta["metrics"])
        assert set(onnx_predict(onnx_session(path / "model.onnx"), np.zeros((2, 13)), -np.ones((2, 26)))[1]) == {v}
        assert meta["code_revision"]


def test_publish_is_atomic_for_a_polling_reader(trained: ModelRepository, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    source = trained.version_dir(1)
    seen_incomplete: list[str] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            if not repo.model_dir.exists():
                continue
            for p in repo.model_dir.iterdir():
                if p.name.isdigit():
                    names = {q.name for q in p.iterdir()} if p.exists() else set()
                    if not {"model.onnx", "weights.pt", "transform", "metadata.json"} <= names:
                        seen_incomplete.append(f"{p.name}: {sorted(names)}")

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(10):
            staged = repo.stage()
            for item in source.iterdir():
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, staged / item.name)
            repo.publish(staged, {"mode": "full"})
    finally:
        done.set()
        reader.join()
    assert repo.versions() == list(range(1, 11))
    assert seen_incomplete == []


def test_rollback_pins_an_older_version_until_the_next_publish(trained: ModelRepository, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(trained.root, repo.root)
    assert repo.served() == 2 and repo.pinned() is None
    repo.rollback(1)
    assert repo.served() == 1 and repo.versions() == [1, 2]
    assert "specific: { versions: [ 1 ] }" in (repo.model_dir / "config.pbtxt").read_text()
    assert "specific: { versions: [ 1 ] }" in (repo.model_dir / "configs" / "gpu.pbtxt").read_text()
    listed = json.loads(run_ctr("models", "list", "--repo", str(repo.root), "--json").stdout)
    assert listed["serving_version"] == 1
    assert [(v["version"], v["serving"]) for v in listed["versions"]] == [(1, True), (2, False)]
    assert run_ctr("models", "list", "--repo", str(repo.root)).stdout.startswith("v1 (serving): ")
    staged = repo.stage()
    for item in repo.version_dir(2).iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, staged / item.name)
    assert repo.publish(staged, {"mode": "full"}) == 3
    assert repo.served() == 3 and repo.pinned() is None
    with pytest.raises(InputError, match="version 9 not found"):
        repo.rollback(9)


def test_concurrent_publishers_get_distinct_versions(trained: ModelRepository, tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    staged = []
    for _ in range(6):
        s = repo.stage()
        shutil.copy2(trained.version_dir(1) / "model.onnx", s / "model.onnx")
        staged.append(s)
    results: list[int] = []
    threads = [threading.Thread(target=lambda s=s: results.append(repo.publish(s, {}))) for s in staged]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]


def run_ctr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ctr", *args], capture_output=True, text=True, timeout=600)


def test_cli_errors_are_one_line(drift_days: Path, trained: ModelRepository, tmp_path: Path) -> None:
    common = ["train", "--data", str(drift_days), "--config", "dcn_v2_small"]
    missing = run_ctr(*common, "--train-days", "6-9", "--valid-day", "5", "--repo", str(tmp_path / "r"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == f"error: day(s) 6, 7, 8, 9 not found in {drift_days}"

    no_base = run_ctr(
        *common, "--train-days", "4", "--valid-day", "5", "--mode", "incremental", "--repo", str(tmp_path / "empty")
    )
    assert no_base.returncode == 2 and "needs a published base version" in no_base.stderr

    absent = run_ctr(
        *common,
        "--train-days",
        "4",
        "--valid-day",
        "5",
        "--mode",
        "incremental",
        "--base",
        "7",
        "--repo",
        str(trained.root),
    )
    assert absent.returncode == 2
    assert absent.stderr.strip().splitlines()[-1].startswith("error: version 7 not found")

    corrupt_root = tmp_path / "corrupt"
    shutil.copytree(trained.root, corrupt_root)
    (corrupt_root / "dcn" / "2" / "weights.pt").write_bytes(b"garbage")
    corrupt = run_ctr(
        *common, "--train-days", "4", "--valid-day", "5", "--mode", "incremental", "--repo", str(corrupt_root)
    )
    assert corrupt.returncode == 1
    last = corrupt.stderr.strip().splitlines()[-1]
    assert last.startswith("error: weights of version 2") and "corrupt" in last
    assert "Traceback" not in corrupt.stderr


def test_cli_train_json_and_models_list(drift_days: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    done = run_ctr(
        "train",
        "--data",
        str(drift_days),
        "--train-days",
        "0-1",
        "--valid-day",
        "2",
        "--config",
        "lr",
        "--repo",
        str(repo),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["version"] == 1 and 0.5 < summary["auc"] < summary["bayes_auc"]
    assert {"logloss", "calibration"} <= set(summary)
    listed = json.loads(run_ctr("models", "list", "--repo", str(repo), "--json").stdout)
    assert [v["version"] for v in listed["versions"]] == [1] and listed["serving_version"] == 1
    assert listed["versions"][0]["auc"] == summary["auc"] and listed["versions"][0]["serving"] is True
    typo = run_ctr("models", "list", "--repo", str(tmp_path / "rpeo"))
    assert typo.returncode == 2
    assert typo.stderr.strip().splitlines()[-1] == f"error: model repository {tmp_path / 'rpeo'} does not exist"


def test_load_errors_are_typed(trained: ModelRepository, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_version(trained, 99)
    broken = ModelRepository(tmp_path / "b")
    shutil.copytree(trained.root, broken.root)
    shutil.rmtree(broken.version_dir(1) / "transform")
    with pytest.raises(ArtifactError):
        load_version(broken, 1)


def test_a_cuda_session_never_falls_back_to_the_cpu_in_silence(trained: ModelRepository) -> None:
    """``onnx_session(device="cuda")`` is what a GPU benchmark or a GPU pod asks for: where this
    ONNX Runtime has no CUDA provider (the CPU wheel, as here) it says so instead of scoring on
    the CPU under a GPU label; a device it does not know is refused too."""
    import onnxruntime as ort

    from ctr.onnx_export import onnx_session

    graph = trained.version_dir(1) / "model.onnx"
    assert onnx_session(graph, device="cpu").get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ArtifactError, match="device must be cpu or cuda, got 'tpu'"):
        onnx_session(graph, device="tpu")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has a CUDA provider: the missing-provider error cannot occur here")
    with pytest.raises(ArtifactError, match=r"has no CUDA provider; install onnxruntime-gpu"):
        onnx_session(graph, device="cuda")


def test_cpu_bf16_training_matches_fp32_quality(drift_days: Path, tmp_path: Path) -> None:
    """``cpu_precision: bf16`` (autocast; fp32 on CPUs without native bf16) trains as well as fp32."""
    config = tmp_path / "experiments.yaml"
    base = yaml.safe_load((Path(__file__).parents[2] / "ctr" / "configs" / "experiments.yaml").read_text())["Base"]
    small = {"batch_size": 1024, "epochs": 1, "model": {"cross_layers": 2, "mlp": [64], "dropout": 0.0}}
    config.write_text(yaml.safe_dump({"Base": base, "fp32": small, "bf16": {**small, "cpu_precision": "bf16"}}))
    aucs = {}
    for name in ("fp32", "bf16"):
        spec = TrainSpec(drift_days, [0, 1], 3, experiment=f"{config}#{name}", device="cpu")
        _, candidate = train_and_publish(spec, ModelRepository(tmp_path / name))
        aucs[name] = candidate.metrics["auc"]
    assert aucs["bf16"] > 0.7
    assert abs(aucs["bf16"] - aucs["fp32"]) < 0.005, aucs


def test_the_repository_holds_a_cpu_and_a_gpu_config_that_agree(trained: ModelRepository) -> None:
    cpu = (trained.model_dir / "config.pbtxt").read_text()
    gpu = (trained.model_dir / "configs" / "gpu.pbtxt").read_text()
    assert "kind: KIND_CPU" in cpu and "kind: KIND_GPU" in gpu
    assert cpu.replace("KIND_CPU", "KIND_GPU") == gpu  # same tensors, batching and version policy


SIDE_SCRIPT = """
import json, sys
import numpy as np
import onnxruntime as ort
inputs = np.load(sys.argv[1])
out = {}
for name in sys.argv[3:]:
    session = ort.InferenceSession(name, providers=["CPUExecutionProvider"])
    pctr, version = session.run(["pctr", "model_version"], {"dense": inputs["dense"], "sparse": inputs["sparse"]})
    out[name] = pctr.reshape(-1)
np.savez(sys.argv[2], **{str(k): v for k, v in enumerate(out.values())})
print(json.dumps({"onnxruntime": ort.__version__}))
"""


def test_served_graphs_load_in_the_triton_images_onnxruntime(
    drift_days: Path, trained: ModelRepository, tmp_path: Path
) -> None:
    """Every served graph (fp32 and int8) loads and runs in the ONNX Runtime of the pinned Triton
    image's onnxruntime backend (a side environment from PyPI): fp32 matches PyTorch within 1e-5,
    int8 matches this venv's ONNX Runtime on the same int8 graph."""
    import os

    import polars as pl
    import torch

    from ctr.onnx_export import export_serving_onnx
    from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS
    from ctr.serving.triton_image import TRITON_IMAGE, TRITON_ORT_VERSION

    assert f"image: {TRITON_IMAGE}" in (Path(__file__).parents[2] / "k8s" / "base" / "triton.yaml").read_text()
    side = tmp_path / "ort-side"
    subprocess.run([sys.executable, "-m", "venv", str(side)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
    done = subprocess.run(
        [str(side / "bin" / "pip"), "install", "--quiet", f"onnxruntime=={TRITON_ORT_VERSION}", "numpy<2"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    frame = day_shards(drift_days, 5).scan().head(500).collect()
    dense = frame.select([pl.col(c).cast(pl.Float32) for c in DENSE_COLUMNS]).to_numpy()
    sparse = frame.select([pl.col(c).cast(pl.Int64).fill_null(-1) for c in SPARSE_COLUMNS]).to_numpy()
    by_torch = {}
    for v in trained.versions():
        model, transform, _ = load_version(trained, v)
        x, ids = transform.transform(dense.astype(np.float64), sparse)
        with torch.no_grad():
            logits = model.eval()(torch.from_numpy(x), torch.from_numpy(ids))
        by_torch[v] = torch.sigmoid(logits).squeeze(1).numpy()
    expected = by_torch[2]
    model, transform, _ = load_version(trained, 2)
    int8 = tmp_path / "int8.onnx"  # version 2's network served in int8
    export_serving_onnx(model, transform, int8, version=2, precision="int8")
    graphs = [str(trained.version_dir(v) / "model.onnx") for v in trained.versions()] + [str(int8)]
    np.savez(tmp_path / "in.npz", dense=dense, sparse=sparse)
    ran = subprocess.run(
        [str(side / "bin" / "python"), "-c", SIDE_SCRIPT, str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), *graphs],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == {"onnxruntime": TRITON_ORT_VERSION}
    out = np.load(tmp_path / "out.npz")
    assert len(out.files) == len(graphs) == 3
    for k, v in enumerate(trained.versions()):  # every published fp32 graph vs PyTorch
        np.testing.assert_allclose(out[str(k)], by_torch[v], atol=1e-5, rtol=0)
    here, _ = onnx_predict(onnx_session(int8), dense, sparse)
    np.testing.assert_allclose(out["2"], here, atol=1e-5, rtol=0)  # int8: the same graph here and there
    assert float(np.abs(out["2"] - expected).mean()) < 0.01  # and int8 stays near fp32 (max 0.07 here)


def test_recalibration_undoes_a_base_rate_shift_and_keeps_the_ranking(small_days: Path, tmp_path: Path) -> None:
    """The validation day's clicks are made 1/0.6 times as likely in odds (60 % of its negatives
    kept, every positive): a log-odds shift of -ln 0.6 = 0.51 the training days never saw. With
    ``recalibrate`` (the default) the published graph's predicted clicks on that day match the
    observed ones and the offset is that shift; without it they are ~1.5x short. The ranking
    (AUC) is the same either way: one added constant."""
    import polars as pl

    data = tmp_path / "data"
    shutil.copytree(small_days, data, ignore=shutil.ignore_patterns("day_2.truth.parquet"))
    rng = np.random.default_rng(0)
    for shard in day_shards(data, 2).shards:
        frame = pl.read_parquet(shard)
        keep = (frame["label"].to_numpy() == 1) | (rng.random(frame.height) < 0.6)
        frame.filter(pl.Series(keep)).write_parquet(shard)
    config = tmp_path / "experiments.yaml"
    base = yaml.safe_load((Path(__file__).parents[2] / "ctr" / "configs" / "experiments.yaml").read_text())["Base"]
    small = {"batch_size": 1024, "epochs": 2, "model": {"cross_layers": 2, "mlp": [64], "dropout": 0.0}}
    config.write_text(yaml.safe_dump({"Base": base, "on": small, "off": {**small, "recalibrate": False}}))
    from ctr.recalibration import fit_offset
    from ctr.retrain import score_served_graph

    observed_over_predicted, aucs, meta, refit = {}, {}, {}, {}
    for name in ("on", "off"):
        repo = ModelRepository(tmp_path / name)
        version, _ = train_and_publish(TrainSpec(data, [0, 1], 2, experiment=f"{config}#{name}", device="cpu"), repo)
        labels, pctr = score_served_graph(repo.version_dir(version) / "model.onnx", day_shards(data, 2))
        observed_over_predicted[name] = labels.sum() / pctr.sum()
        aucs[name] = float(roc_auc(labels, pctr))
        meta[name] = repo.metadata(version)["recalibration"]
        refit[name] = fit_offset(np.log(pctr / (1 - pctr)), labels)  # what is left to correct
    assert meta["off"] is None
    # the same weights but the head's bias: the offset found is the one the plain graph needs,
    # at least the shift made (the small model alone, on the unshifted day: offset 0.24)
    assert meta["on"]["offset"] == pytest.approx(refit["off"], abs=0.01), (meta, refit)
    assert meta["on"]["offset"] > -np.log(0.6) - 0.1, meta
    assert abs(refit["on"]) < 0.01, refit
    assert abs(observed_over_predicted["on"] - 1.0) < 0.01, observed_over_predicted
    assert observed_over_predicted["off"] > 1.3, observed_over_predicted
    assert aucs["on"] == pytest.approx(aucs["off"], abs=1e-4), aucs
