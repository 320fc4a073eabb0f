"""Recovery benchmark: the score API through a 20 s PostgreSQL outage under 50 requests/s.

A real tritonserver and ``ctr api`` (PostgreSQL event log, spool on disk), driven by an
open-loop load at a fixed rate (each request is due at ``start + k / rate``; latency is counted
from when it was due, so a stall shows): ``--before`` seconds of normal traffic, then the
database refuses connections for ``--outage`` seconds (``ALLOW_CONNECTIONS false`` and its
sessions terminated), then ``--after`` seconds once it is back. Reported: p50/p99 per phase,
the ratio of the p99 in the minute after recovery to the p99 before (target <= 3), non-200
answers, and acknowledged impressions missing from the database once the spool has drained
(target 0). 10 candidates per request. Run: ``.venv/bin/python benchmarks/bench_recovery.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.load.paced

from ctr.data.dataset import day_shards
from ctr.data.synth import SynthArgs, synthesize
from ctr.events.store import EventStore
from ctr.repository import ModelRepository
from ctr.serving.local import LocalStack
from ctr.train import TrainSpec, train_and_publish
from tests.integration.conftest import request_body
from tests.load.paced import paced, percentile

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def set_connections(name: str, allowed: bool) -> None:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
    admin.dispose()


def phase_stats(sent: list[Any], start: float, end: float) -> dict[str, Any]:
    mine = [s for s in sent if start <= s.at < end]
    lat = [s.latency for s in mine]
    return {
        "requests": len(mine),
        "non_200": sum(s.status != 200 for s in mine),
        "p50_ms": round(percentile(lat, 0.50) * 1e3, 2),
        "p99_ms": round(percentile(lat, 0.99) * 1e3, 2),
        "max_ms": round(max(lat) * 1e3, 2) if lat else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/recovery.json")
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--before", type=float, default=40.0)  # the first ~20 s after start are noisier
    ap.add_argument("--outage", type=float, default=20.0)
    ap.add_argument("--after", type=float, default=60.0)
    args = ap.parse_args()
    name = f"ctr_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    EventStore(url).migrate()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            synthesize(SynthArgs(days=2, rows_per_day=50_000, seed=7), work / "data")
            repo = ModelRepository(work / "repo")
            train_and_publish(TrainSpec(work / "data", [0], 1, experiment="dcn_int8"), repo)
            body = request_body(day_shards(work / "data", 1).scan().head(10).collect())
            ports = {"api_port": 18580, "grpc_port": 18501, "http_port": 18500, "metrics_port": 18502}
            with LocalStack(repo.root, url, log_dir=work / "logs", spool_dir=work / "spool", **ports) as stack:
                client = httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=10)
                for _ in range(200):  # warm
                    client.post("/v1/score", json=body)

                def send(_k: int) -> tuple[int, Any]:
                    answer = client.post("/v1/score", json=body)
                    return answer.status_code, answer.json() if answer.status_code == 200 else answer.text

                total = args.before + args.outage + args.after
                t_out, t_back = args.before, args.before + args.outage

                def outage() -> None:
                    time.sleep(t_out + 0.05)
                    set_connections(name, False)
                    time.sleep(args.outage)
                    set_connections(name, True)

                saboteur = threading.Thread(target=outage)
                saboteur.start()
                sent = paced(send, rate=args.rate, count=int(total * args.rate), workers=16)
                saboteur.join()
                acked = {r["impression_id"] for s in sent if s.status == 200 for r in s.body["results"]}
                drained_at = time.monotonic() + 60
                while list((work / "spool").glob("batch-*")) and time.monotonic() < drained_at:
                    time.sleep(0.2)
                store = EventStore(url)
                with store.engine.connect() as conn:
                    logged = set(conn.execute(text("SELECT impression_id FROM impressions")).scalars())
                store.dispose()
                client.close()
        before = phase_stats(sent, 0, t_out)
        after = phase_stats(sent, t_back, t_back + 60)
        result = {
            "name": "score_api_through_a_database_outage",
            "rate_rps": args.rate,
            "candidates_per_request": 10,
            "outage_s": args.outage,
            "before": before,
            "during": phase_stats(sent, t_out, t_back),
            "minute_after": after,
            "p99_after_over_before": round(after["p99_ms"] / before["p99_ms"], 2),
            "acknowledged_impressions": len(acked),
            "lost_impressions": len(acked - logged),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''}".strip(", "),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        print(json.dumps(result, indent=2))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        set_connections(name, True)
        with admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


if __name__ == "__main__":
    main()
