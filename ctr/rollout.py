"""Does every Triton pod serve version N yet? (``ctr models rollout-status``)

The pods come from the Kubernetes API (``kubernetes`` client, ``list_namespaced_pod`` with the
Triton Service's label selector): in a pod, the in-cluster configuration (its service account's
token, which needs the ``ctr-rollout`` Role of ``k8s/base/rbac-rollout.yaml``: get/list pods);
elsewhere a kubeconfig (``--kubeconfig``, else ``KUBECONFIG``, else ``~/.kube/config``).

Each Running pod with an IP is then asked directly, over KServe v2 HTTP on its container port
named ``http`` (the Triton Deployment names it; ``port`` when the spec names none), which version
answers: one single-row inference of the ``dcn`` model, reading its ``model_version`` output.
``publish`` stamps the version number into the ONNX graph, so that output is the version clients
get, whichever server runs it: the official Triton image (onnxruntime backend, one Triton version
per repository version) or ``ctr triton`` (Python backend: one Triton version, ``1``, that swaps
the repository's versions inside it). That is why ``/v2/models/dcn/versions/N/ready`` is not
used: on ``ctr triton`` it answers for Triton's own version 1, never for the repository's N; and
even on the official image, version N loaded is not yet version N answering. A pod is ready when
it answers with exactly N (a pod on N+1 has moved past it, and says so in its detail).

The probe goes to each pod's IP, not to the Service (which would answer from one pod at a time),
without proxies, with a short timeout; a pod that does not answer is reported, not fatal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from ctr.errors import CtrError, InputError, first_line
from ctr.repository import MODEL_NAME
from ctr.schema import N_DENSE, N_SPARSE

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api, V1Pod

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "ctr-loop"
DEFAULT_SELECTOR = "app.kubernetes.io/name=triton"
DEFAULT_PORT = 8000
HTTP_PORT_NAME = "http"
API_TIMEOUT_S = 10.0


class KubernetesApiError(CtrError):
    """The Kubernetes API could not be reached, or refused to list the pods.

    ``transient``: unreachable or a 5xx/429, worth another look (``--wait`` looks again until its
    deadline); a refusal (403: RBAC) is not."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class RolloutNotReady(CtrError):
    """``wait_for_rollout`` ran out of time; ``status`` is the last look."""

    def __init__(self, status: RolloutStatus, timeout_s: float) -> None:
        self.status = status
        super().__init__(f"{status.summary()} after waiting {timeout_s:g}s")


@dataclass(frozen=True)
class PodVersion:
    """One pod as this look found it."""

    name: str
    ip: str | None
    port: int | None
    phase: str
    ready: bool
    serving_version: int | None
    detail: str


@dataclass(frozen=True)
class RolloutStatus:
    version: int
    namespace: str
    selector: str
    pods: tuple[PodVersion, ...]

    @property
    def ready_count(self) -> int:
        return sum(p.ready for p in self.pods)

    @property
    def all_ready(self) -> bool:
        """Every matching pod serves the version, and there is at least one."""
        return bool(self.pods) and self.ready_count == len(self.pods)

    @property
    def not_ready(self) -> list[PodVersion]:
        return [p for p in self.pods if not p.ready]

    def summary(self) -> str:
        where = f"Triton pods in {self.namespace} ({self.selector})"
        if not self.pods:
            return f"version {self.version}: no {where}"
        head = f"version {self.version} served by {self.ready_count} of {len(self.pods)} {where}"
        if self.all_ready:
            return head
        return head + "; not yet: " + ", ".join(f"{p.name} ({p.detail})" for p in self.not_ready)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "namespace": self.namespace,
            "selector": self.selector,
            "ready": self.ready_count,
            "total": len(self.pods),
            "all_ready": self.all_ready,
            "pods": [asdict(p) for p in self.pods],
        }


def kubernetes_api(kubeconfig: Path | None = None, context: str | None = None) -> CoreV1Api:
    """A ``CoreV1Api`` on its own configuration (the client's global default is left alone).

    Order, as ``kubectl`` does it: an explicit kubeconfig or ``KUBECONFIG``; else the in-cluster
    configuration when running in a pod (``KUBERNETES_SERVICE_HOST``); else ``~/.kube/config``.
    None of them usable is an ``InputError`` (exit 2).
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    env_kubeconfig = os.environ.get("KUBECONFIG", "").strip()
    in_cluster = kubeconfig is None and not env_kubeconfig and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if kubeconfig is not None:
        where = f"kubeconfig {kubeconfig}"
    elif env_kubeconfig:
        where = f"KUBECONFIG={env_kubeconfig}"
    elif in_cluster:
        where = "in-cluster configuration"
    else:
        where = "not in a cluster, and no KUBECONFIG or ~/.kube/config"
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            files = str(kubeconfig) if kubeconfig is not None else env_kubeconfig or str(Path.home() / ".kube/config")
            config.load_kube_config(
                config_file=files, context=context, client_configuration=configuration, persist_config=False
            )
    except ConfigException as exc:
        raise InputError(f"no usable Kubernetes configuration ({where}): {first_line(exc)}") from exc
    except (OSError, ValueError, yaml.YAMLError) as exc:  # unreadable file, YAML that is no kubeconfig
        raise InputError(f"cannot read the Kubernetes configuration ({where}): {first_line(exc)}") from exc
    # no retries inside one look (urllib3 would log a warning per retry): --wait looks again
    configuration.retries = False
    return client.CoreV1Api(client.ApiClient(configuration))


def list_pods(api: CoreV1Api, namespace: str, selector: str) -> list[V1Pod]:
    """The pods matching ``selector``, by name; API failures as one-line ``KubernetesApiError``."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    host = api.api_client.configuration.host
    try:
        pods = api.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=API_TIMEOUT_S)
    except ApiException as exc:
        message = exc.reason or ""
        if exc.body:
            with contextlib.suppress(ValueError, AttributeError):  # a Status body names the reason
                message = json.loads(exc.body).get("message") or message
        hint = " (the caller needs the ctr-rollout Role: k8s/base/rbac-rollout.yaml)" if exc.status == 403 else ""
        raise KubernetesApiError(
            f"the Kubernetes API at {host} refused to list pods in {namespace}: {exc.status} {message}{hint}",
            transient=exc.status in (429, 500, 502, 503, 504),
        ) from exc
    except HTTPError as exc:
        raise KubernetesApiError(
            f"cannot reach the Kubernetes API at {host}: {first_line(exc)}", transient=True
        ) from exc
    return sorted(pods.items, key=lambda p: p.metadata.name)


