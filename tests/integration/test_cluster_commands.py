"""The cluster's own commands and volumes, run here — NO KUBERNETES RUNS ON THIS MACHINE.

What runs is what the rendered manifests and the compiled pipeline say, as local processes,
each in its own mount namespace (``unshare --mount``, as root) where the store's directory
is bind-mounted exactly where the pod mounts its claim:

* the monitor CronJob's container command line, with the manifest's args and environment
  (the ``ctr-db`` Secret and the ``monitor-rules`` ConfigMap mounted where the pod has them,
  holding local test values; the KFP host replaced by the stand-in's address);
* ``ctr triton`` with the store's ``repo/`` mounted where the Triton Deployment mounts it
  (the official image's tritonserver cannot run here; ``ctr triton`` reads the same layout);
* the pipeline: the KFP API is a named STAND-IN (``tests/standins/kfp_api.py``) that hands
  the submitted spec and parameters to kfp.local in a namespace with the pipeline pods'
  mounts (read from the submitted platform spec) and their Secret as ``CTR_DB_URL``.

Shown: drift in the event log → the CronJob's command triggers → the run publishes version 2
→ Triton, polling as on the cluster, serves it; and a failing run ends with the lease
released and no staged candidate left.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from ctr.data.dataset import day_shards
from ctr.events.store import EventStore
from ctr.ids import uuid7
from ctr.lease import holder
from ctr.repository import ModelRepository
from ctr.timeutil import to_us, utcnow
from ctr.train import TrainSpec, train_and_publish
from tests.conftest import free_port
from tests.integration.test_deployment_contract import container, render
from tests.standins.kfp_api import KfpStandIn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare"), reason="mount namespaces need root (CI is root)"
    ),
]
ROOT = Path(__file__).parents[2]
CTR = [sys.executable, "-m", "ctr"]  # the images' ENTRYPOINT is `ctr`


class Pods:
    """Processes in their own mount namespaces; bind-mount targets outside a tmpfs are created on the host."""

    def __init__(self) -> None:
        self.made: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def _script(self, binds: dict[str, Path]) -> str:
        lines = ["set -e", "mount -t tmpfs tmpfs /mnt"]  # /mnt/… targets exist only inside
        sources = [str(src) for src in binds.values()]
        here = [str(Path(sys.executable).parent), str(ROOT)]
        for target in binds:
            assert not any(h == target or h.startswith(target.rstrip("/") + "/") for h in here), (
                f"binding {target} would hide this checkout or its interpreter"
            )

        def hides_a_source(target: str) -> bool:  # bind such a target (e.g. /tmp) after the others
            return any(src.startswith(target.rstrip("/") + "/") for src in sources)

        for target, source in sorted(binds.items(), key=lambda kv: (hides_a_source(kv[0]), kv[0])):
            if not target.startswith("/mnt/") and not Path(target).exists():
                top = Path(target)
                while not top.parent.exists():
                    top = top.parent
                Path(target).mkdir(parents=True)
                self.made.append(top)  # removed again in stop()
            lines.append(f"mkdir -p {shlex.quote(target)}")
            lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}")
        lines.append('exec "$@"')
        return "\n".join(lines)

    def argv(self, binds: dict[str, Path], command: list[str]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", self._script(binds), "pod", *command]

    def run(
        self, binds: dict[str, Path], command: list[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(binds, command), env=env, capture_output=True, text=True, timeout=timeout)

    def start(
        self, binds: dict[str, Path], command: list[str], env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                self.argv(binds, command), env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        for path in reversed(self.made):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def pods() -> Iterator[Pods]:
    p = Pods()
    yield p
    p.stop()


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CTR_")}


def container_env(c: dict[str, Any], replace: dict[str, str]) -> dict[str, str]:
    env = base_env()
    for e in c.get("env", []):
        env[e["name"]] = replace.get(e["name"], e.get("value", ""))
    return {k: v for k, v in env.items() if v != ""}


def mounts_of(pod: dict[str, Any], c: dict[str, Any], sources: dict[str, Path]) -> dict[str, Path]:
    """The container's mounts as host binds: a claim → the store (plus subPath), others → ``sources[volume]``."""
    binds = {}
    for m in c["volumeMounts"]:
        volume = next(v for v in pod["volumes"] if v["name"] == m["name"])
        if "persistentVolumeClaim" in volume:
            binds[m["mountPath"]] = sources["claim"] / m.get("subPath", "")
        elif m["name"] in sources:
            binds[m["mountPath"]] = sources[m["name"]]
    return binds


