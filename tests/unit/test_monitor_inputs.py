"""``ctr monitor run`` refuses bad input in one ``error:`` line (exit 2), before it opens the database;
``ctr.timeutil`` refuses absurd durations and times."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ctr.errors import InputError
from ctr.timeutil import parse_duration, parse_time


def monitor_run(tmp_path: Path, *args: str) -> tuple[int, list[str], Path]:
    """Run the real command line: its exit code, output lines (stdout, then stderr), and SQLite file."""
    db = tmp_path / "events.db"
    cmd = [sys.executable, "-m", "ctr", "monitor", "run", "--db", f"sqlite:///{db}", "--repo", str(tmp_path / "repo")]
    run = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)
    return run.returncode, run.stdout.splitlines() + run.stderr.splitlines(), db


@pytest.mark.parametrize(
    ("rules", "args", "message"),
    [
        pytest.param(
            b"\xff\xfeauc:\n  absolute: 0.7\n",
            [],
            r"rules file \S+ is not UTF-8 text: invalid start byte at byte 0",
            id="rules-not-utf8",
        ),
        pytest.param(None, ["--rules", "{tmp}"], r"rules file \S+ cannot be read: Is a directory", id="rules-dir"),
        pytest.param(
            None,
            ["--now", "0001-01-01T00:00:00Z"],
            r"--now must lie in the years 2000 to 2099 \(UTC\), got '0001-01-01T00:00:00Z'",
            id="now-year-1",
        ),
        pytest.param(
            None,
            ["--attribution-window", "1000000d"],
            r"--attribution-window must be more than 0 and at most 365d, got '1000000d'",
            id="attribution-window-1000000d",
        ),
        pytest.param(
            b"auc:\n  absolute: 5\n", [], r"rules file \S+: auc\.absolute must lie in \(0, 1\], got 5\.0", id="auc-5"
        ),
        pytest.param(
            b"lease_ttl: 0s\n",
            [],
            r"rules file \S+: lease_ttl must be more than 0 and at most 365d, got '0s'",
            id="lease-ttl-0s",
        ),
        pytest.param(None, ["--threshold", "nan"], r"--threshold must lie in \(0, 1\], got nan", id="threshold-nan"),
    ],
)
def test_bad_input_is_one_error_line_with_exit_code_2(
    tmp_path: Path, rules: bytes | None, args: list[str], message: str
) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    if rules is not None:
        (tmp_path / "rules.yaml").write_bytes(rules)
        args += ["--rules", str(tmp_path / "rules.yaml")]
    code, lines, db = monitor_run(tmp_path, *args)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    assert len(lines) == 1 and lines[0].startswith("error: "), "\n".join(lines)
    assert code == 2 and re.fullmatch("error: " + message, lines[0]), (code, lines[0])
    assert not db.exists(), "the database was opened before the input was checked"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0s", "duration must be more than 0 and at most 365d, got '0s'"),
        ("0.0001ms", "duration must be more than 0 and at most 365d, got '0.0001ms'"),
        ("366d", "duration must be more than 0 and at most 365d, got '366d'"),
        ("9" * 400 + "d", "duration must be more than 0 and at most 365d"),  # float('inf') seconds
        ("-1h", "bad duration '-1h': use forms like 30s, 15m, 2h, 1d"),
    ],
)
def test_parse_duration_refuses_absurd_values(text: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        parse_duration(text)


def test_parse_duration_takes_zero_where_allowed_and_the_bound_itself() -> None:
    assert parse_duration("0s", allow_zero=True) == timedelta(0)
    assert parse_duration("365d") == timedelta(days=365)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"])
def test_parse_time_refuses_years_outside_2000_to_2099(text: str) -> None:
    with pytest.raises(InputError, match=r"time must lie in the years 2000 to 2099 \(UTC\)"):
        parse_time(text)


def test_parse_time_keeps_sane_times() -> None:
    assert parse_time("2026-11-27T12:00:00Z") == datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert parse_time("2099-12-31T23:59:59Z") == datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
