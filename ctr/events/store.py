"""``EventStore``: impressions and clicks through SQLAlchemy 2 (SQLite file or PostgreSQL).

* SQLite (default): WAL journal with ``synchronous=FULL``, so a committed insert survives a
  crash; PostgreSQL: ``postgresql+psycopg://user@host/db``.
* ``migrate()`` brings the schema to the newest Alembic revision (idempotent).
* Inserts are idempotent (``ON CONFLICT DO NOTHING`` on the id): a replayed spool or a
  retried click never double-counts.
* ``StoreUnavailable`` means the database could not be reached or refused the write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from ctr.errors import CtrError, InputError
from ctr.events.schema import clicks, impressions

DEFAULT_URL = "sqlite:///ctr-events.db"


class StoreUnavailable(CtrError):
    """The event database cannot be reached or refused the operation."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with this project's settings (SQLite pragmas, pool checks)."""
    if not url or "://" not in url:
        raise InputError(f"bad database URL {url!r}: use sqlite:///path.db or postgresql+psycopg://user@host/db")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 3}
    try:
        engine = create_engine(url, **kwargs)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise InputError(f"bad database URL {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@dataclass(frozen=True)
class ClickCounts:
    accepted: int
    duplicate: int
    unknown: int


class EventStore:
    """The event log behind a database URL (see module docstring)."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self.engine = make_engine(url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (creates it on an empty database)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(resources.files("ctr.events") / "migrations"))
        try:
            with self.engine.begin() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(f"cannot migrate the event database: {_short(exc)}") from exc

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def _insert(self, table: Any) -> Any:
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)

    def log_impressions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert impression rows in one transaction; existing ids are left alone."""
        if not rows:
            return
        stmt = self._insert(impressions).on_conflict_do_nothing(index_elements=["impression_id"])
        try:
            with self.engine.begin() as conn:
                conn.execute(stmt, list(rows))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"could not log {len(rows)} impressions: {_short(exc)}") from exc

    def record_clicks(self, impression_ids: Iterable[str], clicked_at_us: int) -> ClickCounts:
        """Record clicks; ids are classified as accepted, duplicate (already clicked) or unknown."""
        ids = list(dict.fromkeys(impression_ids))
        if not ids:
            return ClickCounts(0, 0, 0)
        try:
            with self.engine.begin() as conn:
                query = select(impressions.c.impression_id).where(impressions.c.impression_id.in_(ids))
                known = set(conn.scalars(query))
                new_rows = [{"impression_id": i, "clicked_at_us": clicked_at_us} for i in ids if i in known]
                accepted = 0
                if new_rows:
                    stmt = (
                        self._insert(clicks)
                        .on_conflict_do_nothing(index_elements=["impression_id"])
                        .returning(clicks.c.impression_id)
                    )
                    accepted = len(conn.execute(stmt, new_rows).all())
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"could not record {len(ids)} clicks: {_short(exc)}") from exc
        return ClickCounts(accepted, len(known) - accepted, len(ids) - len(known))

    def count_impressions(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(impressions)) or 0)

    def dispose(self) -> None:
        self.engine.dispose()


def _short(exc: BaseException) -> str:
    """The first line of a driver error (they carry SQL and background links after it)."""
    message = str(getattr(exc, "orig", None) or exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
