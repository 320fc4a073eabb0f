"""Output directories the commands write into."""

from __future__ import annotations

from pathlib import Path

from ctr.errors import InputError


def output_dir(path: Path) -> Path:
    """Create ``path`` and its parents if absent and return it; ``InputError`` naming the path
    when that is impossible (a file in the way, no permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot use {path} as an output directory: {exc.strerror}") from exc
    return path
