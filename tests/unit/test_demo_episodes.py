"""The demo summary counts triggers per episode as the monitor does: a clear window ends one."""

from __future__ import annotations

from datetime import datetime

from ctr.demo.report import episode_triggers


def rec(
    hour: int, decision: str, clear: bool = False, versions: int = 1, follow_up: bool = False, began: int = 4
) -> dict:
    return {
        "follow_up": follow_up,
        "episode_since": f"2026-01-05T{began:02d}:00:00+00:00",
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
    plain = [dict(e, follow_up=False, clear=False) if e["follow_up"] else e for e in entries]
    assert episode_triggers(plain, datetime.fromisoformat("2026-01-05T03:00:00+00:00")) == [1, 2]


def test_a_clear_follow_up_window_ends_the_episode_and_an_old_episodes_follow_up_is_not_counted() -> None:
    since = datetime.fromisoformat("2026-01-05T03:00:00+00:00")
    entries = [
        rec(4, "trigger"),
        rec(8, "no-trigger"),  # not clear: the episode goes on
        rec(22, "trigger", clear=True, follow_up=True),  # its follow-up, in a clear window: the episode ends
        rec(23, "trigger"),  # so this is a new alarm, as the monitor counts it
    ]
    assert episode_triggers(entries, since) == [2, 1]
    # the follow-up of a false alarm before the onset is not the drift's episode
    before = [
        rec(1, "trigger"),
        rec(2, "no-trigger", clear=True),
        rec(19, "trigger", clear=True, follow_up=True, began=1),
    ]
    assert episode_triggers([*before, rec(20, "trigger")], since) == [1]
