"""``ctr synth``: days of Criteo-layout data from a ``SyntheticWorld``, with a manifest.

Writes ``DIR/day_K`` (or ``day_K.gz``) for each day, ``DIR/day_K.truth.parquet`` (one
column ``p_true``, the true click probability of each row, in file order) and
``DIR/manifest.json`` (per day: rows, positive rate, Bayes AUC, whether drift is active).
Same arguments → byte-identical files: rows are drawn in fixed-size blocks, each from its
own ``SeedSequence([seed, day, block])`` (``SyntheticWorld.day_blocks``), and gzip headers carry no timestamp.
"""

from __future__ import annotations

import gzip
import json
import os
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from ctr.data.world import Drift, SyntheticWorld, WorldConfig
from ctr.data.writer import criteo_table, write_criteo
from ctr.errors import InputError
from ctr.metrics import roc_auc
from ctr.paths import output_dir
from ctr.schema import day_name

MANIFEST = "manifest.json"
TRUTH_SUFFIX = ".truth.parquet"


@dataclass(frozen=True)
class SynthArgs:
    """What ``ctr synth`` was asked for; recorded in the manifest."""

    days: int
    rows_per_day: int
    seed: int
    positive_rate: float = 0.25
    drift_day: int | None = None
    drift: Drift | None = None
    gzip: bool = False

    def world_config(self) -> WorldConfig:
        return WorldConfig(
            seed=self.seed,
            total_rows=self.days * self.rows_per_day,
            positive_rate=self.positive_rate,
            drift_day=self.drift_day,
            drift=self.drift,
        )


def _open_day(stack: ExitStack, path: Path, compress: bool) -> BinaryIO:
    raw = stack.enter_context(open(path, "wb"))  # noqa: SIM115 - closed by the stack
    if not compress:
        return raw
    # no name and no timestamp in the header: identical bytes for identical arguments
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
    return stack.enter_context(gz)  # type: ignore[return-value]  # a GzipFile is a binary stream


def _write_day(world: SyntheticWorld, args: SynthArgs, day: int, out: Path) -> dict[str, object]:
    name = day_name(day) + (".gz" if args.gzip else "")
    data_tmp, truth_tmp = out / f".{name}.part", out / f".{day_name(day)}{TRUTH_SUFFIX}.part"
    labels: list[NDArray[Any]] = []
    probs: list[NDArray[Any]] = []
    truth_schema = pa.schema([("p_true", pa.float64())])
    with ExitStack() as stack:
        stream = _open_day(stack, data_tmp, args.gzip)
        truth = stack.enter_context(pq.ParquetWriter(truth_tmp, truth_schema))
        for imp in world.day_blocks(day, args.rows_per_day):
            write_criteo(stream, criteo_table(imp.label, imp.dense, imp.dense_missing, imp.sparse))
            truth.write_table(pa.table({"p_true": imp.p_true}, schema=truth_schema))
            labels.append(imp.label)
            probs.append(imp.p_true)
    os.replace(data_tmp, out / name)
    os.replace(truth_tmp, out / (day_name(day) + TRUTH_SUFFIX))
    y, p = np.concatenate(labels), np.concatenate(probs)
    cfg = world.cfg
    return {
        "day": day,
        "file": name,
        "truth": day_name(day) + TRUTH_SUFFIX,
        "rows": int(y.size),
        "positive_rate": round(float(y.mean()), 6),
        "bayes_auc": round(roc_auc(y, p), 6),
        "drifted": cfg.drift_day is not None and day >= cfg.drift_day,
    }


def synthesize(args: SynthArgs, out: Path) -> dict[str, object]:
    """Write every day and the manifest into ``out``; returns the manifest."""
    if args.days < 1 or args.rows_per_day < 1:
        raise InputError("--days and --rows-per-day must be at least 1")
    output_dir(out)
    world = SyntheticWorld(args.world_config())
    days = [_write_day(world, args, day, out) for day in range(args.days)]
    manifest = {
        "generator": "ctr synth",
        "args": asdict(args),
        "cardinalities": world.cardinality.tolist(),
        "days": days,
    }
    tmp = out / f".{MANIFEST}.part"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def read_manifest(data_dir: Path) -> dict[str, object] | None:
    """The manifest of a generated directory, or None for real (non-generated) data."""
    path = data_dir / MANIFEST
    if not path.exists():
        return None
    try:
        manifest: dict[str, object] = json.loads(path.read_text())
        return manifest
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
