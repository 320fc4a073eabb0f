"""``LocalStack`` (``ctr serve``): Triton bound to loopback, no secret in argv, Triton supervised."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ctr.cli import app
from ctr.repository import ModelRepository
from ctr.serving.local import LocalStack, StackError
from ctr.train import TrainSpec, train_and_publish
from tests.integration.conftest import local_stack

pytestmark = pytest.mark.slow

SCORE_BODY = {"candidates": [{"ad_id": "a", "features": {"I1": 3}}, {"ad_id": "b"}]}


@pytest.fixture(scope="module")
def stack(small_days: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    work = tmp_path_factory.mktemp("local_stack")
    repo = ModelRepository(work / "repo")
    train_and_publish(TrainSpec(small_days, [0], 1, experiment="lr"), repo)
    with local_stack(repo.root, work) as s:
        yield s


def _group_pids(pgid: int) -> set[int]:
    """Live processes of a process group (read from /proc)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # state, ppid, pgrp
            pids.add(int(entry.name))
    return pids


def _socket_inodes(pids: set[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            targets = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
        except OSError:
            continue
        inodes |= {int(t[8:-1]) for t in targets if t.startswith("socket:[")}
    return inodes


def _listening(inodes: set[int]) -> list[tuple[str, int]]:
    """(local address in /proc hex, port) of the TCP sockets in LISTEN state among ``inodes``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and int(fields[9]) in inodes:
                found.append((address, int(port, 16)))
    return found


# 127.0.0.1, ::ffff:127.0.0.1 (gRPC's IPv6 socket), ::1; /proc prints 32-bit words in host byte order
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _triton_ready(stack: LocalStack) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{stack.http_port}/v2/models/dcn/ready", timeout=2).status_code
    except httpx.TransportError:
        return 0


def test_triton_listens_on_loopback_only(stack: LocalStack) -> None:
    assert stack.triton is not None
    listening = _listening(_socket_inodes(_group_pids(stack.triton.pid)))
    ports = {port for _, port in listening}
    assert {stack.http_port, stack.grpc_port, stack.metrics_port} <= ports, listening
    assert all(address in LOOPBACK for address, _ in listening), listening
    outside = _non_loopback_address()
    if outside is not None:
        for port in (stack.http_port, stack.grpc_port, stack.metrics_port):
            with pytest.raises(OSError), socket.create_connection((outside, port), timeout=2):
                pass


def test_triton_address_option() -> None:
    result = CliRunner().invoke(app, ["triton", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    assert "--address" in result.output and "127.0.0.1" in result.output


def test_database_url_is_not_in_the_api_argv(stack: LocalStack) -> None:
    assert stack.api is not None
    cmdline = Path(f"/proc/{stack.api.pid}/cmdline").read_bytes().decode()
    assert "api" in cmdline.split("\0")
    assert stack.db_url not in cmdline and "sqlite" not in cmdline
    # the URL still reached the API (through its environment): it created that event log
    assert Path(stack.db_url.removeprefix("sqlite:///")).exists()
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=10) as client:
        assert client.post("/v1/score", json=SCORE_BODY).status_code == 200


def test_supervision_restarts_a_killed_triton(stack: LocalStack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ctr.serving.local")
    assert stack.triton is not None
    first = stack.triton.pid
    done = threading.Event()
    errors: list[BaseException] = []

    def supervise() -> None:
        try:
            stack.supervise(stop=done)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    supervisor = threading.Thread(target=supervise)
    supervisor.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=10) as client:
            os.killpg(first, signal.SIGKILL)
            # the API notices: not ready while Triton is down
            deadline = time.monotonic() + 10
            readiness = client.get("/readyz").status_code
            while time.monotonic() < deadline and readiness != 503:
                time.sleep(0.1)
                readiness = client.get("/readyz").status_code
            assert readiness == 503
            # Triton comes back, and scoring works again
            deadline = time.monotonic() + 120
            status = 0
            while time.monotonic() < deadline and not errors:
                if stack.triton is not None and stack.triton.pid != first and _triton_ready(stack) == 200:
                    status = client.post("/v1/score", json=SCORE_BODY).status_code
                    if status == 200:
                        break
                time.sleep(0.25)
            assert not errors, errors
            assert status == 200
            assert client.get("/readyz").status_code == 200
    finally:
        done.set()
        supervisor.join(timeout=60)
    assert not supervisor.is_alive()
    assert not errors, errors
    assert not _group_pids(first)  # nothing of the killed Triton is left
    assert not list(Path("/dev/shm").glob(f"ctr_{first}_*"))  # nor its shared memory
    assert stack.restarts and stack.restarts[-1].code == -signal.SIGKILL
    reported = [r.getMessage() for r in caplog.records if r.name == "ctr.serving.local"]
    assert any(f"Triton exited with code {-signal.SIGKILL}" in m and "restart" in m for m in reported), reported


def test_supervision_gives_up_past_the_restart_bound(stack: LocalStack) -> None:
    """Last in the module: it stops the stack."""
    assert stack.triton is not None and stack.api is not None
    api_pid, triton_pid = stack.api.pid, stack.triton.pid
    os.killpg(triton_pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(StackError, match=f"^Triton exited with code {-signal.SIGKILL}"):
        stack.supervise(max_restarts=0)
    assert time.monotonic() - started < 20
    assert stack.api is None and stack.triton is None
    assert not _group_pids(api_pid)  # the API was stopped too
    assert not list(Path("/dev/shm").glob(f"ctr_{triton_pid}_*"))
