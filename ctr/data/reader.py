"""Streaming reader for files in the Criteo click-log layout.

Reads plain or gzip files (detected by magic bytes, whatever the name) in chunks of
``chunk_bytes``: memory is bounded by the chunk, never by the file. Each chunk becomes one
Polars frame with columns ``label`` (Int8), ``I1..I13`` (Int64), ``C1..C26`` (Int64, the hash
as an unsigned 32-bit value); empty cells are nulls.

Accepted quirks: empty cells, negative integers, Windows line endings, a missing final
newline. Malformed lines are never dropped silently: each is counted under one reason
(``column_count``, ``bad_label``, ``bad_integer``, ``bad_categorical``) and the first few are
kept with file and 1-based line number. With ``on_bad_line="fail"`` the first malformed line
raises ``DataFormatError``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import polars as pl

from ctr.errors import DataFormatError, InputError
from ctr.schema import DENSE_COLUMNS, LABEL, N_COLUMNS, SPARSE_COLUMNS

OnBadLine = Literal["skip", "fail"]
BAD_LINE_REASONS = ("column_count", "bad_label", "bad_integer", "bad_categorical")
MAX_EXAMPLES = 5
DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024

_REASON_TEXT = {
    "column_count": f"expected {N_COLUMNS} tab-separated fields",
    "bad_label": "label is not 0 or 1",
    "bad_integer": "an I column is not an integer",
    "bad_categorical": "a C column is not a 32-bit hex hash",
}
_HEX32 = r"^[0-9a-fA-F]{1,8}$"
_FIELDS = [f"field_{i}" for i in range(N_COLUMNS)]

SCHEMA: dict[str, pl.DataType] = {
    LABEL: pl.Int8(),
    **{c: pl.Int64() for c in DENSE_COLUMNS},
    **{c: pl.Int64() for c in SPARSE_COLUMNS},
}


@dataclass(frozen=True)
class BadLine:
    """One malformed line: where it is, why, and its first characters."""

    file: str
    line: int
    reason: str
    text: str

    def describe(self) -> str:
        return f"{self.file}:{self.line}: {self.reason} ({_REASON_TEXT[self.reason]}): {self.text!r}"


@dataclass
class ReadReport:
    """What a read saw: lines read, rows kept, bad lines by reason, first examples."""

    rows_read: int = 0
    rows_kept: int = 0
    bad_lines: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_LINE_REASONS, 0))
    examples: list[BadLine] = field(default_factory=list)

    @property
    def bad_total(self) -> int:
        return sum(self.bad_lines.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "bad_lines": dict(self.bad_lines),
            "first_bad_lines": [
                {"file": b.file, "line": b.line, "reason": b.reason, "text": b.text} for b in self.examples
            ],
        }


def open_maybe_gzip(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading, decompressing when it starts with the gzip magic."""
    try:
        with open(path, "rb") as probe:
            magic = probe.read(2)
    except FileNotFoundError as exc:
        raise InputError(f"no such file: {path}") from exc
    except IsADirectoryError as exc:
        raise InputError(f"expected a Criteo-layout file, got a directory: {path}") from exc
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile is a binary stream
    return open(path, "rb")


def _line_chunks(stream: BinaryIO, chunk_bytes: int) -> Iterator[str]:
    """Yield blocks of whole lines (joined by ``\\n``, no final newline, ``\\r`` kept), about
    ``chunk_bytes`` each. Splitting into lines is left to polars (no Python list of lines)."""
    rest = b""
    while True:
        block = stream.read(chunk_bytes)
        if not block:
            break
        data = rest + block
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        rest = data[cut + 1 :]
        yield data[:cut].decode("utf-8", errors="replace")
    if rest:
        yield rest.decode("utf-8", errors="replace")


