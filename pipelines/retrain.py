"""The retraining pipeline: one definition, two modes, a gate, an atomic publish.

``mode`` (``full`` or ``incremental``) is a pipeline parameter; ``prepare`` settles it
(incremental without a serving version fails unless ``fallback_to_full``) and ``dsl.If``
picks the training branch. On a cluster the train step asks for one GPU on the GPU node
pool (toleration and node selector matching ``k8s/``) and every step mounts the PVC holding
the model repository and the data; locally those settings have no effect.
"""

import os

from kfp import dsl, kubernetes

from pipelines.components import evaluate_op, gate_op, prepare_op, publish_op, reject_op, train_op

PIPELINE_NAME = "ctr-retrain"
PVC_NAME = os.environ.get("CTR_PIPELINE_PVC", "ctr-model-repo")
PVC_MOUNT = os.environ.get("CTR_PIPELINE_MOUNT", "/mnt/ctr")
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_POOL_LABEL = ("ctr-loop/pool", "gpu")


def _on_cluster_storage(task: dsl.PipelineTask) -> dsl.PipelineTask:
    kubernetes.mount_pvc(task, pvc_name=PVC_NAME, mount_path=PVC_MOUNT)
    task.set_caching_options(False)
    return task


def _on_gpu_pool(task: dsl.PipelineTask) -> dsl.PipelineTask:
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    kubernetes.add_toleration(task, key=GPU_TAINT_KEY, operator="Exists", effect="NoSchedule")
    kubernetes.add_node_selector(task, label_key=GPU_POOL_LABEL[0], label_value=GPU_POOL_LABEL[1])
    return task


def _train_evaluate_gate_publish(prepared: str, repo: str, experiment: str, seed: int, epsilon: float) -> None:
    trained = _on_gpu_pool(
        _on_cluster_storage(train_op(prepared=prepared, repo=repo, experiment=experiment, seed=seed))
    )
    evaluated = _on_cluster_storage(evaluate_op(staged=trained.output, repo=repo, prepared=prepared))
    gated = gate_op(evaluation=evaluated.output, epsilon=epsilon)
    with dsl.If(gated.outputs["decision"] == "publish", name="gate-passed"):
        _on_cluster_storage(
            publish_op(
                staged=trained.output,
                repo=repo,
                prepared=prepared,
                evaluation=evaluated.output,
                reason=gated.outputs["reason"],
            )
        )
    with dsl.Else(name="gate-refused"):
        _on_cluster_storage(
            reject_op(staged=trained.output, repo=repo, prepared=prepared, reason=gated.outputs["reason"])
        )


@dsl.pipeline(name=PIPELINE_NAME, description="Retrain the CTR model (full or incremental), gate it, publish it.")
def retrain_pipeline(
    repo: str,
    data_dir: str,
    train_days: str,
    valid_day: int,
    holdout_day: int,
    work_dir: str,
    mode: str = "incremental",
    experiment: str = "dcn",
    seed: int = -1,
    epsilon: float = 0.002,
    events_db: str = "",
    events_since: str = "",
    events_until: str = "",
    attribution_window: str = "30m",
    now: str = "now",
    fallback_to_full: bool = False,
    run_id: str = "",
) -> None:
    prepared = _on_cluster_storage(
        prepare_op(
            mode=mode,
            repo=repo,
            run_id=run_id,
            job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
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
    )
    with dsl.If(prepared.outputs["mode"] == "full", name="full-retrain"):
        _train_evaluate_gate_publish(prepared.outputs["prepared"], repo, experiment, seed, epsilon)
    with dsl.Else(name="incremental-retrain"):
        _train_evaluate_gate_publish(prepared.outputs["prepared"], repo, experiment, seed, epsilon)
