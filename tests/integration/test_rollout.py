"""``ctr models rollout-status``: real tritonserver processes for the pods, a stand-in for the API.

Two ``ctr triton`` processes (real tritonserver, each on its own copy of the model repository)
stand for two Triton pods; ``tests/standins/k8s_api.py`` stands for the Kubernetes API server
(none runs here) and lists them, with their named ``http`` container ports. The command runs as
a user runs it, a ``python -m ctr`` process reaching the stand-in through a kubeconfig file, so
the real client path (``load_kube_config``, ``CoreV1Api.list_namespaced_pod``) is the one tested.
Version 2 published to one pod's repository only is "1 of 2" (exit 1); ``--wait``, started
before the second publish, returns 0 once the second Triton has picked it up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctr import storage
from ctr.repository import ModelRepository
from ctr.rollout import kubernetes_api, rollout_status, wait_for_rollout
from ctr.serving.local import LocalStack
from ctr.train import StagedVersion, TrainSpec, train_and_publish, train_candidate
from tests.conftest import free_port
from tests.standins.k8s_api import K8sApiStandIn

ROOT = Path(__file__).parents[2]
CTR = [sys.executable, "-m", "ctr"]
TRITON = {"app.kubernetes.io/name": "triton"}


def _env(**extra: str) -> dict[str, str]:
    """This environment without any cluster of its own (no KUBECONFIG, not in a pod)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    return env | extra


