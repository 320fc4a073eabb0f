"""A lease on the model repository: one pipeline run at a time, never interleaved.

``dcn/.pipeline-lease.json`` is created with ``O_EXCL`` by the run that takes it and names
the run and an expiry. A second run is refused while the lease is live; an expired lease
(its holder crashed) can be taken over. Only the holder releases it. It lives beside the
versions, so it works wherever the repository does (local disk, a PVC shared by pods).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from ctr.errors import CtrError
from ctr.repository import ModelRepository
from ctr.timeutil import from_us, to_us, utcnow

LEASE_FILE = ".pipeline-lease.json"
DEFAULT_TTL = timedelta(hours=2)


class LeaseHeld(CtrError):
    """Another run holds the repository lease."""


def _path(repo: ModelRepository) -> Path:
    return repo.model_dir / LEASE_FILE


def holder(repo: ModelRepository) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(_path(repo).read_text())
        return record
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def acquire(repo: ModelRepository, run_id: str, ttl: timedelta = DEFAULT_TTL) -> None:
    """Take the lease for ``run_id`` (re-entrant for the same run); ``LeaseHeld`` otherwise."""
    repo.model_dir.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"run_id": run_id, "expires_us": to_us(utcnow() + ttl), "pid": os.getpid()})
    path = _path(repo)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        current = holder(repo)
        if current and current.get("run_id") == run_id:
            return
        if current and int(current.get("expires_us", 0)) > to_us(utcnow()):
            until = from_us(int(current["expires_us"])).isoformat(timespec="seconds")
            raise LeaseHeld(
                f"pipeline run {current['run_id']} holds {path} until {until}; "
                "refusing to interleave on the model repository"
            ) from None
        tmp = path.with_name(f".{LEASE_FILE}.{uuid.uuid4().hex}")  # expired or unreadable: take it over
        tmp.write_text(record)
        os.replace(tmp, path)
        return
    with os.fdopen(fd, "w") as f:
        f.write(record)


def release(repo: ModelRepository, run_id: str) -> None:
    """Drop the lease if ``run_id`` holds it."""
    current = holder(repo)
    if current and current.get("run_id") == run_id:
        _path(repo).unlink(missing_ok=True)
