"""12-factor settings: ``CTR_DB_URL`` (say) from the environment, or the file named by ``CTR_DB_URL_FILE``.

Kubernetes mounts secrets as files (``/var/run/secrets/...``); pointing ``CTR_DB_URL_FILE``
at one keeps the value out of the process environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from ctr.errors import InputError


def env_or_file(name: str, default: str | None = None) -> str | None:
    """The value of ``name``, else the stripped content of the file ``name + "_FILE"`` names."""
    if name in os.environ:
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise InputError(f"{name}_FILE={path} cannot be read: {exc.strerror}") from exc
    return default


def env_int(name: str, default: int) -> int:
    """The positive integer in ``name``, else ``default``; ``InputError`` for anything else."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return number
