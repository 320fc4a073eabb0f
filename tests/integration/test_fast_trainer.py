"""The trainer users run: encoded once, fed by worker threads, data-parallel, large batches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from ctr.config import load_experiment
from ctr.data.dataset import convert_file, day_shards
from ctr.data.encoded import EncodedCache, fingerprint
from ctr.data.feed import Part, ShardFeed
from ctr.data.reader import ReadReport
from ctr.errors import DataFormatError, InputError
from ctr.features import FeatureTransform
from ctr.repository import ModelRepository
from ctr.train import (
    TrainSpec,
    scaled_learning_rate,
    train_and_publish,
    warmup_factor,
)

pytestmark = pytest.mark.slow


@pytest.fixture()
def days(small_days: Path, tmp_path: Path) -> Path:
    """A private copy of the small days (the test changes shards and the cache)."""
    out = tmp_path / "data"
    shutil.copytree(small_days, out, ignore=shutil.ignore_patterns(".encoded"))
    return out


def _entries(root: Path) -> dict[Path, int]:
    """Every encoded array under ``root`` with its mtime (ns)."""
    return {p: p.stat().st_mtime_ns for p in root.rglob("*.npy")}


def test_encoded_shards_are_the_transform_output(days: Path, tmp_path: Path) -> None:
    day = day_shards(days, 0)
    transform = FeatureTransform.fit(day.scan(), min_count=3)
    cache = EncodedCache(tmp_path / "cache", transform)
    (shard,) = day.shards
    dense, ids, label = cache.encode(shard).load()
    frame = pl.read_parquet(shard)
    want_dense, want_ids = transform.transform_frame(frame)
    assert ids.dtype == np.int32 and dense.dtype == np.float32 and label.dtype == np.uint8
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(dense, want_dense)
    np.testing.assert_array_equal(label, frame["label"].to_numpy())


def test_cache_is_reused_and_invalidated(days: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"

    def train(config: str = "lr") -> dict[str, object]:
        repo = ModelRepository(tmp_path / f"repo-{config.split('#')[-1]}")
        _, candidate = train_and_publish(TrainSpec(days, [0, 1], 2, experiment=config, cache_dir=cache_dir), repo)
        return candidate.metadata

    train()
    first = _entries(cache_dir)
    assert len({p.parent.parent for p in first}) == 1 and len(first) == 3 * 3  # one transform, 3 shards
    train()  # same data, same transform: nothing encoded again
    assert _entries(cache_dir) == first

    # the transform changes (another vocabulary threshold): every shard is encoded again, once
    base = yaml.safe_load((Path(__file__).parents[2] / "ctr/configs/experiments.yaml").read_text())
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"Base": base["Base"], "lr_min5": {**base["lr"], "min_count": 5}}))
    train(f"{other}#lr_min5")
    second = _entries(cache_dir)
    assert len({p.parent.parent for p in second}) == 2 and len(second) == 2 * 9
    assert {p: t for p, t in second.items() if p in first} == first  # the first transform's entries untouched

    # a shard changes under the same path (labels only: the fitted transform stays the same):
    # that shard's entry, and only it, is encoded again, with the new content
    shard = day_shards(days, 1).shards[0]
    pl.read_parquet(shard).with_columns(pl.lit(1, dtype=pl.Int8).alias("label")).write_parquet(shard)
    train()
    third = _entries(cache_dir)
    changed = {p.parent for p in first if third[p] != first[p]}
    assert len(changed) == 1 and len(third) == len(second), changed
    (entry,) = changed
    assert entry.name.startswith(shard.stem) and np.load(entry / "label.npy").min() == 1


def test_unwritable_cache_fails_before_training(days: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(InputError, match=r"cannot write encoded shards to .*--cache-dir"):
        train_and_publish(TrainSpec(days, [0], 1, experiment="lr", cache_dir=blocker / "cache"), repo)
    assert repo.latest() is None


def test_feed_is_reproducible_whatever_the_workers(days: Path, tmp_path: Path) -> None:
    transform = FeatureTransform.fit(day_shards(days, 0).scan(), min_count=3)
    cache = EncodedCache(tmp_path / "cache", transform)
    shards = [s for d in (0, 1, 2) for s in day_shards(days, d).shards]
    encoded = cache.encode_all(shards, workers=2)
    parts = [Part(encoded[s], keep) for s, keep in zip(shards, (1.0, 1.0, 0.25), strict=True)]

    def batches(workers: int) -> list[tuple[torch.Tensor, ...]]:
        feed = ShardFeed(parts, 1000, torch.device("cpu"), workers)
        return list(feed.epoch(np.random.default_rng(5)))

    inline, threaded = batches(0), batches(3)
    assert len(inline) == len(threaded)
    for a, b in zip(inline, threaded, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
    rows = sum(int(b[2].shape[0]) for b in inline)
    assert 40_000 + 0.25 * 20_000 * 0.9 < rows < 40_000 + 0.25 * 20_000 * 1.1  # a quarter of the replay shard
    assert max(int(b[2].shape[0]) for b in inline) == 1000


def test_data_parallel_gloo_matches_one_process(days: Path, tmp_path: Path) -> None:
    """2 gloo processes (global batch split in two) against 1 process: same published layout,
    AUC within 0.01 on 20k validation rows (one process's run-to-run spread over seeds is ~0.005)."""
    one, two = ModelRepository(tmp_path / "one"), ModelRepository(tmp_path / "two")
    _, single = train_and_publish(TrainSpec(days, [0, 1], 2, experiment="dcn_small", workers=1), one)
    _, ddp = train_and_publish(TrainSpec(days, [0, 1], 2, experiment="dcn_small", nproc=2, workers=1), two)
    assert ddp.metadata["processes"] == 2 and single.metadata["processes"] == 1
    assert ddp.metadata["data"]["train_rows"] == single.metadata["data"]["train_rows"]
    assert abs(float(ddp.metrics["auc"]) - float(single.metrics["auc"])) < 0.01, (single.metrics, ddp.metrics)

    def layout(repo: ModelRepository) -> list[str]:
        return sorted(str(p.relative_to(repo.model_dir)) for p in repo.model_dir.rglob("*") if ".staging" not in str(p))

    assert layout(one) == layout(two)


def test_nproc_must_divide_the_batch(days: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--nproc must be >= 1 and divide the batch size 1024"):
        train_and_publish(TrainSpec(days, [0], 1, experiment="dcn_small", nproc=3), ModelRepository(tmp_path))


def test_large_batch_rule() -> None:
    gpu, base = load_experiment("dcn_v2_gpu"), load_experiment("dcn_v2")
    assert gpu.model == base.model and gpu.batch_size == 8 * base.batch_size
    assert scaled_learning_rate(gpu) == pytest.approx(8**0.5 * gpu.learning_rate)  # sqrt(8)
    assert scaled_learning_rate(base) == base.learning_rate
    linear = load_experiment("dcn_v2_gpu").__class__.from_dict({**gpu.to_dict(), "lr_scaling": "linear"})
    assert scaled_learning_rate(linear) == pytest.approx(8 * gpu.learning_rate)
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    with pytest.raises(InputError, match="lr_scaling must be one of"):
        gpu.__class__.from_dict({**gpu.to_dict(), "lr_scaling": "cubic"})


@pytest.mark.parametrize("bad", [False, True])
def test_parallel_convert_equals_one_worker(tmp_path: Path, small_days: Path, bad: bool) -> None:
    """Many small chunks (4 KiB) converted by 1 and by 4 threads: the same shards and report."""
    frame = pl.read_parquet(day_shards(small_days, 0).shards[0]).head(2000)
    lines = []
    for row in frame.iter_rows():
        label, ints, cats = row[0], row[1:14], row[14:]
        lines.append(
            "\t".join(
                [
                    str(label),
                    *("" if v is None else str(v) for v in ints),
                    *("" if v is None else f"{v:08x}" for v in cats),
                ]
            )
        )
    if bad:
        lines[1234] = "not\ta\tline"
        lines[1900] = "2" + lines[1900][1:]
    src = tmp_path / "day_9"
    src.write_text("\n".join(lines) + "\n")
    results = []
    for workers in (1, 4):
        report = ReadReport()
        shards = convert_file(src, tmp_path / f"out{workers}" / "day_9", report, chunk_bytes=4096, workers=workers)
        results.append((report.to_dict(), [s.name for s in shards], pl.concat([pl.read_parquet(s) for s in shards])))
    (r1, n1, f1), (r4, n4, f4) = results
    assert len(n1) > 20 and n1 == n4 and r1 == r4
    assert f1.equals(f4) and f1.height == 2000 - (2 if bad else 0)
    if bad:
        assert r1["bad_lines"]["column_count"] == 1 and r1["bad_lines"]["bad_label"] == 1
        with pytest.raises(DataFormatError, match=r"day_9:1235: column_count"):
            convert_file(
                src, tmp_path / "fail" / "day_9", ReadReport(), chunk_bytes=4096, workers=4, on_bad_line="fail"
            )
        assert not (tmp_path / "fail" / "day_9").exists() and not any((tmp_path / "fail").iterdir())


def test_fingerprint_follows_the_transform(days: Path) -> None:
    frames = day_shards(days, 0).scan()
    a, b = FeatureTransform.fit(frames, 3), FeatureTransform.fit(frames, 3)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(FeatureTransform.fit(frames, 4))
    grown = a.extend(day_shards(days, 1).scan())
    assert fingerprint(grown) != fingerprint(a)


def test_transform_fit_on_one_thread_equals_all_threads(days: Path, tmp_path: Path) -> None:
    """The fit runs on polars' thread pool (every core); one thread gives the same transform."""
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; from ctr.data.dataset import day_shards; "
        "from ctr.data.encoded import fingerprint; from ctr.features import FeatureTransform; "
        "import polars as pl; d = Path(sys.argv[1]); "
        "t = FeatureTransform.fit(pl.concat([day_shards(d, k).scan() for k in (0, 1)]), 3); "
        "print(pl.thread_pool_size(), fingerprint(t))"
    )
    out = {}
    for threads in ("1", "4"):
        env = {**__import__("os").environ, "POLARS_MAX_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", script, str(days)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        pool, digest = done.stdout.split()
        out[pool] = digest
    assert set(out) == {"1", "4"} and len(set(out.values())) == 1, out
