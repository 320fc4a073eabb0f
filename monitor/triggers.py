"""Ways to start the incremental pipeline: ``none`` (alert only), ``local`` and ``kfp``.

Both take the monitor's ``RetrainRequest`` template (an incremental, event-log run on the
last ``export window`` before ``now``) and fill in ``now`` (the monitor's as-of time) and a
run id. ``local`` writes the request to ``<log_dir>/<run id>.request.json`` and starts
``ctr pipeline run --local --request FILE`` detached (its own session, output to a log file,
the event log's URL in its environment, never in argv) and returns at once. ``kfp``
submits the request through ``kfp.Client`` (host, token, namespace and experiment from flags
or ``CTR_KFP_*``); the pipeline pods read the URL from their Secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from ctr.errors import CtrError
from ctr.ids import uuid7
from ctr.retrain_request import RetrainRequest


class SubmissionFailed(CtrError):
    """The pipeline could not be started; the monitor records it and retries next run."""


TRIGGER = "monitor"  # the source of a run the monitor triggered (its run id's prefix)


def run_source(run_id: str) -> str:
    """Who started a run, from its id ``SOURCE-<uuid7>``: ``monitor`` (a trigger), ``scheduled``
    (a periodic update); for a run started by hand, its id's prefix.

    >>> run_source("monitor-01a24ddc-1280-7cfb-b922-a374bf735943")
    'monitor'
    """
    return run_id.split("-")[0]


def _for_run(template: RetrainRequest, as_of: datetime, source: str = TRIGGER) -> RetrainRequest:
    return template.replace(now=as_of.isoformat(), run_id=f"{source}-{uuid7()}")


def start_local(template: RetrainRequest, as_of: datetime, db_url: str, log_dir: Path, source: str = TRIGGER) -> str:
    """Start the local pipeline detached; returns the run id it was given (``SOURCE-<uuid7>``:
    ``monitor`` for a trigger, ``scheduled`` for a periodic update)."""
    request = _for_run(template, as_of, source)
    run_id = request.run_id
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        request_file = log_dir / f"{run_id}.request.json"
        request_file.write_text(request.to_json() + "\n")
        args = [sys.executable, "-m", "ctr", "pipeline", "run", "--local", "--request", str(request_file), "--json"]
        with open(log_dir / f"{run_id}.log", "wb") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "CTR_DB_URL": db_url},
                cwd=log_dir,
            )
        (log_dir / f"{run_id}.pid").write_text(str(proc.pid))  # its process group, for whoever must stop it
    except OSError as exc:
        raise SubmissionFailed(f"could not start the local pipeline: {exc}") from exc
    return run_id


def submit_kfp(
    template: RetrainRequest, as_of: datetime, host: str, token: str | None, namespace: str | None, experiment: str
) -> str:
    """Submit one incremental run to Kubeflow Pipelines; returns the KFP run id."""
    from pipelines.runner import submit

    try:
        return submit(_for_run(template, as_of), host, token, namespace, experiment)
    except CtrError as exc:
        raise SubmissionFailed(str(exc)) from exc


def local_run_state(log_dir: Path, run_id: str) -> str:
    """``running``, ``succeeded``, ``failed`` or ``unknown`` for a run started by ``start_local``:
    its process group alive, else the last line of its log (the ``--json`` outcome or an error)."""
    pid_file, log = log_dir / f"{run_id}.pid", log_dir / f"{run_id}.log"
    try:
        os.killpg(int(pid_file.read_text()), 0)
        return "running"
    except (OSError, ValueError):
        pass
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "unknown"
    last = lines[-1] if lines else ""
    if last.startswith("{") and '"run_id"' in last:
        return "succeeded"
    return "failed" if lines else "unknown"


def kfp_run_state(run_id: str, host: str, token: str | None, namespace: str | None) -> str:
    """The KFP run's state, lower-cased (``succeeded``, ``failed``, ``running``, …); ``unknown`` if
    the API cannot say."""
    from pipelines.runner import PipelineError, _client

    try:
        state = str(_client(host, token, namespace).get_run(run_id).state or "unknown")
    except (PipelineError, Exception):  # the API's own error types vary; the outcome stays unknown
        return "unknown"
    state = state.rsplit(".", 1)[-1].lower()
    return {"canceled": "failed", "cancelled": "failed"}.get(state, state)
