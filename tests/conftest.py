"""Shared fixtures: small generated data sets, made once per test session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ctr.data.synth import SynthArgs, synthesize
from ctr.net import free_port
from ctr.signals import sigterm_as_interrupt

__all__ = ["free_port"]  # the serving tests import it from here


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (``timeout N pytest``, a CI job's limit, ``kill``) raises KeyboardInterrupt, so the
    ``with`` blocks, ``finally`` clauses and fixtures of the running test stop the Triton and API
    children it started: they run in sessions of their own and would otherwise outlive pytest."""
    sigterm_as_interrupt()


@pytest.fixture(scope="session")
def small_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 days × 20k rows, seed 7, no drift."""
    out = tmp_path_factory.mktemp("small_days")
    synthesize(SynthArgs(days=3, rows_per_day=20_000, seed=7), out)
    return out


@pytest.fixture(scope="session")
def drift_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 days × 40k rows, seed 21, new-ads drift from day 4."""
    out = tmp_path_factory.mktemp("drift_days")
    synthesize(SynthArgs(days=6, rows_per_day=40_000, seed=21, drift_day=4, drift="new-ads"), out)
    return out


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[Callable[[], str]]:
    """Factory of fresh PostgreSQL databases (the real server on 127.0.0.1:5432); dropped at the end."""
    import uuid

    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = f"ctr_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def pipeline_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 days × 30k rows, seed 5, new-ads drift from day 4 (0-3 before, 4-6 after)."""
    out = tmp_path_factory.mktemp("pipeline_days")
    synthesize(SynthArgs(days=7, rows_per_day=30_000, seed=5, drift_day=4, drift="new-ads"), out)
    return out


#: Test files that take minutes, started first (in this order): with two pytest-xdist workers a
#: long test that starts late becomes the suite's tail (the shortened demo, 4-9 minutes, started
#: 7 minutes in and ended the suite at 15.5 min on a 2-core host). Whole files move, so that
#: module-scoped fixtures are still set up once per worker.
LONGEST_FIRST = ("tests/integration/test_demo.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keeps its order
