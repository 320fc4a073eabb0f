"""The ``ctr`` command line: parses arguments and calls library functions, nothing more.

Expected failures (``CtrError``) print one ``error: …`` line to stderr and exit non-zero
(2 for bad usage or input, 1 for failures), without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ctr.errors import CtrError
from ctr.logs import setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="CTR ranking with drift-triggered retraining.")
data_app = typer.Typer(no_args_is_help=True, help="Criteo-layout data: convert and inspect.")
app.add_typer(data_app, name="data")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON line.")]


def _emit(payload: dict[str, object], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(payload) if as_json else text)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Directory to write day_0 … day_{N-1} into.")],
    days: Annotated[int, typer.Option(help="Number of days.")] = 7,
    rows_per_day: Annotated[int, typer.Option(help="Rows per day.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed; same arguments give identical files.")] = 0,
    positive_rate: Annotated[float, typer.Option(help="Target click rate before drift.")] = 0.25,
    drift_day: Annotated[int | None, typer.Option(help="First day with drift.")] = None,
    drift: Annotated[str | None, typer.Option(help="new-ads, concept or popularity.")] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write day_K.gz instead of day_K.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Generate Criteo-layout days from a planted click model (optionally with drift)."""
    from ctr.data.synth import SynthArgs, synthesize

    args = SynthArgs(days, rows_per_day, seed, positive_rate, drift_day, drift, gzip)  # type: ignore[arg-type]
    manifest = synthesize(args, out)
    lines = [f"wrote {len(manifest['days'])} days to {out}"] + [  # type: ignore[arg-type]
        f"  day {d['day']}: {d['rows']} rows, positive rate {d['positive_rate']:.4f}, "
        f"Bayes AUC {d['bayes_auc']:.4f}{' (drift)' if d['drifted'] else ''}"
        for d in manifest["days"]  # type: ignore[union-attr]
    ]
    _emit({"out": str(out), "days": manifest["days"]}, as_json, "\n".join(lines))


@data_app.command("convert")
def data_convert(
    files: Annotated[list[Path], typer.Argument(help="Criteo-layout files, plain or .gz.")],
    out: Annotated[Path, typer.Option(help="Directory for <name>/part-*.parquet shards.")],
    on_bad_line: Annotated[str, typer.Option(help="skip (count and report) or fail.")] = "skip",
    as_json: JsonFlag = False,
) -> None:
    """Convert Criteo files into parquet shards, reporting malformed lines."""
    from ctr.data.dataset import convert_file
    from ctr.data.reader import ReadReport

    report = ReadReport()
    for path in files:
        name = path.name.removesuffix(".gz")
        convert_file(path, out / name, report, on_bad_line=on_bad_line)  # type: ignore[arg-type]
    summary = report.to_dict()
    text = [f"rows read {report.rows_read}, kept {report.rows_kept}, bad {report.bad_total}"]
    text += [f"  {reason}: {n}" for reason, n in report.bad_lines.items() if n]
    text += [f"  first: {b.describe()}" for b in report.examples]
    _emit(summary, as_json, "\n".join(text))


@data_app.command("stats")
def data_stats(
    data_dir: Annotated[Path, typer.Argument(help="A data directory (see `ctr synth`).")],
    days: Annotated[str | None, typer.Option(help="Days, e.g. 0-5; default all.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rows, positive rate and (for generated data) Bayes AUC of each day."""
    from ctr.data.dataset import available_days, day_shards, day_stats, parse_days
    from ctr.errors import InputError

    if not data_dir.is_dir():
        raise InputError(f"data directory {data_dir} does not exist")
    wanted = parse_days(days) if days else available_days(data_dir)
    if not wanted:
        raise InputError(f"no days found in {data_dir}")
    stats = [day_stats(day_shards(data_dir, d)) for d in wanted]
    text = "\n".join(
        f"day {s['day']}: rows {s['rows']}, positive rate {s['positive_rate']}, "
        f"Bayes AUC {s['bayes_auc'] if s['bayes_auc'] is not None else 'unknown'}"
        for s in stats
    )
    _emit({"data": str(data_dir), "days": stats}, as_json, text)


def main() -> None:
    """Console-script entry point: runs the app, turning ``CtrError`` into one stderr line."""
    setup_logging()
    try:
        app()
    except CtrError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
