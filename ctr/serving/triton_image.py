"""The Triton image the cluster serves with, and the ONNX Runtime version inside it: pinned together.

``k8s/base/triton.yaml`` runs ``TRITON_IMAGE`` (a test keeps the manifest equal to it); the image's
onnxruntime backend is built against ONNX Runtime ``TRITON_ORT_VERSION`` (NVIDIA's build of the
24.09 release sets ``TRITON_BUILD_ONNXRUNTIME_VERSION=1.19.2``). Every served ``model.onnx`` — fp32
and int8 — is loaded and run in that ONNX Runtime version in a side environment by
``tests/integration/test_training.py``, since locally the graphs run in this venv's newer one.
Change both together, and the test proves the pair.
"""

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.09-py3"
TRITON_ORT_VERSION = "1.19.2"
