"""The monitor on real SQLite and PostgreSQL, with events written by the score service's store."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from ctr.data.dataset import day_shards
from ctr.events.store import EventStore, StoreUnavailable
from ctr.events.training_export import ExportWindow, export_days
from ctr.ids import uuid7
from ctr.repository import ModelRepository
from ctr.retrain_request import RetrainRequest
from ctr.timeutil import to_us
from ctr.train import TrainSpec, train_and_publish
from monitor.rules import Rules
from monitor.run import KfpSettings, MonitorBusy, MonitorRequest, history, run_monitor
from tests.conftest import free_port
from tests.standins.kfp_api import KfpStandIn

T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
RULES = Rules(min_positives=50, min_negatives=50, absolute_auc=0.70, cooldown=timedelta(hours=1), drift_enabled=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[], str]) -> str:
    url = f"sqlite:///{tmp_path / 'events.db'}" if request.param == "sqlite" else pg_database()
    EventStore(url).migrate()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[], str]) -> str:
    """A reachable database that holds no event log yet (never migrated)."""
    return f"sqlite:///{tmp_path / 'bare.db'}" if request.param == "sqlite" else pg_database()


@pytest.fixture(scope="module")
def repo(small_days: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    r = ModelRepository(tmp_path_factory.mktemp("monitor") / "repo")
    train_and_publish(TrainSpec(small_days, [0], 1, experiment="lr"), r)
    return r


def log_traffic(url: str, n: int, quality: float, seed: int, start: datetime = T0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` impressions over an hour; pCTR informative to the degree ``quality`` (0..1)."""
    rng = np.random.default_rng(seed)
    p_true = rng.beta(1.5, 4.0, n)
    pctr = np.clip(quality * p_true + (1 - quality) * rng.beta(1.5, 4.0, n), 1e-4, 1 - 1e-4)
    clicked = rng.random(n) < p_true
    rows, clicks = [], []
    for k in range(n):
        at = start + timedelta(seconds=3600 * k / n)
        iid = uuid7()
        row: dict[str, Any] = {
            "impression_id": iid,
            "request_id": f"r{k}",
            "ad_id": f"a{k % 50}",
            "served_at_us": to_us(at),
            "model_version": 1,
            "pctr": float(pctr[k]),
        }
        row |= {f"i{i}": k % 7 for i in range(1, 14)} | {f"c{j}": (k * 7919 + j) % 1000 for j in range(1, 27)}
        rows.append(row)
        if clicked[k]:
            clicks.append((iid, at + timedelta(minutes=5)))
    store = EventStore(url)
    store.log_impressions(rows)
    for iid, at in clicks:
        store.record_clicks([iid], to_us(at))
    return pctr, clicked.astype(int)


def request(url: str, repo: ModelRepository, as_of: datetime, rules: Rules = RULES, **kw: Any) -> MonitorRequest:
    return MonitorRequest(db_url=url, repo=repo.root, rules=rules, as_of=as_of, **kw)


def test_auc_and_interval_match_sklearn_and_a_bootstrap(db_url: str, repo: ModelRepository) -> None:
    pctr, label = log_traffic(db_url, 3000, quality=0.8, seed=1)
    record = run_monitor(request(db_url, repo, T0 + timedelta(hours=2)))
    assert record["labelled"] == 3000 and record["positives"] == int(label.sum())
    assert record["auc"] == pytest.approx(roc_auc_score(label, pctr), abs=1e-6)
    rng = np.random.default_rng(0)
    boot = [roc_auc_score(label[i], pctr[i]) for i in (rng.integers(0, 3000, 3000) for _ in range(300))]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert record["auc_lower"] == pytest.approx(lo, abs=0.01) and record["auc_upper"] == pytest.approx(hi, abs=0.01)
    assert record["per_version"]["1"]["auc"] == record["auc"]
    assert record["expected_auc"] is not None and record["calibration"] > 0
    assert history(db_url)[0]["decision"] == record["decision"] == "no-trigger"


