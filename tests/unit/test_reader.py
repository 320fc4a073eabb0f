"""The Criteo reader on hand-written tricky lines, gzip, bad lines and chunk boundaries."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from ctr.data.reader import ReadReport, iter_batches
from ctr.errors import DataFormatError, InputError


def line(label: str = "1", ints: list[str] | None = None, cats: list[str] | None = None) -> str:
    ints = ints if ints is not None else ["1"] * 13
    cats = cats if cats is not None else ["68fd1e64"] * 26
    return "\t".join([label, *ints, *cats])


def read_all(path: Path, **kw: object) -> tuple[pl.DataFrame, ReadReport]:
    report = ReadReport()
    frames = list(iter_batches(path, report, **kw))  # type: ignore[arg-type]
    return (pl.concat(frames) if frames else pl.DataFrame()), report


def test_quirks_are_accepted(tmp_path: Path) -> None:
    empty_ints = [""] * 13
    negative_i2 = ["3", "-2", *[""] * 11]
    empty_cats = [""] * 26
    text = "\r\n".join(
        [  # Windows line endings
            line(ints=empty_ints),
            line("0", ints=negative_i2),
            line(cats=["0000000A", *[""] * 25]),  # upper-case hex, mostly empty
            line(cats=empty_cats),
        ]
    )  # and no final newline
    path = tmp_path / "day_0"
    path.write_bytes(text.encode())
    df, report = read_all(path)
    assert report.rows_read == 4 and report.rows_kept == 4 and report.bad_total == 0
    assert df["label"].to_list() == [1, 0, 1, 1]
    assert df["I1"].to_list() == [None, 3, 1, 1]
    assert df["I2"].to_list() == [None, -2, 1, 1]
    assert df["C1"].to_list() == [0x68FD1E64, 0x68FD1E64, 10, None]
    assert df["C26"].to_list() == [0x68FD1E64, 0x68FD1E64, None, None]  # no stray \r


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "day_3"  # no .gz suffix: real files are not always named well
    path.write_bytes(gzip.compress((line() + "\n" + line("0") + "\n").encode()))
    df, report = read_all(path)
    assert report.rows_kept == 2 and df["label"].to_list() == [1, 0]


def test_bad_lines_are_counted_and_located(tmp_path: Path) -> None:
    lines = [
        line(),
        line(label="2"),
        line(ints=["x", *["1"] * 12]),
        line(cats=["zz", *["68fd1e64"] * 25]),
        "1\t2\t3",
        line(ints=["99999999999999999999999", *["1"] * 12]),  # overflows int64
        line(cats=["123456789", *["68fd1e64"] * 25]),  # 9 hex digits: not 32-bit
        line("0"),
    ]
    path = tmp_path / "day_1"
    path.write_text("\n".join(lines) + "\n")
    df, report = read_all(path)
    assert report.rows_read == 8 and report.rows_kept == 2
    assert report.bad_lines == {
        "column_count": 1,
        "bad_label": 1,
        "bad_integer": 2,
        "bad_categorical": 2,
    }
    located = [(b.line, b.reason) for b in report.examples]
    assert located == [
        (2, "bad_label"),
        (3, "bad_integer"),
        (4, "bad_categorical"),
        (5, "column_count"),
        (6, "bad_integer"),
    ]
    assert all(b.file == str(path) for b in report.examples)
    assert df["label"].to_list() == [1, 0]


def test_fail_mode_raises_with_location(tmp_path: Path) -> None:
    path = tmp_path / "day_2"
    path.write_text("\n".join([line(), line(), line(label="x")]) + "\n")
    with pytest.raises(DataFormatError, match=r"day_2:3: bad_label"):
        read_all(path, on_bad_line="fail")


def test_line_numbers_survive_chunk_boundaries(tmp_path: Path) -> None:
    lines = [line() for _ in range(500)]
    lines[377] = line(label="7")
    path = tmp_path / "day_4"
    path.write_text("\n".join(lines) + "\n")
    report = ReadReport()
    frames = list(iter_batches(path, report, chunk_bytes=4096))  # many chunks, lines split
    assert len(frames) > 10
    assert sum(f.height for f in frames) == 499
    assert [(b.line, b.reason) for b in report.examples] == [(378, "bad_label")]


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_all(tmp_path / "nope")
