"""The steps of the retraining pipeline as plain functions (the KFP components call these).

prepare → train (full | incremental) → evaluate → gate → publish. Every step reads and
writes paths on storage shared by the steps (local disk, or a PVC on the cluster); the
model repository only changes in ``publish``, by one atomic rename, under the run's lease.

Each step runs as its own process and imports the heavy libraries only it needs (torch in
``train``; polars, SQLAlchemy and ONNX Runtime in ``prepare`` and ``evaluate``): the gate,
publish and reject steps start in tens of milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr.cpus import usable_cores
from ctr.errors import InputError
from ctr.lease import acquire, holder, release
from ctr.repository import METADATA, ONNX_FILE, ModelRepository
from ctr.retrain_request import RetrainRequest
from ctr.schema import day_name
from ctr.settings import env_or_file
from ctr.timeutil import parse_duration

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from ctr.data.dataset import DayShards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What the train and evaluate steps read: one data directory and its day roles."""

    run_id: str
    mode: str
    data_dir: str
    train_days: list[int]
    valid_day: int
    holdout_day: int
    replay_days: list[int] | None
    recent_days: list[int] | None = None  # a full run with history: the exported days alone (its second candidate)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Prepared:
        return cls(**json.loads(text))


def link_days(source: Path, days: list[int], target: Path) -> None:
    """Symlink the given days of ``source`` (text, gzip and truth files, where present) into ``target``."""
    for day in days:
        for name in (day_name(day), day_name(day) + ".gz", day_name(day) + ".truth.parquet"):
            if (source / name).exists() and not (target / name).exists():
                os.symlink((source / name).resolve(), target / name)


def split_day(path: Path, parts: list[tuple[Path, float]]) -> None:
    """Rows of ``path`` in time order, cut into consecutive parts of the given fractions."""
    import polars as pl

    from ctr.data.reader import ReadReport, iter_batches
    from ctr.data.writer import frame_table, write_criteo

    report = ReadReport()
    frame = pl.concat(list(iter_batches(path, report))) if path.stat().st_size else pl.DataFrame()
    if frame.height < 10 * len(parts):
        raise InputError(f"{path} has {frame.height} labelled rows; too few to train, validate and hold out")
    start = 0
    for k, (dest, fraction) in enumerate(parts):
        stop = frame.height if k == len(parts) - 1 else start + int(frame.height * fraction)
        with open(dest, "wb") as f:
            write_criteo(f, frame_table(frame[start:stop]))
        start = stop


def prepare(request: RetrainRequest, job_name: str = "") -> Prepared:
    """Take the repository lease, settle the mode, and lay out the days the run trains on.

    The lease is held under ``request.run_id``, else ``job_name`` (the KFP job). Without the
    event log, the data directory is used as it is. With it (``request.events``; the URL from
    ``CTR_DB_URL`` or ``CTR_DB_URL_FILE``), matured impressions of the request's window are
    exported as new days after the history days of ``data_dir``: all but the last exported
    day are trained on, the last is split in time into a validation half and a holdout half
    (a single exported day: 70 % train, 15 % validation, 15 % holdout, in time order). An
    incremental run replays the history; a full run trains on it, from scratch, with the
    exported days — and, where there is history, also on the exported days alone
    (``recent_days``): ``train`` keeps whichever validates better.
    """
    from ctr.data.dataset import available_days, check_days, parse_days
    from ctr.events.store import EventStore
    from ctr.events.training_export import ExportWindow, export_days

    run_id = request.run_id or job_name
    if not run_id:
        raise InputError("a run needs a run id (the request's run_id or the KFP job name)")
    mode, data_dir = request.mode, request.data_dir
    events_db = env_or_file("CTR_DB_URL") if request.events else ""
    if request.events and not events_db:
        raise InputError("an event-log run needs CTR_DB_URL or CTR_DB_URL_FILE in its environment")
    if not events_db:  # every day the run will read is there, before any work or lease
        days = parse_days(request.train_days)
        check_days(Path(data_dir), [*days, request.valid_day, request.holdout])
    repository = ModelRepository(Path(request.repo))
    acquire(repository, run_id)
    if mode == "incremental" and repository.served() is None:
        if not request.fallback_to_full:
            raise InputError(
                f"incremental mode needs a serving version in {repository.model_dir}; "
                "run mode=full first (or pass fallback_to_full)"
            )
        log.warning("no serving version: falling back to a full run as asked")
        mode = "full"
    if not events_db:
        return Prepared(run_id, mode, data_dir, days, request.valid_day, request.holdout, None)
    work = Path(request.work_dir) / run_id
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    history = available_days(Path(data_dir)) if data_dir else []
    link_days(Path(data_dir), history, work / "data")
    since, until = request.window()
    window = ExportWindow(since, until, parse_duration(request.attribution_window), request.instant())
    summary = export_days(EventStore(events_db), window, work / "events")
    exported = [d["day"] for d in summary["days"] if d["rows"] > 0]
    if not exported:
        raise InputError(f"no matured impressions between {since.isoformat()} and {until.isoformat()}")
    base = (max(history) + 1) if history else 0
    target = work / "data"
    new_days: list[int] = []
    for k in exported[:-1]:
        os.symlink((work / "events" / day_name(k)).resolve(), target / day_name(base + len(new_days)))
        new_days.append(base + len(new_days))
    last = work / "events" / day_name(exported[-1])
    if new_days:  # earlier days train; the newest is split in time into validation and holdout
        valid, hold = base + len(new_days), base + len(new_days) + 1
        split_day(last, [(target / day_name(valid), 0.5), (target / day_name(hold), 0.5)])
    else:  # one exported day: its first 70 % trains, then 15 % validates and 15 % is held out
        new_days, valid, hold = [base], base + 1, base + 2
        split_day(
            last, [(target / day_name(base), 0.7), (target / day_name(valid), 0.15), (target / day_name(hold), 0.15)]
        )
    if mode == "full":  # from scratch on everything there is (history, then the exported days), or the recent alone
        recent = new_days if history else None
        return Prepared(run_id, mode, str(work / "data"), [*history, *new_days], valid, hold, None, recent)
    return Prepared(run_id, mode, str(work / "data"), new_days, valid, hold, history)


