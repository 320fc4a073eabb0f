"""STAND-IN for a Kubeflow Pipelines API server (v2beta1 REST), for tests only.

A real KFP API server needs a cluster, which this machine does not have. This stand-in
listens on 127.0.0.1 and answers the few calls ``kfp.Client`` makes to create a run
(healthz, experiments, runs), recording every request so a test can check what was sent.
With ``execute``, each created run is handed (pipeline spec with its platform spec, and the
run's parameters) to that function in a thread, and the run's state becomes what it
returns (``SUCCEEDED`` / ``FAILED``): a test can run the submitted pipeline the way the
cluster would, e.g. through kfp.local with the pipeline pods' mounts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from tests.standins.json_http import JsonHandler, LocalServer

Execute = Callable[[dict[str, Any], dict[str, Any]], str]


class KfpStandIn(LocalServer):
    def __init__(self, execute: Execute | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.execute = execute
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                outer.requests.append({"method": "GET", "path": self.path})
                if self.path.startswith("/apis/v2beta1/healthz"):
                    self._reply({"multi_user": False})
                elif self.path.startswith("/apis/v2beta1/experiments"):
                    self._reply({"experiments": list(outer.experiments.values()), "total_size": len(outer.experiments)})
                elif self.path.startswith("/apis/v2beta1/runs/"):
                    run_id = self.path.rsplit("/", 1)[1]
                    self._reply(outer.runs.get(run_id, {}), 200 if run_id in outer.runs else 404)
                else:
                    self._reply({"error": "not found"}, 404)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append(
                    {
                        "method": "POST",
                        "path": self.path,
                        "body": body,
                        "authorization": self.headers.get("Authorization"),
                    }
                )
                if self.path.startswith("/apis/v2beta1/experiments"):
                    exp = {"experiment_id": f"exp-{len(outer.experiments) + 1}", "display_name": body["display_name"]}
                    outer.experiments[exp["experiment_id"]] = exp
                    self._reply(exp)
                elif self.path.startswith("/apis/v2beta1/runs"):
                    run = {
                        "run_id": f"run-{len(outer.runs) + 1}",
                        "display_name": body.get("display_name"),
                        "state": "PENDING",
                        "experiment_id": body.get("experiment_id"),
                    }
                    outer.runs[run["run_id"]] = run
                    self._reply(run)
                    if execute is not None:
                        spec, params = body["pipeline_spec"], body.get("runtime_config", {}).get("parameters", {})
                        threading.Thread(target=outer._execute, args=(run, spec, params), daemon=True).start()
                else:
                    self._reply({"error": "not found"}, 404)

        self._serve(Handler)

    def _execute(self, run: dict[str, Any], spec: dict[str, Any], params: dict[str, Any]) -> None:
        run["state"] = "RUNNING"
        try:
            run["state"] = self.execute(spec, params) if self.execute else "FAILED"
        except Exception as exc:  # the run failed; the test reads the state and the error
            run["state"], run["error"] = "FAILED", repr(exc)

    def wait(self, run_id: str, timeout: float) -> dict[str, Any]:
        """The run once it has ended (or as it is at ``timeout``)."""
        import time

        deadline = time.monotonic() + timeout
        while self.runs[run_id]["state"] in ("PENDING", "RUNNING") and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.runs[run_id]
