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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ctr.errors import CtrError, InputError
from ctr.ids import uuid7
from ctr.lease import release
from ctr.paths import output_dir
from ctr.repository import ModelRepository
from ctr.retrain import check_mode


class PipelineError(CtrError):
    """A pipeline run failed or could not be submitted."""


@dataclass(frozen=True)
class PipelineParams:
    """The pipeline's parameters (see ``pipelines/retrain.py``)."""

    repo: str
    data_dir: str
    train_days: str
    valid_day: int
    holdout_day: int
    work_dir: str
    mode: str = "incremental"
    experiment: str = "dcn"
    seed: int = -1
    epsilon: float = 0.002
    events_db: str = ""
    events_since: str = ""
    events_until: str = ""
    attribution_window: str = "30m"
    now: str = "now"
    fallback_to_full: bool = False
    run_id: str = ""

    def __post_init__(self) -> None:
        """Refuse here what would otherwise fail a run's first task (``InputError``)."""
        check_mode(self.mode)

    def arguments(self) -> dict[str, Any]:
        return asdict(self)


def compile_pipeline(out: Path) -> Path:
    """Write the pipeline spec (YAML) to ``out``."""
    from kfp import compiler

    from pipelines.retrain import retrain_pipeline

    output_dir(out.parent)
    compiler.Compiler().compile(retrain_pipeline, str(out))
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


def run_local(
    params: PipelineParams, pipeline_root: Path | None = None, log_file: Path | None = None
) -> dict[str, Any]:
    """Run the pipeline here; returns the run id, the gate decision and the version (if any).

    With ``log_file`` the tasks' logs go there instead of this process's output. On failure
    the run's lease is released and its staged candidate stays out of the
    repository (it was never renamed into a version).
    """
    from kfp import local

    from pipelines.retrain import retrain_pipeline

    run_id = params.run_id or f"local-{uuid7()}"
    params = PipelineParams(**{**params.arguments(), "run_id": run_id})
    repo = ModelRepository(Path(params.repo))
    before = repo.versions()
    staged_before = set(repo.staged())
    root = pipeline_root or Path(tempfile.mkdtemp(prefix="ctr-kfp-"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    try:
        with _output_to(log_file):
            retrain_pipeline(**params.arguments())
    except Exception as exc:  # kfp.local raises RuntimeError with the failing task's name
        for leftover in set(repo.staged()) - staged_before:  # this run's candidate, never published
            repo.discard(leftover)
        release(repo, run_id)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"pipeline run {run_id} failed: {first}") from exc
    after = repo.versions()
    new = sorted(set(after) - set(before))
    outcome: dict[str, Any] = {"run_id": run_id, "published": bool(new), "version": new[-1] if new else None}
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
        raise PipelineError(f"cannot reach Kubeflow Pipelines at {host}: {str(exc).splitlines()[0]}") from exc


def submit(
    params: PipelineParams,
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
        run_id = params.run_id or uuid7()
        args = {**params.arguments(), "run_id": run_id}
        try:
            result = client.create_run_from_pipeline_package(
                str(spec),
                arguments=args,
                run_name=f"ctr-retrain-{params.mode}-{run_id[:13]}",
                experiment_name=experiment,
                namespace=namespace,
            )
        except Exception as exc:
            raise PipelineError(f"submission to {host} failed: {str(exc).splitlines()[0]}") from exc
    return str(result.run_id)


def schedule(
    params: PipelineParams,
    cron: str,
    host: str,
    token: str | None = None,
    namespace: str | None = None,
    experiment: str = "ctr-loop",
    name: str = "ctr-retrain-periodic",
) -> str:
    """Create a recurring run (periodic retraining); returns the recurring run's id."""
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
                params=params.arguments(),
                no_catchup=True,
            )
        except Exception as exc:
            raise PipelineError(f"scheduling on {host} failed: {str(exc).splitlines()[0]}") from exc
    return str(job.recurring_run_id)
