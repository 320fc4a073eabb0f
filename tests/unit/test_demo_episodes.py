"""The demo summary counts triggers per episode as the monitor does: a clear window ends one."""

from __future__ import annotations

from datetime import datetime

from ctr.demo.report import episode_triggers


def rec(hour: int, decision: str, clear: bool = False, versions: int = 1) -> dict:
    return {
        "as_of": f"2026-01-05T{hour:02d}:00:00+00:00",
        "decision": decision,
        "submission": "ok" if decision == "trigger" else "none",
        "clear": clear,
        "per_version": {str(v): {} for v in range(versions)},
    }


def test_a_clear_window_served_by_one_version_ends_an_episode() -> None:
    entries = [
        rec(0, "trigger"),  # before the onset: not counted
        rec(2, "no-trigger", clear=True),
        rec(4, "trigger"),  # the drift's episode opens
        rec(6, "no-trigger", clear=True, versions=2),  # two versions share the window: not yet a repair
        rec(8, "trigger"),  # its escalation
        rec(10, "no-trigger"),  # no breach, but not clear: the episode goes on
        rec(12, "no-trigger", clear=True),  # repaired
        rec(16, "trigger"),  # a new alarm, a new episode
    ]
    assert episode_triggers(entries, datetime.fromisoformat("2026-01-05T03:00:00+00:00")) == [2, 1]
    assert episode_triggers(entries[:2], datetime.fromisoformat("2026-01-05T03:00:00+00:00")) == []