def _http_port(pod: V1Pod, default: int) -> int:
    for container in pod.spec.containers if pod.spec else []:
        for port in container.ports or []:
            if port.name == HTTP_PORT_NAME:
                return int(port.container_port)
    return default


def _probe_body() -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "dense", "shape": [1, N_DENSE], "datatype": "FP32", "data": [0.0] * N_DENSE},
            {"name": "sparse", "shape": [1, N_SPARSE], "datatype": "INT64", "data": [0] * N_SPARSE},
        ],
        "outputs": [{"name": "model_version"}],
    }


def served_version(http: httpx.Client, ip: str, port: int) -> tuple[int | None, str]:
    """(the version the pod's Triton answers with, or None; what went wrong, if anything)."""
    host = f"[{ip}]" if ":" in ip else ip
    url = f"http://{host}:{port}/v2/models/{MODEL_NAME}/infer"
    try:
        response = http.post(url, json=_probe_body())
    except httpx.HTTPError as exc:
        return None, f"no answer from {host}:{port}: {first_line(exc)}"
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        return None, f"Triton answered {response.status_code}: {(error or response.text).strip()[:200]}"
    try:
        (output,) = [o for o in body["outputs"] if o["name"] == "model_version"]
        return int(output["data"][0]), ""
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return None, f"Triton's answer has no model_version: {first_line(exc)}"


def _look_at(pod: V1Pod, version: int, port: int, http: httpx.Client) -> PodVersion:
    name = pod.metadata.name
    phase = (pod.status.phase if pod.status else None) or "Unknown"
    ip = pod.status.pod_ip if pod.status else None
    pod_port = _http_port(pod, port)
    if pod.metadata.deletion_timestamp is not None:
        return PodVersion(name, ip, pod_port, phase, False, None, "terminating")
    if phase != "Running":
        return PodVersion(name, ip, pod_port, phase, False, None, f"phase {phase}")
    if not ip:
        return PodVersion(name, None, pod_port, phase, False, None, "no pod IP yet")
    serving, problem = served_version(http, ip, pod_port)
    if serving is None:
        return PodVersion(name, ip, pod_port, phase, False, None, problem)
    detail = f"serves version {serving}"
    return PodVersion(name, ip, pod_port, phase, serving == version, serving, detail)


def rollout_status(
    version: int,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    selector: str = DEFAULT_SELECTOR,
    port: int = DEFAULT_PORT,
    api: CoreV1Api | None = None,
    probe_timeout_s: float = 3.0,
) -> RolloutStatus:
    """One look: the matching pods, and for each whether its Triton answers with ``version``."""
    if version < 1:
        raise InputError(f"--version must be 1 or more, got {version}")
    api = api or kubernetes_api()
    pods = list_pods(api, namespace, selector)
    # trust_env=False: pod IPs are reached directly, never through an HTTP(S)_PROXY of the caller
    with httpx.Client(timeout=probe_timeout_s, trust_env=False) as http:
        looks = tuple(_look_at(pod, version, port, http) for pod in pods)
    return RolloutStatus(version, namespace, selector, looks)


def wait_for_rollout(
    version: int,
    timeout_s: float,
    poll_s: float = 2.0,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    selector: str = DEFAULT_SELECTOR,
    port: int = DEFAULT_PORT,
    api: CoreV1Api | None = None,
) -> RolloutStatus:
    """Look every ``poll_s`` until every pod (at least one) serves ``version``; ``RolloutNotReady``
    (naming the pods still behind) once ``timeout_s`` has passed. Pods are listed afresh on
    every look, so pods the HPA adds while waiting are waited for too."""
    if timeout_s < 0 or poll_s <= 0:
        raise InputError(f"--timeout must be 0 or more and the poll interval positive, got {timeout_s}, {poll_s}")
    api = api or kubernetes_api()
    deadline = time.monotonic() + timeout_s
    said = ""
    while True:
        try:
            status = rollout_status(version, namespace=namespace, selector=selector, port=port, api=api)
        except KubernetesApiError as exc:
            if not exc.transient or time.monotonic() >= deadline:
                raise
            summary = str(exc)
        else:
            if status.all_ready:
                return status
            if time.monotonic() >= deadline:
                raise RolloutNotReady(status, timeout_s)
            summary = status.summary()
        if summary != said:  # log changes, not every look
            said = summary
            log.info("waiting: %s", said)
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
