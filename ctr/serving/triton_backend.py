"""The ``dcn`` model as a Triton Python-backend model (copied to ``<models>/dcn/1/model.py``).

It runs inside Triton's Python-backend stub process: ONNX Runtime scores the served version
of the ctr model repository (``RepositoryScorer``) right there, with no further hop. The
dynamic batcher hands ``execute`` several requests at once; they are scored in one ONNX
Runtime call, so a batch never mixes versions, and split back per request. A poller thread
picks up newly published versions (or a rollback) every ``ctr_poll_seconds``.

Parameters (``config.pbtxt``): ``ctr_repository`` (path of the ctr model repository),
``ctr_poll_seconds``, ``ctr_threads`` (ONNX Runtime intra-op threads). A ``KIND_GPU`` instance
scores through ONNX Runtime's CUDA provider (as the official image's onnxruntime backend does for
a GPU instance) and fails to load when this ONNX Runtime has none; a ``KIND_CPU`` one on the CPU.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

# The stub embeds an isolated interpreter: it finds its prefix's site-packages but ignores
# PYTHONPATH, which the server's environment may need (packages installed with --target).
for _entry in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    if _entry and _entry not in sys.path:
        sys.path.insert(0, _entry)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402  (only inside Triton's Python-backend stub)

from ctr.repository import ModelRepository  # noqa: E402
from ctr.serving.scorer import RepositoryScorer  # noqa: E402

log = logging.getLogger("ctr.triton")


class TritonPythonModel:
    """Triton's Python-backend interface: ``initialize``, ``execute``, ``finalize``."""

    def initialize(self, args: dict[str, Any]) -> None:
        parameters = json.loads(args["model_config"])["parameters"]
        repository = Path(parameters["ctr_repository"]["string_value"])
        every = float(parameters["ctr_poll_seconds"]["string_value"])
        threads = int(parameters["ctr_threads"]["string_value"])
        device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        self.scorer = RepositoryScorer(ModelRepository(repository), threads=threads, device=device)
        self.scorer.refresh()
        self.stop = threading.Event()
        self.poller = threading.Thread(target=self._poll, args=(every,), daemon=True)
        self.poller.start()

    def _poll(self, every: float) -> None:
        while not self.stop.wait(every):
            try:
                self.scorer.refresh()
            except Exception:  # a broken new version must not stop serving the current one
                log.exception("could not load the served version; still serving %s", self.scorer.version)

    def execute(self, requests: list[Any]) -> list[Any]:
        dense = [pb_utils.get_input_tensor_by_name(r, "dense").as_numpy() for r in requests]
        sparse = [pb_utils.get_input_tensor_by_name(r, "sparse").as_numpy() for r in requests]
        try:
            pctr, version = self.scorer.score(np.concatenate(dense), np.concatenate(sparse))
        except Exception as exc:  # no version yet, or ONNX Runtime failed: every request gets the error
            error = pb_utils.TritonError(str(exc))
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for part in dense:
            end = start + part.shape[0]
            outputs = [
                pb_utils.Tensor("pctr", pctr[start:end].reshape(-1, 1)),
                pb_utils.Tensor("model_version", version[start:end].reshape(-1, 1)),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            start = end
        return responses

    def finalize(self) -> None:
        self.stop.set()
