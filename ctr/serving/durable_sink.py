"""Impressions and clicks made durable before the API answers: group commit, spool, replay.

``write(payload)`` hands one request's impressions (a list of rows) or clicks (``Clicks``) to a
``GroupCommitWriter``: the payloads of concurrent requests share one transaction
(``make_durable``). When the event log is down, slow or locked, impressions go to the on-disk
spool (and so do new ones while older ones wait there, to keep their order); clicks are
answered from the log or fail with ``StoreUnavailable``. Rows the log refuses for their
content are quarantined by the store. A replay loop drains the spool into the log; nothing that
goes wrong in one pass ends it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi.concurrency import run_in_threadpool

from ctr.events.group_commit import GroupCommitWriter
from ctr.events.spool import Spool, SpoolFull
from ctr.events.store import ClickCounts, ContentRefused, EventStore, StoreUnavailable
from ctr.serving.api_metrics import ApiMetrics

log = logging.getLogger(__name__)

Impressions = list[dict[str, Any]]  # the rows one score request logs


@dataclass(frozen=True)
class Clicks:
    """The clicks one click request records."""

    impression_ids: list[str]
    clicked_at_us: int


def event_count(payload: Impressions | Clicks) -> int:
    return len(payload.impression_ids) if isinstance(payload, Clicks) else len(payload)


class _Backlog(Exception):
    """Spooled impressions wait: new ones go behind them without asking the database."""


class DurableSink:
    """The write path of one API process (see the module docstring).

    ``db_url`` is used for migrations only, through an engine without the request path's
    time-outs; ``own_store``: dispose of ``events`` at ``stop``.
    """

    def __init__(
        self, events: EventStore, spool: Spool, metrics: ApiMetrics, db_url: str, *, migrate: bool, own_store: bool
    ) -> None:
        self.events, self.spool, self.metrics = events, spool, metrics
        self.db_url, self.migrate_at_start, self.own_store = db_url, migrate, own_store
        self.migrated = not migrate
        self._writer: GroupCommitWriter[Impressions | Clicks, ClickCounts | Exception | None] | None = None
        self._replayer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.migrate_at_start:
            self.migrated = await run_in_threadpool(self.migrate)
        self._writer = GroupCommitWriter(self.make_durable, size=event_count)
        self._writer.start()
        self._replayer = asyncio.create_task(self.replay_forever())

    async def stop(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
        if self._writer is not None:
            await self._writer.stop()
        if self.own_store:
            self.events.dispose()

    async def write(self, payload: Impressions | Clicks) -> ClickCounts | Exception | None:
        assert self._writer is not None, "start() first"
        return await self._writer.write(payload)

    def migrate(self) -> bool:
        """The schema at the newest revision, through an engine without the request path's time-outs."""
        unbounded = EventStore(self.db_url) if self.own_store else self.events
        try:
            unbounded.migrate()
            return True
        except StoreUnavailable as exc:
            log.warning("event log not migrated (%s); impressions spool until it is", exc)
            return False
        finally:
            if unbounded is not self.events:
                unbounded.dispose()

    async def replay_forever(self) -> None:
        """Drain the spool while it holds batches; nothing that goes wrong in one pass ends the loop."""
        counted: dict[str, int] = {}  # quarantined rows already in the metric, by kind
        while True:
            await asyncio.sleep(0.5)
            try:
                if not self.migrated:  # the database was down at start: the schema (quarantine included) first
                    self.migrated = await run_in_threadpool(self.migrate)
                if self.spool.holds_batches() and self.migrated:
                    await run_in_threadpool(self.spool.replay, self.events)
                self.metrics.spooled.set(self.spool.size_bytes())
                for kind, n in dict(self.events.quarantined_rows).items():  # from the commit path and the replay
                    self.metrics.quarantined.labels(kind).inc(n - counted.get(kind, 0))
                    counted[kind] = n
            except Exception:  # logged and retried next pass: a dead replay loop would spool forever
                self.metrics.errors.labels("replay").inc()
                log.exception("spool replay failed; retrying")

    def make_durable(self, payloads: list[Impressions | Clicks]) -> list[ClickCounts | Exception | None]:
        """One transaction for the impressions and clicks of several requests (module docstring)."""
        started = time.perf_counter()
        rows = [row for p in payloads if isinstance(p, list) for row in p]
        clicks = [(p.impression_ids, p.clicked_at_us) for p in payloads if isinstance(p, Clicks)]
        impressions_outcome: Exception | None = None
        counts: list[ClickCounts | ContentRefused] | Exception = []
        backlog = self.spool.holds_batches()
        try:
            if backlog and not clicks:  # nothing for the database now: the rows join the backlog
                raise _Backlog
            written = self.events.write([] if backlog else rows, clicks)
            counts = written.clicks
            if written.quarantined:  # ctr_api_quarantined_total counts it (the replay loop reads the store's count)
                log.error(
                    "%d impression rows refused by the event log for their content: quarantined", written.quarantined
                )
            if rows and not backlog:
                self.metrics.impressions.labels("store").inc(len(rows) - written.quarantined)
                rows = []
        except _Backlog:
            pass
        except StoreUnavailable as exc:
            self.metrics.errors.labels("store").inc()
            log.warning("event log unavailable (%s); %d impressions to the spool", exc, len(rows))
            counts = exc
        if rows:
            try:
                self.spool.append(rows)
                self.metrics.impressions.labels("spool").inc(len(rows))
            except SpoolFull as exc:
                impressions_outcome = exc
        self.metrics.stages.labels("commit").observe(time.perf_counter() - started)
        return _outcomes(payloads, impressions_outcome, counts)


def _outcomes(
    payloads: list[Impressions | Clicks],
    impressions: Exception | None,
    counts: list[ClickCounts | ContentRefused] | Exception,
) -> list[ClickCounts | Exception | None]:
    """Each payload's outcome, in order: impressions share one; click requests take theirs."""
    if isinstance(counts, Exception):
        return [impressions if isinstance(p, list) else counts for p in payloads]
    per_click = iter(counts)
    return [impressions if isinstance(p, list) else next(per_click) for p in payloads]
