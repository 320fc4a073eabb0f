"""The data commands as a user runs them: real processes, exit codes, JSON contracts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CTR = [sys.executable, "-m", "ctr"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTR, *args], capture_output=True, text=True, timeout=300)


def test_synth_then_stats_json(tmp_path: Path) -> None:
    out = tmp_path / "d"
    done = run("synth", "--out", str(out), "--days", "3", "--rows-per-day", "20000", "--seed", "7")
    assert done.returncode == 0, done.stderr
    stats = run("data", "stats", str(out), "--json")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [d["day"] for d in report["days"]] == [0, 1, 2]
    for got, want in zip(report["days"], manifest["days"], strict=True):
        assert got["rows"] == 20000
        assert got["positive_rate"] == want["positive_rate"]
        assert abs(got["bayes_auc"] - want["bayes_auc"]) < 1e-6


def test_convert_reports_bad_lines_and_fail_mode(tmp_path: Path) -> None:
    good = "\t".join(["1", *["2"] * 13, *["0a0b0c0d"] * 26])
    src = tmp_path / "day_9"
    src.write_text("\n".join([good, "1\t2", good.replace("0a0b0c0d", "nothex!!", 1), good]) + "\n")
    done = run("data", "convert", str(src), "--out", str(tmp_path / "shards"), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows_read"] == 4 and summary["rows_kept"] == 2
    assert summary["bad_lines"]["column_count"] == 1 and summary["bad_lines"]["bad_categorical"] == 1
    assert [b["line"] for b in summary["first_bad_lines"]] == [2, 3]
    assert len(list((tmp_path / "shards" / "day_9").glob("part-*.parquet"))) == 1

    failed = run("data", "convert", str(src), "--out", str(tmp_path / "f"), "--on-bad-line", "fail")
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        f"error: malformed line {src}:2: column_count (expected 40 tab-separated fields): '1\\t2'"
    ]
    assert not (tmp_path / "f" / "day_9").exists()  # nothing half-written


def test_missing_inputs_give_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run("data", "stats", str(tmp_path / "absent"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: data directory {tmp_path / 'absent'} does not exist"
    (tmp_path / "empty").mkdir()
    done = run("data", "stats", str(tmp_path / "empty"), "--days", "0-2")
    assert done.returncode == 2 and "day 0 not found" in done.stderr


def test_an_output_path_that_cannot_be_a_directory_gives_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file where a directory should go\n")
    src = tmp_path / "day_0"
    src.write_text("\t".join(["1", *["2"] * 13, *["0a0b0c0d"] * 26]) + "\n")
    window = ["--since", "2026-11-27T00:00:00Z", "--until", "2026-11-28T00:00:00Z"]
    attempts = {
        blocker: run("synth", "--out", str(blocker), "--days", "1", "--rows-per-day", "10"),
        blocker / "shards": run("data", "convert", str(src), "--out", str(blocker / "shards")),
        blocker / "x": run(
            "events", "export", "--db", f"sqlite:///{tmp_path / 'e.db'}", *window, "--out", str(blocker / "x")
        ),
    }
    for path, done in attempts.items():
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().startswith(f"error: cannot use {path} as an output directory: ")
    assert blocker.read_text() == "a file where a directory should go\n"
