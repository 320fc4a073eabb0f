"""Experiment configurations as data: ``ctr/configs/experiments.yaml`` (or a user file).

``load_experiment("dcn")`` merges the ``Base`` block with the experiment ``dcn``;
``load_experiment("my.yaml#exp")`` reads another file of the same layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ctr.errors import InputError
from ctr.model import ModelConfig
from ctr.onnx_export import SERVING_PRECISIONS

BUILTIN = "experiments.yaml"
CPU_PRECISIONS = ("fp32", "bf16")
LR_SCALINGS = ("none", "sqrt", "linear")
LR_DECAYS = ("none", "cosine", "linear")
RAMP_RATES = (
    "per_batch",
    "final",
    "start",
)  # a batch ramp's rates: the rules' at each step's batch / the last / the first


@dataclass(frozen=True)
class IncrementalConfig:
    epochs: int
    learning_rate: float
    replay_share: float
    min_count: int | None = None  # for vocabulary growth; None: the base version's


@dataclass(frozen=True)
class BatchRamp:
    """A batch that grows over a run's first samples, in place of a decaying rate (Smith et al.
    2017, "Don't decay the learning rate, increase the batch size"): it starts at ``start`` and
    doubles up to the experiment's ``batch_size`` in equal shares of the run's first ``share`` of
    samples, then stays there (``ctr.train.ramp_batch_size``). ``lr`` sets each step's rates:
    ``per_batch`` (the default) the rate rules' at that step's batch, so the dense rate steps up
    at each doubling under sqrt or linear scaling; ``final`` the rules' at ``batch_size`` from the
    first step (Smith et al.'s constant rate: only the batch grows); ``start`` the rules' at
    ``start`` throughout (the rate of the ramp's first batch, held). A warm-up still applies; an
    ``lr_decay`` anneals the rate over the samples after the ramp (``ctr.train.ramp_decay_factor``)."""

    start: int
    share: float
    lr: str = "per_batch"

    @classmethod
    def from_dict(cls, d: Any, batch_size: int) -> BatchRamp:
        if not isinstance(d, dict) or not {"start", "share"} <= set(d) <= {"start", "share", "lr"}:
            raise InputError(f"batch_ramp must be null or a mapping of start, share and optionally lr, got {d!r}")
        start, share, lr = d["start"], d["share"], d.get("lr", "per_batch")
        if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start < batch_size:
            raise InputError(f"batch_ramp start must be an integer in [1, batch_size {batch_size}), got {start!r}")
        doublings = batch_size // start
        if batch_size % start or doublings & (doublings - 1):
            raise InputError(
                f"batch_ramp start must be batch_size {batch_size} over a power of two (it doubles up to it), "
                f"got {start}"
            )
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < share < 1.0:
            raise InputError(f"batch_ramp share must be a number in (0, 1) (of the run's samples), got {share!r}")
        if lr not in RAMP_RATES:
            raise InputError(f"batch_ramp lr must be one of {RAMP_RATES}, got {lr!r}")
        return cls(start=start, share=float(share), lr=lr)


@dataclass(frozen=True)
class Experiment:
    """A named, fully merged training configuration."""

    name: str
    seed: int
    min_count: int
    batch_size: int
    epochs: int
    learning_rate: float
    early_stopping_patience: int
    incremental: IncrementalConfig
    model: ModelConfig
    serving_precision: str = "fp32"  # the served ONNX graph: fp32, or int8 weights (ctr.onnx_export)
    cpu_precision: str = "fp32"  # training on CPU: fp32, or bf16 autocast (CUDA always uses bf16 autocast)
    lr_scaling: str = "none"  # none, sqrt or linear in batch_size / lr_reference_batch (ctr.train)
    lr_reference_batch: int = 4096  # the batch size the learning rates are given for
    warmup_steps: int = 0  # linear learning-rate warm-up over the first steps of a run
    compile: bool = False  # torch.compile the cross network and the MLP
    lr_decay: str = "none"  # after the warm-up (a batch ramp: after the ramp): none, or cosine / linear to 0 at the end
    grad_clip_norm: float | None = None  # clip the gradients' global norm before each step; None: no clipping
    adam_beta2: float = 0.999  # Adam's second-moment decay
    embedding_lr_scaling: str | None = None  # the embedding table's rate rule; None: lr_scaling's
    cowclip_ratio: float | None = None  # CowClip on the embedding gradient (ctr.cowclip); None: off
    cowclip_bound: float = 1e-5  # CowClip's floor on a row's norm
    batch_ramp: BatchRamp | None = None  # the batch grows from a smaller one at first (BatchRamp); None: off
    recalibrate: bool = True  # shift the logit so the validation rows' pCTR sums to their clicks (ctr.recalibration)
    cuda_graphs: bool = False  # on CUDA, replay each batch size's recorded step (ctr.cuda_graph); CPU: ignored

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"]["mlp"] = list(self.model.mlp)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Experiment:
        precision = d.get("serving_precision", "fp32")
        if precision not in SERVING_PRECISIONS:
            raise InputError(f"serving_precision must be one of {SERVING_PRECISIONS}, got {precision!r}")
        cpu_precision = d.get("cpu_precision", "fp32")
        if cpu_precision not in CPU_PRECISIONS:
            raise InputError(f"cpu_precision must be one of {CPU_PRECISIONS}, got {cpu_precision!r}")
        if d.get("lr_scaling", "none") not in LR_SCALINGS:
            raise InputError(f"lr_scaling must be one of {LR_SCALINGS}, got {d.get('lr_scaling')!r}")
        if d.get("lr_decay", "none") not in LR_DECAYS:
            raise InputError(f"lr_decay must be one of {LR_DECAYS}, got {d.get('lr_decay')!r}")
        clip = d.get("grad_clip_norm")
        emb_scaling = d.get("embedding_lr_scaling")
        if emb_scaling is not None and emb_scaling not in LR_SCALINGS:
            raise InputError(f"embedding_lr_scaling must be one of {LR_SCALINGS} or null, got {emb_scaling!r}")
        cowclip = d.get("cowclip_ratio")
        ramp = d.get("batch_ramp")
        try:
            exp = cls(
                name=d["name"],
                seed=int(d["seed"]),
                min_count=int(d["min_count"]),
                batch_size=int(d["batch_size"]),
                epochs=int(d["epochs"]),
                learning_rate=float(d["learning_rate"]),
                early_stopping_patience=int(d["early_stopping_patience"]),
                incremental=IncrementalConfig(**d["incremental"]),
                model=ModelConfig(**d["model"]),
                serving_precision=precision,
                cpu_precision=cpu_precision,
                lr_scaling=d.get("lr_scaling", "none"),
                lr_reference_batch=int(d.get("lr_reference_batch", 4096)),
                warmup_steps=int(d.get("warmup_steps", 0)),
                compile=bool(d.get("compile", False)),
                lr_decay=d.get("lr_decay", "none"),
                grad_clip_norm=None if clip is None else float(clip),
                adam_beta2=float(d.get("adam_beta2", 0.999)),
                embedding_lr_scaling=emb_scaling,
                cowclip_ratio=None if cowclip is None else float(cowclip),
                cowclip_bound=float(d.get("cowclip_bound", 1e-5)),
                batch_ramp=None if ramp is None else BatchRamp.from_dict(ramp, int(d["batch_size"])),
                recalibrate=_flag(d.get("recalibrate", True), "recalibrate"),
                cuda_graphs=_flag(d.get("cuda_graphs", False), "cuda_graphs"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"experiment {d.get('name', '?')!r} is incomplete or invalid: {exc}") from exc
        if exp.grad_clip_norm is not None and not exp.grad_clip_norm > 0:
            raise InputError(f"grad_clip_norm must be > 0 or null, got {exp.grad_clip_norm}")
        if exp.cowclip_ratio is not None and not (exp.cowclip_ratio > 0 and exp.cowclip_bound > 0):
            raise InputError(
                f"cowclip_ratio and cowclip_bound must be > 0, got {exp.cowclip_ratio} and {exp.cowclip_bound}"
            )
        if exp.cuda_graphs and exp.compile:
            raise InputError(f"experiment {exp.name!r}: compile and cuda_graphs cannot be combined; choose one")
        if not 0.0 < exp.adam_beta2 < 1.0:
            raise InputError(f"adam_beta2 must be in (0, 1), got {exp.adam_beta2}")
        return exp


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{key} must be true or false, got {value!r}")
    return value


def _blocks(text: str) -> dict[str, Any]:
    try:
        blocks = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"config file is not valid YAML: {exc}") from exc
    if not isinstance(blocks, dict):
        raise InputError("a config file maps experiment names to their settings")
    return blocks


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_experiment(spec: str, seed: int | None = None) -> Experiment:
    """Experiment ``NAME`` from the built-in file or ``FILE.yaml#NAME``; ``seed`` overrides.

    A user file inherits the packaged ``Base``: its own ``Base`` (optional) and then the
    experiment override it key by key, so a file needs to say only what differs.
    """
    packaged = _blocks(resources.files("ctr.configs").joinpath(BUILTIN).read_text())
    if "#" in spec:
        path_text, name = spec.split("#", 1)
        path = Path(path_text)
        if not path.is_file():
            raise InputError(f"config file {path} not found")
        blocks = _blocks(path.read_text())
    else:
        name, blocks = spec, packaged
    if name == "Base" or name not in blocks:
        known = ", ".join(k for k in blocks if k != "Base")
        raise InputError(f"unknown experiment {name!r}; known: {known}")
    merged = _merge(_merge(packaged["Base"], blocks.get("Base") or {}), blocks[name] or {})
    # Strict here, for what a person wrote (a misspelt key must not fall back to a default in
    # silence); ``from_dict`` stays lenient for metadata that older versions wrote.
    keys = [f.name for f in fields(Experiment) if f.name != "name"]
    unknown = sorted(set(merged) - set(keys))
    if unknown:
        raise InputError(f"experiment {name!r}: unknown key(s) {', '.join(unknown)}; known: {', '.join(keys)}")
    merged["name"] = name
    if seed is not None:
        merged["seed"] = seed
    return Experiment.from_dict(merged)