Candidate = tuple[str, str, list[int], list[int] | None]  # name, mode, train days, replay days


def candidates(prepared: Prepared, request: RetrainRequest) -> list[Candidate]:
    """The candidates a run trains, each ``(name, mode, train days, replay days)``; ``train``
    keeps the one with the highest validation AUC, the first on a tie.

    A full run trains from scratch on the history and the exported days (``history+recent``)
    and, where there is history, on the exported days alone (``recent``). An incremental run
    warm-starts from the serving version (``incremental``); with ``request.challenge`` (the
    monitor's triggered runs, ``retrain.challenge``) full candidates challenge it: on the history
    and the exported days (where there is history) and on the exported days alone.

    >>> p = Prepared("r", "incremental", "d", [7, 8], 9, 10, replay_days=[0, 1, 2])
    >>> [c[0] for c in candidates(p, RetrainRequest(repo="m", train_days="-", challenge=True))]
    ['incremental', 'history+recent', 'recent']
    >>> [c[0] for c in candidates(p, RetrainRequest(repo="m", train_days="-"))]
    ['incremental']
    """
    found: list[Candidate]
    if prepared.mode == "full":
        found = [("history+recent", "full", prepared.train_days, None)]
        if prepared.recent_days:
            found.append(("recent", "full", prepared.recent_days, None))
        return found
    found = [("incremental", "incremental", prepared.train_days, prepared.replay_days)]
    if request.challenge:
        if prepared.replay_days:
            found.append(("history+recent", "full", [*prepared.replay_days, *prepared.train_days], None))
        found.append(("recent", "full", prepared.train_days, None))
    return found


def train(prepared: Prepared, request: RetrainRequest) -> str:
    """Train the run's ``candidates`` and stage the one with the highest validation AUC;
    returns its staged path.

    All candidates validate on the same exported rows, newer than any of them trained on, and
    the others are discarded. Old days help while the click model holds (new ads: the old ads'
    rows stay true) and hurt once it has changed (concept drift: their labels now mislead); a
    warm start keeps what the serving version learned and may not relearn what a shift moved
    (a popularity shift makes rare values the head). The validation rows decide. With more than
    one candidate, the choice and every AUC are recorded in the metadata as ``window``; the
    staged version's ``mode`` is the chosen candidate's.
    """
    from ctr.train import StagedVersion, TrainSpec, train_candidate

    gpus = torch_gpus()
    repository = ModelRepository(Path(request.repo))
    trained: dict[str, StagedVersion] = {}
    try:
        for name, mode, days, replay in candidates(prepared, request):
            spec = TrainSpec(
                Path(prepared.data_dir),
                days,
                prepared.valid_day,
                experiment=request.experiment,
                mode=mode,  # type: ignore[arg-type]  # full or incremental
                replay_days=replay,
                seed=None if request.seed < 0 else request.seed,
                nproc=gpus if gpus > 1 else 1,  # the pod's GPUs (the pipeline's train_gpus): one process each
            )
            trained[name] = train_candidate(spec, repository)
    except BaseException:
        for done in trained.values():  # nothing of a failed run stays staged
            repository.discard(done.staged)
        raise
    aucs = {name: done.metrics.get("auc") for name, done in trained.items()}
    best = max(aucs, key=lambda name: aucs[name] or 0.0)  # the first of equals
    chosen = trained[best]
    for name, done in trained.items():
        if name != best:
            repository.discard(done.staged)
    if len(trained) > 1:
        chosen.metadata["window"] = {"chosen": best, "validation_auc": aucs}
        log.info("%s run: %s", prepared.mode, chosen.metadata["window"])
    (chosen.staged / METADATA).write_text(json.dumps(chosen.metadata, indent=2) + "\n")
    return str(chosen.staged)


