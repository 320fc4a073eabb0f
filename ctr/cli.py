"""The ``ctr`` command line: parses arguments and calls library functions, nothing more.

Expected failures (``CtrError``) print one ``error: …`` line to stderr and exit non-zero
(2 for bad usage or input, 1 for failures), without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ctr.cpus import usable_cores
from ctr.errors import CtrError, InputError
from ctr.logs import setup_logging
from ctr.retrain_request import ATTRIBUTION_WINDOW
from ctr.retrain_request import DEFAULTS as RUN
from ctr.storage import CLUSTER as STORE

if TYPE_CHECKING:
    from ctr.retrain_request import RetrainRequest

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="CTR ranking with drift-triggered retraining.",
)
data_app = typer.Typer(no_args_is_help=True, help="Criteo-layout data: convert and inspect.")
models_app = typer.Typer(no_args_is_help=True, help="Versions in a Triton model repository.")
events_app = typer.Typer(no_args_is_help=True, help="The impression and click log.")
pipeline_app = typer.Typer(no_args_is_help=True, help="The Kubeflow retraining pipeline.")
monitor_app = typer.Typer(no_args_is_help=True, help="Rolling AUC, drift, and the retraining trigger.")
app.add_typer(monitor_app, name="monitor")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(events_app, name="events")

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

    args = SynthArgs(days, rows_per_day, seed, positive_rate, drift_day, drift, gzip)  # type: ignore[arg-type]  # drift: a Literal that SynthArgs checks
    manifest = synthesize(args, out)
    written: list[dict[str, Any]] = manifest["days"]  # type: ignore[assignment]  # the manifest is JSON
    lines = [f"wrote {len(written)} days to {out}"] + [
        f"  day {d['day']}: {d['rows']} rows, positive rate {d['positive_rate']:.4f}, "
        f"Bayes AUC {d['bayes_auc']:.4f}{' (drift)' if d['drifted'] else ''}"
        for d in written
    ]
    _emit({"out": str(out), "days": manifest["days"]}, as_json, "\n".join(lines))


@data_app.command("convert")
def data_convert(
    files: Annotated[list[Path], typer.Argument(help="Criteo-layout files, plain or .gz.")],
    out: Annotated[Path, typer.Option(help="Directory for <name>/part-*.parquet shards.")],
    on_bad_line: Annotated[str, typer.Option(help="skip (count and report) or fail.")] = "skip",
    workers: Annotated[int | None, typer.Option(help="Parsing threads (default: the cores present).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Convert Criteo files into parquet shards, reporting malformed lines."""

    from ctr.data.dataset import convert_file
    from ctr.data.reader import ReadReport, check_on_bad_line

    check_on_bad_line(on_bad_line)
    for path in files:
        if not path.is_file():
            raise InputError(f"no such file: {path}")
        if (out / path.name.removesuffix(".gz")).exists():
            raise InputError(f"{out / path.name.removesuffix('.gz')} already exists; remove it or choose another --out")
    report = ReadReport()
    for path in files:
        name = path.name.removesuffix(".gz")
        convert_file(path, out / name, report, on_bad_line=on_bad_line, workers=workers or usable_cores())  # type: ignore[arg-type]  # on_bad_line: checked above
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


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Data directory with day_K files or shards.")],
    train_days: Annotated[str, typer.Option(help="Training days, e.g. 0-5.")],
    valid_day: Annotated[int, typer.Option(help="Validation day (early stopping, metrics).")],
    repo: Annotated[Path, typer.Option(help="Triton model repository to publish into.")],
    config: Annotated[str, typer.Option(help="Experiment id in ctr/configs, or FILE.yaml#ID.")] = "dcn",
    mode: Annotated[str, typer.Option(help="full (fit + train from scratch) or incremental.")] = "full",
    base: Annotated[int | None, typer.Option(help="Base version for incremental (default newest).")] = None,
    replay_days: Annotated[
        str | None, typer.Option(help="Older days to replay (default: all before the first training day).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the experiment's seed.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 … (default: auto).")] = None,
    nproc: Annotated[int, typer.Option(help="Data-parallel processes (DDP; one GPU each on cuda).")] = 1,
    workers: Annotated[
        int | None, typer.Option(help="Feed threads per process (default: CTR_TRAIN_WORKERS or cores - 1).")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Encoded shards (default: CTR_ENCODED_CACHE or DATA/.encoded).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train DCN / DCN-v2 and publish it as the next version of the model repository."""
    from ctr.data.dataset import parse_days
    from ctr.repository import ModelRepository
    from ctr.train import TrainSpec, train_and_publish

    spec = TrainSpec(
        data_dir=data,
        train_days=parse_days(train_days),
        valid_day=valid_day,
        experiment=config,
        mode=mode,  # type: ignore[arg-type]  # a Literal that train_candidate checks
        base_version=base,
        replay_days=parse_days(replay_days) if replay_days else None,
        seed=seed,
        device=device,
        nproc=nproc,
        workers=workers,
        cache_dir=cache_dir,
    )
    version, candidate = train_and_publish(spec, ModelRepository(repo))
    m = candidate.metrics
    payload = {
        "version": version,
        "auc": m["auc"],
        "logloss": m["logloss"],
        "calibration": m["calibration"],
        "bayes_auc": m["bayes_auc"],
        "mode": spec.mode,
        "parent_version": candidate.metadata["parent_version"],
        "config": candidate.metadata["experiment"]["name"],
        "seed": candidate.metadata["seed"],
        "samples_per_second": candidate.metadata["samples_per_second"],
        "seconds": candidate.metadata["seconds"],
    }
    bayes = f", Bayes AUC {m['bayes_auc']:.4f}" if m["bayes_auc"] is not None else ""
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in candidate.metadata["seconds"].items())
    text = (
        f"published version {version} ({spec.mode}, config {payload['config']}, seed {payload['seed']}): "
        f"valid AUC {m['auc']:.4f}, log loss {m['logloss']:.4f}, calibration {m['calibration']:.3f}{bayes}\n"
        f"{payload['samples_per_second']:.0f} samples/s in epochs; {seconds}"
    )
    _emit(payload, as_json, text)


@models_app.command("list")
def models_list(
    repo: Annotated[Path, typer.Option(help="Triton model repository.")],
    as_json: JsonFlag = False,
) -> None:
    """Published versions with their metrics, oldest first, and which one Triton serves."""
    from ctr.errors import InputError
    from ctr.repository import ModelRepository

    if not repo.is_dir():
        raise InputError(f"model repository {repo} does not exist")
    repository = ModelRepository(repo)
    serving = repository.served()
    rows = []
    for v in repository.versions():
        meta = repository.metadata(v)
        rows.append(
            {
                "version": v,
                "mode": meta.get("mode"),
                "parent_version": meta.get("parent_version"),
                "created_at": meta.get("created_at"),
                "config": meta.get("experiment", {}).get("name"),
                "train_days": meta.get("data", {}).get("train_days"),
                "serving": v == serving,
                **meta.get("metrics", {}),
            }
        )
    if as_json:
        typer.echo(json.dumps({"repo": str(repo), "serving_version": serving, "versions": rows}))
        return
    if not rows:
        typer.echo(f"no versions in {repository.model_dir}")
    for r in rows:
        typer.echo(
            f"v{r['version']}{' (serving)' if r['serving'] else ''}: {r['mode']} (parent {r['parent_version']}), "
            f"config {r['config']}, "
            f"days {r['train_days']}, AUC {r.get('auc')}, log loss {r.get('logloss')}, "
            f"created {r['created_at']}"
        )


@app.command()
def triton(
    repo: Annotated[Path, typer.Option(help="Triton model repository (holds dcn/).")],
    http_port: Annotated[int, typer.Option(help="KServe v2 HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="KServe v2 gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    poll_seconds: Annotated[float, typer.Option(help="How often to look for a new version.")] = 5.0,
    instances: Annotated[int, typer.Option(min=1, help="Model instances (stub processes), 1 ORT thread each.")] = 1,
    address: Annotated[
        str, typer.Option(help="Address the HTTP, gRPC and metrics ports bind (they have no auth); 0.0.0.0 for all.")
    ] = "127.0.0.1",
    kind: Annotated[
        str, typer.Option(help="Instance kind: cpu, or gpu (KIND_GPU, ONNX Runtime's CUDA provider).")
    ] = "cpu",
) -> None:
    """Serve the repository's dcn model on a real tritonserver (nvidia-pytriton's build, Python backend)."""
    from ctr.serving.triton import TritonSettings, serve

    settings = TritonSettings(
        repo, http_port, grpc_port, metrics_port, poll_seconds, instances=instances, address=address, kind=kind
    )
    serve(settings)


@app.command()
def api(
    triton: Annotated[str, typer.Option(help="Triton gRPC address host:port (CTR_TRITON).")] = "localhost:8001",
    db: Annotated[str | None, typer.Option(help="Event log URL (CTR_DB_URL), e.g. sqlite:///ctr-events.db.")] = None,
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    max_candidates: Annotated[int | None, typer.Option(help="Most candidates per request (default 1000).")] = None,
    deadline_ms: Annotated[int | None, typer.Option(help="Deadline of each Triton call (default 200).")] = None,
    spool_dir: Annotated[Path | None, typer.Option(help="Where impressions wait while the log is down.")] = None,
    exploration: Annotated[
        str | None, typer.Option(help="Serving policy (CTR_EXPLORATION): none or epsilon:E (default none).")
    ] = None,
) -> None:
    """Run the score API (FastAPI on uvicorn) in front of Triton."""
    import uvicorn

    from ctr.serving.api import ApiSettings, create_app

    settings = ApiSettings.from_env(
        triton=triton,
        db_url=db,
        max_candidates=max_candidates,
        deadline_ms=deadline_ms,
        spool_dir=spool_dir,
        exploration=exploration,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)


@app.command()
def serve(
    repo: Annotated[Path, typer.Option(help="Triton model repository.")],
    db: Annotated[
        str | None,
        typer.Option(help="Event log URL (default CTR_DB_URL or CTR_DB_URL_FILE, else sqlite:///ctr-events.db)."),
    ] = None,
    port: Annotated[int, typer.Option(help="Score API HTTP port.")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="Triton gRPC port.")] = 8001,
    http_port: Annotated[int, typer.Option(help="Triton HTTP port.")] = 8000,
    metrics_port: Annotated[int, typer.Option(help="Triton metrics port.")] = 8002,
    poll_seconds: Annotated[float, typer.Option(help="Triton's repository poll interval.")] = 5.0,
) -> None:
    """Start Triton (on 127.0.0.1) and the score API together on this machine (Ctrl-C stops both).

    Triton is restarted when it dies, at most 3 times in 10 minutes; past that both stop with an error.
    """
    from ctr.serving.local import LocalStack
    from ctr.settings import env_or_file
    from ctr.signals import sigterm_as_interrupt

    sigterm_as_interrupt()
    with LocalStack(
        repo,
        db or env_or_file("CTR_DB_URL", "sqlite:///ctr-events.db") or "sqlite:///ctr-events.db",
        api_port=port,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        poll_seconds=poll_seconds,
    ) as stack:
        typer.echo(f"score API on http://127.0.0.1:{port} (docs at /docs), Triton gRPC 127.0.0.1:{grpc_port}")
        stack.supervise(max_restarts=3, window_seconds=600.0)


@events_app.command("migrate")
def events_migrate(db: Annotated[str, typer.Option(help="Event log URL.")]) -> None:
    """Create or upgrade the event-log schema."""
    from ctr.events.store import EventStore, redacted

    EventStore(db).migrate()
    typer.echo(f"event log at {redacted(db)} is at the newest schema")


@events_app.command("export")
def events_export(
    db: Annotated[str, typer.Option(help="Event log URL.")],
    since: Annotated[str, typer.Option(help="Start of the window (ISO 8601, UTC).")],
    until: Annotated[str, typer.Option(help="End of the window (ISO 8601, UTC; exclusive).")],
    out: Annotated[Path, typer.Option(help="Directory for day_0 … in the Criteo layout.")],
    attribution_window: Annotated[
        str, typer.Option(help="Clicks count within this time of the impression.")
    ] = ATTRIBUTION_WINDOW,
    now: Annotated[str, typer.Option(help="Evaluate as of this time (default: now).")] = "now",
    as_json: JsonFlag = False,
) -> None:
    """Write matured impressions as labelled Criteo-layout days (for incremental training)."""
    from ctr.events.store import EventStore
    from ctr.events.training_export import ExportWindow, export_days
    from ctr.timeutil import parse_duration, parse_time

    window = ExportWindow(parse_time(since), parse_time(until), parse_duration(attribution_window), parse_time(now))
    summary = export_days(EventStore(db), window, out)
    text = "\n".join(f"day {d['day']}: {d['rows']} rows, {d['positives']} clicked" for d in summary["days"])
    _emit(summary, as_json, text)


quarantine_app = typer.Typer(no_args_is_help=True, help="Event rows the database refused for their content.")
events_app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(
    db: Annotated[str, typer.Option(help="Event log URL.")],
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many, oldest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Quarantined rows: when, what kind, why the database refused them, and the row as sent."""
    from ctr.events.store import EventStore

    rows = EventStore(db).quarantined(limit)
    if as_json:
        typer.echo(json.dumps({"rows": rows}, ensure_ascii=True, default=str))
        return
    if not rows:
        typer.echo("quarantine is empty")
    for r in rows:
        payload = json.dumps(r["payload"], ensure_ascii=True, default=str)
        at = _iso(r["quarantined_at_us"])
        typer.echo(f"#{r['id']} {at} {r['kind']}: {r['reason']}\n    {payload[:300]}")


