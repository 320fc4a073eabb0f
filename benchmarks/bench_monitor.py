"""Monitor benchmark (issue 6): one run over 1 M labelled impressions in PostgreSQL.

Loads 1 M matured impressions (25 % clicked) into a fresh database on 127.0.0.1:5432 with
COPY, then runs ``ctr monitor run`` as its own process (rules: window large enough for all
rows, drift off) and reports its wall time and peak RSS, plus the in-process time of the
decision alone. Run: ``.venv/bin/python benchmarks/bench_monitor.py [--rows N] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import yaml

from ctr.events.store import EventStore
from ctr.ids import uuid7
from ctr.timeutil import to_us

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
AS_OF = datetime(2026, 11, 20, tzinfo=UTC)


def load(url: str, n: int) -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(1.5, 4.0, n)
    pctr = np.clip(0.7 * p + 0.3 * rng.beta(1.5, 4.0, n), 1e-4, 1 - 1e-4)
    clicked = rng.random(n) < p
    start = to_us(AS_OF - timedelta(hours=5))
    served = start + np.sort(rng.integers(0, 4 * 3600 * 1_000_000, n))
    ids = [uuid7() for _ in range(n)]
    raw = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(raw) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY impressions (impression_id, request_id, ad_id, served_at_us, model_version, pctr) FROM STDIN"
        ) as cp:
            for k in range(n):
                cp.write_row((ids[k], "r", "a", int(served[k]), 1, float(pctr[k])))
        with cur.copy("COPY clicks (impression_id, clicked_at_us) FROM STDIN") as cp:
            for k in np.flatnonzero(clicked).tolist():
                cp.write_row((ids[k], int(served[k]) + 60_000_000))
        cur.execute("ANALYZE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="matured impressions to load")
    ap.add_argument("--out", default="benchmarks/results/monitor.json")
    args = ap.parse_args()
    n = args.rows
    name = f"ctr_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        EventStore(url).migrate()
        t0 = time.perf_counter()
        load(url, n)
        load_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "rules.yaml"
            rules.write_text(
                yaml.safe_dump(
                    {
                        "window": {"max_age": "1d", "max_labelled": n},
                        "auc": {"absolute": 0.5},
                        "drift": {"enabled": False},
                    }
                )
            )
            walls = []
            for attempt in range(3):  # this machine's timings vary between runs: report each
                t0 = time.perf_counter()
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "ctr",
                        "monitor",
                        "run",
                        "--db",
                        url,
                        "--repo",
                        tmp,
                        "--rules",
                        str(rules),
                        "--now",
                        (AS_OF + timedelta(seconds=attempt)).isoformat(),
                        "--json",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                walls.append(round(time.perf_counter() - t0, 2))
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            record = json.loads(done.stdout.strip().splitlines()[-1])
            from monitor.rules import load_rules
            from monitor.run import MonitorRequest, run_monitor

            t0 = time.perf_counter()
            run_monitor(
                MonitorRequest(
                    db_url=url,
                    repo=Path(tmp),
                    rules=load_rules(rules),
                    as_of=AS_OF + timedelta(seconds=10),
                    dry_run=True,
                )
            )
            in_process = time.perf_counter() - t0
        result = {
            "name": "monitor_run_1m",
            "rows": n,
            "labelled": record["labelled"],
            "auc": record["auc"],
            "cli_wall_s": walls,
            "in_process_s": round(in_process, 2),
            "peak_rss_mb": round(peak_mb),
            "load_s": round(load_s, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        print(json.dumps(result))
        Path(args.out).write_text(json.dumps([result], indent=2) + "\n")
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
