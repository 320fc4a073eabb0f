"""``EventStore``: impressions and clicks through SQLAlchemy 2 (SQLite file or PostgreSQL).

* SQLite (default): WAL journal with ``synchronous=FULL``, so a committed insert survives a
  crash; PostgreSQL: ``postgresql+psycopg://user@host/db``.
* ``migrate()`` brings the schema to the newest Alembic revision (idempotent).
* Inserts are idempotent (``ON CONFLICT DO NOTHING`` on the id): a replayed spool or a
  retried click never double-counts.
* ``StoreUnavailable`` means the database could not be reached or refused the write.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from ctr.errors import CtrError, InputError
from ctr.events.schema import clicks, impressions

if TYPE_CHECKING:  # alembic is imported only where a migration or a diagnosis needs it
    from alembic.config import Config

DEFAULT_URL = "sqlite:///ctr-events.db"


class StoreUnavailable(CtrError):
    """The event database cannot be reached or refused the operation."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def redacted(url: str) -> str:
    """``url`` fit for messages and logs: a password in it reads ``***``."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with this project's settings (SQLite pragmas, pool checks)."""
    if not url or "://" not in url:
        raise InputError(
            redacted(f"bad database URL {url!r}: use sqlite:///path.db or postgresql+psycopg://user@host/db")
        )
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 3}
    try:
        engine = create_engine(url, **kwargs)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise InputError(redacted(f"bad database URL {url!r}: {exc}")) from exc
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
        self._insert_impressions = _DriverInsert(
            self._insert(impressions).on_conflict_do_nothing(index_elements=["impression_id"]), self.engine
        )
        self._click_sql = _ClickSql(self.engine.dialect.paramstyle)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @staticmethod
    def _alembic_config() -> Config:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(resources.files("ctr.events") / "migrations"))
        return config

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (creates it on an empty database)."""
        from alembic import command

        config = self._alembic_config()
        try:
            with self.engine.begin() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(f"cannot migrate the event database: {_short(exc)}") from exc

    def failure(self, doing: str, exc: SQLAlchemyError) -> StoreUnavailable:
        """``StoreUnavailable`` for ``exc``, raised while ``doing``; when the cause is a schema
        that is missing or older than this code's, the message says so and how to upgrade it."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        as_reported = StoreUnavailable(f"could not {doing}: {_short(exc)}")
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError:
            return as_reported  # the database is unreachable now: the original error says more
        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        if current == head:
            return as_reported
        found = "no event-log schema" if current is None else f"schema revision {current}, not {head}"
        return StoreUnavailable(f"could not {doing}: the event database has {found}; run `ctr events migrate --db URL`")

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
        self.write(rows, [])

    def record_clicks(self, impression_ids: Iterable[str], clicked_at_us: int) -> ClickCounts:
        """Record clicks; ids are classified as accepted, duplicate (already clicked) or unknown."""
        return self.write([], [(list(impression_ids), clicked_at_us)])[0]

    def write(
        self, impression_rows: Sequence[dict[str, Any]], click_requests: Sequence[tuple[Sequence[str], int]]
    ) -> list[ClickCounts]:
        """Impressions, then click requests ``(ids, clicked_at_us)``, in one transaction.

        Impressions whose id exists are left alone (a replay inserts nothing twice). Returns
        the counts of each click request; an id clicked in two requests of one call is
        accepted for the first and a duplicate for the second, as if committed one by one.
        """
        try:
            with self.engine.begin() as conn:
                if impression_rows:
                    self._insert_impressions(conn, impression_rows)
                return self._record_clicks(conn, click_requests) if click_requests else []
        except SQLAlchemyError as exc:
            n_clicks = sum(len(ids) for ids, _ in click_requests)
            raise StoreUnavailable(
                f"could not log {len(impression_rows)} impressions and {n_clicks} clicks: {_short(exc)}"
            ) from exc

    def _record_clicks(self, conn: Connection, requests: Sequence[tuple[Sequence[str], int]]) -> list[ClickCounts]:
        wanted_by_request = [list(dict.fromkeys(ids)) for ids, _ in requests]
        wanted = list(dict.fromkeys(i for ids in wanted_by_request for i in ids))
        if not wanted:
            return [ClickCounts(0, 0, 0) for _ in requests]
        known = self._click_sql.known(conn, wanted)
        first_click: dict[str, int] = {}
        for ids, (_, at_us) in zip(wanted_by_request, requests, strict=True):
            for i in ids:
                if i in known:
                    first_click.setdefault(i, at_us)
        inserted = self._click_sql.insert(conn, list(first_click.items())) if first_click else set()
        counts = []
        for ids in wanted_by_request:
            mine = [i for i in ids if i in known]
            accepted = [i for i in mine if i in inserted]
            inserted.difference_update(accepted)  # a later request of the batch sees them as duplicates
            counts.append(ClickCounts(len(accepted), len(mine) - len(accepted), len(ids) - len(mine)))
        return counts

    def count_impressions(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(impressions)) or 0)

    def dispose(self) -> None:
        self.engine.dispose()


