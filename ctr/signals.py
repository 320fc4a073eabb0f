"""SIGTERM as Ctrl-C, so ``with`` blocks and ``finally`` clauses clean up child processes."""

from __future__ import annotations

import signal
from types import FrameType


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (Kubernetes and ``kill`` send it)."""
    signal.signal(signal.SIGTERM, _interrupt)
