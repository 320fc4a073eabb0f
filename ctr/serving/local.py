"""Triton and the score API as child processes on one machine (``ctr serve``, the demo, tests).

Each child runs in its own process group; ``stop()`` (also on ``with`` exit, Ctrl-C or a
failure) terminates the groups, waits, and kills what is left, so no tritonserver or
python-backend stub outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from ctr.errors import CtrError


class StackError(CtrError):
    """A local service did not start."""


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"{name} exited with code {proc.returncode} while starting; log {log}: {tail[-300:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise StackError(f"{name} not ready at {url} after {timeout:.0f}s; log {log}")


class LocalStack:
    """``ctr triton`` + ``ctr api`` as process groups, ready when ``__enter__`` returns."""

    def __init__(
        self,
        repo: Path,
        db_url: str,
        *,
        api_port: int = 8080,
        grpc_port: int = 8001,
        http_port: int = 8000,
        metrics_port: int = 8002,
        poll_seconds: float = 5.0,
        log_dir: Path | None = None,
        spool_dir: Path | None = None,
        env: dict[str, str] | None = None,
        start_api: bool = True,
    ) -> None:
        self.repo, self.db_url = repo, db_url
        self.api_port, self.grpc_port, self.http_port, self.metrics_port = api_port, grpc_port, http_port, metrics_port
        self.poll_seconds = poll_seconds
        self.log_dir = log_dir or Path("ctr-logs")
        self.spool_dir = spool_dir or self.log_dir / "spool"
        self.env = {**os.environ, **(env or {})}
        self.start_api = start_api
        self.triton: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            [sys.executable, "-m", "ctr", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    def start_triton(self, timeout: float = 120) -> None:
        self.triton = self._spawn(
            [
                "triton",
                "--repo",
                str(self.repo),
                "--grpc-port",
                str(self.grpc_port),
                "--http-port",
                str(self.http_port),
                "--metrics-port",
                str(self.metrics_port),
                "--poll-seconds",
                str(self.poll_seconds),
            ],
            "triton.log",
        )
        _wait_http(
            f"http://127.0.0.1:{self.http_port}/v2/models/dcn/ready",
            timeout,
            self.triton,
            "Triton",
            self.log_dir / "triton.log",
        )

    def start_api_process(self, timeout: float = 60) -> None:
        self.api = self._spawn(
            [
                "api",
                "--triton",
                f"127.0.0.1:{self.grpc_port}",
                "--db",
                self.db_url,
                "--port",
                str(self.api_port),
                "--spool-dir",
                str(self.spool_dir),
            ],
            "api.log",
        )
        _wait_http(
            f"http://127.0.0.1:{self.api_port}/healthz", timeout, self.api, "score API", self.log_dir / "api.log"
        )

    def __enter__(self) -> LocalStack:
        try:
            self.start_triton()
            if self.start_api:
                self.start_api_process()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until a child exits or Ctrl-C."""
        try:
            while all(p is None or p.poll() is None for p in (self.triton, self.api)):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass

    def stop_triton(self) -> None:
        _terminate(self.triton)
        self.triton = None

    def stop(self) -> None:
        _terminate(self.api)
        _terminate(self.triton)
        self.api = self.triton = None


def _terminate(proc: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        if proc is not None:
            _kill_group(proc.pid, signal.SIGKILL)
        return
    _kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    _kill_group(proc.pid, signal.SIGKILL)  # the stub and tritonserver share the group
    proc.wait(timeout=5)


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