@quarantine_app.command("export")
def quarantine_export(
    db: Annotated[str, typer.Option(help="Event log URL.")],
    out: Annotated[Path, typer.Option(help="JSON Lines file to write (one quarantined row per line).")],
) -> None:
    """Write every quarantined row as JSON Lines (ASCII; NUL and lone surrogates escaped)."""
    from ctr.errors import InputError
    from ctr.events.store import EventStore

    rows = EventStore(db).quarantined()
    try:
        with open(out, "w", encoding="ascii") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=True, default=str) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    typer.echo(f"{len(rows)} quarantined rows written to {out}")


def _iso(us: int) -> str:
    from ctr.timeutil import from_us

    return from_us(us).isoformat(timespec="seconds").replace("+00:00", "Z")


@models_app.command("rollback")
def models_rollback(
    repo: Annotated[Path, typer.Option(help="Triton model repository.")],
    to: Annotated[int, typer.Option("--to", help="Version to serve again.")],
) -> None:
    """Serve version N again (newer versions stay on disk; the next publish serves itself)."""
    from ctr.repository import ModelRepository

    ModelRepository(repo).rollback(to)
    typer.echo(f"serving version {to} from {repo}; Triton picks it up on its next poll")


@models_app.command("rollout-status")
def models_rollout_status(
    version: Annotated[int, typer.Option("--version", min=1, help="The version every Triton pod should serve.")],
    namespace: Annotated[str, typer.Option(help="Namespace of the Triton pods.")] = "ctr-loop",
    selector: Annotated[
        str, typer.Option(help="Label selector of the Triton pods (the Service's).")
    ] = "app.kubernetes.io/name=triton",
    port: Annotated[int, typer.Option(help="Triton's HTTP port where the pod spec names no 'http' port.")] = 8000,
    wait: Annotated[bool, typer.Option("--wait", help="Poll until every pod serves it, or --timeout.")] = False,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds --wait waits at most.")] = 300.0,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between looks with --wait.")] = 2.0,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig file (default: KUBECONFIG, else the in-cluster config, else ~/.kube/config)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Which Triton pods of the Service serve version N (asked through the Kubernetes API); exit 1 until all do."""
    from ctr.rollout import RolloutNotReady, kubernetes_api, rollout_status, wait_for_rollout

    api = kubernetes_api(kubeconfig)
    where = {"namespace": namespace, "selector": selector, "port": port, "api": api}
    try:
        status = wait_for_rollout(version, timeout, poll, **where) if wait else rollout_status(version, **where)
    except RolloutNotReady as exc:  # the last look on stdout, then the one-line error (exit 1)
        pods = [f"{p.name} {p.ip or '-'}:{p.port} {p.phase}: {p.detail}" for p in exc.status.pods]
        _emit(exc.status.to_dict(), as_json, "\n".join(pods) or exc.status.summary())
        raise
    pods = [f"{p.name} {p.ip or '-'}:{p.port} {p.phase}: {p.detail}" for p in status.pods]
    _emit(status.to_dict(), as_json, "\n".join([*pods, status.summary()]))
    if not status.all_ready:
        raise typer.Exit(1)


# The options of a retrain request; their defaults are RetrainRequest's (``RUN``).
ModeOpt = Annotated[str, typer.Option(help="full or incremental.")]
DataOpt = Annotated[Path | None, typer.Option(help="History data directory (Criteo layout).")]
TrainDaysOpt = Annotated[str, typer.Option(help="Training days, e.g. 0-5 (runs without the event log).")]
ValidOpt = Annotated[int, typer.Option(help="Validation day.")]
HoldoutOpt = Annotated[int | None, typer.Option(help="Fresh holdout day for the gate (default valid+1).")]
ConfigOpt = Annotated[str, typer.Option(help="Experiment id.")]
SeedOpt = Annotated[int | None, typer.Option(help="Override the experiment's seed.")]
EpsilonOpt = Annotated[
    float, typer.Option(help="Gate tolerance on holdout AUC (a candidate with a lower holdout log loss passes too).")
]
SinceOpt = Annotated[str | None, typer.Option(help="Event window start: ISO 8601, or an offset from --now like -24h.")]
UntilOpt = Annotated[str | None, typer.Option(help="Event window end: ISO 8601 or an offset (default --now).")]
WindowOpt = Annotated[str, typer.Option(help="Click attribution window.")]
NowOpt = Annotated[str, typer.Option(help="Evaluate maturity as of this time.")]
FallbackOpt = Annotated[bool, typer.Option(help="Incremental with no serving version runs full.")]
ChallengeOpt = Annotated[
    bool, typer.Option(help="Incremental: two full candidates from scratch challenge the warm start; validation picks.")
]
WorkOpt = Annotated[Path, typer.Option(help="Scratch space for prepared data.")]


def _retrain_request(
    repo: Path,
    mode: str,
    data: Path | None,
    train_days: str,
    valid_day: int,
    holdout_day: int | None,
    work_dir: Path,
    config: str,
    seed: int | None,
    epsilon: float,
    events: bool,
    since: str | None,
    until: str | None,
    attribution_window: str,
    now: str,
    fallback_to_full: bool,
    resolve: bool = True,
    challenge: bool = False,
) -> RetrainRequest:
    """The request the flags describe (paths made absolute unless they name another machine's)."""
    from ctr.retrain_request import RetrainRequest

    def where(path: Path) -> str:
        return str(path.resolve() if resolve else path)

    return RetrainRequest(
        repo=where(repo),
        mode=mode,
        data_dir=where(data) if data else "",
        train_days=train_days,
        valid_day=valid_day,
        holdout_day=-1 if holdout_day is None else holdout_day,
        work_dir=where(work_dir),
        experiment=config,
        seed=-1 if seed is None else seed,
        epsilon=epsilon,
        events=events,
        since=since or "",
        until=until or "",
        attribution_window=attribution_window,
        now=now,
        fallback_to_full=fallback_to_full,
        challenge=challenge,
    )


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="Where to write the pipeline spec (YAML).")],
    train_gpus: Annotated[
        int | None, typer.Option(help="GPUs of one node for the train step (default CTR_PIPELINE_TRAIN_GPUS or 1).")
    ] = None,
) -> None:
    """Write the KFP v2 pipeline spec."""
    from pipelines.runner import compile_pipeline

    typer.echo(f"wrote {compile_pipeline(out, train_gpus)}")