def log_drifted_traffic(db_url: str, days: Path) -> None:
    """Post-drift rows served in the last hours with a pCTR that knows nothing (AUC ~0.5), clicks by their label."""
    store = EventStore(db_url)
    store.migrate()
    frame = pl.concat([day_shards(days, d).scan().collect() for d in (4, 5)]).head(24_000)
    now = utcnow()
    rng = np.random.default_rng(3)
    rows, clicks = [], []
    for k, row in enumerate(frame.iter_rows(named=True)):
        at = now - timedelta(hours=5) + timedelta(seconds=4 * 3600 * k / frame.height)
        iid = uuid7()
        rows.append(
            {"impression_id": iid, "request_id": "r", "ad_id": "a", "served_at_us": to_us(at), "model_version": 1,
             "pctr": float(rng.uniform(0.01, 0.2))}
            | {f"i{i}": row[f"I{i}"] for i in range(1, 14)}
            | {f"c{j}": row[f"C{j}"] for j in range(1, 27)}
        )  # fmt: skip
        if row["label"]:
            clicks.append((iid, to_us(at + timedelta(minutes=1))))
    store.log_impressions(rows)
    for iid, at_us in clicks:
        store.record_clicks([iid], at_us)
    store.dispose()


def run_in_pipeline_pods(
    pods: Pods, store: Path, db_url: str, workdir: Path
) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    """The stand-in's executor: the submitted spec through kfp.local, with the pipeline pods' mounts and Secret."""

    def execute(spec: dict[str, Any], params: dict[str, Any]) -> str:
        run_dir = workdir / f"run-{uuid7()}"
        run_dir.mkdir(parents=True)
        pipeline, platform = spec["pipeline_spec"], spec["platform_spec"]
        (run_dir / "pipeline.yaml").write_text(yaml.safe_dump_all([pipeline, platform]))
        binds = {}
        for executor in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
            for m in executor.get("pvcMount", []):
                binds[m["mountPath"]] = store  # the claim ctr-store in the pipeline's namespace: the same filesystem
        assert binds, "the submitted pipeline mounts no claim"
        runner = (
            "import json, sys\n"
            "from kfp import components, local\n"
            "local.init(local.SubprocessRunner(use_venv=False), "
            f"pipeline_root={str(run_dir / 'root')!r}, raise_on_error=True)\n"
            f"components.load_component_from_file({str(run_dir / 'pipeline.yaml')!r})(**json.loads(sys.argv[1]))\n"
        )
        env = base_env() | {"CTR_DB_URL": db_url}  # the ctr-db Secret as the prepare step's environment
        done = pods.run(binds, [sys.executable, "-c", runner, json.dumps(params)], env, timeout=900)
        (run_dir / "log").write_text(done.stdout + done.stderr)
        return "SUCCEEDED" if done.returncode == 0 else "FAILED"

    return execute


