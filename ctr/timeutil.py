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

#: The longest duration any setting takes (an attribution window, a cooldown, a lease).
MAX_DURATION = timedelta(days=365)
#: Instants given on the command line lie in these years (UTC), inclusive.
YEARS = (2000, 2099)


def parse_duration(text: str, name: str = "duration", *, allow_zero: bool = False) -> timedelta:
    """``"30s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"250ms"`` → timedelta, more than 0 (or 0 with
    ``allow_zero``) and at most ``MAX_DURATION``; ``InputError`` naming ``name`` otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise InputError(f"bad {name} {text!r}: use forms like 30s, 15m, 2h, 1d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]  # inf for a huge number, never nan
    too_long = seconds > MAX_DURATION.total_seconds()
    value = timedelta(0) if too_long else timedelta(seconds=seconds)  # under 1 µs rounds to 0
    if too_long or (not value and not allow_zero):
        least = "at least 0" if allow_zero else "more than 0"
        raise InputError(f"{name} must be {least} and at most {MAX_DURATION.days}d, got {text!r}")
    return value


def parse_time(text: str, name: str = "time") -> datetime:
    """ISO 8601 → aware UTC datetime (a naive value is taken as UTC); ``now`` is accepted.
    ``InputError`` naming ``name`` for another form or a time outside the ``YEARS`` (UTC)."""
    if text.strip().lower() == "now":
        return utcnow()
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"bad {name} {text!r}: use ISO 8601, e.g. 2026-11-27T12:00:00Z") from exc
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        in_range = YEARS[0] <= utc.year <= YEARS[1]
    except OverflowError:  # an offset that moves year 1 or 9999 out of datetime's range
        in_range = False
    if not in_range:
        raise InputError(f"{name} must lie in the years {YEARS[0]} to {YEARS[1]} (UTC), got {text!r}")
    return utc


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_us(value: datetime) -> int:
    """Aware datetime → integer microseconds since the epoch."""
    if value.tzinfo is None:
        raise InputError("naive datetime given where a UTC time is needed")
    return int(value.timestamp() * 1_000_000)


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)
