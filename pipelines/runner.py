"""Compile, run locally (``kfp.local.SubprocessRunner``), submit or schedule the pipeline.

``run_local`` is a real pipeline run on this machine: every component executes in its own
subprocess with this environment's ``ctr``. ``submit`` and ``schedule`` talk to a Kubeflow
Pipelines API server through ``kfp.Client``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctr.errors import CtrError, InputError, first_line
from ctr.ids import uuid7
from ctr.paths import output_dir
from ctr.repository import ModelRepository
from ctr.retrain import finish
from ctr.retrain_request import RetrainRequest


class PipelineError(CtrError):
    """A pipeline run failed or could not be submitted."""


def arguments(request: RetrainRequest) -> dict[str, Any]:
    """The pipeline's arguments: the request is its one parameter."""
    return {"request": request.to_json()}


def compile_pipeline(out: Path, train_gpus: int | None = None) -> Path:
    """Write the pipeline spec (YAML) to ``out``; the train step asks for ``train_gpus`` GPUs
    (default ``CTR_PIPELINE_TRAIN_GPUS`` or 1), the components run ``CTR_PIPELINE_IMAGE``."""
    from kfp import compiler

    from pipelines.pipeline_settings import PipelineSettings
    from pipelines.retrain_dag import build_pipeline

    pipeline = build_pipeline(PipelineSettings.from_env(pipeline_train_gpus=train_gpus))
    output_dir(out.parent)
    compiler.Compiler().compile(pipeline, str(out))
    return out


@contextlib.contextmanager
def _output_to(log_file: Path | None) -> Iterator[None]:
    """Send this process's stdout/stderr (kfp.local streams every task's logs there) to a file."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _event_log(db_url: str | None) -> Iterator[None]:
    """``CTR_DB_URL`` for the run's tasks (kfp.local starts them with this environment)."""
    if not db_url:
        yield
        return
    saved = os.environ.get("CTR_DB_URL")
    os.environ["CTR_DB_URL"] = db_url
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CTR_DB_URL", None)
        else:
            os.environ["CTR_DB_URL"] = saved


def run_local(
    request: RetrainRequest,
    pipeline_root: Path | None = None,
    log_file: Path | None = None,
    db_url: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline here; returns the run id, the gate decision and the version (if any).

    With ``log_file`` the tasks' logs go there instead of this process's output; ``db_url``
    (else ``CTR_DB_URL``/``_FILE`` as set) is the event log of an ``events`` run. On failure
    the pipeline's exit handler has released the run's lease and removed its staged
    candidate (``finish`` runs again here, in case the handler itself could not).
    """
    from kfp import local

    from pipelines.pipeline_settings import PipelineSettings
    from pipelines.retrain_dag import build_pipeline

    retrain_pipeline = build_pipeline(PipelineSettings.from_env())

    request = request.replace(run_id=request.run_id or f"local-{uuid7()}")
    repo = ModelRepository(Path(request.repo))
    before = repo.versions()
    root = pipeline_root or Path(tempfile.mkdtemp(prefix="ctr-kfp-"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    try:
        with _output_to(log_file), _event_log(db_url):
            retrain_pipeline(**arguments(request))
    except Exception as exc:  # kfp.local raises RuntimeError with the failing task's name
        finish(request, "", "FAILED")
        raise PipelineError(f"pipeline run {request.run_id} failed: {first_line(exc)}") from exc
    after = repo.versions()
    new = sorted(set(after) - set(before))
    outcome: dict[str, Any] = {"run_id": request.run_id, "published": bool(new), "version": new[-1] if new else None}
    if new:
        gate = repo.metadata(new[-1]).get("pipeline", {}).get("gate", {})
        outcome |= {
            "gate": gate.get("reason"),
            "candidate_auc": gate.get("candidate_auc"),
            "serving_auc": gate.get("serving_auc"),
            "parent_version": repo.metadata(new[-1])["parent_version"],
        }
    return outcome


def _client(host: str, token: str | None, namespace: str | None) -> Any:
    import kfp

    try:
        return kfp.Client(host=host, existing_token=token, namespace=namespace)
    except Exception as exc:  # kfp.Client raises many transport error types
        raise PipelineError(f"cannot reach Kubeflow Pipelines at {host}: {first_line(exc)}") from exc


def submit(
    request: RetrainRequest,
    host: str,
    token: str | None = None,
    namespace: str | None = None,
    experiment: str = "ctr-loop",
) -> str:
    """Submit one run to a KFP API server; returns its run id."""
    if not host:
        raise InputError("--host (or CTR_KFP_HOST) is required to submit to Kubeflow")
    with tempfile.TemporaryDirectory() as tmp:
        spec = compile_pipeline(Path(tmp) / "pipeline.yaml")
        client = _client(host, token, namespace)
        request = request.replace(run_id=request.run_id or uuid7())
        try:
            result = client.create_run_from_pipeline_package(
                str(spec),
                arguments=arguments(request),
                run_name=f"ctr-retrain-{request.mode}-{request.run_id[:13]}",
                experiment_name=experiment,
                namespace=namespace,
            )
        except Exception as exc:
            raise PipelineError(f"submission to {host} failed: {first_line(exc)}") from exc
    return str(result.run_id)


def schedule(
    request: RetrainRequest,
    cron: str,
    host: str,
    token: str | None = None,
    namespace: str | None = None,
    experiment: str = "ctr-loop",
    name: str = "ctr-retrain-periodic",
) -> str:
    """Create a recurring run (periodic retraining); returns the recurring run's id.

    Every run of it reads the same request: give it a relative window (``since="-24h"``) and
    ``now="now"``, and a fixed ``run_id`` must be empty (each run holds the lease as its job).
    """
    if request.run_id:
        raise InputError("a recurring run cannot have a fixed run id: each run is its own KFP job")
    if request.events and not request.since.startswith("-"):
        raise InputError(f"a recurring run needs a relative --since (e.g. -24h), got {request.since!r}")
    if not host:
        raise InputError("--host (or CTR_KFP_HOST) is required to schedule on Kubeflow")
    with tempfile.TemporaryDirectory() as tmp:
        spec = compile_pipeline(Path(tmp) / "pipeline.yaml")
        client = _client(host, token, namespace)
        try:
            exp = client.create_experiment(name=experiment, namespace=namespace)
            job = client.create_recurring_run(
                experiment_id=exp.experiment_id,
                job_name=name,
                cron_expression=cron,
                max_concurrency=1,
                pipeline_package_path=str(spec),
                params=arguments(request),
                no_catchup=True,
            )
        except Exception as exc:
            raise PipelineError(f"scheduling on {host} failed: {first_line(exc)}") from exc
    return str(job.recurring_run_id)
