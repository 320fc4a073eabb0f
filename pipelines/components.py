"""KFP v2 components: thin wrappers that call ``ctr.retrain`` inside the component image.

``components(image)`` makes them (at compile time, for the image the settings name). Locally
(``kfp.local.SubprocessRunner``) they run in this environment; on a cluster in the image
(built from ``dockerfiles/pipeline.Dockerfile``, which installs kfp and ctr: nothing is
pip-installed at run time). Every component takes the run's ``RetrainRequest`` as JSON.
Imports live inside the functions because KFP ships each function's source on its own.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple

from kfp import dsl


def prepare_op(request: str, job_name: str) -> NamedTuple("Prepared", [("mode", str), ("prepared", str)]):  # type: ignore[valid-type]  # KFP reads outputs from this form
    """Take the repository lease, settle the mode, lay out the days (``ctr.retrain.prepare``)."""
    from collections import namedtuple

    from ctr.retrain import prepare
    from ctr.retrain_request import RetrainRequest

    p = prepare(RetrainRequest.from_json(request), job_name)
    return namedtuple("Prepared", ["mode", "prepared"])(p.mode, p.to_json())  # type: ignore[call-arg]  # see the annotation


def train_op(prepared: str, request: str) -> str:
    """Train (full or incremental, as prepared) and stage the candidate; returns its path."""
    from ctr.retrain import Prepared, train
    from ctr.retrain_request import RetrainRequest

    return train(Prepared.from_json(prepared), RetrainRequest.from_json(request))


def evaluate_op(staged: str, prepared: str, request: str) -> str:
    """Candidate and serving version on the same holdout; returns the numbers as JSON."""
    import json

    from ctr.retrain import Prepared, evaluate
    from ctr.retrain_request import RetrainRequest

    p = Prepared.from_json(prepared)
    return json.dumps(evaluate(staged, RetrainRequest.from_json(request).repo, p.data_dir, p.holdout_day))


def gate_op(evaluation: str, request: str) -> NamedTuple("Gate", [("decision", str), ("reason", str)]):  # type: ignore[valid-type]  # KFP reads outputs from this form
    """``publish`` unless the candidate is worse on the holdout by AUC (− epsilon) and by log loss
    (``ctr.retrain.gate``), else ``reject``."""
    import json
    from collections import namedtuple

    from ctr.retrain import gate
    from ctr.retrain_request import RetrainRequest

    ok, reason = gate(json.loads(evaluation), RetrainRequest.from_json(request).epsilon)
    print(f"gate: {'publish' if ok else 'reject'}: {reason}")
    return namedtuple("Gate", ["decision", "reason"])("publish" if ok else "reject", reason)  # type: ignore[call-arg]  # see the annotation


def publish_op(staged: str, prepared: str, evaluation: str, reason: str, request: str) -> int:
    """Atomically publish the candidate as the next version and release the lease; on a cluster,
    end only once every Triton replica serves it (``ctr.rollout``, through the Kubernetes API)."""
    import json
    import os

    from ctr.retrain import Prepared, publish
    from ctr.retrain_request import RetrainRequest

    p = Prepared.from_json(prepared)
    version = publish(staged, RetrainRequest.from_json(request).repo, p.run_id, json.loads(evaluation), reason)
    print(f"published version {version}")
    if os.environ.get("KUBERNETES_SERVICE_HOST"):  # in a pod: Triton's replicas are there to ask
        from ctr.rollout import wait_for_rollout

        status = wait_for_rollout(version, timeout_s=float(os.environ.get("CTR_ROLLOUT_TIMEOUT_S", "600")), poll_s=5)
        print(f"version {version} served by every replica: {status.summary()}")
    return version


def reject_op(staged: str, prepared: str, reason: str, request: str) -> str:
    """Drop the refused candidate and release the lease; the repository stays as it was."""
    from ctr.retrain import Prepared, reject
    from ctr.retrain_request import RetrainRequest

    reject(staged, RetrainRequest.from_json(request).repo, Prepared.from_json(prepared).run_id)
    print(f"not published: {reason}")
    return reason


def finish_op(request: str, job_name: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """The exit handler: after any outcome, drop this run's staged candidates and its lease."""
    from ctr.retrain import finish
    from ctr.retrain_request import RetrainRequest

    state = finish(RetrainRequest.from_json(request), job_name, status.state)
    print(f"run ended {status.state}: {state}")
    return state


@dataclass(frozen=True)
class Components:
    """The pipeline's steps as KFP components of one image."""

    prepare: Any
    train: Any
    evaluate: Any
    gate: Any
    publish: Any
    reject: Any
    finish: Any


def components(image: str) -> Components:
    def make(func: Any) -> Any:
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Components(
        make(prepare_op), make(train_op), make(evaluate_op), make(gate_op), make(publish_op), make(reject_op),
        make(finish_op),
    )  # fmt: skip
