"""STAND-IN for a Kubeflow Pipelines API server (v2beta1 REST), for tests only.

A real KFP API server needs a cluster, which this machine does not have. This stand-in
listens on 127.0.0.1 and answers the few calls ``kfp.Client`` makes to create a run
(healthz, experiments, runs), recording every request so a test can check what was sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class KfpStandIn:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, body: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
                else:
                    self._reply({"error": "not found"}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> KfpStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