def test_only_matured_impressions_count(db_url: str, repo: ModelRepository) -> None:
    log_traffic(db_url, 600, quality=0.8, seed=2)
    early = run_monitor(request(db_url, repo, T0 + timedelta(minutes=40), dry_run=True))
    late = run_monitor(request(db_url, repo, T0 + timedelta(hours=2), dry_run=True))
    assert 0 < early["labelled"] < late["labelled"] == 600  # 30 min window: only the first 10 min matured
    assert history(db_url) == []  # dry runs write nothing


def test_no_decision_under_the_minimum_counts(db_url: str, repo: ModelRepository) -> None:
    log_traffic(db_url, 80, quality=0.0, seed=3)
    record = run_monitor(request(db_url, repo, T0 + timedelta(hours=2)))
    assert record["decision"] == "insufficient-data"
    empty = run_monitor(request(db_url, repo, T0 - timedelta(days=3)))  # an empty window
    assert empty["labelled"] == 0 and empty["decision"] == "insufficient-data" and empty["auc"] is None


def test_a_drop_triggers_once_and_cooldown_holds(db_url: str, repo: ModelRepository) -> None:
    log_traffic(db_url, 3000, quality=0.0, seed=4)  # a useless model: AUC ≈ 0.5
    decisions = [
        run_monitor(request(db_url, repo, T0 + timedelta(hours=2, minutes=m)))["decision"] for m in (0, 10, 20)
    ]
    assert decisions == ["trigger", "cooldown", "cooldown"]
    after = run_monitor(request(db_url, repo, T0 + timedelta(hours=3, minutes=5)))
    assert after["decision"] == "trigger"  # the cooldown (1 h) has passed
    assert [r["decision"] for r in history(db_url)].count("trigger") == 2


def test_two_concurrent_runs_trigger_once(db_url: str, repo: ModelRepository) -> None:
    log_traffic(db_url, 3000, quality=0.0, seed=5)
    outcomes: list[str] = []

    def one() -> None:
        try:
            outcomes.append(run_monitor(request(db_url, repo, T0 + timedelta(hours=2)))["decision"])
        except MonitorBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("trigger") == 1
    assert set(outcomes) <= {"trigger", "cooldown", "busy"}


def test_a_crashed_runs_lease_expires(db_url: str, repo: ModelRepository) -> None:
    from monitor.monitor_lease import try_acquire

    store = EventStore(db_url)
    assert try_acquire(store, "crashed-run", timedelta(seconds=1))
    with pytest.raises(MonitorBusy):
        run_monitor(request(db_url, repo, T0))
    time.sleep(1.2)
    assert run_monitor(request(db_url, repo, T0))["decision"] == "insufficient-data"


def test_kfp_trigger_against_a_stand_in_api_server(db_url: str, repo: ModelRepository, tmp_path: Path) -> None:
    log_traffic(db_url, 3000, quality=0.0, seed=6)
    target = RetrainRequest(repo=str(repo.root), work_dir=str(tmp_path / "work"), events=True, since="-1d")
    with KfpStandIn() as kfp:
        record = run_monitor(
            request(
                db_url,
                repo,
                T0 + timedelta(hours=2),
                rules=replace(RULES, challenge=True),
                trigger="kfp",
                target=target,
                kfp=KfpSettings(kfp.url, "secret-token", None, "ctr-loop"),
            )
        )
    assert record["decision"] == "trigger" and record["submission"] == "ok" and record["run_id"] == "run-1"
    created = [r for r in kfp.requests if r["method"] == "POST" and r["path"].startswith("/apis/v2beta1/runs")]
    assert len(created) == 1
    body = created[0]["body"]
    sent = RetrainRequest.from_json(body["runtime_config"]["parameters"]["request"])
    assert sent.mode == "incremental" and sent.events and sent.since == "-1d"
    assert sent.challenge and not target.challenge  # retrain.challenge: the rules ask the run for rivals
    assert sent.now == (T0 + timedelta(hours=2)).isoformat()
    assert db_url not in json.dumps(body)  # the database URL is never a pipeline parameter
    spec = body["pipeline_spec"].get("pipeline_spec", body["pipeline_spec"])  # with a platform spec it is nested
    assert spec["pipelineInfo"]["name"] == "ctr-retrain"
    assert created[0]["authorization"] == "Bearer secret-token"


