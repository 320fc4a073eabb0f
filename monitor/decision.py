"""The monitor's decision as a pure function: ``decide(evidence, history, rules, as_of) → Decision``.

No database, no clock, no submission: ``monitor.run`` gathers the evidence (the window's
metrics) and the history (earlier records, the repository lease, the last trigger) and acts on
the result. The rule table, in order:

1. fewer positives or negatives than the rules ask for → ``insufficient-data``;
2. a breach is the AUC interval's upper bound below the threshold, or the calibration
   interval (predicted / observed clicks) entirely outside ``1 ± calibration.max_deviation``,
   or (``calibration.baseline: learned``) entirely outside the serving lineage's own level
   ``× (1 ± calibration.margin)`` — a base-rate shift moves calibration, not AUC;
   no breach, or fewer breaches in a row than ``consecutive_breaches`` → ``no-trigger``;
3. a pipeline run holds the repository lease → ``in-flight``;
4. the serving version was published after the last trigger and has not yet served a whole
   window of its own → ``settling`` (it is judged on its own impressions, not its parent's);
5. the last trigger is younger than the cooldown (whatever became of its run) → ``cooldown``;
6. the current breach (``History.breach_since``) already had ``retrain.max_per_episode``
   triggers → ``exhausted``: retrains did not repair it and a person must look (the record is
   the alert); the episode, and the count, end with the first *clear* window: no breach, and
   every point estimate back inside (AUC at or above the threshold, calibration inside every
   band) — a breach needs the whole interval outside, so a window whose interval merely
   reaches back over the line is not yet a repair (``Decision.clear``);
7. otherwise → ``trigger``, naming the signal(s) that breached. With ``retrain.escalate``, a
   trigger in an episode that already had one (``History.episode_triggers``) is an escalation
   (``Decision.escalate``): the retrain before did not repair the breach — its candidate was
   published and the breach outlived it, or the gate refused it, or it failed — so the run
   asked for is a full retrain (from scratch, on the history and the event log since the breach
   began, or on that log alone: ``ctr.retrain.train`` keeps the window that validates better).
   The first trigger of an episode asks for the ordinary (incremental) run.

A **follow-up** (``retrain.follow_up``) is a trigger that needs no breach: once ``follow_up`` has
passed since the last episode's breach began (``History.last_episode_since``), that episode had
fewer than ``retrain.max_per_episode`` triggers and none since then, the window asks for one more
full retrain on the traffic since the breach began — the episode's first retrain saw only the
hours of the new regime before it was detected. A breach of a new episode (one with no trigger
yet) is not that episode's business: it is judged as a breach, and the old follow-up is dropped.
A breach of the same episode that triggers then is its escalation, which the follow-up joins.
It passes rules 3-5 like any trigger and counts in its episode's budget; without a due follow-up,
rule 2's ``no-trigger`` stands.

The threshold is the highest of: ``auc.absolute``; the serving version's validation AUC −
``auc.relative_drop`` (not comparable with a windowed AUC on served traffic, kept for
compatibility); the serving version's learned baseline (the windowed AUC, once it had enough
labels, of the version it is judged against: its own, or for a warm start or a full version a
trigger published, the level of the version it came from or replaced — ``monitor.run._anchor``)
− ``auc.margin`` when ``auc.baseline: learned``.

>>> from datetime import UTC
>>> from monitor.rules import Rules
>>> e = Evidence(positives=500, negatives=9500, auc=0.66, auc_lower=0.64, auc_upper=0.68)
>>> decide(e, History(), Rules(), datetime(2026, 1, 1, tzinfo=UTC)).decision
'trigger'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from monitor.rules import Rules

DecisionKind = Literal["insufficient-data", "no-trigger", "in-flight", "settling", "cooldown", "exhausted", "trigger"]


@dataclass(frozen=True)
class Evidence:
    """What this run measured on its window (``None``: not measurable there)."""

    positives: int
    negatives: int
    auc: float | None = None
    auc_lower: float | None = None
    auc_upper: float | None = None
    calibration: float | None = None  # predicted / observed clicks (ctr.metrics.calibration)
    calibration_lower: float | None = None
    calibration_upper: float | None = None
    validation_auc: float | None = None  # the serving version's offline validation AUC
    serving_share: float = 1.0  # share of the window's impressions served by the serving version


@dataclass(frozen=True)
class History:
    """What earlier runs and the pipeline left: newest first where ordered."""

    previous_breaches: tuple[bool, ...] = ()  # earlier records' breach flags, newest first
    learned_baseline: float | None = None  # the windowed AUC of the version the serving one is judged against
    learned_calibration: float | None = None  # the same lineage's own windowed calibration, learned alike
    lease_run_id: str | None = None  # the pipeline run holding the repository lease, if unexpired
    last_trigger_at: datetime | None = None
    last_trigger_run: str | None = None
    last_run_state: str | None = None  # what became of that run: succeeded, failed, running, unknown
    last_trigger_version: int | None = None  # the version serving when the last trigger fired
    breach_since: datetime | None = None  # as_of of the first record of the current streak of breaches
    episode_triggers: int = 0  # triggers issued since breach_since (this breach's episode)
    last_episode_since: datetime | None = None  # when the breach of the last trigger's episode began
    last_episode_triggers: int = 0  # triggers issued since last_episode_since (a follow-up's budget)
    serving_version: int | None = None

    @property
    def serving_is_retrain(self) -> bool:
        """The serving version was published after the last trigger (by its run, or a later one)."""
        return (
            self.last_trigger_at is not None
            and self.serving_version is not None
            and self.serving_version != self.last_trigger_version
        )


@dataclass(frozen=True)
class Decision:
    decision: DecisionKind
    reason: str
    threshold: float | None = None
    breach: bool = False
    consecutive_breaches: int = 0
    signals: tuple[str, ...] = field(default_factory=tuple)  # "auc", "calibration"
    escalate: bool = False  # a trigger that asks for a full retrain (rule 6)
    clear: bool = False  # no breach and every point estimate inside: this window ends an episode
    follow_up: bool = False  # a trigger of retrain.follow_up (a full retrain, with or without a breach)


def threshold(rules: Rules, evidence: Evidence, history: History) -> float | None:
    """The AUC threshold of the rules (module docstring), or None when no rule applies."""
    candidates = [] if rules.absolute_auc is None else [rules.absolute_auc]
    if rules.relative_drop is not None and evidence.validation_auc is not None:
        candidates.append(evidence.validation_auc - rules.relative_drop)
    if rules.learned_baseline and history.learned_baseline is not None:
        candidates.append(history.learned_baseline - rules.baseline_margin)
    return round(max(candidates), 6) if candidates else None


def calibration_bands(rules: Rules, history: History) -> list[tuple[str, float, float]]:
    """The calibration rules' bands, each ``(name, low, high)``: ``1 ± max_deviation`` and, once
    learned, ``level × (1 ± margin)``. A breach is an interval entirely outside any of them (the
    two need not overlap: a model whose learned level is 1.25 is outside ``1 ± 0.15`` as well)."""
    bands = []
    d = rules.calibration_max_deviation
    if d is not None:
        bands.append((f"1 ± {d}", round(1.0 - d, 6), round(1.0 + d, 6)))
    if rules.calibration_learned and history.learned_calibration is not None:
        level, m = history.learned_calibration, rules.calibration_margin
        bands.append((f"learned {level:.3f} × (1 ± {m})", round(level * (1.0 - m), 6), round(level * (1.0 + m), 6)))
    return bands


def _outside(e: Evidence, rules: Rules, history: History) -> list[str]:
    """The bands the calibration interval lies entirely outside (an unbounded upper end: above)."""
    lower, upper = e.calibration_lower, e.calibration_upper
    if lower is None:
        return []
    high = math.inf if upper is None else upper
    return [
        f"{name} = [{lo:.3f}, {hi:.3f}]"
        for name, lo, hi in calibration_bands(rules, history)
        if lower > hi or high < lo
    ]


def _breaches(rules: Rules, e: Evidence, history: History, limit: float | None) -> tuple[str, ...]:
    found = []
    if limit is not None and e.auc_upper is not None and e.auc_upper < limit:
        found.append("auc")
    if _outside(e, rules, history):
        found.append("calibration")
    return tuple(found)


def _clear(rules: Rules, e: Evidence, history: History, limit: float | None) -> bool:
    """Every point estimate inside its rule: the AUC at or above the threshold, the calibration
    inside every band (a metric that could not be measured does not hold a window back)."""
    if limit is not None and e.auc is not None and e.auc < limit:
        return False
    c = e.calibration
    return c is None or all(lo <= c <= hi for _, lo, hi in calibration_bands(rules, history))


def _interval(value: float | None, lower: float | None, upper: float | None, digits: int) -> str:
    def fmt(x: float | None) -> str:
        return "∞" if x is None else f"{x:.{digits}f}"

    return f"{fmt(value)} [{fmt(lower)}, {fmt(upper)}]"


def _describe(e: Evidence, limit: float | None) -> str:
    auc = "AUC n/a" if e.auc is None else f"AUC {_interval(e.auc, e.auc_lower, e.auc_upper, 4)}"
    cal = (
        ""
        if e.calibration is None
        else f", calibration {_interval(e.calibration, e.calibration_lower, e.calibration_upper, 3)}"
    )
    return f"{auc} vs threshold {limit}{cal}"


def follow_up_due(history: History, rules: Rules, as_of: datetime) -> bool:
    """Whether ``retrain.follow_up`` asks for a retrain now (module docstring): ``follow_up`` has
    passed since the last episode's breach began, no trigger came since that moment, and the
    episode's budget (``retrain.max_per_episode``) has room.

    >>> from dataclasses import replace
    >>> from datetime import UTC, timedelta
    >>> began = datetime(2026, 1, 5, 6, tzinfo=UTC)
    >>> h = History(last_trigger_at=began, last_episode_since=began, last_episode_triggers=1)
    >>> r = Rules(follow_up=timedelta(hours=18), max_per_episode=2)
    >>> [follow_up_due(h, r, began + timedelta(hours=n)) for n in (17, 18)]
    [False, True]
    >>> follow_up_due(replace(h, last_episode_triggers=2), r, began + timedelta(hours=18))  # budget spent
    False
    """
    since, last = history.last_episode_since, history.last_trigger_at
    if rules.follow_up is None or since is None or last is None:
        return False
    due = since + rules.follow_up
    cap = rules.max_per_episode
    return as_of >= due and last < due and (cap is None or history.last_episode_triggers < cap)


def decide(evidence: Evidence, history: History, rules: Rules, as_of: datetime) -> Decision:
    """The rule table of the module docstring, applied in order."""
    e = evidence
    limit = threshold(rules, e, history)
    if e.positives < rules.min_positives or e.negatives < rules.min_negatives:
        return Decision(
            "insufficient-data",
            f"{e.positives} positives / {e.negatives} negatives in the window; "
            f"need {rules.min_positives} / {rules.min_negatives}",
            limit,
        )
    signals = _breaches(rules, e, history, limit)
    breach = bool(signals)
    streak = 0
    if breach:
        streak = 1
        for earlier in history.previous_breaches[: rules.consecutive_breaches - 1]:
            if not earlier:
                break
            streak += 1
    # a breach with no trigger in its episode yet belongs to a new episode, not to the one followed up
    follow_up = follow_up_due(history, rules, as_of) and not (breach and history.episode_triggers == 0)
    triggered = breach and streak >= rules.consecutive_breaches
    if not triggered and not follow_up:
        status = f"breach ({', '.join(signals)}) {streak}/{rules.consecutive_breaches}" if breach else "no breach"
        clear = not breach and _clear(rules, e, history, limit)
        if not breach and not clear:
            status = "no breach, but a point estimate is outside: not clear"
        return Decision("no-trigger", f"{_describe(e, limit)}: {status}", limit, breach, streak, signals, clear=clear)
    if history.lease_run_id is not None:
        reason = f"pipeline run {history.lease_run_id} is still running"
        return Decision("in-flight", reason, limit, breach, streak, signals)
    if history.serving_is_retrain and evidence.serving_share < 1.0:
        reason = (
            f"version {history.serving_version} was published after the last trigger and served "
            f"{evidence.serving_share:.0%} of this window; judged once the window is its own"
        )
        return Decision("settling", reason, limit, breach, streak, signals)
    if history.last_trigger_at is not None and as_of - history.last_trigger_at < rules.cooldown:
        # A failed run still holds the cooldown: a broken image or quota must not start a run per tick.
        state = history.last_run_state
        which = f", which {state}" if state in ("failed", "succeeded") else ""
        reason = (
            f"last trigger at {history.last_trigger_at.isoformat()} (run {history.last_trigger_run}{which}); "
            f"cooldown {rules.cooldown}"
        )
        return Decision("cooldown", reason, limit, breach, streak, signals)
    cap = rules.max_per_episode
    if triggered and cap is not None and history.episode_triggers >= cap:
        since = history.breach_since.isoformat() if history.breach_since else "this run"
        reason = (
            f"{_describe(e, limit)}: {history.episode_triggers} retrain(s) since the breach began at {since} "
            f"did not repair it (retrain.max_per_episode {cap}); a person must look"
        )
        return Decision("exhausted", reason, limit, breach, streak, signals)
    why = []
    if "auc" in signals:
        why.append(f"AUC upper bound {e.auc_upper:.4f} < threshold {limit:.4f}")
    if "calibration" in signals:
        interval = _interval(e.calibration, e.calibration_lower, e.calibration_upper, 3)
        why.append(f"calibration {interval} outside {' and '.join(_outside(e, rules, history))}")
    escalate = triggered and rules.escalate and history.episode_triggers >= 1
    if escalate:
        n = history.episode_triggers
        why.append(f"escalated to a full retrain: {n} earlier retrain(s) of this breach did not repair it")
    if follow_up and not escalate:
        assert history.last_episode_since is not None  # follow_up_due checked it
        why.append(
            f"follow-up: a full retrain {rules.follow_up} after the breach of "
            f"{history.last_episode_since.isoformat()} began, on the traffic since (retrain.follow_up)"
        )
    clear = not breach and _clear(rules, e, history, limit)
    return Decision(
        "trigger",
        "; ".join(why),
        limit,
        breach,
        streak,
        signals,
        escalate=escalate or follow_up,
        clear=clear,
        follow_up=follow_up and not escalate,
    )
