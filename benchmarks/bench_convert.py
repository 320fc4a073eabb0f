"""``ctr data convert`` rows/s on one core and on every core, the CLI as a user runs it.

One core: ``taskset -c 0`` with ``--workers 1`` and ``POLARS_MAX_THREADS=1``. All cores: the
defaults (``--workers`` = cores, polars' own pool). Both convert the same Criteo text files; the
shards are compared afterwards (same rows, same values).

    python benchmarks/bench_convert.py DATA/day_0 DATA/day_1 --out convert.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl


def convert(files: list[Path], out: Path, one_core: bool) -> tuple[float, dict[str, object]]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "ctr", "data", "convert", *map(str, files), "--out", str(out), "--json"]
    env = dict(os.environ)
    if one_core:
        cmd = ["taskset", "-c", "0", *cmd, "--workers", "1"]
        env["POLARS_MAX_THREADS"] = "1"
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ctr-bench-convert"))
    ap.add_argument("--out", default="convert.json")
    args = ap.parse_args()
    results = []
    frames = {}
    for label, one_core in (("1 core", True), (f"{os.cpu_count()} cores", False)):
        out = args.workdir / label.replace(" ", "-")
        seconds, report = convert(args.files, out, one_core)
        rows = int(report["rows_read"])  # type: ignore[call-overload]
        frames[label] = pl.concat([pl.read_parquet(p) for p in sorted(out.rglob("*.parquet"))])
        result = {
            "kind": "convert",
            "cores": label,
            "files": [f.name for f in args.files],
            "rows": rows,
            "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    first, *rest = frames.values()
    assert all(first.equals(f) for f in rest), "the shards differ between core counts"
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
