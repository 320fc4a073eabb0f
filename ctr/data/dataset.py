"""A data directory: Criteo-layout days, their parquet shards, and per-day statistics.

A directory holds day ``K`` as any of: ``day_K/`` (parquet shards from ``ctr data
convert``), ``day_K`` or ``day_K.gz`` (Criteo text, e.g. from ``ctr synth`` or the real
1TB logs). Text days are converted once into ``DIR/.shards/day_K/`` and the shards are
reused while the text file is unchanged (size and mtime are recorded).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from numpy.typing import NDArray

from ctr.data.reader import (
    DEFAULT_CHUNK_BYTES,
    OnBadLine,
    ReadReport,
    check_on_bad_line,
    line_chunks,
    record_bad_lines,
    split_chunk,
)
from ctr.data.synth import TRUTH_SUFFIX
from ctr.errors import InputError
from ctr.metrics import roc_auc
from ctr.paths import output_dir
from ctr.schema import DENSE_COLUMNS, LABEL, SPARSE_COLUMNS, day_name

log = logging.getLogger(__name__)

SHARD_CACHE = ".shards"
_STAMP = "_source.json"


def parse_days(spec: str) -> list[int]:
    """``"0-5"`` → [0..5]; ``"0,2,4"``; ``"6"``; combinations like ``"0-2,5"``."""
    days: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                days.extend(range(lo, hi + 1))
            else:
                days.append(int(part))
    except ValueError as exc:
        raise InputError(f"bad day list {spec!r}: use forms like 0-5, 6 or 0,2,4") from exc
    if any(d < 0 for d in days) or len(set(days)) != len(days):
        raise InputError(f"bad day list {spec!r}: days must be non-negative and distinct")
    return days


def convert_file(
    src: Path,
    dest: Path,
    report: ReadReport,
    *,
    on_bad_line: OnBadLine = "skip",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    workers: int = 1,
) -> list[Path]:
    """Convert one Criteo file into parquet shards in ``dest`` (created atomically).

    One shard per chunk (``part-NNNNN`` numbered by chunk; a chunk without good rows writes none),
    so memory stays bounded by ``workers + 1`` chunks. The main thread reads and decompresses;
    ``workers`` threads parse and write chunks (polars releases the GIL); the report is kept in
    file order, so the shards and the report are the same for any ``workers``. ``dest`` must not
    exist yet; on any failure nothing is left behind.
    """
    check_on_bad_line(on_bad_line)
    if dest.exists():
        raise InputError(f"{dest} already exists; remove it or choose another --out")
    tmp = output_dir(dest.parent) / f".{dest.name}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    def convert_chunk(index: int, first: int, block: str) -> tuple[pl.DataFrame, int, Path | None]:
        good, bad = split_chunk(block, first)
        if not good.height:
            return bad, 0, None
        shard = tmp / f"part-{index:05d}.parquet"
        good.write_parquet(shard, compression="zstd", statistics=False)
        return bad, good.height, dest / shard.name

    shards: list[Path] = []

    def settle(result: tuple[pl.DataFrame, int, Path | None]) -> None:
        bad, kept, shard = result
        report.rows_read += bad.height + kept
        record_bad_lines(report, src, bad, on_bad_line)
        report.rows_kept += kept
        if shard is not None:
            shards.append(shard)

    try:
        with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="ctr-convert") as pool:
            pending: deque[Future[tuple[pl.DataFrame, int, Path | None]]] = deque()
            for index, (first, block) in enumerate(line_chunks(src, chunk_bytes)):
                pending.append(pool.submit(convert_chunk, index, first, block))
                while len(pending) > max(workers, 1) or (pending and pending[0].done()):
                    settle(pending.popleft().result())
            while pending:
                settle(pending.popleft().result())
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return shards


def _text_source(data_dir: Path, day: int) -> Path | None:
    for name in (day_name(day), day_name(day) + ".gz"):
        path = data_dir / name
        if path.is_file():
            return path
    return None


def _stamp(path: Path) -> dict[str, object]:
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True)
class DayShards:
    """Parquet shards of one day and, for generated data, its truth sidecar."""

    day: int
    shards: tuple[Path, ...]
    truth: Path | None

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(list(self.shards))

    @property
    def rows(self) -> int:
        return sum(pq.ParquetFile(s).metadata.num_rows for s in self.shards)


def raw_arrays(frame: pl.DataFrame) -> tuple[NDArray[Any], NDArray[Any]]:
    """Raw features as a request carries them: dense float32 ``(n, 13)`` with NaN where missing,
    sparse int64 ``(n, 26)`` hashes with -1 where missing (the served graph's inputs)."""
    dense = frame.select([pl.col(c).cast(pl.Float32) for c in DENSE_COLUMNS]).to_numpy()
    sparse = frame.select([pl.col(c).cast(pl.Int64).fill_null(-1) for c in SPARSE_COLUMNS]).to_numpy()
    return dense, sparse


def truth_auc(shards: DayShards, labels: NDArray[Any]) -> float | None:
    """For a generated day: the AUC of the true click probabilities (the Bayes AUC), else None."""
    if shards.truth is None:
        return None
    truth = pq.read_table(shards.truth, columns=["p_true"])["p_true"].to_numpy()
    return round(roc_auc(labels, truth), 6) if truth.size == labels.size else None


def day_shards(data_dir: Path, day: int) -> DayShards:
    """Shards of ``day``, converting a text day on first use (bad lines skipped, logged)."""
    if not data_dir.is_dir():
        raise InputError(f"data directory {data_dir} does not exist")
    truth = data_dir / (day_name(day) + TRUTH_SUFFIX)
    truth_path = truth if truth.is_file() else None
    converted = data_dir / day_name(day)
    if converted.is_dir():
        return DayShards(day, tuple(sorted(converted.glob("part-*.parquet"))), truth_path)
    source = _text_source(data_dir, day)
    if source is None:
        raise InputError(
            f"day {day} not found in {data_dir} (looked for {day_name(day)}, "
            f"{day_name(day)}.gz or a {day_name(day)}/ shard directory)"
        )
    cache = data_dir / SHARD_CACHE / day_name(day)
    stamp_file = cache / _STAMP
    if not (stamp_file.is_file() and json.loads(stamp_file.read_text()) == _stamp(source)):
        shutil.rmtree(cache, ignore_errors=True)
        report = ReadReport()
        convert_file(source, cache, report)
        stamp_file.write_text(json.dumps(_stamp(source)))
        if report.bad_total:
            log.warning("skipped %d malformed lines in %s: %s", report.bad_total, source, report.bad_lines)
    return DayShards(day, tuple(sorted(cache.glob("part-*.parquet"))), truth_path)


def check_days(data_dir: Path, days: Sequence[int]) -> None:
    """``InputError`` naming every day of ``days`` absent from ``data_dir`` (or the directory)."""
    if not data_dir.is_dir():
        raise InputError(f"data directory {data_dir} does not exist")
    missing = [d for d in days if not (data_dir / day_name(d)).exists() and _text_source(data_dir, d) is None]
    if missing:
        raise InputError(f"day(s) {', '.join(map(str, missing))} not found in {data_dir}")


def iter_days(data_dir: Path, days: Sequence[int]) -> Iterator[DayShards]:
    """``day_shards`` for each day, failing before any work if one is missing."""
    check_days(data_dir, days)
    for d in days:
        yield day_shards(data_dir, d)


def available_days(data_dir: Path) -> list[int]:
    """Days present in ``data_dir`` as text or shard directories, sorted."""
    found: set[int] = set()
    for path in data_dir.iterdir():
        stem = path.name.removesuffix(".gz")
        if stem.startswith("day_") and stem[4:].isdigit() and not path.name.endswith(TRUTH_SUFFIX):
            found.add(int(stem[4:]))
    return sorted(found)


def day_stats(shards: DayShards) -> dict[str, object]:
    """Rows, positive rate and, when the truth sidecar exists, the Bayes AUC of a day."""
    labels = shards.scan().select(LABEL).collect()[LABEL].to_numpy()
    stats: dict[str, object] = {
        "day": shards.day,
        "rows": int(labels.size),
        "positive_rate": round(float(labels.mean()), 6) if labels.size else None,
        "bayes_auc": None,
    }
    if shards.truth is not None:
        p = pq.read_table(shards.truth, columns=["p_true"])["p_true"].to_numpy()
        if p.size != labels.size:
            raise InputError(f"{shards.truth} has {p.size} rows but day {shards.day} has {labels.size}")
        stats["bayes_auc"] = round(roc_auc(labels, p), 6) if 0 < labels.sum() < labels.size else None
    return stats