def ctr(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTR, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


# --- without Triton: configuration and API errors -------------------------------------------------


def test_no_kubeconfig_is_one_line_exit_2(tmp_path: Path) -> None:
    done = ctr("models", "rollout-status", "--version", "1", env=_env(HOME=str(tmp_path)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [_one_error_line(done.stderr)], "only the error line on stderr"
    assert "no usable Kubernetes configuration" in done.stderr and "Traceback" not in done.stderr
    missing = ctr("models", "rollout-status", "--version", "1", "--kubeconfig", str(tmp_path / "nope"), env=_env())
    assert missing.returncode == 2 and f"kubeconfig {tmp_path / 'nope'}" in _one_error_line(missing.stderr)


def test_rbac_refusal_and_unreachable_api_are_one_line_exit_1(tmp_path: Path) -> None:
    with K8sApiStandIn() as api:
        api.add_pod("triton-0", ports={"http": free_port()})
        api.forbidden = True
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        done = ctr("models", "rollout-status", "--version", "1", env=_env(KUBECONFIG=str(kubeconfig)))
    assert done.returncode == 1, done.stdout + done.stderr
    line = _one_error_line(done.stderr)
    assert "403" in line and "cannot list resource" in line and "ctr-rollout Role" in line
    # the stand-in is gone now: nothing listens on its port
    gone = ctr("models", "rollout-status", "--version", "1", env=_env(KUBECONFIG=str(kubeconfig)))
    assert gone.returncode == 1 and "cannot reach the Kubernetes API" in _one_error_line(gone.stderr)
    assert len(gone.stderr.strip().splitlines()) == 1, gone.stderr  # no urllib3 retry warnings


def test_the_role_grants_what_rollout_status_calls() -> None:
    """The one call is a pod list in the namespace; the Role grants exactly get/list on pods, bound
    to the pipeline's service account (which mounts its token: it is the in-cluster identity)."""
    done = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "base")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    kinds = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    role = kinds[("Role", "ctr-rollout")]
    assert role["metadata"]["namespace"] == "ctr-loop"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    binding = kinds[("RoleBinding", "ctr-rollout")]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ctr-rollout"}
    # the pipeline's pods run where standalone KFP runs them, as its account (ctr/storage.py)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": storage.PIPELINE_SERVICE_ACCOUNT, "namespace": storage.PIPELINE_NAMESPACE}
    ]
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    # no other workload of ours is bound to anything
    bound = {s["name"] for o in objects if o["kind"] == "RoleBinding" for s in o["subjects"]}
    assert bound == {storage.PIPELINE_SERVICE_ACCOUNT}


# --- two real Triton "pods" ------------------------------------------------------------------------


class Pods:
    def __init__(self, repos: list[ModelRepository], stacks: list[LocalStack], api: K8sApiStandIn, kc: Path) -> None:
        self.repos, self.stacks, self.api, self.kubeconfig = repos, stacks, api, kc

    def env(self) -> dict[str, str]:
        return _env(KUBECONFIG=str(self.kubeconfig))


@pytest.fixture(scope="module")
def pods(small_days: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    work = tmp_path_factory.mktemp("rollout")
    first = ModelRepository(work / "repo-0")
    train_and_publish(TrainSpec(small_days, [0], 1, experiment="lr"), first)
    shutil.copytree(first.root, work / "repo-1")  # each "pod" mounts its own copy
    repos = [first, ModelRepository(work / "repo-1")]
    with contextlib.ExitStack() as running:
        api = running.enter_context(K8sApiStandIn())
        stacks = []
        for k, repo in enumerate(repos):
            ports = {name: free_port() for name in ("http_port", "grpc_port", "metrics_port")}
            stack = running.enter_context(
                LocalStack(
                    repo.root,
                    "sqlite:///unused.db",
                    start_api=False,
                    poll_seconds=1.0,
                    log_dir=work / f"logs-{k}",
                    **ports,
                )
            )
            stacks.append(stack)
            api.add_pod(
                f"triton-{k}",
                labels=TRITON | {"pod": f"triton-{k}"},
                ports={"http": stack.http_port, "grpc": stack.grpc_port, "metrics": stack.metrics_port},
            )
        # not Triton: the selector keeps it out
        api.add_pod("ctr-api-0", labels={"app.kubernetes.io/name": "ctr-api"}, ports={"http": 1})
        yield Pods(repos, stacks, api, api.kubeconfig(work / "kubeconfig"))


def _status(pods: Pods, version: int, *extra: str) -> tuple[int, dict[str, Any]]:
    done = ctr("models", "rollout-status", "--version", str(version), "--port", "1", "--json", *extra, env=pods.env())
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.slow
def test_version_1_is_served_by_both_pods(pods: Pods) -> None:
    code, report = _status(pods, 1)
    assert code == 0, report
    assert report["all_ready"] and (report["ready"], report["total"]) == (2, 2)
    assert [p["name"] for p in report["pods"]] == ["triton-0", "triton-1"]  # not ctr-api-0
    # each pod probed on its own container port named http, not on --port 1
    assert [p["port"] for p in report["pods"]] == [s.http_port for s in pods.stacks]
    assert all(p["serving_version"] == 1 and p["phase"] == "Running" for p in report["pods"])
    call = pods.api.requests[-1]
    assert call["path"] == "/api/v1/namespaces/ctr-loop/pods"
    assert call["query"]["labelSelector"] == "app.kubernetes.io/name=triton"
    text = ctr("models", "rollout-status", "--version", "1", env=pods.env())
    assert text.returncode == 0 and "version 1 served by 2 of 2 Triton pods in ctr-loop" in text.stdout


@pytest.mark.slow
def test_pods_not_running_or_not_answering_are_not_ready(pods: Pods, tmp_path: Path) -> None:
    with K8sApiStandIn() as api:
        api.add_pod("triton-0", ports={"http": pods.stacks[0].http_port})
        api.add_pod("triton-1", ports={})  # no named port: --port applies
        api.add_pod("triton-2", phase="Pending", pod_ip=None)
        api.add_pod("triton-3", ports={"http": free_port()})  # Running, nothing listens
        gone = api.add_pod("triton-4", ports={"http": pods.stacks[1].http_port})
        gone["metadata"]["deletionTimestamp"] = "2025-01-01T00:05:00Z"
        served = pods.repos[0].served()
        assert served is not None
        status = rollout_status(
            served, port=pods.stacks[1].http_port, api=kubernetes_api(api.kubeconfig(tmp_path / "kubeconfig"))
        )
        assert not status.all_ready and (status.ready_count, len(status.pods)) == (2, 5)
        by_name = {p.name: p for p in status.pods}
        assert by_name["triton-0"].ready and by_name["triton-1"].ready
        assert by_name["triton-1"].port == pods.stacks[1].http_port
        assert (by_name["triton-2"].phase, by_name["triton-2"].detail) == ("Pending", "phase Pending")
        assert not by_name["triton-3"].ready and "no answer" in by_name["triton-3"].detail
        assert not by_name["triton-4"].ready and by_name["triton-4"].detail == "terminating"
        assert "triton-2 (phase Pending)" in status.summary()

        api.set_phase("triton-0", "Failed")
        cli = ctr(
            "models",
            "rollout-status",
            "--version",
            str(served),
            "--selector",
            "app.kubernetes.io/name=triton",
            "--port",  # for triton-1, whose spec names no port
            str(pods.stacks[1].http_port),
            env=_env(KUBECONFIG=str(tmp_path / "kubeconfig")),
        )
        assert cli.returncode == 1, cli.stderr
        assert "triton-0 127.0.0.1" in cli.stdout and "Failed: phase Failed" in cli.stdout
        assert f"version {served} served by 1 of 5" in cli.stdout

    with K8sApiStandIn() as empty:  # no pod at all is not "all ready"
        status = rollout_status(1, api=kubernetes_api(empty.kubeconfig(tmp_path / "empty")))
        assert not status.all_ready and status.summary() == (
            "version 1: no Triton pods in ctr-loop (app.kubernetes.io/name=triton)"
        )


def _copy_to(candidate: StagedVersion, repo: ModelRepository) -> Path:
    staged = repo.stage()
    shutil.copytree(candidate.staged, staged, dirs_exist_ok=True)
    return staged


@pytest.mark.slow
def test_version_2_one_pod_then_both_with_wait(pods: Pods, small_days: Path) -> None:
    first, second = pods.repos
    candidate = train_candidate(TrainSpec(small_days, [0], 1, experiment="lr", seed=99), first)
    staged_second = _copy_to(candidate, second)
    assert first.publish(candidate.staged, candidate.metadata) == 2

    # triton-0 picks version 2 up on its next poll; only it, through the selector
    only_first = wait_for_rollout(
        2, 60, 0.5, selector="app.kubernetes.io/name=triton,pod=triton-0", api=kubernetes_api(pods.kubeconfig)
    )
    assert [p.name for p in only_first.pods] == ["triton-0"]

    code, report = _status(pods, 2)
    assert code == 1 and not report["all_ready"] and (report["ready"], report["total"]) == (1, 2)
    one, other = report["pods"]
    assert (one["name"], one["ready"], one["serving_version"]) == ("triton-0", True, 2)
    assert (other["name"], other["ready"], other["serving_version"]) == ("triton-1", False, 1)
    assert other["detail"] == "serves version 1"
    text = ctr("models", "rollout-status", "--version", "2", env=pods.env())
    assert text.returncode == 1 and "served by 1 of 2" in text.stdout and "triton-1 (serves version 1)" in text.stdout

    # --wait gives up after --timeout: the last look on stdout, one error line naming the pod behind
    wait_2s = ("--wait", "--timeout", "2", "--poll", "0.5")
    late = ctr("models", "rollout-status", "--version", "2", *wait_2s, env=pods.env())
    assert late.returncode == 1
    assert "triton-1 (serves version 1)" in _one_error_line(late.stderr) and "after waiting 2s" in late.stderr
    assert "triton-1 127.0.0.1" in late.stdout

    # --wait started before the second publish returns 0 once triton-1 serves version 2 too
    waiter = subprocess.Popen(
        [*CTR, "models", "rollout-status", "--version", "2", "--wait", "--timeout", "60", "--poll", "0.5", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=pods.env(),
    )
    try:
        time.sleep(3)
        assert waiter.poll() is None, "returned before version 2 was on every pod"
        assert second.publish(staged_second, candidate.metadata) == 2
        out, err = waiter.communicate(timeout=90)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    report = json.loads(out)
    assert report["all_ready"] and [p["serving_version"] for p in report["pods"]] == [2, 2]
    assert "waiting: version 2 served by 1 of 2" in err  # it did wait, and said for what
