"""Encoded shards: the feature transform applied once per (shard, transform), kept on disk.

Training reads every shard once per epoch, validation once per epoch, and an incremental run
reads the same days again: each of those used to apply the transform in the main thread. Here a
parquet shard is encoded once into three ``.npy`` arrays and every later pass loads them:

* ``ids.npy``   int32 ``(n, 26)`` — per-feature ids (``ctr.features``: 0 missing, 1 OOV, 2…)
* ``dense.npy`` float32 ``(n, 13)`` — standardised ``log1p`` integers (exactly the transform's output)
* ``label.npy`` uint8 ``(n,)``

157 bytes a row (the parquet shard of generated data is ~60). Layout:
``CACHE/<transform fingerprint>/<source key>/`` with ``source.json`` recording the parquet
shard's path, size and mtime. A shard is re-encoded when the transform changes (new
fingerprint: a grown vocabulary re-encodes every shard it touches, once) or when the source
shard changed (size or mtime differ). Entries are written to a temporary directory and renamed,
so a crashed run leaves no half entry. ``prune`` keeps the newest few fingerprints.

The fingerprint covers what changes the output, nothing else (``min_count`` only shaped the fit):

>>> from dataclasses import replace
>>> import numpy as np
>>> t = FeatureTransform(np.zeros(13), np.ones(13), 3, np.empty(0, np.int64), np.empty(0, np.int64), np.full(26, 2))
>>> fingerprint(t) == fingerprint(replace(t, min_count=50)), len(fingerprint(t))
(True, 24)
>>> fingerprint(t) == fingerprint(replace(t, dense_std=np.full(13, 2.0)))
False
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ctr.errors import InputError
from ctr.features import FeatureTransform

log = logging.getLogger(__name__)

CACHE_DIR_NAME = ".encoded"
KEEP_FINGERPRINTS = 3
_STAMP = "source.json"
_ARRAYS = ("ids", "dense", "label")


def fingerprint(transform: FeatureTransform) -> str:
    """A digest of everything that changes the transform's output (24 hex characters)."""
    h = hashlib.sha256()
    for array in (transform.dense_mean, transform.dense_std, transform.keys, transform.ids, transform.sizes):
        h.update(np.ascontiguousarray(array).tobytes())
        h.update(b"|")
    return h.hexdigest()[:24]


def _source_stamp(shard: Path) -> dict[str, object]:
    st = shard.stat()
    return {"source": str(shard.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True)
class EncodedShard:
    """One encoded shard on disk; ``rows`` from the stamp, without reading the arrays."""

    directory: Path
    rows: int

    def load(self) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        """(dense float32 (n, 13), ids int32 (n, 26), label uint8 (n,))."""
        ids, dense, label = (np.load(self.directory / f"{name}.npy") for name in _ARRAYS)
        return dense, ids, label


def check_cache_root(root: Path) -> None:
    """``InputError`` unless encoded shards can be written under ``root`` (created if absent)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise InputError(
            f"cannot write encoded shards to {root}: {exc.strerror}; "
            "choose another place with --cache-dir (or CTR_ENCODED_CACHE)"
        ) from exc


class EncodedCache:
    """Encoded shards of one transform under ``root`` (see the module docstring).

    ``root`` must be writable: checked when the cache is made, so a long run fails before it
    starts rather than at its first shard.
    """

    def __init__(self, root: Path, transform: FeatureTransform) -> None:
        self.root = root
        self.transform = transform
        self.fingerprint = fingerprint(transform)
        self.directory = root / self.fingerprint
        check_cache_root(self.directory)
        os.utime(self.directory)  # most recently used, for prune

    def _entry(self, shard: Path) -> Path:
        key = hashlib.sha1(str(shard.resolve()).encode()).hexdigest()[:16]
        return self.directory / f"{shard.stem}-{key}"

    def lookup(self, shard: Path) -> EncodedShard | None:
        """The encoded shard if present and made from the shard as it is now."""
        entry = self._entry(shard)
        try:
            stamp = json.loads((entry / _STAMP).read_text())
        except (OSError, ValueError):
            return None
        if {k: stamp.get(k) for k in ("source", "size", "mtime_ns")} != _source_stamp(shard):
            return None
        return EncodedShard(entry, int(stamp["rows"]))

    def encode(self, shard: Path) -> EncodedShard:
        """Encode ``shard`` (or return the valid cached entry)."""
        if (found := self.lookup(shard)) is not None:
            return found
        stamp = _source_stamp(shard)
        frame = pl.read_parquet(shard)
        dense, ids = self.transform.transform_frame(frame)
        label = frame["label"].to_numpy().astype(np.uint8)
        entry = self._entry(shard)
        tmp = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.part")
        tmp.mkdir()
        try:
            np.save(tmp / "ids.npy", ids.astype(np.int32))
            np.save(tmp / "dense.npy", np.ascontiguousarray(dense, dtype=np.float32))
            np.save(tmp / "label.npy", label)
            (tmp / _STAMP).write_text(json.dumps({**stamp, "rows": int(label.size)}))
            shutil.rmtree(entry, ignore_errors=True)  # a stale entry of a changed shard
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return EncodedShard(entry, int(label.size))

    def encode_all(self, shards: Sequence[Path], workers: int) -> dict[Path, EncodedShard]:
        """Encode every shard not yet cached, ``workers`` at a time (threads: the transform's
        polars and numpy work releases the GIL). Returns ``{parquet shard: encoded}``."""
        unique = list(dict.fromkeys(shards))
        if workers <= 1:
            return {s: self.encode(s) for s in unique}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ctr-encode") as pool:
            return dict(zip(unique, pool.map(self.encode, unique), strict=True))

    def prune(self, keep: int = KEEP_FINGERPRINTS) -> list[Path]:
        """Remove all but the ``keep`` most recently used fingerprints (this one always kept)."""
        others = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and p != self.directory),
            key=lambda p: p.stat().st_mtime_ns,
            reverse=True,
        )
        removed = others[max(keep - 1, 0) :]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed
