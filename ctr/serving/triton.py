"""``ctr triton``: a real tritonserver serving the ``dcn`` model of a ctr model repository.

The tritonserver binary and its Python-backend stub come from ``nvidia-pytriton``'s
distribution, run in place; a temporary directory holds the backend directory (links) and the
model store (``dcn/config.pbtxt``, ``dcn/1/model.py``), removed when the server stops. The
``dcn`` model is a Triton Python-backend model (``triton_backend.py``) that runs ONNX Runtime
on the repository's served version inside the stub process, with Triton's dynamic batcher in
front. Inputs and outputs match the repository's ``config.pbtxt``, so clients are the same as
for the official Triton image reading the same repository with its onnxruntime backend
(Kubernetes). Newly published versions are picked up within ``poll_seconds``; each response
carries ``model_version``. The HTTP, gRPC and metrics endpoints bind ``address``, 127.0.0.1
unless asked otherwise: they have no authentication (clients belong behind the score API) and
``/v2/models/dcn/config`` shows the repository path.

The Python-backend stub links ``libpython3.11``; it must be this interpreter's (a pyenv or
venv build differs from the system one), so its ``LIBDIR`` goes first on ``LD_LIBRARY_PATH``,
and this environment's ``bin`` first on ``PATH`` so that the stub's interpreter finds this
environment's packages (numpy, onnxruntime, ctr).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import FrameType

from ctr.errors import CtrError, InputError
from ctr.repository import MAX_BATCH_SIZE, MODEL_NAME, TENSORS_PBTXT


def _pytriton_root() -> Path:
    """The installed ``pytriton`` package directory, found without importing it (its ``__init__``
    pulls in its client stack: gevent, zmq, opentelemetry, none of which the server needs)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("ctr triton needs the tritonserver build of nvidia-pytriton: pip install 'ctr-loop[triton]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _pytriton_dist() -> Path:
    """The tritonserver build inside the nvidia-pytriton package (binary, backends, caches)."""
    return _pytriton_root() / "tritonserver"


def _pytriton_libs() -> Path:
    """The shared libraries tritonserver links: ``nvidia_pytriton.libs`` beside the package (a wheel
    install, ``--target`` installs too), else ``tritonserver/external_libs`` (a source checkout)."""
    root = _pytriton_root()
    wheel_libs = root.parent / "nvidia_pytriton.libs"
    return wheel_libs if wheel_libs.is_dir() else root / "tritonserver" / "external_libs"


class TritonFailed(CtrError):
    """tritonserver could not start or stopped with an error."""


@dataclass(frozen=True)
class TritonSettings:
    repo: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    poll_seconds: float = 5.0
    max_queue_delay_us: int = 200
    instances: int = 1
    threads_per_instance: int = 1
    address: str = "127.0.0.1"
    """Where the HTTP, gRPC and metrics endpoints bind: loopback unless asked (they have no auth)."""
    kind: str = "cpu"
    """``cpu`` (``KIND_CPU``) or ``gpu`` (``KIND_GPU``: ``instances`` per GPU, ONNX Runtime's CUDA provider)."""

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise InputError(f"Triton instance kind must be cpu or gpu, got {self.kind!r}")


def backend_config(settings: TritonSettings) -> str:
    """``config.pbtxt`` of the Python-backend ``dcn`` model (same tensors as the repository's)."""
    return f"""name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
{TENSORS_PBTXT}
dynamic_batching {{
  max_queue_delay_microseconds: {settings.max_queue_delay_us}
}}
instance_group [ {{ count: {settings.instances}, kind: KIND_{settings.kind.upper()} }} ]
parameters [
  {{ key: "ctr_repository", value: {{ string_value: "{settings.repo.resolve()}" }} }},
  {{ key: "ctr_poll_seconds", value: {{ string_value: "{settings.poll_seconds}" }} }},
  {{ key: "ctr_threads", value: {{ string_value: "{settings.threads_per_instance}" }} }}
]
"""


def _backends(dist: Path, target: Path) -> Path:
    """A backend directory for tritonserver: pytriton's Python backend, links to its files, plus the
    backend stub built for this interpreter's version (pytriton ships one per Python version)."""
    python_backend = target / "python"
    python_backend.mkdir(parents=True)
    for shipped in (dist / "backends" / "python").glob("*.*"):
        (python_backend / shipped.name).symlink_to(shipped)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise InputError(f"nvidia-pytriton ships no Python-backend stub for Python {version} ({stub})")
    (python_backend / "triton_python_backend_stub").symlink_to(stub)
    return target


def _model_store(target: Path, settings: TritonSettings) -> Path:
    version_dir = target / MODEL_NAME / "1"
    version_dir.mkdir(parents=True)
    (target / MODEL_NAME / "config.pbtxt").write_text(backend_config(settings))
    shutil.copy(Path(str(resources.files("ctr.serving") / "triton_backend.py")), version_dir / "model.py")
    return target


def server_environment() -> dict[str, str]:
    """This interpreter's libpython and packages for the stub; pytriton's libraries for the server."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    libs = [p for p in (libdir, str(_pytriton_libs())) if p]
    env["LD_LIBRARY_PATH"] = ":".join([*libs, *[p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]])
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def _shm_prefix(pid: int) -> str:
    return f"ctr_{pid}_"


def _tmp_prefix(pid: int) -> str:
    return f"ctr-triton-{pid}-"


def remove_leftovers(pid: int) -> None:
    """Remove what the ``ctr triton`` process ``pid`` leaves when killed (a clean stop removes both
    itself): the Python backend's shared-memory regions and the temporary model store."""
    for region in Path("/dev/shm").glob(f"{_shm_prefix(pid)}*"):
        region.unlink(missing_ok=True)
    for store in Path(tempfile.gettempdir()).glob(f"{_tmp_prefix(pid)}*"):
        shutil.rmtree(store, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: SIGTERM when ``ctr triton`` dies, so tritonserver never outlives it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve(settings: TritonSettings) -> None:
    """Run tritonserver until it stops; SIGINT/SIGTERM stop it cleanly.

    ``InputError`` if the repository is missing, ``TritonFailed`` if tritonserver exits with an error
    (a port in use, a broken model store). A repository without versions is served: requests then
    fail with "no published version" until one is published.
    """
    if not settings.repo.is_dir():
        raise InputError(f"model repository {settings.repo} does not exist")
    with tempfile.TemporaryDirectory(prefix=_tmp_prefix(os.getpid())) as tmp:
        dist = _pytriton_dist()
        backends = _backends(dist, Path(tmp) / "backends")
        models = _model_store(Path(tmp) / "models", settings)
        command = [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={models}",
            f"--backend-directory={backends}",
            f"--cache-directory={dist / 'caches'}",
            f"--http-address={settings.address}",
            f"--http-port={settings.http_port}",
            f"--grpc-address={settings.address}",
            f"--grpc-port={settings.grpc_port}",
            f"--metrics-address={settings.address}",
            f"--metrics-port={settings.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--log-verbose=0",
            f"--backend-config=python,shm-region-prefix-name={_shm_prefix(os.getpid())}",
        ]
        child = subprocess.Popen(command, env=server_environment(), preexec_fn=_die_with_parent)

        def forward(signum: int, _frame: FrameType | None) -> None:
            child.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if child.poll() is None:
                child.kill()
                child.wait()
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise TritonFailed(f"tritonserver exited with code {code}")
