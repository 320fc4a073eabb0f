"""A test run stopped with SIGTERM still cleans up the child processes its tests started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import os, subprocess, time
from pathlib import Path

def test_hold():
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)  # like LocalStack's children
    try:
        Path(os.environ["PIDFILE"]).write_text(str(child.pid))
        time.sleep(120)
    finally:
        child.kill()
        child.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_sigterm_to_pytest_runs_the_tests_cleanup(tmp_path: Path) -> None:
    (tmp_path / "test_holder.py").write_text(HOLDER)
    pidfile = tmp_path / "child.pid"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "tests.conftest", "-p", "no:cacheprovider",
         str(tmp_path / "test_holder.py")],
        cwd=ROOT, env={**os.environ, "PIDFILE": str(pidfile)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() or not pidfile.read_text():
            assert run.poll() is None and time.monotonic() < deadline, run.stdout.read() if run.stdout else ""
            time.sleep(0.1)
        child = int(pidfile.read_text())
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
        gone = time.monotonic() + 5
        while _alive(child) and time.monotonic() < gone:
            time.sleep(0.1)
        assert not _alive(child), "the test's child outlived a SIGTERM to pytest"
    finally:
        if run.poll() is None:
            run.kill()
        if pidfile.exists() and pidfile.read_text() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
