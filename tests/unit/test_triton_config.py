"""The Python-backend model's Triton config: the instance kind is one setting, nothing else moves."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ctr.errors import InputError
from ctr.serving.triton import TritonSettings, _backends, _pytriton_dist, _pytriton_libs, backend_config


def test_gpu_kind_changes_only_the_instance_group(tmp_path: Path) -> None:
    cpu = backend_config(TritonSettings(tmp_path, instances=2))
    gpu = backend_config(TritonSettings(tmp_path, instances=2, kind="gpu"))
    assert "instance_group [ { count: 2, kind: KIND_CPU } ]" in cpu
    assert cpu.replace("KIND_CPU", "KIND_GPU") == gpu


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cpu or gpu"):
        TritonSettings(tmp_path, kind="tpu")


def test_the_server_and_stub_are_found_without_importing_pytriton(tmp_path: Path) -> None:
    """A ``pip install --target`` puts ``nvidia_pytriton.libs`` beside the package, where a
    site-packages check (pytriton's own) does not look; the paths come from the package location."""
    sys.modules.pop("pytriton", None)
    dist = _pytriton_dist()
    assert (dist / "bin" / "tritonserver").is_file()
    assert any(_pytriton_libs().glob("libtritonserver*.so*"))
    backends = _backends(dist, tmp_path / "backends")
    stub = (backends / "python" / "triton_python_backend_stub").resolve()
    assert stub.is_file() and os.access(stub, os.X_OK)
    assert (backends / "python" / "libtriton_python.so").resolve().is_file()
    assert "pytriton" not in sys.modules
