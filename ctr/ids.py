"""Impression ids: UUIDv7 (RFC 9562) — time-sortable and unique across replicas.

48 bits of Unix milliseconds, then 74 random bits (``secrets``), so ids from any number
of API replicas sort by creation time and never collide in practice.
"""

from __future__ import annotations

import secrets
import time
import uuid


def uuid7(unix_ms: int | None = None) -> str:
    """A new UUIDv7 as its canonical 36-character string."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = secrets.randbits(74)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 62) << 64  # 12 random bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
