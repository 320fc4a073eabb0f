"""Kubernetes manifests: real `kubectl kustomize` renders, schema validation, cross-file names, checkov."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
OVERLAYS = ["karpenter", "cluster-autoscaler"]
K8S_VERSION = "1.32.0"
CUSTOM_KINDS = {"NodePool", "EC2NodeClass", "PodMonitor"}


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def render_with(overlay: str, component: str, workdir: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay plus one of ``k8s/components`` (a kustomization in ``workdir``)."""
    up = Path(os.path.relpath(ROOT / "k8s", workdir))
    (workdir / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {up / 'overlays' / overlay}\ncomponents:\n  - {up / 'components' / component}\n"
    )
    done = subprocess.run(["kubectl", "kustomize", str(workdir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_overlays_differ_only_in_node_provisioning() -> None:
    karpenter, autoscaler = (render(o) for o in OVERLAYS)
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    only_k = {key(o) for o in karpenter} - {key(o) for o in autoscaler}
    only_a = {key(o) for o in autoscaler} - {key(o) for o in karpenter}
    assert {k for k, _ in only_k} == {"NodePool", "EC2NodeClass"}
    assert {k for k, _ in only_a} <= {
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "ClusterRoleBinding",
        "RoleBinding",
        "Deployment",
    }
    assert ("Deployment", "cluster-autoscaler") in only_a


def test_built_in_objects_pass_strict_schema_validation(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    validate = Path(sys.executable).parent / "kubernetes-validate"
    files = []
    for k, obj in enumerate(o for o in rendered if o["kind"] not in CUSTOM_KINDS):
        path = tmp_path / f"{k:02d}-{obj['kind']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        files.append(str(path))
    done = subprocess.run(
        [str(validate), "--strict", "-k", K8S_VERSION, *files], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_custom_resources_have_their_required_fields(rendered: list[dict[str, Any]]) -> None:
    for pm in by_kind(rendered, "PodMonitor").values():
        assert pm["apiVersion"] == "monitoring.coreos.com/v1"
        assert pm["spec"]["selector"]["matchLabels"] and pm["spec"]["podMetricsEndpoints"][0]["port"]
    pools = by_kind(rendered, "NodePool")
    classes = by_kind(rendered, "EC2NodeClass")
    for pool in pools.values():
        assert pool["apiVersion"] == "karpenter.sh/v1"
        ref = pool["spec"]["template"]["spec"]["nodeClassRef"]
        assert set(ref) == {"group", "kind", "name"} and ref["kind"] == "EC2NodeClass" and ref["name"] in classes
        assert pool["spec"]["template"]["spec"]["requirements"]
        assert pool["spec"]["disruption"]["consolidationPolicy"] in ("WhenEmpty", "WhenEmptyOrUnderutilized")
    for nc in classes.values():
        assert nc["apiVersion"] == "karpenter.k8s.aws/v1"
        assert nc["spec"]["role"] and nc["spec"]["amiSelectorTerms"]
        assert nc["spec"]["subnetSelectorTerms"] and nc["spec"]["securityGroupSelectorTerms"]


def test_selectors_match_labels(rendered: list[dict[str, Any]]) -> None:
    deployments = by_kind(rendered, "Deployment")
    for d in deployments.values():
        selector = d["spec"]["selector"]["matchLabels"]
        assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for svc in by_kind(rendered, "Service").values():
        assert any(svc["spec"]["selector"].items() <= labels.items() for labels in pod_labels), svc["metadata"]["name"]
    for pdb in by_kind(rendered, "PodDisruptionBudget").values():
        assert any(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items() for labels in pod_labels)
    for hpa in by_kind(rendered, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
        assert hpa["metadata"].get("namespace") == "ctr-loop"
    for pm in by_kind(rendered, "PodMonitor").values():
        matched = [
            d
            for d in deployments.values()
            if pm["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched
        port = pm["spec"]["podMetricsEndpoints"][0]["port"]
        assert port in {p["name"] for c in matched[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}


def test_triton_ports_probes_and_gpu_pool_agree(rendered: list[dict[str, Any]]) -> None:
    triton = by_kind(rendered, "Deployment")["triton"]["spec"]["template"]["spec"]
    container = triton["containers"][0]
    args = " ".join(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for name, flag in (("http", "--http-port"), ("grpc", "--grpc-port"), ("metrics", "--metrics-port")):
        assert f"{flag}={ports[name]}" in args
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "--model-control-mode=poll" in args and "--model-repository=/models" in args
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--model-config-name=gpu" in container["args"]  # the repository's GPU instance config
    service = by_kind(rendered, "Service")["triton"]
    assert {p["port"] for p in service["spec"]["ports"]} == set(ports.values())
    api_args = by_kind(rendered, "Deployment")["ctr-api"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"triton:{ports['grpc']}" in api_args
    toleration = triton["tolerations"][0]
    selector = triton["nodeSelector"]
    pools = by_kind(rendered, "NodePool")
    if pools:  # karpenter: the GPU pool's taint and label
        gpu = pools["gpu"]["spec"]["template"]
        assert toleration["key"] in {t["key"] for t in gpu["spec"]["taints"]}
        assert selector.items() <= gpu["metadata"]["labels"].items()
    else:  # cluster-autoscaler: the eksctl node group's taint, label and template tags
        cluster = yaml.safe_load((ROOT / "autoscaling" / "cluster-autoscaler" / "eksctl-cluster.yaml").read_text())
        group = {g["name"]: g for g in cluster["managedNodeGroups"]}["gpu"]
        assert toleration["key"] in {t["key"] for t in group["taints"]}
        assert selector.items() <= group["labels"].items()
        tag = f"k8s.io/cluster-autoscaler/node-template/label/{next(iter(selector))}"
        assert group["tags"][tag] == next(iter(selector.values()))
        args = " ".join(
            by_kind(rendered, "Deployment")["cluster-autoscaler"]["spec"]["template"]["spec"]["containers"][0][
                "command"
            ]
        )
        assert "k8s.io/cluster-autoscaler/ctr-loop" in args and group["tags"]["k8s.io/cluster-autoscaler/ctr-loop"]


def test_hpa_metric_is_the_adapter_rule_in_milliseconds(rendered: list[dict[str, Any]]) -> None:
    values = yaml.safe_load((ROOT / "autoscaling" / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")["triton"]
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    target_ms = float(metric["pods"]["target"]["averageValue"])  # milliseconds ("200m" would be 0.2)
    deadline_ms = 200  # the API's CTR_DEADLINE_MS default
    assert 0 < target_ms <= deadline_ms / 20, "scaling must start well before the deadline is at risk"
    curve = json.loads((ROOT / "benchmarks" / "results" / "queue-curve-epyc.json").read_text())
    assert min(curve["queue_ms"]) < target_ms < curve["queue_ms"][-1]  # above idle, below saturation
    query = rule["metricsQuery"]
    assert 'model="dcn"' in rule["seriesQuery"] and query.count('model="dcn"') == 2
    assert re.search(r"nv_inference_queue_duration_us.*\)\s*/\s*1000", query)  # µs → ms
    assert "nv_inference_request_success" in query and "by (<<.GroupBy>>)" in query  # per pod, per request


def test_images_match_dockerfiles(rendered: list[dict[str, Any]]) -> None:
    images = set()
    for obj in rendered:
        spec = obj.get("spec", {})
        template = spec.get("jobTemplate", {}).get("spec", {}).get("template") or spec.get("template")
        if template and "containers" in template.get("spec", {}):
            images |= {c["image"] for c in template["spec"]["containers"]}
    ours = {i for i in images if i.startswith("ghcr.io/ctr-loop/")}
    assert ours == {"ghcr.io/ctr-loop/ctr-api:0.1.0", "ghcr.io/ctr-loop/ctr-monitor:0.1.0"}
    for image in ours:
        name = image.split("/")[-1].split(":")[0]
        dockerfile = ROOT / "dockerfiles" / f"{name.removeprefix('ctr-')}.Dockerfile"
        assert f'image.title="{name}"' in dockerfile.read_text()
    from pipelines.pipeline_settings import PipelineSettings

    IMAGE = PipelineSettings().pipeline_image

    assert 'image.title="ctr-pipeline"' in (ROOT / "dockerfiles" / "pipeline.Dockerfile").read_text()
    assert IMAGE.startswith("ghcr.io/ctr-loop/ctr-pipeline:")


def test_checkov_passes_with_every_skip_justified(tmp_path: Path) -> None:
    checkov = ROOT / ".venv" / "tools" / "bin" / "checkov"
    binary = str(checkov) if checkov.exists() else shutil.which("checkov")
    assert binary, "checkov is missing: `make test` installs it into .venv/tools"
    for overlay in OVERLAYS:
        out = tmp_path / f"{overlay}.yaml"
        out.write_text(
            subprocess.run(
                ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    # the optional loadtest component's own objects, as an overlay renders them
    wrapper = tmp_path / "with-loadtest"
    wrapper.mkdir()
    rendered = render_with(OVERLAYS[0], "loadtest", wrapper)
    loadtest = [d for d in rendered if "ctr-loadtest" in json.dumps(d["metadata"])]
    assert loadtest
    (tmp_path / "loadtest.yaml").write_text(yaml.safe_dump_all(loadtest))
    (wrapper / "kustomization.yaml").unlink()
    done = subprocess.run(
        [binary, "--framework", "kubernetes", "--skip-download", "--quiet", "--compact", "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    for path in (ROOT / "k8s").rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if "checkov.io/skip" in line:
                assert re.search(r"CKV_K8S_\d+=\S", line), f"{path}: skip without a reason: {line}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cpu_serving_component_takes_triton_off_the_gpu(overlay: str, tmp_path: Path) -> None:
    """An overlay plus ``k8s/components/cpu-serving``: no GPU, the CPU pool, the CPU config."""
    objects = render_with(overlay, "cpu-serving", tmp_path)
    spec = by_kind(objects, "Deployment")["triton"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert spec["nodeSelector"] == {"ctr-loop/pool": "cpu"} and "tolerations" not in spec
    assert "nvidia.com/gpu" not in {**container["resources"]["requests"], **container["resources"]["limits"]}
    assert not any(a.startswith("--model-config-name") for a in container["args"])
    assert "--model-repository=/models" in container["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_loadtest_component_runs_the_scenario_against_the_api_service(overlay: str, tmp_path: Path) -> None:
    """An overlay plus ``k8s/components/loadtest``: a locust master Job and a worker Job of the
    ctr-loadtest image, workers finding the master by its Service, the host the API's Service,
    a network policy that lets exactly that traffic through, strict schema validation."""
    objects = render_with(overlay, "loadtest", tmp_path)
    jobs, services = by_kind(objects, "Job"), by_kind(objects, "Service")
    master, worker = jobs["locust-master"], jobs["locust-worker"]
    for job in (master, worker):
        assert job["metadata"]["namespace"] == services["ctr-api"]["metadata"]["namespace"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "ghcr.io/ctr-loop/ctr-loadtest:0.1.0"
    dockerfile = (ROOT / "dockerfiles" / "loadtest.Dockerfile").read_text()
    assert 'image.title="ctr-loadtest"' in dockerfile and "tests/load/locustfile.py" in dockerfile
    margs = master["spec"]["template"]["spec"]["containers"][0]["args"]
    wargs = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--master" in margs and "--headless" in margs and "-t" in margs  # bounded
    assert int(margs[margs.index("--expect-workers") + 1]) == worker["spec"]["parallelism"] == 2
    api = services["ctr-api"]
    assert margs[margs.index("--host") + 1] == f"http://{api['metadata']['name']}:{api['spec']['ports'][0]['port']}"
    svc = services[wargs[wargs.index("--master-host") + 1]]
    assert svc["spec"]["selector"].items() <= master["spec"]["template"]["metadata"]["labels"].items()
    assert int(wargs[wargs.index("--master-port") + 1]) in {p["port"] for p in svc["spec"]["ports"]}
    policy = by_kind(objects, "NetworkPolicy")["ctr-loadtest"]["spec"]
    egress = {
        (peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"], port["port"])
        for rule in policy["egress"]
        for peer in rule["to"]
        for port in rule["ports"]
    }
    assert egress == {("ctr-api", 8080), ("locust-master", 5557)}
    validate = Path(sys.executable).parent / "kubernetes-validate"
    files = []
    ours = [o for o in objects if "ctr-loadtest" in json.dumps(o["metadata"])]
    for k, obj in enumerate(ours):
        path = tmp_path / f"{k:02d}-{obj['kind']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        files.append(str(path))
    assert len(files) == 4
    checked = subprocess.run([str(validate), "--strict", "-k", K8S_VERSION, *files], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
