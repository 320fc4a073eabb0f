"""The demo summary counts triggers per episode as the monitor does: a clear window ends one."""

from __future__ import annotations

from datetime import datetime

from ctr.demo.report import episode_triggers


def rec(hour: int, decision: str, clear: bool = False, versions: int = 1, follow_up: bool = False) -> dict:
    return {
        "follow_up": follow_up,
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


def test_a_follow_up_counts_in_the_episode_it_follows_up() -> None:
    entries = [
        rec(4, "trigger"),  # the drift's episode opens
        rec(8, "no-trigger", clear=True),  # repaired: the episode ends
        rec(22, "trigger", clear=True, follow_up=True),  # its follow-up, 18 h after the breach began
        rec(23, "trigger"),  # a new alarm
    ]
    assert episode_triggers(entries, datetime.fromisoformat("2026-01-05T03:00:00+00:00")) == [2, 1]
    # without the flag the same record would have opened an episode of its own
    plain = [dict(e, follow_up=False) for e in entries]
    assert episode_triggers(plain, datetime.fromisoformat("2026-01-05T03:00:00+00:00")) == [1, 2]
