"""Data-path benchmarks (issue 2): generator, reader, feature transform.

* ``synth``: rows/s of ``ctr synth`` on one core (Polars and Arrow pinned to one thread).
* ``convert``: rows/s of the streaming reader turning Criteo text into parquet shards.
* ``fit`` / ``transform``: rows/s of fitting the transform and of transforming shards.
* ``request``: latency of transforming a 100-row request (median and p99 over 2000 calls).

Run: ``.venv/bin/python benchmarks/bench_data.py [--rows-per-day 200000]``; prints JSON lines
and writes ``benchmarks/results/data.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # before polars is imported: one core

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from ctr.data.dataset import convert_file
from ctr.data.reader import ReadReport
from ctr.data.synth import SynthArgs, synthesize
from ctr.features import FeatureTransform
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--rows-per-day", type=int, default=500_000)
    ap.add_argument("--out", default="benchmarks/results/data.json")
    args = ap.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    rows = args.days * args.rows_per_day
    results = []

    def record(**fields: object) -> None:
        fields |= {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, 1 thread used",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        results.append(fields)
        print(json.dumps(fields), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "d"
        t0 = time.perf_counter()
        synthesize(SynthArgs(days=args.days, rows_per_day=args.rows_per_day, seed=1), out)
        seconds = time.perf_counter() - t0
        record(name="synth", rows=rows, seconds=round(seconds, 2), rows_per_s=round(rows / seconds))

        t0 = time.perf_counter()
        report = ReadReport()
        for d in range(args.days):
            convert_file(out / f"day_{d}", Path(tmp) / "shards" / f"day_{d}", report)
        seconds = time.perf_counter() - t0
        record(name="convert", rows=report.rows_kept, seconds=round(seconds, 2), rows_per_s=round(rows / seconds))

        scan = pl.scan_parquet(str(Path(tmp) / "shards" / "*" / "*.parquet"))
        t0 = time.perf_counter()
        transform = FeatureTransform.fit(scan, min_count=10)
        seconds = time.perf_counter() - t0
        record(name="fit", rows=rows, seconds=round(seconds, 2), rows_per_s=round(rows / seconds))

        t0 = time.perf_counter()
        done = 0
        for shard in sorted((Path(tmp) / "shards").glob("*/*.parquet")):
            frame = pl.read_parquet(shard)
            transform.transform_frame(frame)
            done += frame.height
        seconds = time.perf_counter() - t0
        record(name="transform", rows=done, seconds=round(seconds, 2), rows_per_s=round(done / seconds))

        request = pl.read_parquet(next((Path(tmp) / "shards").glob("*/*.parquet"))).head(100)
        dense = request.select([pl.col(c).cast(pl.Float64) for c in DENSE_COLUMNS]).to_numpy()
        sparse = request.select([pl.col(c).fill_null(-1) for c in SPARSE_COLUMNS]).to_numpy()
        times = []
        for _ in range(2000):
            t = time.perf_counter()
            transform.transform(dense, sparse)
            times.append(time.perf_counter() - t)
        record(
            name="request_100_rows",
            p50_ms=round(float(np.median(times)) * 1e3, 4),
            p99_ms=round(float(np.percentile(times, 99)) * 1e3, 4),
            vocab_rows=int(transform.sizes.sum()),
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
