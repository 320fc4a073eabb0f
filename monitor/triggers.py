"""Ways to start the incremental pipeline: ``none`` (alert only), ``local`` and ``kfp``.

``local`` starts ``ctr pipeline run --mode incremental --local`` detached (its own session,
output to a log file) and returns at once. ``kfp`` submits through ``kfp.Client``
(host, token, namespace and experiment from flags or ``CTR_KFP_*``). Both train on the
matured impressions of the event log plus a replay of the history data directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ctr.errors import CtrError
from ctr.ids import uuid7


class SubmissionFailed(CtrError):
    """The pipeline could not be started; the monitor records it and retries next run."""


@dataclass(frozen=True)
class PipelineTarget:
    """What a triggered run trains on."""

    repo: Path
    db_url: str
    data_dir: Path | None
    work_dir: Path
    experiment: str = "dcn"
    export_window: timedelta = timedelta(days=1)
    attribution_window: timedelta = timedelta(minutes=30)


def _window(target: PipelineTarget, as_of: datetime) -> tuple[str, str]:
    return (as_of - target.export_window).isoformat(), as_of.isoformat()


def start_local(target: PipelineTarget, as_of: datetime, log_dir: Path) -> str:
    """Start the local pipeline detached; returns the run id it was given."""
    run_id = f"monitor-{uuid7()}"
    since, until = _window(target, as_of)
    args = [
        sys.executable,
        "-m",
        "ctr",
        "pipeline",
        "run",
        "--local",
        "--mode",
        "incremental",
        "--repo",
        str(target.repo),
        "--events-db",
        target.db_url,
        "--since",
        since,
        "--until",
        until,
        "--now",
        as_of.isoformat(),
        "--attribution-window",
        f"{int(target.attribution_window.total_seconds())}s",
        "--config",
        target.experiment,
        "--work-dir",
        str(target.work_dir),
        "--run-id",
        run_id,
        "--json",
    ]
    if target.data_dir is not None:
        args += ["--data", str(target.data_dir)]
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_dir / f"{run_id}.log", "wb") as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy(), cwd=log_dir
            )
        (log_dir / f"{run_id}.pid").write_text(str(proc.pid))  # its process group, for whoever must stop it
    except OSError as exc:
        raise SubmissionFailed(f"could not start the local pipeline: {exc}") from exc
    return run_id


def submit_kfp(
    target: PipelineTarget, as_of: datetime, host: str, token: str | None, namespace: str | None, experiment: str
) -> str:
    """Submit one incremental run to Kubeflow Pipelines; returns the KFP run id."""
    from pipelines.runner import PipelineParams, submit

    since, until = _window(target, as_of)
    params = PipelineParams(
        repo=str(target.repo),
        data_dir=str(target.data_dir or ""),
        train_days="",
        valid_day=0,
        holdout_day=0,
        work_dir=str(target.work_dir),
        mode="incremental",
        experiment=target.experiment,
        events_db=target.db_url,
        events_since=since,
        events_until=until,
        attribution_window=f"{int(target.attribution_window.total_seconds())}s",
        now=as_of.isoformat(),
        run_id=f"monitor-{uuid7()}",
    )
    try:
        return submit(params, host, token, namespace, experiment)
    except CtrError as exc:
        raise SubmissionFailed(str(exc)) from exc
