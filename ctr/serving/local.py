"""Triton and the score API as child processes on one machine (``ctr serve``, the demo, tests).

Each child runs in its own process group; ``stop()`` (also on ``with`` exit, Ctrl-C or a
failure) terminates the groups, waits, and kills what is left, so no tritonserver or
python-backend stub outlives it. ``supervise()`` restarts Triton when it dies (a bounded number
of times) and stops everything with a ``StackError`` when it cannot.

Triton binds 127.0.0.1 (``ctr triton``'s default). The event-log URL reaches the API child
through its environment (``CTR_DB_URL``), never its command line, which any local user can read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ctr.errors import CtrError
from ctr.serving.triton import remove_leftovers

log = logging.getLogger(__name__)


class StackError(CtrError):
    """A local service did not start, or died and could not be brought back."""


@dataclass(frozen=True)
class TritonRestart:
    """One restart by ``supervise()``: the exit code of the Triton that died, and when (monotonic)."""

    code: int
    at: float


def _describe_exit(code: int) -> str:
    """``-9 (SIGKILL)`` for a signal, the number otherwise."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"{code} ({signal.Signals(-code).name})"
    return str(code)


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
        self.restarts: list[TritonRestart] = []

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            [sys.executable, "-m", "ctr", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or self.env,
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
        # the URL may hold a password: the environment (CTR_DB_URL, read by ApiSettings.from_env)
        # is readable by this user only, the command line by everyone (ps, /proc/PID/cmdline)
        self.api = self._spawn(
            [
                "api",
                "--triton",
                f"127.0.0.1:{self.grpc_port}",
                "--port",
                str(self.api_port),
                "--spool-dir",
                str(self.spool_dir),
            ],
            "api.log",
            env={**self.env, "CTR_DB_URL": self.db_url},
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
        """Block until a child exits or Ctrl-C (no restart; ``supervise()`` restarts Triton)."""
        try:
            while all(p is None or p.poll() is None for p in (self.triton, self.api)):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass

    def supervise(
        self,
        *,
        max_restarts: int = 3,
        window_seconds: float = 600.0,
        poll_seconds: float = 0.5,
        stop: threading.Event | None = None,
    ) -> None:
        """Block until Ctrl-C (SIGTERM too, under ``sigterm_as_interrupt``) or ``stop`` is set,
        restarting Triton when it exits.

        While Triton is down the API stays up and answers 503 (``/readyz`` asks Triton). Each
        restart is logged (warning, with the exit code) and appended to ``restarts``; at most
        ``max_restarts`` within any ``window_seconds``. Past that bound, when a restart fails, or
        when the API exits, both children are stopped and ``StackError`` says why. On Ctrl-C or
        ``stop`` it returns with the children still running (``stop()`` / ``with`` exit ends them).
        """
        stop = stop or threading.Event()
        try:
            while not stop.wait(poll_seconds):
                if self.api is not None and self.api.poll() is not None:
                    raise StackError(
                        f"score API exited with code {_describe_exit(self.api.returncode)}; "
                        f"log {self.log_dir / 'api.log'}"
                    )
                if self.triton is not None and self.triton.poll() is not None:
                    self._restart_triton(self.triton.returncode, max_restarts, window_seconds)
        except KeyboardInterrupt:
            return
        except BaseException:
            self.stop()
            raise

    def _restart_triton(self, code: int, max_restarts: int, window_seconds: float) -> None:
        triton_log = self.log_dir / "triton.log"
        exited = f"Triton exited with code {_describe_exit(code)}"
        self.stop_triton()  # what is left of its process group (python-backend stubs)
        now = time.monotonic()
        recent = [r for r in self.restarts if now - r.at < window_seconds]
        if len(recent) >= max_restarts:
            raise StackError(
                f"{exited}; not restarted: {len(recent)} restart(s) in the last {window_seconds:.0f}s, "
                f"at most {max_restarts} allowed; log {triton_log}"
            )
        self.restarts.append(TritonRestart(code, now))
        log.warning(
            "%s; restarting it (restart %d of at most %d in %.0fs); log %s",
            exited,
            len(recent) + 1,
            max_restarts,
            window_seconds,
            triton_log,
        )
        try:
            self.start_triton()
        except StackError as exc:
            raise StackError(f"{exited} and did not restart: {exc}") from exc
        log.info("Triton is back on 127.0.0.1:%d (gRPC)", self.grpc_port)

    def stop_triton(self) -> None:
        if self.triton is not None:
            _terminate(self.triton)
            remove_leftovers(self.triton.pid)  # shared memory and model store, if it was killed
        self.triton = None

    def stop(self) -> None:
        _terminate(self.api)
        self.api = None
        self.stop_triton()


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
