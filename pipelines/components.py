"""KFP v2 components: thin wrappers that call ``ctr.retrain`` inside the component image.

Locally (``kfp.local.SubprocessRunner``) they run in this environment; on a cluster in
``CTR_PIPELINE_IMAGE`` (built from ``dockerfiles/pipeline.Dockerfile``). Imports live inside the
functions because KFP ships each function's source on its own.
"""

import os
from typing import NamedTuple

from kfp import dsl

IMAGE = os.environ.get("CTR_PIPELINE_IMAGE", "ghcr.io/ctr-loop/ctr-pipeline:0.1.0")


@dsl.component(base_image=IMAGE)
def prepare_op(
    mode: str,
    repo: str,
    run_id: str,
    job_name: str,
    data_dir: str,
    train_days: str,
    valid_day: int,
    holdout_day: int,
    work_dir: str,
    events_db: str,
    events_since: str,
    events_until: str,
    attribution_window: str,
    now: str,
    fallback_to_full: bool,
) -> NamedTuple("Prepared", [("mode", str), ("prepared", str)]):
    """Take the repository lease, settle the mode, lay out the days (``ctr.retrain.prepare``).

    The lease is held under ``run_id`` when the submitter gives one, else the KFP job name.
    """
    from collections import namedtuple

    from ctr.retrain import prepare

    p = prepare(
        mode=mode,
        repo=repo,
        run_id=run_id or job_name,
        data_dir=data_dir,
        train_days=train_days,
        valid_day=valid_day,
        holdout_day=holdout_day,
        work_dir=work_dir,
        events_db=events_db,
        events_since=events_since,
        events_until=events_until,
        attribution_window=attribution_window,
        now=now,
        fallback_to_full=fallback_to_full,
    )
    return namedtuple("Prepared", ["mode", "prepared"])(p.mode, p.to_json())


@dsl.component(base_image=IMAGE)
def train_op(prepared: str, repo: str, experiment: str, seed: int) -> str:
    """Train (full or incremental, as prepared) and stage the candidate; returns its path."""
    from ctr.retrain import Prepared, train

    return train(Prepared.from_json(prepared), repo, experiment, seed if seed >= 0 else None)


@dsl.component(base_image=IMAGE)
def evaluate_op(staged: str, repo: str, prepared: str) -> str:
    """Candidate and serving version on the same holdout; returns the numbers as JSON."""
    import json

    from ctr.retrain import Prepared, evaluate

    p = Prepared.from_json(prepared)
    return json.dumps(evaluate(staged, repo, p.data_dir, p.holdout_day))


@dsl.component(base_image=IMAGE)
def gate_op(evaluation: str, epsilon: float) -> NamedTuple("Gate", [("decision", str), ("reason", str)]):
    """``publish`` if the candidate's AUC ≥ the serving version's − epsilon, else ``reject``."""
    import json
    from collections import namedtuple

    from ctr.retrain import gate

    ok, reason = gate(json.loads(evaluation), epsilon)
    print(f"gate: {'publish' if ok else 'reject'}: {reason}")
    return namedtuple("Gate", ["decision", "reason"])("publish" if ok else "reject", reason)


@dsl.component(base_image=IMAGE)
def publish_op(staged: str, repo: str, prepared: str, evaluation: str, reason: str) -> int:
    """Atomically publish the candidate as the next version and release the lease."""
    import json

    from ctr.retrain import Prepared, publish

    version = publish(staged, repo, Prepared.from_json(prepared).run_id, json.loads(evaluation), reason)
    print(f"published version {version}")
    return version


@dsl.component(base_image=IMAGE)
def reject_op(staged: str, repo: str, prepared: str, reason: str) -> str:
    """Drop the refused candidate and release the lease; the repository stays as it was."""
    from ctr.retrain import Prepared, reject

    reject(staged, repo, Prepared.from_json(prepared).run_id)
    print(f"not published: {reason}")
    return reason
