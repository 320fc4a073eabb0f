"""The deployment contract: what the rendered manifests and the compiled pipeline promise each other.

Both overlays are rendered with the real ``kubectl kustomize`` and the pipeline compiled with
the real KFP compiler; every ``ctr`` command line of a manifest is parsed with the real CLI
parser. Each path a command uses is resolved to *(filesystem, path inside it)* through its
pod's volume mounts, claims and PersistentVolumes, so the test can say: the repository the
monitor reads and hands to the pipeline, the one the pipeline's publish step writes and the
one Triton polls are the same place; every claim exists in its pods' namespace; every
``CTR_*`` variable the code reads is set or documented; every image has its Dockerfile.

No Kubernetes API server runs here: this is the static half of the proof; the cluster's own
commands run with the cluster's volume layout in ``test_cluster_commands.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from typer.main import get_command

from ctr.cli import app
from pipelines.runner import compile_pipeline
from tests.integration.test_k8s import OVERLAYS, render

ROOT = Path(__file__).parents[2]
PIPELINE_NAMESPACE = "kubeflow"  # standalone Kubeflow Pipelines runs every pipeline pod there
OUR_IMAGES = "ghcr.io/ctr-loop/"  # built from dockerfiles/; the rest (Triton, autoscalers) are upstream's

Location = tuple[str, str]  # (filesystem, path inside it)


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = yaml.safe_load_all(compile_pipeline(tmp_path_factory.mktemp("ir") / "p.yaml").read_text())
    return spec, platform


def pods(objects: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(namespace, workload name, pod spec) of every workload."""
    for o in objects:
        spec = None
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            spec = o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            spec = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        if spec is not None:
            yield o["metadata"].get("namespace", "default"), o["metadata"]["name"], spec


def filesystem_of(objects: list[dict[str, Any]], namespace: str, claim: str) -> str:
    """The filesystem behind a claim (its PersistentVolume's CSI volume handle); fails if the claim is not there."""
    claims = {
        (o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] == "PersistentVolumeClaim"
    }
    assert (namespace, claim) in claims, f"claim {claim} does not exist in namespace {namespace}"
    pvc = claims[(namespace, claim)]
    volume = pvc["spec"].get("volumeName")
    assert volume, f"claim {namespace}/{claim} is not bound to a named PersistentVolume: another filesystem per claim"
    pvs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolume"}
    # EFS: "fs-…" or "fs-…::fsap-…"; the access points of one store share a root (cluster settings)
    return str(pvs[volume]["spec"]["csi"]["volumeHandle"]).split("::")[0]


def locate(
    objects: list[dict[str, Any]], namespace: str, pod: dict[str, Any], container: dict[str, Any], path: str
) -> Location:
    """Where ``path`` (as ``container`` sees it) lives: (filesystem, path inside it)."""
    p = PurePosixPath(path)
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if p == PurePosixPath(m["mountPath"]) or PurePosixPath(m["mountPath"]) in p.parents
    ]
    assert mounts, f"{path} is on no volume of {container['name']}: it would be the container's own disk"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "persistentVolumeClaim" in volume, f"{path} of {container['name']} is on {mount['name']}, not on the store"
    inner = PurePosixPath(mount.get("subPath", "")) / p.relative_to(mount["mountPath"])
    return filesystem_of(objects, namespace, volume["persistentVolumeClaim"]["claimName"]), str(inner).strip("/.")


def ctr_params(args: list[str]) -> dict[str, Any]:
    """The parameters the real ``ctr`` parser makes of a command line (a usage error if it refuses)."""
    command: Any = get_command(app)
    ctx = command.make_context("ctr", list(args), resilient_parsing=False)
    rest = list(args)
    while hasattr(command, "list_commands"):  # a group (typer carries its own click)
        name, *rest = rest
        sub = command.get_command(ctx, name)
        assert sub is not None, f"ctr has no command {name!r} ({' '.join(args)})"
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)
    return ctx.params


