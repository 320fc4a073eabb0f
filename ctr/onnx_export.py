"""Export a trained model and its feature transform as one ONNX graph for Triton.

The served graph takes **raw** feature values, so the transform a version was trained with
travels inside it and train/serve skew cannot happen, whichever Triton serves it:

* inputs ``dense`` FP32 ``[-1, 13]`` (raw counts, NaN where missing) and ``sparse`` INT64
  ``[-1, 26]`` (raw 32-bit hashes, -1 where missing);
* the transform as ONNX ops: ``Where(IsNaN) → Max(0) → Log(1+x) → (x-mean)/std`` for the
  integers, and an ``ai.onnx.ml.LabelEncoder`` over keys ``(feature << 32) | hash`` for the
  categoricals (missing → 0, unknown → 1, as ``FeatureTransform``);
* outputs ``pctr`` FP32 ``[-1, 1]`` and ``model_version`` INT64 ``[-1, 1]`` (the version
  number, stamped at publish time), so every response says which version scored it.

``precision="int8"`` quantises the weights of every MatMul/Gemm to int8 (ONNX Runtime's dynamic
quantisation: activations are quantised per call), 0.5-0.8× the CPU scoring time of fp32
depending on the CPU; its outputs then differ from fp32's by a few thousandths of pCTR
(``tests/unit/test_model.py`` bounds the change and the ranking). Weights use 7 of the 8 bits
(``reduce_range``): CPUs without VNNI multiply uint8 × int8 with 16-bit saturation, and with full
range the ranking of an untrained DCN fell to a Spearman correlation of 0.81 on such a CPU
(0.998 with 7 bits). The graph must be right on whatever node serves it. ``fp32`` matches
PyTorch within 1e-5.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, compose, helper, numpy_helper

from ctr.errors import ArtifactError
from ctr.features import MISSING_ID, OOV_ID, FeatureTransform
from ctr.schema import N_DENSE, N_SPARSE

if TYPE_CHECKING:  # torch is imported where a model is exported: stamping and scoring need only ONNX
    from ctr.model import DCN

OPSET = 18
SERVING_PRECISIONS = ("fp32", "int8")
ML_OPSET = 3
VERSION_INITIALIZER = "model_version_value"
#: ONNX protobufs cannot exceed 2 GB; above this the weights go to an external data file.
EXTERNAL_DATA_BYTES = 1_500_000_000


def _export_model(model: DCN, path: Path) -> None:
    """The network alone: transformed inputs ``x_dense``/``x_ids`` → ``pctr``."""
    import torch

    from ctr.model import ProbabilityHead

    head = ProbabilityHead(model).to("cpu").eval()
    dense = torch.zeros(2, N_DENSE)
    sparse = torch.zeros(2, N_SPARSE, dtype=torch.long)
    quiet = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                head,
                (dense, sparse),
                str(path),
                input_names=["x_dense", "x_ids"],
                output_names=["pctr"],
                dynamic_axes={"x_dense": {0: "batch"}, "x_ids": {0: "batch"}, "pctr": {0: "batch"}},
                opset_version=OPSET,
                # The TorchScript exporter: ~0.1 s where the dynamo exporter's first call takes ~3 s
                # (a fixed cost of every training run and pipeline step); same graph, parity tested.
                # It is deprecated in torch 2.9+, hence torch < 2.14 in pyproject.toml.
                dynamo=False,
                verbose=False,
            )
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


def _transform_graph(transform: FeatureTransform, ir_version: int) -> onnx.ModelProto:
    """Raw ``dense``/``sparse`` → ``x_dense`` (FP32) and ``x_ids`` (INT64), as FeatureTransform."""
    c = numpy_helper.from_array
    inits = [
        c(np.array(0.0, np.float32), "zero_f"),
        c(np.array(1.0, np.float32), "one_f"),
        c(transform.dense_mean.astype(np.float32), "dense_mean"),
        c(transform.dense_std.astype(np.float32), "dense_std"),
        c(np.arange(N_SPARSE, dtype=np.int64) << 32, "feature_shift"),
        c(np.array(0, np.int64), "zero_i"),
        c(np.array(MISSING_ID, np.int64), "missing_id"),
    ]
    nodes = [
        helper.make_node("IsNaN", ["dense"], ["d_nan"]),
        helper.make_node("Where", ["d_nan", "zero_f", "dense"], ["d_filled"]),
        helper.make_node("Max", ["d_filled", "zero_f"], ["d_clipped"]),
        helper.make_node("Add", ["d_clipped", "one_f"], ["d_plus1"]),
        helper.make_node("Log", ["d_plus1"], ["d_log"]),
        helper.make_node("Sub", ["d_log", "dense_mean"], ["d_centered"]),
        helper.make_node("Div", ["d_centered", "dense_std"], ["x_dense"]),
        helper.make_node("Add", ["sparse", "feature_shift"], ["s_keys"]),
        helper.make_node(
            "LabelEncoder",
            ["s_keys"],
            ["s_encoded"],
            domain="ai.onnx.ml",
            keys_int64s=transform.keys.tolist(),
            values_int64s=transform.ids.tolist(),
            default_int64=OOV_ID,
        ),
        helper.make_node("Less", ["sparse", "zero_i"], ["s_missing"]),
        helper.make_node("Where", ["s_missing", "missing_id", "s_encoded"], ["x_ids"]),
    ]
    graph = helper.make_graph(
        nodes,
        "feature_transform",
        [
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", N_DENSE]),
            helper.make_tensor_value_info("sparse", TensorProto.INT64, ["batch", N_SPARSE]),
        ],
        [
            helper.make_tensor_value_info("x_dense", TensorProto.FLOAT, ["batch", N_DENSE]),
            helper.make_tensor_value_info("x_ids", TensorProto.INT64, ["batch", N_SPARSE]),
        ],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def _add_version_output(model: onnx.ModelProto, version: int) -> None:
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([[version]], np.int64), VERSION_INITIALIZER))
    graph.node.extend(
        [
            helper.make_node("Shape", ["pctr"], ["pctr_shape"]),
            helper.make_node("Expand", [VERSION_INITIALIZER, "pctr_shape"], ["model_version"]),
        ]
    )
    graph.output.append(helper.make_tensor_value_info("model_version", TensorProto.INT64, ["batch", 1]))


def _one_opset_per_domain(model: onnx.ModelProto) -> None:
    """``compose.merge_models`` repeats opset imports; keep the highest version of each domain."""
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in versions.items())


def _quantize_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger()  # the quantiser logs a pre-processing hint on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(model, str(src))
            quantize_dynamic(
                src, out, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8, reduce_range=True
            )
            return onnx.load(str(out))
    finally:
        quiet.setLevel(level)


def export_serving_onnx(
    model: DCN, transform: FeatureTransform, path: Path, version: int = 0, precision: str = "fp32"
) -> None:
    """Write the served graph (transform + network + version output) to ``path``.

    ``precision``: ``fp32`` or ``int8`` (see the module docstring).
    """
    if precision not in SERVING_PRECISIONS:
        raise ArtifactError(f"unknown serving precision {precision!r}: use one of {SERVING_PRECISIONS}")
    with tempfile.TemporaryDirectory() as tmp:
        core_path = Path(tmp) / "core.onnx"
        _export_model(model, core_path)
        core = onnx.load(str(core_path))
    ml = [o for o in core.opset_import if o.domain == "ai.onnx.ml"]
    if not ml:
        core.opset_import.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    prefix = _transform_graph(transform, core.ir_version)
    merged = compose.merge_models(prefix, core, io_map=[("x_dense", "x_dense"), ("x_ids", "x_ids")])
    _one_opset_per_domain(merged)
    _add_version_output(merged, version)
    if precision == "int8":
        merged = _quantize_int8(merged)
    onnx.checker.check_model(merged)
    n_bytes = merged.ByteSize()
    onnx.save(merged, str(path), save_as_external_data=n_bytes > EXTERNAL_DATA_BYTES)


def stamp_version(path: Path, version: int) -> None:
    """Set the constant behind the ``model_version`` output (done when a version is published)."""
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == VERSION_INITIALIZER:
            init.CopyFrom(numpy_helper.from_array(np.array([[version]], np.int64), VERSION_INITIALIZER))
            break
    else:
        raise ArtifactError(f"{path} has no {VERSION_INITIALIZER}; it was not written by ctr")
    tmp = path.with_name(path.name + ".stamp")
    onnx.save(model, str(tmp))
    tmp.replace(path)


def onnx_session(path: Path, threads: int = 1, device: str = "cpu") -> ort.InferenceSession:
    """An ONNX Runtime session on ``path``; ``ArtifactError`` if the file is corrupt.

    ``device`` ``cpu``: the CPU provider with ``threads`` intra-op threads. ``cuda``: ONNX
    Runtime's CUDA provider first (as Triton's onnxruntime backend runs a ``KIND_GPU``
    instance); nodes it has no kernel for (the ``ai.onnx.ml`` vocabulary lookups) run on the CPU
    provider. ``ArtifactError`` too when this ONNX Runtime has no CUDA provider (the CPU-only
    ``onnxruntime`` wheel) or it could not start (no GPU, CUDA libraries missing): never a
    silent fallback to the CPU.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if device not in ("cpu", "cuda"):
        raise ArtifactError(f"ONNX Runtime device must be cpu or cuda, got {device!r}")
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ArtifactError(f"this ONNX Runtime ({ort.__version__}) has no CUDA provider; install onnxruntime-gpu")
        if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the nvidia-* wheels, where installed
            ort.preload_dlls()
        providers = ["CUDAExecutionProvider", *providers]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ArtifactError(f"cannot load ONNX model {path}: {exc}") from exc
    if session.get_providers()[0] != providers[0]:
        raise ArtifactError(f"ONNX Runtime could not start {providers[0]} for {path} (got {session.get_providers()})")
    return session


def onnx_predict(
    session: ort.InferenceSession, dense: NDArray[Any], sparse: NDArray[Any]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """(pCTR ``(n,)`` float32, model version ``(n,)`` int64) from raw feature arrays."""
    pctr, version = session.run(
        ["pctr", "model_version"], {"dense": dense.astype(np.float32), "sparse": sparse.astype(np.int64)}
    )
    # ORT hands back C ``long long`` for INT64, a distinct numpy type from ``np.int64`` on Linux
    return pctr.reshape(-1).astype(np.float32, copy=False), version.reshape(-1).astype(np.int64)


SCORE_CHUNK = 65_536  # rows per ONNX Runtime call when scoring many rows


def onnx_score(session: ort.InferenceSession, dense: NDArray[Any], sparse: NDArray[Any]) -> NDArray[Any]:
    """pCTR ``(n,)`` float32 of any number of rows, ``SCORE_CHUNK`` rows per ONNX Runtime call."""
    parts = [
        onnx_predict(session, dense[i : i + SCORE_CHUNK], sparse[i : i + SCORE_CHUNK])[0]
        for i in range(0, len(dense), SCORE_CHUNK)
    ]
    return np.concatenate(parts) if parts else np.empty(0, np.float32)