def _parse_lines(block: str, first_line: int) -> pl.DataFrame:
    """Split a block into lines and validate them; returns typed columns plus ``_line`` and
    ``_reason`` (the work runs in polars, outside the GIL)."""
    raw = pl.col("raw")
    fields = [pl.col(f) for f in _FIELDS]
    dense_fields, sparse_fields = fields[1 : 1 + len(DENSE_COLUMNS)], fields[1 + len(DENSE_COLUMNS) :]
    dense = [
        pl.when(f == "").then(None).otherwise(f.str.to_integer(strict=False)).alias(name)
        for f, name in zip(dense_fields, DENSE_COLUMNS, strict=True)
    ]
    sparse = [
        pl.when(f == "").then(None).otherwise(f.str.to_integer(base=16, strict=False)).alias(name)
        for f, name in zip(sparse_fields, SPARSE_COLUMNS, strict=True)
    ]
    bad_int = pl.any_horizontal([(f != "") & d.is_null() for f, d in zip(dense_fields, dense, strict=True)])
    bad_cat = pl.any_horizontal([(f != "") & ~f.str.contains(_HEX32) for f in sparse_fields])
    return (
        pl.LazyFrame({"raw": [block]}, schema={"raw": pl.String})
        .select(raw.str.split("\n").explode())
        .with_columns(
            raw.str.strip_suffix("\r"),
            pl.int_range(first_line, first_line + pl.len(), dtype=pl.Int64).alias("_line"),
        )
        .with_columns(
            (raw.str.count_matches("\t", literal=True) != N_COLUMNS - 1).alias("_bad_count"),
            raw.str.split_exact("\t", N_COLUMNS - 1).struct.rename_fields(_FIELDS).alias("s"),
        )
        .unnest("s")
        .with_columns([pl.col(f).fill_null("") for f in _FIELDS])
        .select(
            "raw",
            "_line",
            pl.when(pl.col("_bad_count"))
            .then(pl.lit("column_count"))
            .when(~fields[0].is_in(["0", "1"]))
            .then(pl.lit("bad_label"))
            .when(bad_int)
            .then(pl.lit("bad_integer"))
            .when(bad_cat)
            .then(pl.lit("bad_categorical"))
            .otherwise(None)
            .alias("_reason"),
            pl.when(fields[0] == "1").then(1).otherwise(0).cast(pl.Int8).alias(LABEL),
            *dense,
            *sparse,
        )
        .collect()
    )


def record_bad_lines(report: ReadReport, path: Path, bad: pl.DataFrame, on_bad_line: OnBadLine) -> None:
    """Count ``bad`` (rows of a parsed chunk with a ``_reason``) in ``report``; with
    ``on_bad_line == "fail"`` raise ``DataFormatError`` for the first of them."""
    if not bad.height:
        return
    for reason, count in bad.group_by("_reason").len().iter_rows():
        report.bad_lines[reason] += count
    room = MAX_EXAMPLES - len(report.examples)
    for line_no, reason, text in bad.head(max(room, 0)).select("_line", "_reason", "raw").iter_rows():
        report.examples.append(BadLine(str(path), line_no, reason, text[:80]))
    if on_bad_line == "fail":
        first = bad.row(0, named=True)
        example = BadLine(str(path), first["_line"], first["_reason"], first["raw"][:80])
        raise DataFormatError(f"malformed line {example.describe()}")


def split_chunk(block: str, first_line: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a block of whole lines numbered from ``first_line``: (good rows in ``SCHEMA``, bad
    rows with ``_line``, ``_reason`` and ``raw``)."""
    frame = _parse_lines(block, first_line)
    bad = frame.filter(pl.col("_reason").is_not_null()).select("_line", "_reason", "raw")
    return frame.filter(pl.col("_reason").is_null()).select(list(SCHEMA)), bad


def check_on_bad_line(on_bad_line: str) -> None:
    if on_bad_line not in ("skip", "fail"):
        raise InputError(f"--on-bad-line must be skip or fail, got {on_bad_line!r}")


def line_chunks(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tuple[int, str]]:
    """``(first line number, block of whole lines)`` of ``path`` (plain or gzip), about
    ``chunk_bytes`` each."""
    next_line = 1
    with open_maybe_gzip(path) as stream:
        for block in _line_chunks(stream, chunk_bytes):
            yield next_line, block
            next_line += block.count("\n") + 1


def iter_batches(
    path: Path,
    report: ReadReport,
    *,
    on_bad_line: OnBadLine = "skip",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[pl.DataFrame]:
    """Stream ``path`` as typed frames (see module docstring), updating ``report``.

    Raises ``InputError`` if the file is missing, ``DataFormatError`` on the first bad line
    when ``on_bad_line == "fail"``.
    """
    check_on_bad_line(on_bad_line)
    for first, lines in line_chunks(path, chunk_bytes):
        good, bad = split_chunk(lines, first)
        report.rows_read += good.height + bad.height
        record_bad_lines(report, path, bad, on_bad_line)
        report.rows_kept += good.height
        if good.height:
            yield good