def torch_gpus() -> int:
    """GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def score_served_graph(graph: Path, day: DayShards) -> tuple[NDArray[Any], NDArray[Any]]:
    """(labels, pCTR) of a day scored by an ONNX graph as Triton would serve it, in chunks."""
    import numpy as np
    import polars as pl

    from ctr.data.dataset import raw_arrays
    from ctr.onnx_export import onnx_score, onnx_session

    session = onnx_session(graph, threads=usable_cores())  # a batch job: every core
    labels, probs = [], []
    for shard in day.shards:
        frame = pl.read_parquet(shard)
        probs.append(onnx_score(session, *raw_arrays(frame)))
        labels.append(frame["label"].to_numpy())
    return np.concatenate(labels), np.concatenate(probs)


def evaluate(staged: str, repo: str, data_dir: str, holdout_day: int) -> dict[str, Any]:
    """AUC and log loss of the candidate and of the serving version on the same holdout day.

    Both are scored by ONNX Runtime on their ``model.onnx``, the graph Triton serves (int8
    included), so the gate judges what would be served.
    """
    from ctr.data.dataset import day_shards, truth_auc
    from ctr.metrics import log_loss, roc_auc

    holdout = day_shards(Path(data_dir), holdout_day)
    labels, candidate = score_served_graph(Path(staged) / ONNX_FILE, holdout)
    repository = ModelRepository(Path(repo))
    serving_version = repository.served()
    serving_auc = serving_logloss = None
    if serving_version is not None:
        _, serving = score_served_graph(repository.version_dir(serving_version) / ONNX_FILE, holdout)
        serving_auc, serving_logloss = round(roc_auc(labels, serving), 6), round(log_loss(labels, serving), 6)
    return {
        "holdout_day": holdout_day,
        "holdout_rows": int(labels.size),
        "candidate_auc": round(roc_auc(labels, candidate), 6),
        "candidate_logloss": round(log_loss(labels, candidate), 6),
        "serving_version": serving_version,
        "serving_auc": serving_auc,
        "serving_logloss": serving_logloss,
        "bayes_auc": truth_auc(holdout, labels),
    }


def gate(evaluation: dict[str, Any], epsilon: float) -> tuple[bool, str]:
    """Publish unless the candidate is worse than the serving version on the holdout by both
    yardsticks: its AUC below the serving's − ``epsilon`` (ranking) and its log loss not lower
    (ranking and calibration together: a base-rate shift moves log loss, not AUC, and a
    candidate that repairs it may rank a few rows differently). Without the serving's log loss
    (an evaluation recorded before it was kept), AUC alone decides.

    >>> gate({"candidate_auc": 0.70, "serving_auc": 0.71, "serving_version": 1,
    ...       "candidate_logloss": 0.45, "serving_logloss": 0.46}, 0.002)[0]
    True
    """
    cand, serv = evaluation["candidate_auc"], evaluation["serving_auc"]
    version = evaluation.get("serving_version")
    if serv is None:
        return True, f"no serving version; candidate AUC {cand:.4f}"
    if cand >= serv - epsilon:
        return True, f"candidate AUC {cand:.4f} >= serving v{version} {serv:.4f} - {epsilon}"
    auc_says = f"candidate AUC {cand:.4f} < serving v{version} {serv:.4f} - {epsilon}"
    cand_ll, serv_ll = evaluation.get("candidate_logloss"), evaluation.get("serving_logloss")
    if cand_ll is not None and serv_ll is not None:
        if cand_ll < serv_ll:
            return True, f"{auc_says}, but log loss {cand_ll:.5f} < serving {serv_ll:.5f}"
        return False, f"{auc_says} and log loss {cand_ll:.5f} >= serving {serv_ll:.5f}"
    return False, auc_says


def publish(staged: str, repo: str, run_id: str, evaluation: dict[str, Any], reason: str) -> int:
    """Atomically publish the candidate, record run and gate numbers, release the lease."""
    repository = ModelRepository(Path(repo))
    meta = json.loads((Path(staged) / METADATA).read_text())
    meta["pipeline"] = {"run_id": run_id, "gate": {**evaluation, "reason": reason}}
    version = repository.publish(Path(staged), meta)
    release(repository, run_id)
    return version


def reject(staged: str, repo: str, run_id: str) -> None:
    """Drop a candidate the gate refused and release the lease; the repository is unchanged."""
    repository = ModelRepository(Path(repo))
    repository.discard(Path(staged))
    release(repository, run_id)


def finish(request: RetrainRequest, job_name: str, state: str) -> str:
    """After a run, whatever its outcome: if it still holds the repository lease (it failed or
    was cancelled before publish or reject), drop the staged candidates made under it and
    release it. Returns what was done. Safe to run twice."""
    repository = ModelRepository(Path(request.repo))
    run_id = request.run_id or job_name
    current = holder(repository)
    if not current or current.get("run_id") != run_id:
        return "nothing to clean up"
    staged = repository.staged()
    for path in staged:  # under this run's lease, any staged candidate is this run's
        repository.discard(path)
    release(repository, run_id)
    return f"released the lease and removed {len(staged)} staged candidate(s) after {state}"
