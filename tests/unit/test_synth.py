"""The generator: determinism, manifest truth, marginals, planted crosses, drift."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from ctr.data.dataset import day_shards, day_stats
from ctr.data.synth import SynthArgs, synthesize
from ctr.data.world import AD_FEATURES, SyntheticWorld, WorldConfig
from ctr.errors import InputError
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("compress", [False, True])
def test_same_arguments_give_identical_files(tmp_path: Path, compress: bool) -> None:
    args = SynthArgs(days=2, rows_per_day=3_000, seed=11, drift_day=1, drift="new-ads", gzip=compress)
    synthesize(args, tmp_path / "a")
    synthesize(args, tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    synthesize(SynthArgs(days=2, rows_per_day=3_000, seed=12, gzip=compress), tmp_path / "c")
    assert (
        digest(tmp_path / "a")["day_0" + (".gz" if compress else "")]
        != digest(tmp_path / "c")["day_0" + (".gz" if compress else "")]
    )


def test_manifest_bayes_auc_matches_recomputation(small_days: Path) -> None:
    manifest = json.loads((small_days / "manifest.json").read_text())
    for entry in manifest["days"]:
        shards = day_shards(small_days, entry["day"])
        labels = shards.scan().select("label").collect()["label"].to_numpy()
        p_true = pq.read_table(shards.truth)["p_true"].to_numpy()
        assert entry["rows"] == labels.size == p_true.size
        assert entry["bayes_auc"] == pytest.approx(roc_auc_score(labels, p_true), abs=1e-6)
        assert day_stats(shards)["bayes_auc"] == pytest.approx(entry["bayes_auc"], abs=1e-6)
        # labels really are Bernoulli(p_true): calibration of the truth holds
        assert labels.mean() == pytest.approx(p_true.mean(), abs=0.01)


def test_marginals_look_like_criteo(small_days: Path) -> None:
    rows = day_shards(small_days, 0).scan().collect()
    assert rows["label"].mean() == pytest.approx(0.25, abs=0.02)
    dense_missing = np.mean([rows[c].null_count() / rows.height for c in DENSE_COLUMNS])
    sparse_missing = np.mean([rows[c].null_count() / rows.height for c in SPARSE_COLUMNS])
    assert 0.1 < dense_missing < 0.3 and 0.03 < sparse_missing < 0.2
    assert rows["I2"].min() < 0  # negative I2 occurs
    assert rows["I5"].max() > 50 * rows["I5"].median()  # heavy tail
    counts = rows["C1"].drop_nulls().value_counts(sort=True)["count"].to_numpy()
    assert counts[0] > 5 * np.median(counts)  # Zipf-like: a popular head


def test_planted_crosses_matter() -> None:
    """The same world without its cross terms ranks measurably worse than with them."""
    world = SyntheticWorld(WorldConfig(seed=3, total_rows=200_000))
    rng = np.random.default_rng(0)
    _, _, z = world._dense(rng, 50_000)
    idx = world._value_rows(rng, 50_000, day=0)
    full = world.effects.logit(z, idx)
    first_order = world.effects.logit(z, idx, crosses=False)
    labels = rng.random(50_000) < 1 / (1 + np.exp(-(world.intercept + full)))
    assert roc_auc_score(labels, full) - roc_auc_score(labels, first_order) > 0.02


@pytest.mark.parametrize("kind", ["new-ads", "concept", "popularity"])
def test_drift_changes_the_world_from_its_day(tmp_path: Path, kind: str) -> None:
    synthesize(SynthArgs(days=3, rows_per_day=10_000, seed=5, drift_day=2, drift=kind), tmp_path)  # type: ignore[arg-type]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [d["drifted"] for d in manifest["days"]] == [False, False, True]
    days = [day_shards(tmp_path, d).scan().collect() for d in range(3)]
    cardinality = manifest["cardinalities"]
    col = SPARSE_COLUMNS[max(AD_FEATURES, key=lambda j: cardinality[j])]

    def unseen_share(day: pl.DataFrame) -> float:
        known = set(days[0][col].drop_nulls().to_list())
        values = day[col].drop_nulls().to_list()
        return sum(v not in known for v in values) / len(values)

    if kind == "new-ads":
        assert unseen_share(days[2]) > unseen_share(days[1]) + 0.3
    if kind == "popularity":
        top = lambda d: set(d[col].drop_nulls().value_counts(sort=True)[col].head(5).to_list())  # noqa: E731
        assert len(top(days[0]) & top(days[1])) >= 4 and len(top(days[0]) & top(days[2])) <= 2
    if kind == "concept":
        world = SyntheticWorld(WorldConfig(seed=5, total_rows=30_000, drift_day=2, drift="concept"))
        rng = np.random.default_rng(1)
        _, _, z = world._dense(rng, 20_000)
        idx = world._value_rows(rng, 20_000, day=2)
        before, after = world.effects.logit(z, idx), world.effects_after.logit(z, idx)
        assert np.corrcoef(before, after)[0, 1] < 0.6


def test_bad_arguments_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--drift-day must be >= 0"):
        synthesize(SynthArgs(days=3, rows_per_day=10, seed=1, drift_day=-1, drift="concept"), tmp_path)
    with pytest.raises(InputError, match="--drift must be one of"):
        synthesize(SynthArgs(days=3, rows_per_day=10, seed=1, drift_day=1, drift="sideways"), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="go together"):
        synthesize(SynthArgs(days=3, rows_per_day=10, seed=1, drift_day=1), tmp_path)


def test_new_ads_are_recognised_from_their_hashes_alone() -> None:
    """The demo's new-ads yardstick tells new ads by the hashes the score API receives."""
    world = SyntheticWorld(WorldConfig(seed=4, total_rows=100_000, drift_day=1, drift="new-ads"))
    rng = np.random.default_rng(0)
    before, after = world.sample(0, 5_000, rng), world.sample(1, 5_000, rng)
    assert not world.shows_new_ad(before.sparse).any()
    j = world.ad_id_feature
    present = (after.sparse[:, j] >= 0).mean()
    share = world.shows_new_ad(after.sparse).mean()
    assert share == pytest.approx(0.6 * present, abs=0.03)  # NEW_AD_SHARE of the present ad ids
    idx = world._value_rows(np.random.default_rng(1), 2_000, 1)  # the rows behind the hashes
    card = int(world.cardinality[j])
    fresh = (idx[j] >= card) & (idx[j] < card + int(world.n_new[j]))
    assert (world.shows_new_ad(world._hashes(idx)) == fresh).all()
