"""DCN / DCN-v2 modules: shapes, gradients, embedding growth, ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest
import torch

from ctr.errors import ArtifactError, InputError
from ctr.export import export_serving_onnx, onnx_predict, onnx_session, stamp_version
from ctr.features import FeatureTransform
from ctr.model import DCN, MatrixCrossNet, ModelConfig, VectorCrossNet
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS

SIZES = [3, 50, 7, 1000, *[11] * 22]
CONFIGS = {
    "dcn": ModelConfig(mlp=(64, 32)),
    "dcn_v2_stacked": ModelConfig(cross_type="matrix", cross_layers=2, structure="stacked", mlp=(32,)),
    "dcn_v2_low_rank": ModelConfig(cross_type="matrix", cross_layers=2, low_rank=8, mlp=(32,)),
}


def inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(batch, 13, generator=g)
    sparse = torch.stack([torch.randint(0, s, (batch,), generator=g) for s in SIZES], dim=1)
    return dense, sparse


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_backward_shapes(name: str) -> None:
    model = DCN(CONFIGS[name], SIZES)
    dense, sparse = inputs(32)
    logits = model(dense, sparse)
    assert logits.shape == (32, 1)
    logits.sum().backward()
    assert model.embedding.weight.grad is not None
    assert model.embedding.weight.grad.shape == (sum(SIZES), 16)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_cross_layers_follow_their_formulas() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(4, 6)
    v = VectorCrossNet(6, 1)
    w, b = v.weights[0], v.biases[0]
    torch.testing.assert_close(v(x0), x0 * (x0 @ w).unsqueeze(1) + b + x0)
    m = MatrixCrossNet(6, 1, None)
    lin = m.maps[0]
    torch.testing.assert_close(m(x0), x0 * lin(x0) + x0)


def test_grow_keeps_known_rows_and_adds_trainable_ones() -> None:
    model = DCN(CONFIGS["dcn"], SIZES)
    dense, sparse = inputs(16)
    model.eval()
    before = model(dense, sparse)
    bigger = [s + (5 if j in (1, 3) else 0) for j, s in enumerate(SIZES)]
    model.grow(bigger)
    assert model.embedding.weight.shape[0] == sum(bigger)
    torch.testing.assert_close(model(dense, sparse), before)  # old ids score the same
    new_id = torch.zeros(1, 26, dtype=torch.long)
    new_id[0, 3] = SIZES[3] + 2  # a row that did not exist before
    model.train()
    model(torch.zeros(1, 13), new_id).sum().backward()
    row = model.offsets[3] + SIZES[3] + 2
    assert model.embedding.weight.grad[row].abs().sum() > 0
    with pytest.raises(InputError, match="cannot shrink"):
        model.grow([SIZES[0], 1, *SIZES[2:]])


def test_bad_configs_are_refused() -> None:
    with pytest.raises(InputError, match="low_rank"):
        ModelConfig(low_rank=4)
    with pytest.raises(InputError, match="26 positive"):
        DCN(ModelConfig(), [5] * 25)


def raw_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw values as a request carries them: counts with NaN, hashes with -1, some unseen."""
    rng = np.random.default_rng(seed)
    dense = rng.integers(-3, 5000, (n, 13)).astype(np.float64)
    dense[rng.random((n, 13)) < 0.2] = np.nan
    sparse = rng.integers(0, 40, (n, 26)) * 1_000_003 % (2**32)
    sparse[rng.random((n, 26)) < 0.1] = -1
    return dense, sparse


def fitted_transform() -> FeatureTransform:
    dense, sparse = raw_rows(3000, seed=0)
    frame = {c: pl.Series(dense[:, i]).fill_nan(None).cast(pl.Int64) for i, c in enumerate(DENSE_COLUMNS)}
    frame |= {c: pl.Series(sparse[:, j]).replace(-1, None) for j, c in enumerate(SPARSE_COLUMNS)}
    return FeatureTransform.fit(pl.LazyFrame(frame), min_count=2)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_served_onnx_matches_transform_plus_pytorch(name: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    transform = fitted_transform()
    model = DCN(CONFIGS[name], transform.sizes.tolist()).eval()
    path = tmp_path / "model.onnx"
    export_serving_onnx(model, transform, path)
    stamp_version(path, 42)
    session = onnx_session(path)
    for batch in (1, 7, 300):  # dynamic batch axis
        dense, sparse = raw_rows(batch, seed=batch)
        x, ids = transform.transform(dense, sparse)
        with torch.no_grad():
            expected = torch.sigmoid(model(torch.from_numpy(x), torch.from_numpy(ids))).squeeze(1).numpy()
        pctr, version = onnx_predict(session, dense, sparse)
        np.testing.assert_allclose(pctr, expected, atol=1e-5, rtol=0)
        assert version.tolist() == [42] * batch


def test_int8_export_keeps_the_ranking_and_the_version(tmp_path: Path) -> None:
    """int8 weights trade exactness for speed; the ranking of ads must survive it."""
    torch.manual_seed(3)
    transform = fitted_transform()
    model = DCN(ModelConfig(mlp=(256, 256)), transform.sizes.tolist()).eval()
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_serving_onnx(model, transform, fp32)
    export_serving_onnx(model, transform, int8, precision="int8")
    stamp_version(int8, 7)
    quantized = onnx.load(str(int8))
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in quantized.graph.node)
    dense, sparse = raw_rows(2000, seed=5)
    exact, _ = onnx_predict(onnx_session(fp32), dense, sparse)
    approx, version = onnx_predict(onnx_session(int8), dense, sparse)
    assert version.tolist() == [7] * 2000
    assert np.abs(approx - exact).max() < 0.02
    rank_exact, rank_approx = np.argsort(np.argsort(exact)), np.argsort(np.argsort(approx))
    assert np.corrcoef(rank_exact, rank_approx)[0, 1] > 0.99  # Spearman correlation


def test_unknown_serving_precision_is_refused(tmp_path: Path) -> None:
    transform = fitted_transform()
    model = DCN(ModelConfig(mlp=(8,)), transform.sizes.tolist()).eval()
    with pytest.raises(ArtifactError, match="unknown serving precision"):
        export_serving_onnx(model, transform, tmp_path / "m.onnx", precision="fp16")
