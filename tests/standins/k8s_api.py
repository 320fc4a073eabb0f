"""STAND-IN for a Kubernetes API server (core/v1 pods, read only), for tests only.

A real API server needs a cluster (etcd, a control plane), which this machine does not have.
This stand-in listens on 127.0.0.1 over plain HTTP, without authentication, and answers the one
call ``ctr models rollout-status`` makes through the ``kubernetes`` client::

    GET /api/v1/namespaces/{namespace}/pods?labelSelector=...

with a ``PodList`` shaped like a real server's (``apiVersion: v1``, ``kind: PodList``, items with
``metadata``, ``spec.containers[].ports`` and ``status.phase`` / ``status.podIP``) holding the pods
a test registers. Equality (``k=v``, ``k==v``, ``k!=v``) and existence (``k``, ``!k``) selectors are
honoured; set-based ones (``k in (…)``) are refused with 400 rather than silently ignored. A
namespace without pods answers an empty list, as a real server does. Any other path is a 404
``Status``; with ``forbidden`` set, the list is a 403 ``Status`` worded like RBAC's refusal.
Every request is recorded (path, query, headers) so a test can check what the client sent.

A test reaches it the way a user reaches a cluster: a kubeconfig file naming ``url`` as the
cluster's server (``kubeconfig()`` writes one), read by ``kubernetes.config.load_kube_config``.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from ctr.serving.triton_image import TRITON_IMAGE
from tests.standins.json_http import JsonHandler, LocalServer

_PODS = re.compile(r"^/api/v1/namespaces/([a-z0-9]([-a-z0-9]*[a-z0-9])?)/pods$")
_SET_BASED = re.compile(r"\s(in|notin)\s*\(")


def _split_selector(selector: str) -> list[str]:
    return [term.strip() for term in selector.split(",") if term.strip()]


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality- and existence-based label selector semantics (what the API server applies)."""
    for term in _split_selector(selector):
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _status(code: int, reason: str, message: str, kind: str | None = None) -> dict[str, Any]:
    """A ``meta/v1 Status`` as the API server sends it with an error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if kind:
        body["details"] = {"kind": kind}
    return body


class K8sApiStandIn(LocalServer):
    def __init__(self) -> None:
        self.pods: dict[str, dict[str, dict[str, Any]]] = {}  # namespace → name → pod
        self.requests: list[dict[str, Any]] = []
        self.forbidden = False
        self._resource_version = 1000
        self._lock = threading.Lock()
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                headers = dict(self.headers)
                outer.requests.append({"method": "GET", "path": url.path, "query": query, "headers": headers})
                match = _PODS.match(url.path)
                if not match:
                    self._reply(_status(404, "NotFound", "the server could not find the requested resource"), 404)
                    return
                namespace = match.group(1)
                if outer.forbidden:
                    message = (
                        'pods is forbidden: User "system:anonymous" cannot list resource "pods" '
                        f'in API group "" in the namespace "{namespace}"'
                    )
                    self._reply(_status(403, "Forbidden", message, kind="pods"), 403)
                    return
                selector = query.get("labelSelector", "")
                if _SET_BASED.search(f" {selector}"):
                    self._reply(_status(400, "BadRequest", "set-based selectors: not in this stand-in"), 400)
                    return
                self._reply(outer.pod_list(namespace, selector))

            def do_POST(self) -> None:  # this stand-in is read only
                outer.requests.append({"method": "POST", "path": self.path})
                self._reply(_status(405, "MethodNotAllowed", "the stand-in serves GET only"), 405)

        self._serve(Handler)

    def add_pod(
        self,
        name: str,
        *,
        namespace: str = "ctr-loop",
        labels: dict[str, str] | None = None,
        phase: str = "Running",
        pod_ip: str | None = "127.0.0.1",
        ports: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Register (or replace) a pod; ``ports`` maps container port names to numbers."""
        with self._lock:
            self._resource_version += 1
            pod: dict[str, Any] = {
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(self._resource_version),
                    "creationTimestamp": "2025-01-01T00:00:00Z",
                    "labels": dict(labels if labels is not None else {"app.kubernetes.io/name": "triton"}),
                },
                "spec": {
                    "containers": [
                        {
                            "name": "triton",
                            "image": TRITON_IMAGE,
                            "ports": [
                                {"name": port_name, "containerPort": number, "protocol": "TCP"}
                                for port_name, number in (ports or {}).items()
                            ],
                        }
                    ]
                },
                "status": {"phase": phase},
            }
            if pod_ip is not None:
                pod["status"] |= {"podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}
            self.pods.setdefault(namespace, {})[name] = pod
            return pod

    def set_phase(self, name: str, phase: str, namespace: str = "ctr-loop") -> None:
        with self._lock:
            self.pods[namespace][name]["status"]["phase"] = phase

    def pod_list(self, namespace: str, selector: str = "") -> dict[str, Any]:
        with self._lock:
            items = [
                p for p in self.pods.get(namespace, {}).values() if selector_matches(selector, p["metadata"]["labels"])
            ]
            return {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": str(self._resource_version)},
                "items": json.loads(json.dumps(items)),
            }

    def kubeconfig(self, path: Path, namespace: str = "ctr-loop") -> Path:
        """A kubeconfig whose current context names this stand-in (plain HTTP, no credentials)."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
                    "users": [{"name": "anonymous", "user": {}}],
                    "contexts": [
                        {
                            "name": "stand-in",
                            "context": {"cluster": "stand-in", "user": "anonymous", "namespace": namespace},
                        }
                    ],
                    "current-context": "stand-in",
                }
            )
        )
        return path