class _DriverInsert:
    """An INSERT compiled once and run with the driver's ``executemany`` on plain rows.

    The hot path of the score API: SQLAlchemy's per-execution work (cache key, parameter
    processing of every value) cost about as much as the database's own for 10 rows.
    Rows are dicts keyed by column name; the driver's placeholders may be positional.
    """

    def __init__(self, stmt: Any, engine: Engine) -> None:
        compiled = stmt.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self.order: tuple[str, ...] | None = tuple(compiled.positiontup or ()) if compiled.positional else None

    def __call__(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        order = self.order
        params = [tuple(row[k] for k in order) for row in rows] if order is not None else list(rows)
        conn.exec_driver_sql(self.sql, params)


class _ClickSql:
    """The click path's two statements as driver SQL, in chunks of ``CHUNK`` ids.

    Through SQLAlchemy's statement machinery (cache key, parameter processing, insertmanyvalues)
    a 3-id click write took 0.56 ms on SQLite and 1.6 ms on PostgreSQL here; as driver SQL
    0.36 ms and 1.0 ms. The text is the same on SQLite (3.35+) and PostgreSQL but for the
    placeholder. ``CHUNK`` keeps a statement far below SQLite's 32,766 bound variables.
    """

    CHUNK = 500

    def __init__(self, paramstyle: str) -> None:
        self.mark = "?" if paramstyle == "qmark" else "%s"

    def known(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """The ids of ``ids`` that are logged impressions."""
        found: set[str] = set()
        for start in range(0, len(ids), self.CHUNK):
            chunk = tuple(ids[start : start + self.CHUNK])
            marks = ", ".join([self.mark] * len(chunk))
            sql = f"SELECT impression_id FROM {impressions.name} WHERE impression_id IN ({marks})"
            found.update(conn.exec_driver_sql(sql, chunk).scalars())
        return found

    def insert(self, conn: Connection, first_clicks: Sequence[tuple[str, int]]) -> set[str]:
        """Insert ``(impression id, clicked_at_us)`` rows; returns the ids that were not clicked before."""
        inserted: set[str] = set()
        for start in range(0, len(first_clicks), self.CHUNK):
            chunk = first_clicks[start : start + self.CHUNK]
            values = ", ".join([f"({self.mark}, {self.mark})"] * len(chunk))
            sql = (
                f"INSERT INTO {clicks.name} (impression_id, clicked_at_us) VALUES {values} "
                "ON CONFLICT (impression_id) DO NOTHING RETURNING impression_id"
            )
            inserted.update(conn.exec_driver_sql(sql, tuple(v for row in chunk for v in row)).scalars())
        return inserted


def _short(exc: BaseException) -> str:
    """The first line of a driver error (they carry SQL and background links after it)."""
    message = str(getattr(exc, "orig", None) or exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