@pipeline_app.command("run")
def pipeline_run(
    repo: Annotated[Path | None, typer.Option(help="Model repository (shared with Triton).")] = None,
    mode: ModeOpt = RUN.mode,
    data: DataOpt = None,
    train_days: TrainDaysOpt = "",
    valid_day: ValidOpt = RUN.valid_day,
    holdout_day: HoldoutOpt = None,
    config: ConfigOpt = RUN.experiment,
    seed: SeedOpt = None,
    epsilon: EpsilonOpt = RUN.epsilon,
    events_db: Annotated[str | None, typer.Option(help="Event log URL to export recent impressions from.")] = None,
    events: Annotated[
        bool, typer.Option("--events", help="Train on the event log (URL: --events-db, or the pods' Secret).")
    ] = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    attribution_window: WindowOpt = RUN.attribution_window,
    now: NowOpt = RUN.now,
    fallback_to_full: FallbackOpt = RUN.fallback_to_full,
    challenge: ChallengeOpt = RUN.challenge,
    work_dir: WorkOpt = Path(RUN.work_dir),
    request_file: Annotated[
        Path | None, typer.Option("--request", help="A RetrainRequest as JSON (instead of the flags above).")
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Run here with kfp.local (default when no --host).")] = False,
    host: Annotated[str | None, typer.Option(envvar="CTR_KFP_HOST", help="KFP API server URL.")] = None,
    token: Annotated[str | None, typer.Option(envvar="CTR_KFP_TOKEN", help="Bearer token for KFP.")] = None,
    namespace: Annotated[str | None, typer.Option(envvar="CTR_KFP_NAMESPACE", help="KFP namespace.")] = None,
    experiment_name: Annotated[str, typer.Option("--experiment", help="KFP experiment.")] = "ctr-loop",
    run_id: Annotated[str | None, typer.Option(help="Run id (holds the repository lease).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the retraining pipeline: locally through kfp.local, or on Kubeflow with --host.

    With --events-db (or a request with events, the URL then from CTR_DB_URL / CTR_DB_URL_FILE)
    the run trains on matured impressions of [--since, --until) plus the history days.
    """
    from ctr.errors import InputError
    from ctr.retrain_request import RetrainRequest
    from ctr.settings import env_or_file
    from pipelines.runner import run_local, submit

    if request_file is not None:
        try:
            request = RetrainRequest.from_json(request_file.read_text())
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"cannot read the retrain request {request_file}: {exc}") from exc
    else:
        if repo is None:
            raise InputError("--repo is required (or --request FILE)")
        remote = bool(host and not local)  # paths name the pipeline pods' filesystem
        request = _retrain_request(
            repo, mode, data, train_days, valid_day, holdout_day, work_dir, config, seed, epsilon,
            events or bool(events_db), since, until, attribution_window, now, fallback_to_full, resolve=not remote,
            challenge=challenge,
        )  # fmt: skip
    if run_id:
        request = request.replace(run_id=run_id)
    if host and not local:
        if events_db:
            raise InputError("--events-db is not sent to Kubeflow: the pipeline pods read the ctr-db Secret")
        submitted = submit(request, host, token, namespace, experiment_name)
        _emit({"run_id": submitted, "host": host}, as_json, f"submitted run {submitted} to {host}")
        return
    db_url = events_db or (env_or_file("CTR_DB_URL") if request.events else None)
    outcome = run_local(request, db_url=db_url)
    text = (
        f"run {outcome['run_id']}: published version {outcome['version']} ({outcome.get('gate')})"
        if outcome["published"]
        else f"run {outcome['run_id']}: gate refused the candidate; nothing published"
    )
    _emit(outcome, as_json, text)


@pipeline_app.command("schedule")
def pipeline_schedule(
    cron: Annotated[str, typer.Option(help="Cron expression (6 fields, KFP style), e.g. '0 0 3 * * *'.")],
    repo: Annotated[Path, typer.Option(help="Model repository path as mounted in the pipeline pods.")] = Path(
        str(STORE.repo)
    ),
    data: Annotated[Path | None, typer.Option(help="History data directory in the pods.")] = Path(str(STORE.data)),
    train_days: TrainDaysOpt = "",
    valid_day: ValidOpt = RUN.valid_day,
    holdout_day: HoldoutOpt = None,
    config: ConfigOpt = RUN.experiment,
    epsilon: EpsilonOpt = RUN.epsilon,
    events: Annotated[bool, typer.Option(help="Train on the event log's recent impressions.")] = True,
    since: SinceOpt = "-24h",
    until: UntilOpt = None,
    attribution_window: WindowOpt = RUN.attribution_window,
    work_dir: Annotated[Path, typer.Option(help="Scratch space in the pods.")] = Path(str(STORE.work)),
    host: Annotated[str | None, typer.Option(envvar="CTR_KFP_HOST", help="KFP API server URL.")] = None,
    token: Annotated[str | None, typer.Option(envvar="CTR_KFP_TOKEN", help="Bearer token for KFP.")] = None,
    namespace: Annotated[str | None, typer.Option(envvar="CTR_KFP_NAMESPACE", help="KFP namespace.")] = None,
) -> None:
    """Create a recurring incremental run on Kubeflow; each run trains on the window before it."""
    from pipelines.runner import schedule

    request = _retrain_request(
        repo, "incremental", data, train_days, valid_day, holdout_day, work_dir, config, None, epsilon,
        events, since, until, attribution_window, "now", False, resolve=False,
    )  # fmt: skip
    typer.echo(f"recurring run {schedule(request, cron, host or '', token, namespace)} created")


@monitor_app.command("run")
def monitor_run(
    repo: Annotated[Path, typer.Option(help="Model repository.")],
    db: Annotated[str | None, typer.Option(help="Event log URL (default CTR_DB_URL or CTR_DB_URL_FILE).")] = None,
    rules: Annotated[Path | None, typer.Option(help="Rules YAML (see monitor/rules.example.yaml).")] = None,
    trigger: Annotated[str, typer.Option(help="none (alert only), local or kfp.")] = "none",
    threshold: Annotated[float | None, typer.Option(help="Override the absolute AUC threshold.")] = None,
    attribution_window: Annotated[str | None, typer.Option(help="Override the attribution window.")] = None,
    now: Annotated[str | None, typer.Option(help="Evaluate as of this time (UTC).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute and print; write nothing.")] = False,
    pushgateway: Annotated[str | None, typer.Option(envvar="CTR_PUSHGATEWAY", help="Pushgateway URL.")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="Where to write the drift report.")] = None,
    data: Annotated[Path | None, typer.Option(help="History data for triggered runs (replay).")] = None,
    work_dir: Annotated[Path, typer.Option(help="Scratch space for triggered runs.")] = Path(RUN.work_dir),
    config: Annotated[str, typer.Option(help="Experiment for triggered runs.")] = RUN.experiment,
    export_window: Annotated[str, typer.Option(help="How much recent traffic a triggered run trains on.")] = "1d",
    host: Annotated[str | None, typer.Option(envvar="CTR_KFP_HOST", help="KFP API server (trigger kfp).")] = None,
    token: Annotated[str | None, typer.Option(envvar="CTR_KFP_TOKEN", help="KFP bearer token.")] = None,
    namespace: Annotated[str | None, typer.Option(envvar="CTR_KFP_NAMESPACE", help="KFP namespace.")] = None,
    experiment_name: Annotated[str, typer.Option("--experiment", envvar="CTR_KFP_EXPERIMENT")] = "ctr-loop",
    as_json: JsonFlag = False,
) -> None:
    """Evaluate matured impressions, decide, and trigger incremental retraining at most once."""
    from ctr.errors import InputError
    from ctr.retrain_request import event_window_since
    from ctr.settings import env_or_file
    from ctr.timeutil import parse_duration, parse_time
    from monitor.rules import load_rules
    from monitor.run import KfpSettings, MonitorRequest, run_monitor

    if trigger not in ("none", "local", "kfp"):
        raise InputError(f"--trigger must be none, local or kfp, got {trigger!r}")
    db = db or env_or_file("CTR_DB_URL")
    if not db:
        raise InputError("no event log: pass --db or set CTR_DB_URL (or CTR_DB_URL_FILE)")
    loaded = load_rules(rules).with_overrides(threshold, attribution_window)
    as_of = parse_time(now, "--now") if now else None  # all input checked before the database is opened
    target = _retrain_request(
        repo, "incremental", data, "", RUN.valid_day, None, work_dir, config, None, RUN.epsilon, True,
        event_window_since(parse_duration(export_window, "--export-window")), None,
        f"{int(loaded.attribution_window.total_seconds())}s", RUN.now, False,
    )  # fmt: skip
    record = run_monitor(
        MonitorRequest(
            db_url=db,
            repo=repo,
            rules=loaded,
            trigger=trigger,  # type: ignore[arg-type]  # checked against the three names above
            as_of=as_of,
            dry_run=dry_run,
            pushgateway=pushgateway,
            report_dir=report_dir,
            target=target,
            kfp=KfpSettings(host or "", token, namespace, experiment_name),
        )
    )
    auc = (
        "n/a"
        if record["auc"] is None
        else f"{record['auc']:.4f} [{record['auc_lower']:.4f}, {record['auc_upper']:.4f}]"
    )
    text = (
        f"{record['as_of']}: {record['labelled']} labelled, AUC {auc}, decision {record['decision']}"
        f" ({record['reason']})" + (f", run {record['run_id']}" if record["run_id"] else "")
    )
    _emit(record, as_json, text)


@monitor_app.command("history")
def monitor_history(
    db: Annotated[str, typer.Option(help="Event log URL.")],
    limit: Annotated[int, typer.Option(help="How many records, newest first.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Decision records of past monitor runs."""
    from monitor.run import history

    records = history(db, limit)
    if as_json:
        typer.echo(json.dumps({"runs": records}))
        return
    for r in records:
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.4f}"
        typer.echo(
            f"{r['as_of']}  v{r['serving_version']}  labelled {r['labelled']:>7}  AUC {auc}  "
            f"{r['decision']:<17} {r['reason']}"
        )


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Scratch directory (data, repository, event log).")] = Path("demo-run"),
    report_dir: Annotated[Path, typer.Option(help="Where the report goes.")] = Path("demo-report"),
    days: Annotated[int, typer.Option(help="Generated days (the last ones are simulated traffic).")] = 7,
    rows_per_day: Annotated[int, typer.Option(help="Rows per generated day.")] = 30_000,
    drift: Annotated[str, typer.Option(help="new-ads, concept or popularity.")] = "new-ads",
    drift_day: Annotated[int, typer.Option(help="First drifted day.")] = 4,
    rules: Annotated[
        Path | None, typer.Option(help="Monitor rules YAML (default: the shipped monitor/rules.example.yaml).")
    ] = None,
    db: Annotated[str | None, typer.Option(help="Event log URL (default: SQLite in the workdir).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated world and traffic.")] = 7,
    requests_per_tick: Annotated[int, typer.Option(help="Score requests per 30 simulated minutes.")] = 60,
    config: Annotated[str, typer.Option(help="Experiment id for both pipeline runs.")] = "dcn_v2_demo",
    exploration: Annotated[
        str, typer.Option(help="The score API's exploration policy: none or epsilon:E (CTR_EXPLORATION).")
    ] = "none",
    update_every: Annotated[
        str,
        typer.Option(help="Scheduled incremental updates every this much simulated time (e.g. 5h), or none."),
    ] = "none",
    export_window: Annotated[
        str, typer.Option(help="How much recent traffic each pipeline run exports and trains on (e.g. 12h).")
    ] = "12h",
    yardstick_seeds: Annotated[
        str,
        typer.Option(help="More training seeds for the two recovery yardsticks (comma-separated), or none."),
    ] = "7,11",
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Leave Triton and the API up.")] = False,
) -> None:
    """The closed loop on this machine: drift, retrains, recovery against the yardsticks (writes demo-report/)."""
    from ctr.demo import DemoConfig, run_demo
    from ctr.errors import InputError
    from ctr.signals import sigterm_as_interrupt
    from ctr.timeutil import parse_duration

    if drift not in ("new-ads", "concept", "popularity"):
        raise InputError(f"--drift must be new-ads, concept or popularity, got {drift!r}")
    if not 3 <= drift_day < days:
        raise InputError(f"--drift-day must be at least 3 and before --days {days}")
    window = parse_duration(export_window, "--export-window")
    every = None if update_every == "none" else parse_duration(update_every, "--update-every")
    seeds = _seed_list(yardstick_seeds)
    sigterm_as_interrupt()
    run_demo(
        DemoConfig(
            workdir=workdir,
            report_dir=report_dir,
            days=days,
            rows_per_day=rows_per_day,
            drift=drift,  # type: ignore[arg-type]  # checked against the three kinds above
            drift_day=drift_day,
            rules_file=rules,
            seed=seed,
            db_url=db,
            requests_per_tick=requests_per_tick,
            experiment=config,
            exploration=exploration,
            update_every=every,
            export_window=window,
            yardstick_seeds=seeds,
            keep_running=keep_running,
        )
    )


def _seed_list(text: str) -> tuple[int, ...]:
    """``--yardstick-seeds``: distinct non-negative integers, comma-separated, or ``none``."""
    from ctr.errors import InputError

    if text.strip() == "none":
        return ()
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise InputError(f"--yardstick-seeds must be integers separated by commas, or none; got {text!r}") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise InputError(f"--yardstick-seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def main() -> None:
    """Console-script entry point: runs the app, turning ``CtrError`` into one stderr line."""
    setup_logging()
    try:
        app()
    except CtrError as exc:
        typer.echo("error: " + " ".join(str(exc).split()), err=True)  # always one line
        sys.exit(exc.exit_code)
