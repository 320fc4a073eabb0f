"""Database URLs in messages: a password never reaches a log line or an error."""

from __future__ import annotations

import pytest

from ctr.errors import InputError
from ctr.events.store import make_engine, redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://ctr:s3cret@db.internal:5432/events",
            "postgresql+psycopg://ctr:***@db.internal:5432/events",
        ),
        ("postgresql://ctr:p%40ss@db/events?sslmode=require", "postgresql://ctr:***@db/events?sslmode=require"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        ("sqlite:////var/lib/ctr/events.db", "sqlite:////var/lib/ctr/events.db"),
    ],
)
def test_redacted_hides_only_the_password(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_bad_url_is_refused_without_its_password() -> None:
    with pytest.raises(InputError, match=r"bad database URL") as refused:
        make_engine("postgresql+psycopg://ctr:s3cret@db:notaport/events")
    assert "s3cret" not in str(refused.value) and "ctr:***@db" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # Unescaped '/' and '@' in a password: the user-info part runs to the last '@'.
        ("postgresql://ctr:pa/ss@db/events", "postgresql://ctr:***@db/events"),
        ("postgresql://ctr:p@ss/w@rd@db:5432/events", "postgresql://ctr:***@db:5432/events"),
        (
            "postgresql://ctr@db/events?password=s3cret&sslmode=require",
            "postgresql://ctr@db/events?password=***&sslmode=require",
        ),
    ],
)
def test_redacted_hides_any_password_form(url: str, shown: str) -> None:
    assert redacted(url) == shown
