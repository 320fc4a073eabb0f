"""DCN / DCN-v2 modules: shapes, gradients, embedding growth, ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest
import torch

from ctr.errors import ArtifactError, InputError
from ctr.features import FeatureTransform
from ctr.model import DCN, BitMaskDropout, MatrixCrossNet, ModelConfig, VectorCrossNet, _CpuEmbeddingLookup
from ctr.onnx_export import export_serving_onnx, onnx_predict, onnx_session, stamp_version
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


def test_vector_cross_closed_form_equals_the_layered_network() -> None:
    """Six layers with non-zero biases: outputs and every gradient as layer-by-layer DCN."""
    torch.manual_seed(0)
    net = VectorCrossNet(29, 6).double()
    with torch.no_grad():
        for b in net.biases:
            b.normal_(0, 0.5)
    x0 = torch.randn(64, 29, dtype=torch.float64, requires_grad=True)

    def layered(x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(net.weights, net.biases, strict=True):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return x

    ours, reference = net(x0), layered(x0)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(reference)
    wrt = [x0, *net.parameters()]
    for g_ours, g_ref in zip(
        torch.autograd.grad(ours, wrt, upstream), torch.autograd.grad(reference, wrt, upstream), strict=True
    ):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-10)
    assert VectorCrossNet(29, 0)(x0) is x0


def test_dropout_keeps_the_share_scales_and_is_seeded() -> None:
    drop = BitMaskDropout(0.3)
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(5)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.003  # 1e6 draws: σ ≈ 0.0005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.7)  # gradient flows through kept cells only
    torch.manual_seed(5)
    assert torch.equal(drop(x), y)
    assert not torch.equal(drop(x), y)  # the generator moved on
    drop.eval()
    assert drop(x) is x
    with pytest.raises(InputError, match="dropout"):
        BitMaskDropout(1.0)


def test_cpu_embedding_gradient_equals_pytorchs() -> None:
    """The training-mode lookup (index_add_ backward) against nn.Embedding's own backward."""
    model = DCN(CONFIGS["dcn"], SIZES)
    _, sparse = inputs(256)
    sparse[:, 1] = 7  # many repeats of one row
    weight = model.embedding.weight
    upstream = torch.randn(256, 26, 16)
    rows = sparse + model.offsets
    (ours,) = torch.autograd.grad(_CpuEmbeddingLookup.apply(weight, rows), weight, upstream)
    (theirs,) = torch.autograd.grad(torch.nn.functional.embedding(rows, weight), weight, upstream)
    torch.testing.assert_close(ours, theirs)


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


def test_grown_rows_starting_from_the_oov_row_keep_every_score() -> None:
    """Values the parent scored through a feature's OOV row (id 1) get rows that start there:
    the grown model scores them, and everything else, exactly as the parent did."""
    model = DCN(CONFIGS["dcn"], SIZES)
    model.eval()
    dense, sparse = inputs(16)
    as_oov = sparse.clone()
    as_oov[:, 3] = 1
    parent = model(dense, as_oov)
    bigger = [s + (5 if j == 3 else 0) for j, s in enumerate(SIZES)]
    model.grow(bigger, start_from=1)
    as_new = sparse.clone()
    as_new[:, 3] = SIZES[3] + torch.arange(16) % 5  # the new ids of those values
    torch.testing.assert_close(model(dense, as_new), parent)
    model.grow([s + 1 for s in bigger])  # fresh rows: no longer the OOV row's score
    as_fresh = sparse.clone()
    as_fresh[:, 3] = bigger[3]
    assert not torch.allclose(model(dense, as_fresh), parent)


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
