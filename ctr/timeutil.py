"""Time: UTC and timezone-aware everywhere; durations like ``30s``, ``15m``, ``2h``, ``1d``.

The event log stores instants as integer microseconds since the Unix epoch (UTC), which
both SQLite and PostgreSQL compare and index natively.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from ctr.errors import InputError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``"30s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"250ms"`` → timedelta; InputError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise InputError(f"bad duration {text!r}: use forms like 30s, 15m, 2h, 1d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_time(text: str) -> datetime:
    """ISO 8601 → aware UTC datetime (a naive value is taken as UTC); ``now`` is accepted."""
    if text.strip().lower() == "now":
        return utcnow()
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"bad time {text!r}: use ISO 8601, e.g. 2026-11-27T12:00:00Z") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_us(value: datetime) -> int:
    """Aware datetime → integer microseconds since the epoch."""
    if value.tzinfo is None:
        raise InputError("naive datetime given where a UTC time is needed")
    return int(value.timestamp() * 1_000_000)


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)
