"""``ctr triton``: a real tritonserver (through nvidia-pytriton) serving the ``dcn`` model.

The model is Triton's Python backend calling ONNX Runtime on the repository's served
version (``RepositoryScorer``), with Triton's dynamic batcher in front. Inputs and outputs
match ``config.pbtxt``, so clients are the same as for the official Triton image reading the
same repository with its onnxruntime backend (Kubernetes). A poller thread picks up newly
published versions within ``poll_seconds``; each response carries ``model_version``.

pytriton's Python-backend stub links ``libpython3.11``; it must be this interpreter's (a
pyenv or venv build differs from the system one), so its ``LIBDIR`` goes first on
``LD_LIBRARY_PATH`` before tritonserver starts.
"""

from __future__ import annotations

import logging
import os
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctr.repository import MAX_BATCH_SIZE, MODEL_NAME, ModelRepository
from ctr.schema import N_DENSE, N_SPARSE
from ctr.serving.scorer import RepositoryScorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonSettings:
    repo: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    poll_seconds: float = 5.0
    max_queue_delay_us: int = 500
    instances: int = 1


def use_this_interpreters_libpython() -> None:
    """Put the running interpreter's LIBDIR first on LD_LIBRARY_PATH (for the backend stub)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir:
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def _poll(scorer: RepositoryScorer, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            scorer.refresh()
        except Exception:  # a broken new version must not stop serving the current one
            log.exception("could not load the served version; still serving %s", scorer.version)


def serve(settings: TritonSettings) -> None:
    """Start tritonserver and block until it stops (Ctrl-C or SIGTERM)."""
    use_this_interpreters_libpython()
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    scorer = RepositoryScorer(ModelRepository(settings.repo))
    scorer.refresh()

    @batch
    def infer(dense: np.ndarray, sparse: np.ndarray) -> dict[str, np.ndarray]:
        pctr, version = scorer.score(dense, sparse)
        return {"pctr": pctr.reshape(-1, 1), "model_version": version.reshape(-1, 1)}

    config = TritonConfig(
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        metrics_port=settings.metrics_port,
        allow_metrics=True,
        allow_gpu_metrics=False,
        exit_on_error=True,
        log_verbose=0,
    )
    stop = threading.Event()
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=[infer] * settings.instances,
            inputs=[
                Tensor(name="dense", dtype=np.float32, shape=(N_DENSE,)),
                Tensor(name="sparse", dtype=np.int64, shape=(N_SPARSE,)),
            ],
            outputs=[
                Tensor(name="pctr", dtype=np.float32, shape=(1,)),
                Tensor(name="model_version", dtype=np.int64, shape=(1,)),
            ],
            config=ModelConfig(
                max_batch_size=MAX_BATCH_SIZE,
                batcher=DynamicBatcher(max_queue_delay_microseconds=settings.max_queue_delay_us),
            ),
            strict=True,
        )
        poller = threading.Thread(target=_poll, args=(scorer, settings.poll_seconds, stop), daemon=True)
        poller.start()
        log.info(
            "tritonserver up: grpc :%d, http :%d, metrics :%d, serving version %s",
            settings.grpc_port,
            settings.http_port,
            settings.metrics_port,
            scorer.version,
        )
        try:
            triton.serve()
        finally:
            stop.set()
