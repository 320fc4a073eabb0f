"""The score API refuses a configuration it could not serve with, before it binds a port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ctr.errors import InputError
from ctr.serving.api import ApiSettings, create_app


def test_a_malformed_database_url_is_refused_before_the_app_serves(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="bad database URL 'notaurl'"):
        create_app(ApiSettings(db_url="notaurl", spool_dir=tmp_path / "spool"))


def test_limits_must_be_positive() -> None:
    with pytest.raises(InputError, match=r"deadline_ms \(CTR_DEADLINE_MS\) must be at least 1, got 0"):
        ApiSettings(deadline_ms=0)


def test_an_environment_variable_that_is_not_a_number_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTR_MAX_CANDIDATES", "lots")
    with pytest.raises(InputError, match="CTR_MAX_CANDIDATES must be a positive integer, got 'lots'"):
        ApiSettings.from_env()
    monkeypatch.setenv("CTR_MAX_CANDIDATES", "250")
    assert ApiSettings.from_env().max_candidates == 250


def test_ctr_api_reports_a_bad_setting_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ctr", "api", "--db", "notaurl", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: bad database URL 'notaurl': use sqlite:///path.db or postgresql+psycopg://user@host/db"
    ]


def test_ctr_api_refuses_a_spool_directory_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "ctr", "api", "--db", f"sqlite:///{tmp_path / 'e.db'}", "--spool-dir", str(blocker)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot use {blocker} as an output directory: ")
