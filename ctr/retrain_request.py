"""``RetrainRequest``: the one description of a retraining run, with its defaults.

Every way of starting a run builds this object — ``ctr pipeline run|schedule``, the monitor's
``local`` and ``kfp`` triggers, the demo — and the pipeline reads it: it is the KFP pipeline's
single parameter (``request``, JSON), so the defaults below are the only spelling of them.

It holds no secret. The event log's URL reaches the run through the environment
(``CTR_DB_URL`` / ``CTR_DB_URL_FILE``: a Kubernetes Secret in the pipeline pods, the caller's
environment for a local run); ``events=True`` asks the run to export matured impressions.

Times: ``since``/``until`` are ISO 8601 instants, or offsets from ``now`` such as ``-24h``
(``until`` empty means ``now``); ``now`` is an instant or ``now`` (the run's start). A
recurring run with ``since="-24h"`` therefore trains on the last day before each run.

>>> r = RetrainRequest(repo="/mnt/ctr/repo", events=True, since="-1d", now="2026-12-01T12:00:00Z")
>>> [t.isoformat() for t in r.window()]
['2026-11-30T12:00:00+00:00', '2026-12-01T12:00:00+00:00']
>>> RetrainRequest.from_json(r.to_json()) == r
True
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from ctr.errors import InputError
from ctr.timeutil import parse_duration, parse_time

ATTRIBUTION_WINDOW = "30m"  # a click counts if it comes within this time of its impression
ATTRIBUTION = parse_duration(ATTRIBUTION_WINDOW)  # the same, as a timedelta
MODES = ("full", "incremental")  # from scratch, or warm-started from the serving version


def check_mode(mode: str) -> None:
    """``InputError`` unless ``mode`` is one of ``MODES``."""
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")


@dataclass(frozen=True)
class RetrainRequest:
    """One pipeline run: what it trains on, how, and where it writes (paths as the run sees them)."""

    repo: str  # the model repository (Triton's)
    mode: str = "incremental"
    data_dir: str = ""  # history days in the Criteo layout ("" = none)
    train_days: str = ""  # e.g. "0-5"; without events, the days to train on
    valid_day: int = 0
    holdout_day: int = -1  # the gate's fresh day; -1 = valid_day + 1
    work_dir: str = "ctr-pipeline-work"  # scratch: prepared data, per run
    experiment: str = "dcn"
    seed: int = -1  # -1 = the experiment's seed
    epsilon: float = 0.002  # gate: publish if candidate AUC >= serving AUC - epsilon (or its log loss is lower)
    events: bool = False  # export matured impressions of [since, until) from the event log
    since: str = ""
    until: str = ""
    attribution_window: str = ATTRIBUTION_WINDOW
    now: str = "now"
    fallback_to_full: bool = False  # incremental without a serving version trains from scratch
    challenge: bool = False  # incremental: full candidates from scratch challenge the warm start (ctr.retrain)
    run_id: str = ""  # holds the repository lease; "" = the KFP job name (or a new id locally)

    def __post_init__(self) -> None:
        """Refuse here what would otherwise fail a run's first task (``InputError``)."""
        check_mode(self.mode)
        if not self.repo:
            raise InputError("a retrain request needs the model repository (--repo)")
        if not (math.isfinite(self.epsilon) and 0 <= self.epsilon < 1):
            raise InputError(f"--epsilon must lie in [0, 1), got {self.epsilon}")
        parse_duration(self.attribution_window, "--attribution-window")
        if self.now != "now":
            parse_time(self.now, "--now")
        if self.events:
            if not self.since:
                raise InputError("an event-log run needs --since (an instant, or an offset such as -24h)")
            self.window()
        elif not self.train_days:
            raise InputError("a run without the event log needs --train-days (and --data)")

    @property
    def holdout(self) -> int:
        return self.valid_day + 1 if self.holdout_day < 0 else self.holdout_day

    def instant(self) -> datetime:
        """``now`` as an instant (the current time for ``now``)."""
        return parse_time(self.now, "--now")

    def window(self) -> tuple[datetime, datetime]:
        """``[since, until)`` resolved against ``now``."""
        now = self.instant()
        since, until = _at(self.since, now, "--since"), _at(self.until or "now", now, "--until")
        if since >= until:
            raise InputError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
        return since, until

    def replace(self, **changes: Any) -> RetrainRequest:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RetrainRequest:
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"unknown retrain request field(s): {', '.join(unknown)}")
        return cls(**raw)


DEFAULTS = RetrainRequest(repo="-", train_days="-")  # the defaults, for flags that show them


def _at(text: str, now: datetime, name: str) -> datetime:
    """An instant, or ``now`` minus an offset like ``-24h``."""
    if text.strip().lower() == "now":
        return now
    if text.startswith("-"):
        return now - parse_duration(text[1:], name)
    return parse_time(text, name)


def event_window_since(export_window: timedelta) -> str:
    """``since`` for a run that trains on the last ``export_window`` before its ``now``."""
    return f"-{int(export_window.total_seconds())}s"
