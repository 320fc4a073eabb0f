"""Export a trained model to ONNX for Triton's onnxruntime backend, and check parity.

Graph inputs ``dense`` FP32 ``[-1, 13]`` and ``sparse`` INT64 ``[-1, 26]``; output ``pctr``
FP32 ``[-1, 1]`` — the names ``config.pbtxt`` declares.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ctr.errors import ArtifactError
from ctr.model import DCN, ProbabilityHead
from ctr.schema import N_DENSE, N_SPARSE

log = logging.getLogger(__name__)
OPSET = 18
#: ONNX protobufs cannot exceed 2 GB; above this the weights go to an external data file.
EXTERNAL_DATA_BYTES = 1_500_000_000


def export_onnx(model: DCN, path: Path) -> None:
    """Write ``model`` (moved to CPU, eval mode) as an ONNX graph with a dynamic batch axis."""
    head = ProbabilityHead(model).to("cpu").eval()
    dense = torch.zeros(2, N_DENSE)
    sparse = torch.zeros(2, N_SPARSE, dtype=torch.long)
    batch = torch.export.Dim("batch", min=1)
    n_bytes = sum(p.numel() * p.element_size() for p in head.parameters())
    quiet = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head,
            (dense, sparse),
            str(path),
            input_names=["dense", "sparse"],
            output_names=["pctr"],
            dynamic_shapes={"dense": {0: batch}, "sparse": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            external_data=n_bytes > EXTERNAL_DATA_BYTES,
            verbose=False,
        )
    for q, level in zip(quiet, levels, strict=True):
        q.setLevel(level)


def onnx_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session on ``path``; ``ArtifactError`` if the file is corrupt."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ArtifactError(f"cannot load ONNX model {path}: {exc}") from exc


def onnx_predict(session: ort.InferenceSession, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
    """pCTR ``(n,)`` from an ONNX Runtime session."""
    out = session.run(["pctr"], {"dense": dense.astype(np.float32), "sparse": sparse.astype(np.int64)})
    return out[0].reshape(-1)
