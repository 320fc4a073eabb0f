"""The store: one shared filesystem holding the model repository, data, scratch and reports.

Layout (the single source; ``k8s/README.md`` draws it for people)::

    <root>/repo/      the Triton model repository (dcn/<version>/, config.pbtxt, lease)
    <root>/data/      history days in the Criteo layout (day_0, day_1, …)
    <root>/work/      pipeline scratch, one directory per run
    <root>/reports/   the monitor's drift reports

On Kubernetes the root is the ReadWriteMany claim ``CLAIM`` (EFS), mounted at
``CLUSTER_ROOT`` by the monitor and by every pipeline pod (a claim of the same name, bound to
the same filesystem, exists in each namespace that runs them), and Triton mounts its
``repo/`` sub-path as ``TRITON_REPOSITORY``. Paths the monitor hands to a run therefore exist
where the run executes, and the repository the pipeline publishes to is the one Triton polls.

>>> CLUSTER.repo, CLUSTER.work
(PurePosixPath('/mnt/ctr/repo'), PurePosixPath('/mnt/ctr/work'))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath

CLAIM = "ctr-store"
CLUSTER_ROOT = PurePosixPath("/mnt/ctr")
TRITON_REPOSITORY = PurePosixPath("/models")  # Triton's --model-repository: the claim's repo/
PARTS = ("repo", "data", "work", "reports")


@dataclass(frozen=True)
class Store:
    root: PurePath

    @property
    def repo(self) -> PurePath:
        return self.root / "repo"

    @property
    def data(self) -> PurePath:
        return self.root / "data"

    @property
    def work(self) -> PurePath:
        return self.root / "work"

    @property
    def reports(self) -> PurePath:
        return self.root / "reports"


CLUSTER = Store(CLUSTER_ROOT)

# Where standalone Kubeflow Pipelines runs the pipeline's pods, and as whom.
PIPELINE_NAMESPACE = "kubeflow"
PIPELINE_SERVICE_ACCOUNT = "pipeline-runner"