def test_drift_triggers_the_cronjob_whose_run_publishes_and_triton_serves_it(
    pods: Pods, pipeline_days: Path, pg_database: Callable[[], str], tmp_path: Path
) -> None:
    objects = render("karpenter")
    store = tmp_path / "store"  # the EFS filesystem
    for part in ("repo", "data", "work", "reports"):
        (store / part).mkdir(parents=True)
    for day in range(4):  # history before the drift
        shutil.copy2(pipeline_days / f"day_{day}", store / "data" / f"day_{day}")
    _, monitor_pod, monitor = container(objects, "ctr-monitor")
    experiment = "dcn"  # what the CronJob's run trains (its --config, else the default)
    assert "--config" not in monitor["args"]
    repo = ModelRepository(store / "repo")
    train_and_publish(TrainSpec(store / "data", [0, 1], 2, experiment=experiment), repo)
    db_url = pg_database()
    log_drifted_traffic(db_url, pipeline_days)

    # Triton as the Deployment mounts the store: its repo/ at the model-repository path.
    _, triton_pod, triton = container(objects, "triton")
    model_repository = next(a.split("=", 1)[1] for a in triton["args"] if a.startswith("--model-repository="))
    # emptyDir scratch (/tmp) stays the host's: a bind over it would hide a checkout that lives there
    triton_binds = mounts_of(triton_pod, triton, {"claim": store, "shm": Path("/dev/shm")})
    http = free_port()
    ports = ["--http-port", str(http), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    pods.start(
        triton_binds,
        [*CTR, "triton", "--repo", model_repository, "--poll-seconds", "1", *ports],
        base_env(),
        tmp_path / "triton.log",
    )
    assert served_version(http, timeout=120) == 1, (tmp_path / "triton.log").read_text()[-2000:]

    # The monitor CronJob's own command line, environment and volumes.
    rules = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("monitor-rules"))
    (tmp_path / "rules").mkdir()
    for name, text in rules["data"].items():
        (tmp_path / "rules" / name).write_text(text)
    (tmp_path / "db-secret").mkdir()
    (tmp_path / "db-secret" / "url").write_text(db_url)  # the ctr-db Secret, with a local value
    with KfpStandIn(execute=run_in_pipeline_pods(pods, store, db_url, tmp_path / "kfp")) as kfp:
        env = container_env(monitor, {"CTR_KFP_HOST": kfp.url, "CTR_PUSHGATEWAY": ""})
        binds = mounts_of(
            monitor_pod,
            monitor,
            {"claim": store, "db": tmp_path / "db-secret", "rules": tmp_path / "rules"},
        )
        done = pods.run(binds, [*CTR, *monitor["args"]], env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        record = json.loads(done.stdout.strip().splitlines()[-1])
        assert record["decision"] == "trigger" and record["submission"] == "ok", record
        run = kfp.wait(record["run_id"], timeout=900)
        logs = "\n".join(p.read_text() for p in (tmp_path / "kfp").glob("run-*/log"))
        assert run["state"] == "SUCCEEDED", logs[-4000:]
    assert repo.versions() == [1, 2], logs[-3000:]
    meta = repo.metadata(2)  # the shipped rules challenge the warm start with two full candidates
    window = meta["window"]
    assert set(window["validation_auc"]) == {"incremental", "history+recent", "recent"}, window
    assert meta["parent_version"] == (1 if window["chosen"] == "incremental" else None), window
    assert (store / "reports" / "drift.html").exists()  # the monitor's report persisted in the store
    assert served_version(http, timeout=60, want=2) == 2  # Triton polled the store and serves version 2
    assert holder(repo) is None and repo.staged() == []


def test_a_failing_run_releases_the_lease_and_leaves_no_staged_candidate(
    pods: Pods, pipeline_days: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    for part in ("repo", "data", "work", "reports"):
        (store / part).mkdir(parents=True)
    for day in range(3):
        shutil.copy2(pipeline_days / f"day_{day}", store / "data" / f"day_{day}")
    (store / "data" / "day_9").mkdir()  # a holdout day whose one shard is corrupt: evaluate fails
    (store / "data" / "day_9" / "part-00000.parquet").write_bytes(b"not parquet")
    repo = ModelRepository(store / "repo")
    train_and_publish(TrainSpec(store / "data", [0], 1, experiment="lr"), repo)
    before = sorted(p.relative_to(repo.root) for p in repo.root.rglob("*"))
    request = {
        "repo": "/mnt/ctr/repo", "data_dir": "/mnt/ctr/data", "work_dir": "/mnt/ctr/work", "mode": "incremental",
        "train_days": "0", "valid_day": 1, "holdout_day": 9, "experiment": "lr",  # day 9 is corrupt: evaluate fails
    }  # fmt: skip
    (tmp_path / "request.json").write_text(json.dumps(request))
    with KfpStandIn(execute=run_in_pipeline_pods(pods, store, "", tmp_path / "kfp")) as kfp:
        submitted = subprocess.run(
            [*CTR, "pipeline", "run", "--host", kfp.url, "--request", str(tmp_path / "request.json"), "--json"],
            env=base_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        run = kfp.wait(json.loads(submitted.stdout.strip().splitlines()[-1])["run_id"], timeout=600)
    logs = "\n".join(p.read_text() for p in (tmp_path / "kfp").glob("run-*/log"))
    assert run["state"] == "FAILED" and "evaluate-op" in logs, logs[-3000:]
    assert "finish-op" in logs and "released the lease and removed 1 staged candidate(s)" in logs, logs[-3000:]
    assert holder(repo) is None and repo.staged() == []
    assert sorted(p.relative_to(repo.root) for p in repo.root.rglob("*")) == before


def served_version(http_port: int, timeout: float, want: int | None = None) -> int | None:
    """The model version Triton answers with (one inference), waiting up to ``timeout`` for it (or for ``want``)."""
    import httpx

    from ctr.rollout import served_version as ask

    deadline = time.monotonic() + timeout
    version = None
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            version, _ = ask(client, "127.0.0.1", http_port)
            if version is not None and (want is None or version == want):
                return version
            time.sleep(0.5)
    return version
