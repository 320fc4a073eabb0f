"""The served version of a model repository, loaded in ONNX Runtime and swapped atomically.

``RepositoryScorer.refresh()`` looks at the repository; when the served version changed
(a publish or a rollback) it loads and warms the new graph first, then swaps one reference.
Calls in flight finish on the session they started with; a call sees exactly one version.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from ctr.errors import CtrError
from ctr.onnx_export import onnx_predict, onnx_session
from ctr.repository import ONNX_FILE, ModelRepository
from ctr.schema import N_DENSE, N_SPARSE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedVersion:
    version: int
    session: ort.InferenceSession


class NoModelError(CtrError):
    """The repository has no version to serve yet."""


class RepositoryScorer:
    """Scores raw feature arrays with the repository's served version."""

    def __init__(self, repo: ModelRepository, threads: int = 1, device: str = "cpu") -> None:
        """``device``: ``cpu``, or ``cuda`` (ONNX Runtime's CUDA provider; ``ArtifactError`` on the
        first ``refresh`` when this ONNX Runtime has none)."""
        self.repo = repo
        self.threads = threads
        self.device = device
        self._current: LoadedVersion | None = None
        self._lock = threading.Lock()  # one refresh at a time; scoring never takes it

    @property
    def version(self) -> int | None:
        current = self._current
        return current.version if current else None

    def refresh(self) -> bool:
        """Load the served version if it changed; True when a swap happened."""
        with self._lock:
            wanted = self.repo.served()
            if wanted is None or (self._current and self._current.version == wanted):
                return False
            session = onnx_session(self.repo.version_dir(wanted) / ONNX_FILE, self.threads, self.device)
            onnx_predict(session, np.zeros((1, N_DENSE), np.float32), -np.ones((1, N_SPARSE), np.int64))
            previous = self._current.version if self._current else None
            self._current = LoadedVersion(wanted, session)
            log.info("serving version %d (was %s)", wanted, previous)
            return True

    def score(self, dense: NDArray[Any], sparse: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        """(pctr (n,), version (n,)) for raw dense (n, 13) and sparse (n, 26)."""
        current = self._current
        if current is None:
            raise NoModelError(f"no published version in {self.repo.model_dir} yet")
        return onnx_predict(current.session, dense, sparse)