def test_pipeline_run_challenge_flag_reaches_the_submitted_request(tmp_path: Path) -> None:
    """``ctr pipeline run --challenge`` (a stand-in KFP API server: none runs here) submits a
    request whose ``challenge`` is set; without the flag it is not."""
    import subprocess
    import sys

    sent = []
    with KfpStandIn() as kfp:
        for flag in ("--challenge", "--no-challenge"):
            args = ["pipeline", "run", "--host", kfp.url, "--repo", "/mnt/ctr/repo", "--events", "--since", "-1d"]
            done = subprocess.run(
                [sys.executable, "-m", "ctr", *args, flag, "--json"], capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
        for r in kfp.requests:
            if r["method"] == "POST" and r["path"].startswith("/apis/v2beta1/runs"):
                sent.append(RetrainRequest.from_json(r["body"]["runtime_config"]["parameters"]["request"]))
    assert [(r.challenge, r.mode, r.events) for r in sent] == [
        (True, "incremental", True),
        (False, "incremental", True),
    ]


def test_the_monitor_records_what_became_of_the_run_it_triggered(
    db_url: str, repo: ModelRepository, tmp_path: Path
) -> None:
    """The submission succeeded; the run then failed or succeeded (the KFP stand-in says which): the
    next monitor run records that outcome and names it in its reason; either way the cooldown holds
    (a failing run per CronJob tick would be a storm of GPU runs)."""
    log_traffic(db_url, 3000, quality=0.0, seed=9)
    target = RetrainRequest(repo=str(repo.root), work_dir=str(tmp_path / "work"), events=True, since="-1d")
    for outcome in ("FAILED", "SUCCEEDED"):
        with KfpStandIn(execute=lambda _spec, _params, state=outcome: state) as kfp:
            kfp_settings = KfpSettings(kfp.url, None, None, "ctr-loop")
            as_of = T0 + timedelta(hours=2 if outcome == "FAILED" else 4)
            first = run_monitor(request(db_url, repo, as_of, trigger="kfp", target=target, kfp=kfp_settings))
            assert first["decision"] == "trigger" and first["submission"] == "ok", first
            assert kfp.wait(first["run_id"], timeout=10)["state"] == outcome
            later = as_of + timedelta(minutes=10)
            second = run_monitor(request(db_url, repo, later, trigger="kfp", target=target, kfp=kfp_settings))
        assert second["last_run"] == {"run_id": first["run_id"], "state": outcome.lower()}
        assert second["decision"] == "cooldown" and f"which {outcome.lower()}" in second["reason"], second


def test_a_failed_submission_is_recorded_and_retried(db_url: str, repo: ModelRepository, tmp_path: Path) -> None:
    log_traffic(db_url, 3000, quality=0.0, seed=7)
    target = RetrainRequest(repo=str(repo.root), work_dir=str(tmp_path / "work"), events=True, since="-1d")
    dead = KfpSettings(f"http://127.0.0.1:{free_port()}", None, None)
    first = run_monitor(request(db_url, repo, T0 + timedelta(hours=2), trigger="kfp", target=target, kfp=dead))
    assert first["decision"] == "trigger" and first["submission"] == "failed"
    with KfpStandIn() as kfp:
        retry = run_monitor(
            request(
                db_url,
                repo,
                T0 + timedelta(hours=2, minutes=5),
                trigger="kfp",
                target=target,
                kfp=KfpSettings(kfp.url, None, None),
            )
        )
    assert retry["decision"] == "trigger" and retry["submission"] == "ok"  # no cooldown from the failure


class _Gateway:
    """A local HTTP server that records what a Pushgateway client sends."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                outer.bodies.append(("PUT", self.path, self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"127.0.0.1:{self.server.server_address[1]}"


def test_pushgateway_protocol_and_outage(db_url: str, repo: ModelRepository) -> None:
    log_traffic(db_url, 600, quality=0.8, seed=8)
    gateway = _Gateway()
    run_monitor(request(db_url, repo, T0 + timedelta(hours=2), pushgateway=gateway.url))
    gateway.server.shutdown()
    ((method, path, body),) = gateway.bodies
    assert method == "PUT" and path == "/metrics/job/ctr_monitor"
    text = body.decode()
    for name in (
        "ctr_monitor_auc{",
        "ctr_monitor_auc_lower",
        "ctr_monitor_labelled_impressions",
        "ctr_monitor_triggers_total",
        "ctr_monitor_last_run_timestamp_seconds",
    ):
        assert name in text
    assert 'model_version="1"' in text
    down = run_monitor(
        request(db_url, repo, T0 + timedelta(hours=2, minutes=1), pushgateway=f"127.0.0.1:{free_port()}")
    )
    assert down["decision"] == "no-trigger"  # a warning, not a failure


def test_a_database_without_the_event_log_says_how_to_create_it(
    bare_db_url: str, repo: ModelRepository, tmp_path: Path
) -> None:
    missing = re.escape("the event database has no event-log schema; run `ctr events migrate --db URL`")
    with pytest.raises(StoreUnavailable, match="could not take the monitor lease: " + missing):
        run_monitor(request(bare_db_url, repo, T0))
    with pytest.raises(StoreUnavailable, match="could not measure and decide: " + missing):
        run_monitor(request(bare_db_url, repo, T0, dry_run=True))  # no lease: the window query fails first
    with pytest.raises(StoreUnavailable, match="could not read monitor decisions: " + missing):
        history(bare_db_url)
    window = ExportWindow(T0, T0 + timedelta(days=1), timedelta(minutes=30), T0 + timedelta(days=2))
    with pytest.raises(StoreUnavailable, match="could not read impressions: " + missing):
        export_days(EventStore(bare_db_url), window, tmp_path / "out")
    store = EventStore(bare_db_url)
    store.migrate()
    with store.engine.begin() as conn:  # as a database of the first release would be
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    older = store.failure("read impressions", OperationalError("SELECT 1", None, Exception("no such column")))
    assert str(older) == (
        "could not read impressions: the event database has schema revision 0001, not 0004; "
        "run `ctr events migrate --db URL`"
    )
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    assert run_monitor(request(bare_db_url, repo, T0))["decision"] == "insufficient-data"


def test_unreachable_database_fails_cleanly(repo: ModelRepository) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope"
    with pytest.raises(StoreUnavailable, match="unreachable"):
        run_monitor(request(url, repo, T0))


@pytest.mark.slow
def test_local_trigger_starts_a_real_pipeline_run(pipeline_days: Path, tmp_path: Path) -> None:
    """Post-drift traffic logged with its real labels → the monitor triggers → version 2 appears."""
    repo = ModelRepository(tmp_path / "repo")
    train_and_publish(TrainSpec(pipeline_days, [0, 1], 2, experiment="lr"), repo)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    store = EventStore(url)
    store.migrate()
    frame = pl.concat([day_shards(pipeline_days, d).scan().collect() for d in (4, 5)])
    rows, clicks = [], []
    for k, row in enumerate(frame.iter_rows(named=True)):
        at = T0 + timedelta(seconds=172_800 * k / frame.height)  # two (simulated) days
        iid = uuid7()
        rows.append(
            {
                "impression_id": iid,
                "request_id": "r",
                "ad_id": "a",
                "served_at_us": to_us(at),
                "model_version": 1,
                "pctr": 0.25,
                **{f"i{i}": row[f"I{i}"] for i in range(1, 14)},
                **{f"c{j}": row[f"C{j}"] for j in range(1, 27)},
            }
        )
        if row["label"]:
            clicks.append((iid, to_us(at + timedelta(minutes=1))))
    store.log_impressions(rows)
    for iid, at_us in clicks:
        store.record_clicks([iid], at_us)
    target = RetrainRequest(
        repo=str(repo.root),
        data_dir=str(pipeline_days),
        work_dir=str(tmp_path / "work"),
        experiment="lr",
        events=True,
        since="-2d",
    )
    as_of = T0 + timedelta(days=2, hours=1)
    record = run_monitor(
        request(
            url,
            repo,
            as_of,
            trigger="local",
            target=target,
            report_dir=tmp_path / "report",
            rules=Rules(
                min_positives=50, min_negatives=50, absolute_auc=0.99, max_age=timedelta(days=3), max_labelled=100_000
            ),
        )
    )
    assert record["decision"] == "trigger" and record["submission"] == "ok"
    assert record["drift_share"] is not None and (tmp_path / "report" / "drift.html").exists()
    deadline = time.monotonic() + 300
    while repo.versions() != [1, 2] and time.monotonic() < deadline:
        time.sleep(1)
    log = (tmp_path / "work" / "logs" / f"{record['run_id']}.log").read_text()
    assert repo.versions() == [1, 2], log[-3000:]
    assert repo.metadata(2)["parent_version"] == 1 and repo.metadata(2)["pipeline"]["run_id"] == record["run_id"]


def test_cli_reports_an_unreachable_database_in_one_line_without_its_password(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{free_port()}/x"

    def ctr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ctr", *args], capture_output=True, text=True, timeout=60)

    run = ctr("monitor", "run", "--db", url, "--repo", str(tmp_path))
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: event database postgresql+psycopg://postgres:***@127.0.0.1:{url.rsplit(':', 1)[1]} is unreachable; "
        "no decision recorded"
    )
    past = ctr("monitor", "history", "--db", url)
    assert past.returncode == 1 and "Traceback" not in past.stderr
    assert past.stderr.strip().splitlines()[-1].startswith("error: could not read monitor decisions: ")
    assert "s3cret" not in run.stderr + past.stderr


def test_the_breach_began_at_the_first_record_of_the_current_streak(db_url: str) -> None:
    """An escalation trains on the data since the breach began: the first breached record after
    the last calm one (records without enough data neither start nor end a streak)."""
    from sqlalchemy import insert

    from ctr.events.tables import monitor_runs
    from monitor.run import _breach_since

    store = EventStore(db_url)
    now = T0 + timedelta(hours=12)
    assert _breach_since(store, now) == now  # no record at all: this run's breach begins it

    def record(hours: int, breach: bool, decision: str, clear: bool | None = None) -> None:
        at = to_us(T0 + timedelta(hours=hours))
        body = "{}" if clear is None else json.dumps({"clear": clear})
        with store.engine.begin() as conn:
            conn.execute(
                insert(monitor_runs).values(
                    started_at_us=at, as_of_us=at, window_start_us=at, window_end_us=at, labelled=1,
                    positives=1, breach=breach, decision=decision, reason="", trigger="local",
                    submission="none", record=body,
                )
            )  # fmt: skip

    record(0, True, "trigger")  # an earlier episode
    record(2, False, "no-trigger")  # it ended
    record(4, True, "trigger")  # this one began here
    record(6, False, "insufficient-data")  # no evidence either way
    record(8, True, "cooldown")
    assert _breach_since(store, now) == T0 + timedelta(hours=4)
    record(9, False, "no-trigger", clear=False)  # the interval reached back, the estimate did not
    assert _breach_since(store, now) == T0 + timedelta(hours=4)  # not a repair: the episode goes on
    record(10, False, "no-trigger", clear=True)
    assert _breach_since(store, now) == now  # calm again: a breach now is the first of a new streak


def _monitor_record(
    store: EventStore,
    hours: int,
    decision: str,
    version: int,
    auc: float | None = None,
    shared_with: int | None = None,
    calibration: float | None = None,
) -> None:
    from sqlalchemy import insert

    from ctr.events.tables import monitor_runs

    at = to_us(T0 + timedelta(hours=hours))
    per_version = {str(version): {}} | ({} if shared_with is None else {str(shared_with): {}})
    record = {"auc": auc, "calibration": calibration, "decision": decision, "per_version": per_version}
    with store.engine.begin() as conn:
        conn.execute(
            insert(monitor_runs).values(
                started_at_us=at, as_of_us=at, window_start_us=at, window_end_us=at, labelled=1000,
                positives=100, breach=decision != "no-trigger", decision=decision, reason="", trigger="local",
                submission="ok", serving_version=version, auc=auc, record=json.dumps(record),
            )
        )  # fmt: skip


def test_a_retrain_that_answers_a_breach_is_judged_against_the_level_before_it(db_url: str, tmp_path: Path) -> None:
    """The learned baseline of an incremental version is the one its parent's bar came from, and
    that of a full version a monitor trigger published is the one of the version it replaced: a
    retrain that half repairs a breach, warm or from scratch, does not lower the bar. A full
    version started otherwise learns its own; a lineage whose anchor never had a window of its
    own falls back to the version's own."""
    from monitor.run import _learned_baseline

    store = EventStore(db_url)
    repo = ModelRepository(tmp_path / "repo")
    lineage = {1: ("full", None), 2: ("incremental", 1), 3: ("incremental", 2)}
    lineage |= {4: ("full", None), 5: ("incremental", 9), 6: ("full", None), 7: ("full", None)}
    replaced = {4: ("local-1", 3), 6: ("monitor-1", 4), 7: ("monitor-2", 9)}  # run id, gate's serving version
    for version, (mode, parent) in lineage.items():
        (repo.model_dir / str(version)).mkdir(parents=True)
        meta: dict[str, Any] = {"mode": mode, "parent_version": parent}
        if version in replaced:
            run_id, serving = replaced[version]
            meta["pipeline"] = {"run_id": run_id, "gate": {"serving_version": serving}}
        (repo.model_dir / str(version) / "metadata.json").write_text(json.dumps(meta))
    rules = Rules(learned_baseline=True, baseline_windows=1, calibration_learned=True)
    _monitor_record(store, 0, "no-trigger", 1, 0.75, calibration=1.05)  # version 1's own level
    _monitor_record(store, 10, "trigger", 3, 0.70)
    _monitor_record(store, 20, "no-trigger", 4, 0.72, calibration=1.1)
    _monitor_record(store, 30, "no-trigger", 5, 0.69)
    _monitor_record(store, 40, "no-trigger", 6, 0.66, calibration=0.98)
    _monitor_record(store, 50, "no-trigger", 7, 0.68)
    assert _learned_baseline(store, repo, 3, rules) == 0.75  # 3 → 2 → 1 (full)
    assert _learned_baseline(store, repo, 4, rules) == 0.72  # a full version started by hand sets its own level
    assert _learned_baseline(store, repo, 5, rules) == 0.69  # its parent 9 was pruned: its own
    assert _learned_baseline(store, repo, 6, rules) == 0.72  # a trigger's full retrain: the level it answered
    assert _learned_baseline(store, repo, 6, rules, "calibration") == 0.98  # recalibrated: its own level
    assert _learned_baseline(store, repo, 7, rules) == 0.68  # it replaced a pruned version: its own
    assert _learned_baseline(store, repo, 3, Rules(learned_baseline=False)) is None
    # the median of the first three own windows: one lucky small first window does not set the bar
    _monitor_record(store, 22, "no-trigger", 4, 0.70)
    assert _learned_baseline(store, repo, 4, replace(rules, baseline_windows=3)) is None  # two so far
    _monitor_record(store, 24, "no-trigger", 4, 0.66)
    _monitor_record(store, 26, "no-trigger", 4, 0.50)  # a fourth is not used
    assert _learned_baseline(store, repo, 4, replace(rules, baseline_windows=3)) == 0.70


def test_the_calibration_level_is_learned_like_the_auc(db_url: str, tmp_path: Path) -> None:
    """``calibration.baseline: learned``: the full ancestor's own windowed calibration (median of
    its first windows), not 1 — a model serving its top-scored ads over-predicts them a little."""
    from monitor.run import _learned_baseline

    store = EventStore(db_url)
    repo = ModelRepository(tmp_path / "repo")
    for version, (mode, parent) in {1: ("full", None), 2: ("incremental", 1)}.items():
        (repo.model_dir / str(version)).mkdir(parents=True)
        meta = {"mode": mode, "parent_version": parent}
        (repo.model_dir / str(version) / "metadata.json").write_text(json.dumps(meta))
    rules = Rules(calibration_learned=True, baseline_windows=3)
    for hours, cal in ((0, 1.04), (2, 1.10), (4, 1.06), (6, 0.90)):
        _monitor_record(store, hours, "no-trigger", 1, 0.75, calibration=cal)
    _monitor_record(store, 10, "trigger", 2, 0.70, calibration=1.30)
    assert _learned_baseline(store, repo, 2, rules, "calibration") == 1.06  # version 1's first three
    both = replace(rules, learned_baseline=True)
    assert _learned_baseline(store, repo, 2, both) == 0.75  # the AUC level is kept apart from it
    assert _learned_baseline(store, repo, 2, both, "calibration") == 1.06
    assert _learned_baseline(store, repo, 2, replace(rules, calibration_learned=False), "calibration") is None


def test_an_episode_counts_the_triggers_since_its_breach_began(db_url: str) -> None:
    from monitor.run import _breach_since, _episode_triggers

    store = EventStore(db_url)
    _monitor_record(store, 0, "trigger", 1)  # an earlier episode
    _monitor_record(store, 2, "no-trigger", 2)  # it ended
    _monitor_record(store, 4, "trigger", 2)  # this one began here
    _monitor_record(store, 6, "settling", 3)
    _monitor_record(store, 10, "trigger", 3)
    now = T0 + timedelta(hours=12)
    since = _breach_since(store, now)
    assert since == T0 + timedelta(hours=4) and _episode_triggers(store, since) == 2
    # a calm window that versions 3 and 4 shared does not end it: 4 was not yet judged on its own
    _monitor_record(store, 12, "no-trigger", 4, shared_with=3)
    _monitor_record(store, 14, "trigger", 4)
    assert _breach_since(store, now) == T0 + timedelta(hours=4)
    _monitor_record(store, 16, "no-trigger", 4)  # its own calm window ends it
    assert _breach_since(store, now) == now


def test_a_follow_up_retrain_comes_once_after_a_repaired_episode(db_url: str, repo: ModelRepository) -> None:
    """``retrain.follow_up``: the trigger records when its episode's breach began; once the
    follow-up time has passed, a window without a breach still asks for one full retrain, counted
    in that episode, and only once."""
    rules = replace(RULES, max_age=timedelta(hours=1, minutes=30), max_per_episode=2, follow_up=timedelta(hours=3))
    log_traffic(db_url, 3000, quality=0.0, seed=11)  # T0 .. T0 + 1 h: a useless model
    first = run_monitor(request(db_url, repo, T0 + timedelta(hours=2), rules))
    assert first["decision"] == "trigger" and not first["follow_up"]
    assert first["episode_since"] == (T0 + timedelta(hours=2)).isoformat()  # this run's breach began it
    log_traffic(db_url, 3000, quality=1.0, seed=12, start=T0 + timedelta(hours=3))  # repaired traffic
    calm = run_monitor(request(db_url, repo, T0 + timedelta(hours=4, minutes=30), rules))
    assert calm["decision"] == "no-trigger" and calm["clear"]  # the episode ended; 30 min before the follow-up
    due = run_monitor(request(db_url, repo, T0 + timedelta(hours=5), rules))
    assert due["decision"] == "trigger" and due["follow_up"] and due["escalate"] and not due["breach"]
    assert due["episode_since"] == first["episode_since"]  # it belongs to the episode it follows up
    assert "follow-up: a full retrain 3:00:00 after the breach of" in due["reason"]
    later = run_monitor(request(db_url, repo, T0 + timedelta(hours=5, minutes=20), rules))
    assert later["decision"] == "no-trigger" and not later["follow_up"]  # once, not at every run after
