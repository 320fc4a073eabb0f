"""A lease row in the event database: two concurrent monitor runs never decide together.

Taking the lease is one conditional statement (insert if absent, else take over only if
expired), atomic in SQLite and PostgreSQL alike. A crashed run's lease simply expires.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError

from ctr.events.store import EventStore
from ctr.events.tables import monitor_lease
from ctr.timeutil import to_us, utcnow

NAME = "monitor"


def try_acquire(store: EventStore, holder: str, ttl: timedelta) -> bool:
    now = to_us(utcnow())
    expires = now + int(ttl.total_seconds() * 1_000_000)
    with store.engine.begin() as conn:
        taken = conn.execute(
            update(monitor_lease)
            .where(monitor_lease.c.name == NAME, monitor_lease.c.expires_us < now)
            .values(holder=holder, expires_us=expires)
        ).rowcount
    if taken:
        return True
    try:
        with store.engine.begin() as conn:
            conn.execute(insert(monitor_lease).values(name=NAME, holder=holder, expires_us=expires))
        return True
    except IntegrityError:
        return False


def release(store: EventStore, holder: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(delete(monitor_lease).where(monitor_lease.c.name == NAME, monitor_lease.c.holder == holder))
