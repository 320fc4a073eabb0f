"""Threads are sized by the cores a process may run on (its affinity), not the host's count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ctr.cpus import usable_cores

PRINT = (
    "from ctr.cpus import usable_cores; from ctr.data.feed import default_workers; "
    "print(usable_cores(), default_workers())"
)


def test_the_cores_are_the_affinity_mask() -> None:
    assert usable_cores() == len(os.sched_getaffinity(0))


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")
def test_a_process_pinned_to_one_core_sizes_its_threads_for_one() -> None:
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", PRINT], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["1", "1"]  # one core; the reader keeps one worker at least
