"""The score API's Triton client: KServe v2 over gRPC, a deadline on every call.

``score(dense (n, 13) float, sparse (n, 26) int64) → (pCTR (n,) float32, model version)``;
``TritonUnavailable`` when Triton does not answer within the deadline (the API answers 503).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctr.errors import first_line
from ctr.repository import MODEL_NAME


class TritonUnavailable(Exception):
    """Triton could not answer within the deadline."""


class TritonScorer:
    """KServe v2 gRPC client for the dcn model, with a deadline on every call."""

    def __init__(self, url: str, deadline_s: float) -> None:
        import tritonclient.grpc.aio as grpcclient

        self._mod = grpcclient
        self.url = url
        self.deadline_s = deadline_s
        self.client = grpcclient.InferenceServerClient(url)

    async def score(self, dense: NDArray[Any], sparse: NDArray[Any]) -> tuple[NDArray[Any], int]:
        from tritonclient.utils import InferenceServerException

        g = self._mod
        inputs = [g.InferInput("dense", list(dense.shape), "FP32"), g.InferInput("sparse", list(sparse.shape), "INT64")]
        inputs[0].set_data_from_numpy(dense.astype(np.float32))
        inputs[1].set_data_from_numpy(sparse)
        outputs = [g.InferRequestedOutput("pctr"), g.InferRequestedOutput("model_version")]
        try:
            result = await self.client.infer(MODEL_NAME, inputs, outputs=outputs, client_timeout=self.deadline_s)
        except InferenceServerException as exc:
            raise TritonUnavailable(first_line(exc)) from exc
        versions = result.as_numpy("model_version").reshape(-1)
        return result.as_numpy("pctr").reshape(-1), int(versions[0])

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_model_ready(MODEL_NAME, client_timeout=1.0))
        except Exception:  # any transport error means "not ready"
            return False

    async def close(self) -> None:
        await self.client.close()
