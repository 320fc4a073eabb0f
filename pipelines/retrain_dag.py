"""The retraining pipeline: one parameter (the ``RetrainRequest``), a gate, an atomic publish.

``prepare`` takes the repository lease and settles the mode (incremental without a serving
version fails unless ``fallback_to_full``); ``train`` trains as prepared; the gate publishes
or rejects. An exit handler (``finish``) runs after any outcome — failure and cancellation
included — and releases the lease and removes the run's staged candidate.

On a cluster every step mounts the shared store (``ctr.storage``: the claim at
``/mnt/ctr`` in the namespace where KFP runs its pods), ``prepare`` reads the event log's URL
from the ``ctr-db`` Secret (never a parameter), and ``train`` asks for ``train_gpus`` GPUs of
one node on the GPU pool (more than one: data-parallel, one process a GPU), CPU and memory, and
Karpenter's do-not-disrupt annotation. Locally those settings have no effect.
"""

from collections.abc import Callable
from typing import cast

from kfp import dsl, kubernetes

from ctr import storage
from pipelines.components import Components, components
from pipelines.pipeline_settings import PipelineSettings

PIPELINE_NAME = "ctr-retrain"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_POOL_LABEL = ("ctr-loop/pool", "gpu")
DB_SECRET = ("ctr-db", "url", "CTR_DB_URL")  # Secret name, key, environment variable


def _on_store(task: dsl.PipelineTask) -> dsl.PipelineTask:
    kubernetes.mount_pvc(task, pvc_name=storage.CLAIM, mount_path=str(storage.CLUSTER_ROOT))
    task.set_caching_options(False)
    return task


def _on_gpu_pool(task: dsl.PipelineTask, gpus: int) -> dsl.PipelineTask:
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    task.set_cpu_request(str(4 * gpus)).set_memory_request(f"{24 * gpus}G").set_memory_limit(f"{48 * gpus}G")
    kubernetes.add_toleration(task, key=GPU_TAINT_KEY, operator="Exists", effect="NoSchedule")
    kubernetes.add_node_selector(task, label_key=GPU_POOL_LABEL[0], label_value=GPU_POOL_LABEL[1])
    kubernetes.add_pod_annotation(task, annotation_key="karpenter.sh/do-not-disrupt", annotation_value="true")
    return task


def build_pipeline(settings: PipelineSettings) -> Callable[..., None]:
    """The pipeline of ``settings``' image, with a train step on ``settings.pipeline_train_gpus`` GPUs."""
    ops = components(settings.pipeline_image)
    train_gpus = settings.pipeline_train_gpus

    @dsl.pipeline(  # type: ignore[untyped-decorator]  # kfp's decorators are unannotated
        name=PIPELINE_NAME, description="Retrain the CTR model (full or incremental), gate it, publish it."
    )
    def retrain_pipeline(request: str) -> None:
        _steps(ops, request, train_gpus)

    return cast(Callable[..., None], retrain_pipeline)


def _steps(ops: Components, request: str, train_gpus: int) -> None:
    finish = _on_store(ops.finish(request=request, job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER))
    with dsl.ExitHandler(finish, name="release-on-exit"):
        prepared = ops.prepare(request=request, job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        kubernetes.use_secret_as_env(prepared, secret_name=DB_SECRET[0], secret_key_to_env={DB_SECRET[1]: DB_SECRET[2]})
        _on_store(prepared)
        plan = prepared.outputs["prepared"]
        trained = _on_gpu_pool(_on_store(ops.train(prepared=plan, request=request)), train_gpus)
        evaluated = _on_store(ops.evaluate(staged=trained.output, prepared=plan, request=request))
        gated = ops.gate(evaluation=evaluated.output, request=request)
        with dsl.If(gated.outputs["decision"] == "publish", name="gate-passed"):
            _on_store(
                ops.publish(
                    staged=trained.output,
                    prepared=plan,
                    evaluation=evaluated.output,
                    reason=gated.outputs["reason"],
                    request=request,
                )
            )
        with dsl.Else(name="gate-refused"):
            _on_store(ops.reject(staged=trained.output, prepared=plan, reason=gated.outputs["reason"], request=request))
