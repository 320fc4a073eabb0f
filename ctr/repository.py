"""A Triton model repository holding versions of the ``dcn`` model.

Layout (what Triton reads, plus what the system needs beside each version)::

    MODEL_REPO/dcn/config.pbtxt
    MODEL_REPO/dcn/<N>/model.onnx        # transform + network; Triton's onnxruntime backend loads it
    MODEL_REPO/dcn/<N>/weights.pt        # state dict, for warm starts
    MODEL_REPO/dcn/<N>/transform/        # the feature transform the version was trained with
    MODEL_REPO/dcn/<N>/reference.parquet # a sample of training rows (drift reference)
    MODEL_REPO/dcn/<N>/metadata.json     # metrics, data days, mode, parent, config, seed, code revision

A version is built in ``dcn/.staging/<id>/`` and appears with one ``rename``: a reader
polling the repository sees either no version ``N`` or all of it. Two concurrent
publishers never share a number (``rename`` onto an existing directory fails; the loser
takes the next number).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from ctr.errors import ArtifactError, InputError
from ctr.schema import N_DENSE, N_SPARSE

MODEL_NAME = "dcn"
METADATA = "metadata.json"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.pt"
TRANSFORM_DIR = "transform"
REFERENCE_FILE = "reference.parquet"
STAGING = ".staging"
CONFIG_FILE = "config.pbtxt"
GPU_CONFIG_NAME = "gpu"  # configs/gpu.pbtxt, chosen by ``tritonserver --model-config-name=gpu``
_PINNED = re.compile(r"version_policy:\s*\{\s*specific:\s*\{\s*versions:\s*\[\s*(\d+)\s*\]")
MAX_BATCH_SIZE = 4096


#: The model's tensors as ``config.pbtxt`` declares them, whichever backend serves it.
TENSORS_PBTXT = f"""input [
  {{ name: "dense", data_type: TYPE_FP32, dims: [ {N_DENSE} ] }},
  {{ name: "sparse", data_type: TYPE_INT64, dims: [ {N_SPARSE} ] }}
]
output [
  {{ name: "pctr", data_type: TYPE_FP32, dims: [ 1 ] }},
  {{ name: "model_version", data_type: TYPE_INT64, dims: [ 1 ] }}
]"""


def triton_config(
    name: str = MODEL_NAME, max_batch_size: int = MAX_BATCH_SIZE, pinned: int | None = None, device: str = "cpu"
) -> str:
    """``config.pbtxt``: raw dense FP32 [13], sparse INT64 [26] → pctr FP32 [1], model_version INT64 [1].

    Triton serves the newest version, or only version ``pinned`` after a rollback. ``device``
    ``gpu``: one instance on the GPU (the onnxruntime backend runs the graph with ONNX Runtime's
    CUDA provider; the vocabulary's ``ai.onnx.ml`` nodes fall back to its CPU provider).
    """
    policy = f"specific: {{ versions: [ {pinned} ] }}" if pinned is not None else "latest: { num_versions: 1 }"
    return f"""name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch_size}
{TENSORS_PBTXT}
version_policy: {{ {policy} }}
dynamic_batching {{
  max_queue_delay_microseconds: 500
}}
instance_group [ {{ count: 1, kind: {"KIND_GPU" if device == "gpu" else "KIND_CPU"} }} ]
"""


class ModelRepository:
    """Versions of one model in a Triton model repository rooted at ``root``."""

    def __init__(self, root: Path, name: str = MODEL_NAME) -> None:
        self.root = root
        self.name = name
        self.model_dir = root / name

    def versions(self) -> list[int]:
        """Published versions, ascending (a directory with a numeric name and metadata)."""
        if not self.model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir.iterdir() if p.name.isdigit() and (p / METADATA).is_file())

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_dir(self, version: int) -> Path:
        path = self.model_dir / str(version)
        if not (path / METADATA).is_file():
            known = ", ".join(map(str, self.versions())) or "none"
            raise InputError(f"version {version} not found in {self.model_dir} (published: {known})")
        return path

    def metadata(self, version: int) -> dict[str, Any]:
        path = self.version_dir(version) / METADATA
        try:
            meta: dict[str, Any] = json.loads(path.read_text())
            return meta
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{path} is unreadable: {exc}") from exc

    def stage(self) -> Path:
        """A fresh private directory on the repository's filesystem to build a version in."""
        path = self.model_dir / STAGING / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def publish(self, staged: Path, metadata: dict[str, Any]) -> int:
        """Atomically turn ``staged`` into the next version and serve it; returns its number.

        The ONNX graph is stamped with the number and ``metadata`` is written as
        ``metadata.json`` (with ``version`` set) before the rename. A rollback pin is lifted.
        """
        from ctr.onnx_export import stamp_version

        if not (staged / ONNX_FILE).is_file():
            raise ArtifactError(f"{staged} holds no {ONNX_FILE}; nothing to publish")
        if self.pinned() is not None:
            self._write_config(pinned=None)
        else:
            self._ensure_config()
        while True:
            version = (self.latest() or 0) + 1
            stamp_version(staged / ONNX_FILE, version)
            (staged / METADATA).write_text(json.dumps({**metadata, "version": version}, indent=2) + "\n")
            try:
                os.rename(staged, self.model_dir / str(version))
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue  # another publisher took this number
                raise
            return version

    def staged(self) -> list[Path]:
        """Candidates built but not (yet) published."""
        staging = self.model_dir / STAGING
        return sorted(staging.iterdir()) if staging.is_dir() else []

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def served(self) -> int | None:
        """The version Triton serves: the pinned one after a rollback, else the newest."""
        pinned = self.pinned()
        return pinned if pinned is not None else self.latest()

    def pinned(self) -> int | None:
        config = self.model_dir / CONFIG_FILE
        if not config.is_file():
            return None
        match = _PINNED.search(config.read_text())
        return int(match.group(1)) if match else None

    def rollback(self, version: int) -> None:
        """Serve ``version`` again (newer versions stay on disk); the next publish lifts it."""
        self.version_dir(version)
        self._write_config(pinned=version)

    def _write_config(self, pinned: int | None) -> None:
        """``config.pbtxt`` (CPU instance) and ``configs/gpu.pbtxt`` (GPU instance), each replaced
        atomically: a Triton pod started with ``--model-config-name=gpu`` reads the second."""
        gpu = self.model_dir / "configs" / f"{GPU_CONFIG_NAME}.pbtxt"
        gpu.parent.mkdir(parents=True, exist_ok=True)
        for path, device in ((gpu, "gpu"), (self.model_dir / CONFIG_FILE, "cpu")):
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            tmp.write_text(triton_config(self.name, pinned=pinned, device=device))
            os.replace(tmp, path)

    def _ensure_config(self) -> None:
        if not (self.model_dir / CONFIG_FILE).exists():
            self._write_config(pinned=None)