def container(objects: list[dict[str, Any]], name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    for namespace, workload, pod in pods(objects):
        if workload == name:
            return namespace, pod, pod["containers"][0]
    raise AssertionError(f"no workload {name}")


def triton_repository(objects: list[dict[str, Any]]) -> Location:
    namespace, pod, c = container(objects, "triton")
    flags = dict(a.removeprefix("--").split("=", 1) for a in c["args"] if a.startswith("--") and "=" in a)
    return locate(objects, namespace, pod, c, flags["model-repository"])


def test_the_monitor_triton_and_the_pipeline_share_one_repository(
    objects: list[dict[str, Any]], pipeline: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    namespace, pod, monitor = container(objects, "ctr-monitor")
    params = ctr_params(monitor["args"])
    assert params["trigger"] == "kfp"
    served = triton_repository(objects)
    assert locate(objects, namespace, pod, monitor, str(params["repo"])) == served, (
        "the monitor reads another repository"
    )
    # The paths the monitor hands to a triggered run, as the pipeline's pods see them.
    _, platform = pipeline
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        mounts = executor.get("pvcMount", [])
        assert mounts, f"pipeline task {name} mounts no claim"
        fake_pod = {
            "volumes": [
                {"name": f"m{k}", "persistentVolumeClaim": {"claimName": _claim(m)}} for k, m in enumerate(mounts)
            ]
        }
        fake_container = {
            "name": name,
            "volumeMounts": [{"name": f"m{k}", "mountPath": m["mountPath"]} for k, m in enumerate(mounts)],
        }
        for what in ("repo", "work_dir", "data"):
            where = locate(objects, PIPELINE_NAMESPACE, fake_pod, fake_container, str(params[what]))
            assert where[0] == served[0], f"{name}: {what} is on another filesystem than Triton's repository"
        assert locate(objects, PIPELINE_NAMESPACE, fake_pod, fake_container, str(params["repo"])) == served, (
            f"{name} would publish where Triton does not read"
        )
    assert locate(objects, namespace, pod, monitor, str(params["report_dir"]))[0] == served[0], (
        "reports would not persist"
    )


def _claim(mount: dict[str, Any]) -> str:
    claim = (
        mount.get("constant")
        or mount.get("pvcName")
        or mount.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant")
    )
    assert claim, f"a pipeline mount without a fixed claim: {mount}"
    return str(claim)


def test_every_claim_exists_in_its_pods_namespace(
    objects: list[dict[str, Any]], pipeline: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    for namespace, _name, pod in pods(objects):
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                filesystem_of(objects, namespace, volume["persistentVolumeClaim"]["claimName"])  # asserts, naming it
    _, platform = pipeline
    for executor in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        for mount in executor.get("pvcMount", []):
            filesystem_of(objects, PIPELINE_NAMESPACE, _claim(mount))
        for secret in executor.get("secretAsEnv", []):
            name = secret.get("secretName") or secret.get("secretNameParameter", {}).get("runtimeValue", {}).get(
                "constant"
            )
            assert any(
                o["kind"] == "Secret"
                and o["metadata"]["name"] == name
                and o["metadata"].get("namespace") == PIPELINE_NAMESPACE
                for o in objects
            ), f"Secret {name} is not in {PIPELINE_NAMESPACE}, where the pipeline's pods read it"


def test_no_secret_is_a_pipeline_parameter(pipeline: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = pipeline
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in parameters if re.search(r"db|password|secret|token|url", p, re.I)], parameters


def test_every_ctr_command_line_parses(objects: list[dict[str, Any]]) -> None:
    seen = 0
    for _, _name, pod in pods(objects):
        for c in pod["containers"]:
            if "ctr-loop/ctr-" in c["image"]:
                ctr_params(c.get("args", []))  # raises click.UsageError naming the flag
                seen += 1
    assert seen >= 2


def test_every_ctr_variable_the_code_reads_is_set_or_documented(objects: list[dict[str, Any]]) -> None:
    read = set()
    for source in [
        *(ROOT / "ctr").rglob("*.py"),
        *(ROOT / "monitor").rglob("*.py"),
        *(ROOT / "pipelines").rglob("*.py"),
    ]:
        read |= set(re.findall(r"\bCTR_[A-Z0-9_]*[A-Z0-9]\b", source.read_text()))
    set_somewhere = {e["name"] for _, _, pod in pods(objects) for c in pod["containers"] for e in c.get("env", [])}
    readme = (ROOT / "README.md").read_text()
    undocumented = sorted(
        v for v in read if v not in set_somewhere and v not in readme and v.removesuffix("_FILE") not in readme
    )
    assert not undocumented, (
        f"read by the code, neither set in a manifest nor in README's configuration: {undocumented}"
    )
    unknown = sorted(
        v for v in set_somewhere if v.startswith("CTR_") and v not in read and v.removesuffix("_FILE") not in read
    )
    assert not unknown, f"set in a manifest but read by no code: {unknown}"


def test_every_image_has_its_dockerfile(objects: list[dict[str, Any]]) -> None:
    from pipelines.pipeline_settings import PipelineSettings

    IMAGE = PipelineSettings().pipeline_image

    images = {
        c["image"] for _, _, pod in pods(objects) for c in [*pod["containers"], *pod.get("initContainers", [])]
    } | {IMAGE}
    for image in sorted(images):
        if not image.startswith(OUR_IMAGES):
            continue
        name = image.rsplit("/", 1)[-1].split(":")[0].removeprefix("ctr-")
        assert (ROOT / "dockerfiles" / f"{name}.Dockerfile").exists(), f"{image} has no dockerfiles/{name}.Dockerfile"


def test_cluster_settings_are_applied_once(objects: list[dict[str, Any]]) -> None:
    text = json.dumps(objects)
    handles = [o["spec"]["csi"]["volumeHandle"] for o in objects if o["kind"] == "PersistentVolume"]
    assert len(set(handles)) == len(handles), f"two PersistentVolumes with one volume handle: {handles}"
    for placeholder in ("EFS_VOLUME_HANDLE", "DB_EGRESS_CIDR"):
        assert placeholder not in text, f"{placeholder} was not replaced from the cluster settings"
    vpc = yaml.safe_load((ROOT / "autoscaling" / "cluster-autoscaler" / "eksctl-cluster.yaml").read_text())["vpc"][
        "cidr"
    ]
    database_egress = {
        peer["ipBlock"]["cidr"]
        for o in objects
        if o["kind"] == "NetworkPolicy"
        for rule in o["spec"].get("egress", [])
        if any(p.get("port") == 5432 for p in rule.get("ports", []))
        for peer in rule["to"]
    }
    assert database_egress == {vpc}, f"database egress {database_egress}, cluster VPC {vpc}"


def test_the_api_probes_are_the_endpoints_whose_meaning_is_tested(objects: list[dict[str, Any]]) -> None:
    """Readiness is /readyz and liveness /healthz; that /readyz stays ready through a database outage
    is tested on a real database in test_serving::test_spool_keeps_impressions_through_a_store_outage."""
    _, _, api = container(objects, "ctr-api")
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
