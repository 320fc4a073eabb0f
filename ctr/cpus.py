"""The CPU cores this process may run on.

``usable_cores()`` is the size of the process's affinity mask (``sched_getaffinity``: a cpuset, a
Kubernetes pod under the static CPU manager, ``taskset``), not the host's core count that
``os.cpu_count()`` reports: sizing threads by the host's count oversubscribes a pinned process.
CPU quotas (CFS ``cpu.max``) are not read. At least 1.

>>> usable_cores() >= 1
True
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's affinity mask (``os.cpu_count()`` where the platform has none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1
