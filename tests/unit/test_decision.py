"""``monitor.decision.decide`` over its whole rule table, and the calibration signal."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from monitor.decision import Evidence, History, decide, threshold
from monitor.rules import Rules
from monitor.stats import calibration_interval, normalized_entropy

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
RULES = Rules(absolute_auc=0.70, min_positives=100, min_negatives=100, cooldown=timedelta(hours=6))
GOOD = Evidence(positives=400, negatives=9600, auc=0.74, auc_lower=0.72, auc_upper=0.76)
BAD = replace(GOOD, auc=0.66, auc_lower=0.64, auc_upper=0.68)
CAPPED = replace(RULES, max_per_episode=2)


@pytest.mark.parametrize(
    ("evidence", "history", "rules", "want"),
    [
        (replace(BAD, positives=99), History(), RULES, "insufficient-data"),
        (replace(BAD, negatives=99), History(), RULES, "insufficient-data"),
        (GOOD, History(), RULES, "no-trigger"),
        (replace(BAD, auc_upper=0.70), History(), RULES, "no-trigger"),  # the interval touches the threshold
        (BAD, History(), RULES, "trigger"),
        (BAD, History(previous_breaches=(True,)), replace(RULES, consecutive_breaches=3), "no-trigger"),
        (BAD, History(previous_breaches=(True, True)), replace(RULES, consecutive_breaches=3), "trigger"),
        (BAD, History(previous_breaches=(True, False, True)), replace(RULES, consecutive_breaches=3), "no-trigger"),
        (BAD, History(lease_run_id="run-7"), RULES, "in-flight"),
        (BAD, History(last_trigger_at=NOW - timedelta(hours=5), last_trigger_run="r1"), RULES, "cooldown"),
        (
            BAD,
            History(last_trigger_at=NOW - timedelta(hours=5), last_trigger_run="r1", last_run_state="failed"),
            RULES,
            "cooldown",
        ),  # a failed run still holds the cooldown
        (BAD, History(last_trigger_at=NOW - timedelta(hours=6), last_trigger_run="r1"), RULES, "trigger"),
        (BAD, History(lease_run_id="run-7", last_trigger_at=NOW - timedelta(hours=1)), RULES, "in-flight"),
        # a breach that outlived max_per_episode retrains pages a person instead of a third retrain
        (BAD, History(last_trigger_at=NOW - timedelta(hours=6), episode_triggers=2), CAPPED, "exhausted"),
        (BAD, History(last_trigger_at=NOW - timedelta(hours=6), episode_triggers=1), CAPPED, "trigger"),
        (BAD, History(last_trigger_at=NOW - timedelta(hours=1), episode_triggers=2), CAPPED, "cooldown"),
        (BAD, History(last_trigger_at=NOW - timedelta(hours=6), episode_triggers=9), RULES, "trigger"),  # no cap
        (GOOD, History(last_trigger_at=NOW - timedelta(hours=6), episode_triggers=2), CAPPED, "no-trigger"),
    ],
)
def test_the_rule_table(evidence: Evidence, history: History, rules: Rules, want: str) -> None:
    assert decide(evidence, history, rules, NOW).decision == want


FOLLOW = replace(CAPPED, follow_up=timedelta(hours=18))
BEGAN = NOW - timedelta(hours=18)  # the breach of the last trigger's episode began 18 h ago
ONE_RETRAIN = History(last_trigger_at=BEGAN, last_episode_since=BEGAN, last_episode_triggers=1)


@pytest.mark.parametrize(
    ("evidence", "history", "rules", "want"),
    [
        # 18 h after the breach began, an episode with one retrain gets a full one more, breach or not
        (GOOD, ONE_RETRAIN, FOLLOW, "trigger"),
        (GOOD, ONE_RETRAIN, CAPPED, "no-trigger"),  # no follow_up in the rules
        (GOOD, replace(ONE_RETRAIN, last_episode_since=BEGAN + timedelta(minutes=1)), FOLLOW, "no-trigger"),  # early
        (GOOD, replace(ONE_RETRAIN, last_episode_triggers=2), FOLLOW, "no-trigger"),  # its budget is spent
        # the follow-up came 7 h ago, 18 h after its episode's breach began: not a second time
        (
            GOOD,
            replace(
                ONE_RETRAIN, last_trigger_at=NOW - timedelta(hours=7), last_episode_since=NOW - timedelta(hours=25)
            ),
            FOLLOW,
            "no-trigger",
        ),
        (GOOD, replace(ONE_RETRAIN, last_episode_since=None), FOLLOW, "no-trigger"),  # an old record: none
        (GOOD, replace(ONE_RETRAIN, lease_run_id="run-7"), FOLLOW, "in-flight"),
        # the version the first retrain published has not yet served a window of its own
        (
            replace(GOOD, serving_share=0.5),
            replace(ONE_RETRAIN, serving_version=2, last_trigger_version=1),
            FOLLOW,
            "settling",
        ),
        (GOOD, ONE_RETRAIN, replace(FOLLOW, cooldown=timedelta(hours=19)), "cooldown"),
        (replace(GOOD, positives=99), ONE_RETRAIN, FOLLOW, "insufficient-data"),
        (GOOD, replace(ONE_RETRAIN, last_episode_triggers=5), replace(FOLLOW, max_per_episode=None), "trigger"),
    ],
)
def test_the_follow_up_rule(evidence: Evidence, history: History, rules: Rules, want: str) -> None:
    assert decide(evidence, history, rules, NOW).decision == want


def test_a_follow_up_is_a_full_retrain_that_says_which_episode_it_follows() -> None:
    out = decide(GOOD, ONE_RETRAIN, FOLLOW, NOW)
    assert out.follow_up and out.escalate and not out.breach and out.clear
    assert f"follow-up: a full retrain 18:00:00 after the breach of {BEGAN.isoformat()} began" in out.reason
    # a breach that escalates at the same time is an escalation, not a follow-up
    both = decide(BAD, replace(ONE_RETRAIN, episode_triggers=1, breach_since=BEGAN), FOLLOW, NOW)
    assert both.escalate and not both.follow_up and "escalated to a full retrain" in both.reason


def test_a_new_breach_is_not_the_old_episodes_follow_up() -> None:
    """A breach with no trigger in its own episode yet, when the last episode's follow-up is due:
    the first (incremental) trigger of a new episode, not a full retrain charged to the old one."""
    fresh = replace(ONE_RETRAIN, breach_since=NOW, episode_triggers=0)
    out = decide(BAD, fresh, FOLLOW, NOW)
    assert out.decision == "trigger" and not out.follow_up and not out.escalate
    # and a breach short of its streak stays a no-trigger (the follow-up is not fired through it)
    assert decide(BAD, fresh, replace(FOLLOW, consecutive_breaches=2), NOW).decision == "no-trigger"


def test_a_follow_up_trains_from_scratch_on_the_traffic_since_its_episode_began() -> None:
    from ctr.retrain_request import RetrainRequest
    from monitor.run import episode_began, triggered_request

    target = RetrainRequest(repo="r", events=True, since="-6h", data_dir="history")
    out = decide(GOOD, ONE_RETRAIN, FOLLOW, NOW)
    run = triggered_request(target, out, ONE_RETRAIN, FOLLOW, NOW)
    assert episode_began(out, ONE_RETRAIN, NOW) == BEGAN
    assert run.mode == "full" and run.since == (BEGAN - FOLLOW.max_age).isoformat() and run.data_dir == "history"
    # an ordinary first trigger keeps the target's window and mode
    first = decide(BAD, History(), FOLLOW, NOW)
    assert triggered_request(target, first, History(), FOLLOW, NOW) == target.replace(challenge=FOLLOW.challenge)
    assert episode_began(first, History(), NOW) == NOW


def test_reasons_and_streaks_are_recorded() -> None:
    out = decide(BAD, History(previous_breaches=(True,)), replace(RULES, consecutive_breaches=2), NOW)
    assert out.decision == "trigger" and out.breach and out.consecutive_breaches == 2 and out.signals == ("auc",)
    assert out.reason == "AUC upper bound 0.6800 < threshold 0.7000"
    cooling = decide(BAD, History(last_trigger_at=NOW - timedelta(hours=1), last_trigger_run="r1",
                                  last_run_state="failed"), RULES, NOW)  # fmt: skip
    assert "run r1, which failed" in cooling.reason and "cooldown 6:00:00" in cooling.reason


def test_an_exhausted_episode_says_since_when_and_why() -> None:
    since = NOW - timedelta(hours=14)
    history = History(last_trigger_at=NOW - timedelta(hours=7), episode_triggers=2, breach_since=since)
    out = decide(BAD, history, CAPPED, NOW)
    assert out.decision == "exhausted" and out.breach and not out.escalate
    assert f"2 retrain(s) since the breach began at {since.isoformat()}" in out.reason
    assert "retrain.max_per_episode 2" in out.reason


def test_the_threshold_is_the_highest_rule() -> None:
    learned = replace(RULES, learned_baseline=True, baseline_margin=0.02, relative_drop=0.03)
    assert threshold(learned, replace(GOOD, validation_auc=0.80), History(learned_baseline=0.76)) == 0.77
    assert threshold(learned, GOOD, History(learned_baseline=0.76)) == 0.74  # served traffic's own AUC - margin
    assert threshold(learned, GOOD, History()) == 0.70  # nothing learned yet: the absolute floor
    assert threshold(replace(RULES, learned_baseline=False), GOOD, History(learned_baseline=0.9)) == 0.70
    # GOOD's upper bound 0.76 is above 0.70 but below a learned 0.80 - 0.02
    assert decide(GOOD, History(learned_baseline=0.80), learned, NOW).decision == "trigger"


def _clicks(rate_factor: float, n: int = 40_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pctr = rng.beta(2, 40, n)  # ~5 % mean pCTR
    return (rng.random(n) < np.clip(pctr * rate_factor, 0, 1)).astype(np.int8), pctr


def test_a_base_rate_shift_triggers_on_calibration_where_auc_sees_nothing() -> None:
    rules = replace(RULES, calibration_max_deviation=0.15)
    for factor, want in ((1.0, "no-trigger"), (0.7, "trigger"), (1.5, "trigger")):
        labels, pctr = _clicks(factor)
        c = calibration_interval(labels, pctr, 0.95)
        assert c is not None and c.lower < c.ratio < c.upper
        evidence = replace(GOOD, calibration=c.ratio, calibration_lower=c.lower, calibration_upper=c.upper)
        out = decide(evidence, History(), rules, NOW)  # the AUC is unchanged: only calibration can breach
        assert out.decision == want, (factor, c)
        assert ("calibration" in out.signals) == (want == "trigger")
    # the same shift with calibration not configured passes unseen
    assert decide(evidence, History(), RULES, NOW).decision == "no-trigger"


@pytest.mark.parametrize(
    ("interval", "level", "max_deviation", "want"),
    [
        ((1.11, 1.14), 1.05, 0.15, "learned 1.050 × (1 ± 0.05) = [0.998, 1.103]"),  # inside 1 ± 0.15
        ((1.11, 1.14), None, 0.15, None),  # not yet learned: only the absolute band holds
        ((0.99, 1.04), 1.05, 0.15, None),  # the interval reaches into [0.9975, 1.1025]
        ((0.93, 0.99), 1.05, 0.15, "learned 1.050 × (1 ± 0.05) = [0.998, 1.103]"),
        ((1.16, 1.20), None, 0.15, "1 ± 0.15 = [0.850, 1.150]"),  # the absolute band on its own
        ((1.11, 1.14), 1.05, None, "learned 1.050 × (1 ± 0.05) = [0.998, 1.103]"),  # no absolute band
        ((1.11, None), 1.05, None, "learned 1.050 × (1 ± 0.05) = [0.998, 1.103]"),  # an unbounded upper end
        # a level outside the absolute band: each band is judged on its own, neither swaps ends
        ((1.20, 1.30), 1.25, 0.15, "1 ± 0.15 = [0.850, 1.150]"),
        ((1.00, 1.10), 1.25, 0.15, "learned 1.250 × (1 ± 0.05) = [1.188, 1.312]"),
    ],
)
def test_a_learned_calibration_level_narrows_the_band(
    interval: tuple[float, float | None], level: float | None, max_deviation: float | None, want: str | None
) -> None:
    """``calibration.baseline: learned``: a base-rate shift of ~10 % (the demo's ``popularity``
    drift: 1.00 → 1.10) stays inside ``1 ± 0.15`` but leaves the level the model had learned."""
    rules = replace(RULES, calibration_max_deviation=max_deviation, calibration_learned=True, calibration_margin=0.05)
    lower, upper = interval
    evidence = replace(GOOD, calibration=lower + 0.01, calibration_lower=lower, calibration_upper=upper)
    out = decide(evidence, History(learned_calibration=level), rules, NOW)
    assert out.decision == ("no-trigger" if want is None else "trigger")
    assert ("calibration" in out.signals) == (want is not None)
    if want is not None:
        assert f"outside {want}" in out.reason, out.reason


def test_the_calibration_interval_covers_the_truth() -> None:
    misses = 0
    for seed in range(200):
        labels, pctr = _clicks(1.0, n=5_000, seed=seed)
        c = calibration_interval(labels, pctr, 0.95)
        assert c is not None
        misses += not c.lower <= 1.0 <= c.upper
    assert misses <= 20  # ~5 % expected at 95 %


def test_normalized_entropy() -> None:
    labels, pctr = _clicks(1.0)
    assert normalized_entropy(labels, np.full(labels.size, labels.mean())) == pytest.approx(1.0, abs=1e-6)
    ne = normalized_entropy(labels, pctr)
    assert ne is not None and ne < 1.0  # informative predictions beat the base rate
    assert normalized_entropy(np.zeros(10), np.full(10, 0.1)) is None


# the serving version 2 was published after the trigger that fired while version 1 served
AFTER_RETRAIN = History(
    last_trigger_at=NOW - timedelta(hours=7),
    last_trigger_run="r1",
    last_trigger_version=1,
    serving_version=2,
)


def test_a_retrain_is_judged_on_a_window_of_its_own() -> None:
    mixed = decide(replace(BAD, serving_share=0.6), AFTER_RETRAIN, RULES, NOW)
    assert mixed.decision == "settling" and mixed.breach  # the breach is recorded, not acted on
    assert "version 2 was published after the last trigger and served 60% of this window" in mixed.reason
    assert decide(BAD, AFTER_RETRAIN, RULES, NOW).decision == "trigger"  # its own window: judged
    # no retrain since the trigger: the old version's breach is a cooldown matter, not settling
    same = replace(AFTER_RETRAIN, serving_version=1, last_trigger_at=NOW - timedelta(hours=1))
    assert decide(replace(BAD, serving_share=0.6), same, RULES, NOW).decision == "cooldown"
    # without a breach a mixed window is simply fine (rule 2 comes first)
    assert decide(replace(GOOD, serving_share=0.6), AFTER_RETRAIN, RULES, NOW).decision == "no-trigger"


def test_a_breach_that_outlives_a_retrain_escalates_to_a_full_one() -> None:
    """Whatever became of the episode's first retrain (published and the breach outlived it,
    refused by the gate, failed), the next trigger of the same breach asks for a full one."""
    episode = replace(AFTER_RETRAIN, episode_triggers=1)
    out = decide(BAD, episode, RULES, NOW)
    assert out.decision == "trigger" and out.escalate
    assert out.reason.endswith("escalated to a full retrain: 1 earlier retrain(s) of this breach did not repair it")
    refused = replace(episode, serving_version=1)  # the gate kept version 1 serving
    assert decide(BAD, refused, RULES, NOW).escalate
    assert not decide(BAD, episode, replace(RULES, escalate=False), NOW).escalate  # rule off
    assert not decide(BAD, History(), RULES, NOW).escalate  # a first trigger is the ordinary run
    # a new episode (a calm window since): its first trigger is the ordinary run again
    assert not decide(BAD, replace(AFTER_RETRAIN, episode_triggers=0), RULES, NOW).escalate
    assert decide(BAD, replace(episode, last_trigger_at=NOW - timedelta(hours=1)), RULES, NOW).decision == (
        "cooldown"
    )  # the cooldown still applies to the escalation


def test_a_window_is_clear_only_when_every_point_estimate_is_back_inside() -> None:
    """Hysteresis: a breach needs the whole interval outside; an episode ends only with a window
    whose estimates are inside (the demo's ``popularity`` seed 7: calibration 1.10 [1.05, 1.15]
    against a band edge of 1.07 flickered between breach and no breach for 10 hours)."""
    rules = replace(RULES, calibration_learned=True, calibration_margin=0.04)
    history = History(learned_calibration=1.03)
    near = replace(GOOD, calibration=1.10, calibration_lower=1.05, calibration_upper=1.15)
    out = decide(near, history, rules, NOW)
    assert (out.decision, out.breach, out.clear) == ("no-trigger", False, False)
    back = replace(GOOD, calibration=1.04, calibration_lower=1.00, calibration_upper=1.08)
    assert decide(back, history, rules, NOW).clear
    low_auc = replace(GOOD, auc=0.69, auc_lower=0.67, auc_upper=0.71)  # the interval reaches 0.70
    assert not decide(low_auc, History(), RULES, NOW).clear
    assert decide(GOOD, History(), RULES, NOW).clear
    assert not decide(BAD, History(), RULES, NOW).clear  # a breach is never clear
