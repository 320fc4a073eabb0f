"""A synthetic ad world with a planted click model, for data in the Criteo layout.

The world knows every impression's true click probability, so the best AUC any model can
reach on a split (the "Bayes AUC") is known. Everything is a pure function of the seed:
``SyntheticWorld(cfg).sample(day, n, rng)`` draws ``n`` impressions of ``day``.

Click model (logit of the true probability)::

    logit p = b + Σ_i β_i z_i + Σ_j w_j[v_j] + Σ_(a,b) γ_ab <u_a[v_a], u_b[v_b]> + Σ_(i,j) z_i w'_ij[v_j]

with ``z_i`` the standardised ``log1p`` of integer feature ``i``, ``v_j`` the value of
categorical ``j`` (missing values contribute 0), first-order effects ``w``, rank-``K``
factors ``u`` for planted categorical×categorical crosses, and dense×categorical crosses
``w'``. The intercept ``b`` is solved so the mean probability is ``positive_rate``.

Marginals: cardinalities are the Criteo 1TB counts scaled to the data size, value
popularity is Zipf-like, missing rates vary per feature around DAC's (~20 % integers,
~10 % categoricals), integer counts are heavy-tailed (lognormal), ``I2`` can be negative.

Drift from ``drift_day`` on (for that day and every later one):
``new-ads``: on the ad-side features, a share of values is replaced by values never seen
before, with their own (strong) effects; ``concept``: click-model weights change;
``popularity``: which values are popular changes (the click model stays).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ctr.errors import InputError
from ctr.schema import CRITEO_1TB_CARDINALITIES, CRITEO_1TB_ROWS, N_DENSE, N_SPARSE

Drift = Literal["new-ads", "concept", "popularity"]
DRIFTS: tuple[str, ...] = ("new-ads", "concept", "popularity")

#: Categorical features treated as ad-side (0-based): they get new values under ``new-ads``.
AD_FEATURES: tuple[int, ...] = (2, 3, 9, 11, 15, 20, 22, 23)
#: Planted categorical×categorical crosses (0-based feature pairs) and their strength.
SPARSE_CROSSES: tuple[tuple[int, int], ...] = (
    (2, 3), (2, 11), (3, 15), (5, 12), (8, 22), (9, 20), (11, 23), (14, 24), (16, 18), (6, 25),
)  # fmt: skip
#: Planted dense×categorical crosses (integer feature, categorical feature).
DENSE_CROSSES: tuple[tuple[int, int], ...] = ((0, 2), (4, 8), (6, 13), (10, 5))
CROSS_RANK = 4
ZIPF_EXPONENT = 1.15
NEW_AD_SHARE = 0.6
#: Values beyond this popularity rank carry progressively weaker effects.
EFFECT_HEAD = 50.0
MIN_CARDINALITY = 4
#: A sample of n rows sees far more distinct values than n/4.4e9 of the 1TB logs' counts.
CARDINALITY_BOOST = 20.0


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of a synthetic world; the same config gives the same world."""

    seed: int
    total_rows: int
    positive_rate: float = 0.25
    drift_day: int | None = None
    drift: Drift | None = None
    cardinality_scale: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.positive_rate < 1.0:
            raise InputError(f"positive rate must be in (0, 1), got {self.positive_rate}")
        if (self.drift is None) != (self.drift_day is None):
            raise InputError("--drift and --drift-day go together")
        if self.drift is not None and self.drift not in DRIFTS:
            raise InputError(f"--drift must be one of {', '.join(DRIFTS)}, got {self.drift!r}")
        if self.drift_day is not None and self.drift_day < 0:
            raise InputError(f"--drift-day must be >= 0, got {self.drift_day}")

    @property
    def scale(self) -> float:
        """Factor applied to the Criteo 1TB cardinalities (default: by data size)."""
        if self.cardinality_scale is not None:
            return self.cardinality_scale
        return min(1.0, CARDINALITY_BOOST * self.total_rows / CRITEO_1TB_ROWS)


@dataclass(frozen=True)
class Impressions:
    """Sampled impressions as arrays.

    dense: (n, 13) int64 counts; dense_missing: (n, 13) bool.
    sparse: (n, 26) int64 32-bit hashes, ``-1`` where missing.
    label: (n,) int8; p_true: (n,) float64 true click probability.
    """

    dense: NDArray[Any]
    dense_missing: NDArray[Any]
    sparse: NDArray[Any]
    label: NDArray[Any]
    p_true: NDArray[Any]


def _splitmix32(x: NDArray[Any]) -> NDArray[Any]:
    """Deterministic 64→32-bit mixing (splitmix64 finaliser), vectorised."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)).astype(np.int64)


def _zipf_ranks(rng: np.random.Generator, n: int, card: int) -> NDArray[Any]:
    """Ranks in ``[0, card)`` with P(rank r) ≈ ∝ (r+1)^-s, by the continuous inverse CDF."""
    s = ZIPF_EXPONENT
    u = rng.random(n, dtype=np.float32)
    top = np.float32(float(card + 1) ** (1.0 - s))
    x = (np.float32(1.0) + u * (top - np.float32(1.0))) ** np.float32(1.0 / (1.0 - s))
    return np.minimum(x.astype(np.int64) - 1, card - 1)


class _Effects:
    """Click-model parameters: one set before drift and, for ``concept``, one after."""

    def __init__(self, rng: np.random.Generator, sizes: NDArray[Any], weight: list[NDArray[Any]]) -> None:
        """``weight[j]`` scales the effects of each value of feature ``j`` (by popularity)."""
        self.beta = rng.normal(0.0, 0.15, N_DENSE)
        sigma = 0.5 / (1.0 + 0.2 * np.log10(sizes))
        self.first = [np.append(rng.normal(0.0, sigma[j], sizes[j]) * weight[j], 0.0) for j in range(N_SPARSE)]
        self.factors = [
            np.vstack([rng.normal(0.0, 0.5, (sizes[j], CROSS_RANK)) * weight[j][:, None], np.zeros((1, CROSS_RANK))])
            for j in range(N_SPARSE)
        ]
        self.gamma = rng.choice([-1.0, 1.0], len(SPARSE_CROSSES)) * rng.uniform(0.6, 1.0, len(SPARSE_CROSSES))
        self.dense_cross = [np.append(rng.normal(0.0, 0.2, sizes[j]), 0.0) for _, j in DENSE_CROSSES]

    def blended(
        self, rng: np.random.Generator, sizes: NDArray[Any], weight: list[NDArray[Any]], keep: float
    ) -> _Effects:
        """Effects after a concept drift: ``keep·old + sqrt(1-keep²)·new``."""
        new = _Effects(rng, sizes, weight)
        mix = float(np.sqrt(1.0 - keep**2))
        new.beta = keep * self.beta + mix * new.beta
        new.first = [keep * a + mix * b for a, b in zip(self.first, new.first, strict=True)]
        new.factors = [keep * a + mix * b for a, b in zip(self.factors, new.factors, strict=True)]
        new.gamma = keep * self.gamma + mix * new.gamma
        new.dense_cross = [keep * a + mix * b for a, b in zip(self.dense_cross, new.dense_cross, strict=True)]
        return new

    def logit(self, z: NDArray[Any], idx: NDArray[Any], crosses: bool = True) -> NDArray[Any]:
        """Logit without intercept. z: (n, 13) standardised dense; idx: (26, n) value rows.

        ``crosses=False`` leaves out the planted cross terms (to show that they matter).
        """
        out = z @ self.beta
        for j in range(N_SPARSE):
            out += self.first[j][idx[j]]
        if not crosses:
            return out  # type: ignore[no-any-return]  # numpy's @ on NDArray[Any] types as Any
        for k, (a, b) in enumerate(SPARSE_CROSSES):
            prod = self.factors[a][idx[a]] * self.factors[b][idx[b]]
            out += self.gamma[k] * prod.sum(axis=1)
        for k, (i, j) in enumerate(DENSE_CROSSES):
            out += z[:, i] * self.dense_cross[k][idx[j]]
        return out  # type: ignore[no-any-return]  # numpy's @ on NDArray[Any] types as Any


#: Rows are drawn in blocks of this size, block ``b`` of day ``d`` from ``SeedSequence([seed, d, b])``.
BLOCK_ROWS = 100_000


class SyntheticWorld:
    """Samples impressions of a given day, with true probabilities (see module docstring)."""

    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 0xC7])
        base = np.asarray(CRITEO_1TB_CARDINALITIES, dtype=np.float64)
        self.cardinality = np.clip(np.round(base * cfg.scale), MIN_CARDINALITY, base).astype(np.int64)
        # New ad values (used only under new-ads drift) live after the regular ones.
        self.n_new = np.where(np.isin(np.arange(N_SPARSE), AD_FEATURES), np.maximum(8, self.cardinality // 8), 0)
        sizes = self.cardinality + self.n_new
        self.sparse_missing_rate = np.clip(rng.gamma(0.6, 0.17, N_SPARSE), 0.0, 0.45)
        self.dense_missing_rate = np.clip(rng.gamma(1.0, 0.2, N_DENSE), 0.0, 0.45)
        self.dense_mu = rng.uniform(0.0, 4.0, N_DENSE)
        self.dense_sigma = rng.uniform(0.8, 2.0, N_DENSE)
        self.rank_to_value = [rng.permutation(int(c)) for c in self.cardinality]
        self.rank_to_value_after = [self._shift_popularity(rng, p) for p in self.rank_to_value]
        weight = [self._popularity_weight(j) for j in range(N_SPARSE)]
        self.effects = _Effects(rng, sizes, weight)
        self.effects_after = self.effects.blended(rng, sizes, weight, keep=0.3)
        self.new_effects_boost = 2.0
        for j in AD_FEATURES:
            c = int(self.cardinality[j])
            self.effects.first[j][c:-1] *= self.new_effects_boost
        self.hash_table = [
            np.append(_splitmix32((cfg.seed << 48) ^ (j << 40) ^ np.arange(size)), -1)
            for j, size in enumerate(sizes.tolist())
        ]
        self.intercept = 0.0
        self.intercept = self._solve_intercept()

    def _popularity_weight(self, j: int) -> NDArray[Any]:
        """Effect scale of each value of feature ``j``: 1 for the popular head, decaying with
        popularity rank, so that most of the signal sits in values a model sees often."""
        card, n_new = int(self.cardinality[j]), int(self.n_new[j])
        weight = np.empty(card + n_new)
        weight[self.rank_to_value[j]] = (1.0 + np.arange(card) / EFFECT_HEAD) ** -0.5
        weight[card:] = (1.0 + np.arange(n_new) / EFFECT_HEAD) ** -0.5
        return weight

    @staticmethod
    def _shift_popularity(rng: np.random.Generator, perm: NDArray[Any]) -> NDArray[Any]:
        """Popular ranks go to values drawn from the whole range: the head is replaced."""
        shifted = perm.copy()
        head = min(len(perm), max(1, len(perm) // 20))
        swap = rng.choice(len(perm), head, replace=False)
        shifted[:head], shifted[swap] = perm[swap], perm[:head]
        return shifted

    def _drifted(self, day: int, kind: str) -> bool:
        return self.cfg.drift == kind and self.cfg.drift_day is not None and day >= self.cfg.drift_day

    def _value_rows(self, rng: np.random.Generator, n: int, day: int) -> NDArray[Any]:
        """(26, n) rows into the effect tables; the padding row (last) means missing."""
        idx = np.empty((N_SPARSE, n), dtype=np.int64)
        missing = rng.random((N_SPARSE, n), dtype=np.float32) < self.sparse_missing_rate[:, None]
        popularity = self.rank_to_value_after if self._drifted(day, "popularity") else self.rank_to_value
        for j in range(N_SPARSE):
            card = int(self.cardinality[j])
            col = popularity[j][_zipf_ranks(rng, n, card)]
            if self._drifted(day, "new-ads") and self.n_new[j]:
                fresh = rng.random(n) < NEW_AD_SHARE
                col[fresh] = card + _zipf_ranks(rng, int(fresh.sum()), int(self.n_new[j]))
            col[missing[j]] = card + int(self.n_new[j])  # the zero padding row
            idx[j] = col
        return idx

    def _dense(self, rng: np.random.Generator, n: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        """Heavy-tailed counts, their missing mask, and the standardised log1p used by the model."""
        normal = rng.standard_normal((n, N_DENSE), dtype=np.float32)
        raw = np.exp(self.dense_mu.astype(np.float32) + self.dense_sigma.astype(np.float32) * normal)
        uniform = rng.random((n, N_DENSE + 1), dtype=np.float32)
        counts = np.maximum(raw.astype(np.int64) - (uniform[:, :N_DENSE] < 0.3), 0)
        counts[:, 1] -= (uniform[:, N_DENSE] < 0.1) * rng.integers(1, 4, n)  # I2 goes negative
        missing = rng.random((n, N_DENSE), dtype=np.float32) < self.dense_missing_rate
        logc = np.log1p(np.maximum(counts, 0))
        z = (logc - self.dense_mu) / (self.dense_sigma + 1.0)
        z[missing] = 0.0
        return counts, missing, z

    def _hashes(self, idx: NDArray[Any]) -> NDArray[Any]:
        """32-bit hash per (feature, value) as written in the files; -1 where missing."""
        out = np.empty_like(idx)
        for j in range(N_SPARSE):
            out[j] = self.hash_table[j][idx[j]]
        return out.T  # (n, 26), column-major: each feature's column is contiguous

    def _logit(self, day: int, z: NDArray[Any], idx: NDArray[Any]) -> NDArray[Any]:
        effects = self.effects_after if self._drifted(day, "concept") else self.effects
        return self.intercept + effects.logit(z, idx)

    def _solve_intercept(self) -> float:
        rng = np.random.default_rng([self.cfg.seed, 0xB1A5])
        n = 50_000
        _, _, z = self._dense(rng, n)
        raw = self.effects.logit(z, self._value_rows(rng, n, day=-1))
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2.0
            if (1.0 / (1.0 + np.exp(-(raw + mid)))).mean() < self.cfg.positive_rate:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2.0

    @property
    def ad_id_feature(self) -> int:
        """The ad-side feature with the most values: the one that plays the ad's id."""
        return max(AD_FEATURES, key=lambda j: int(self.cardinality[j]))

    def shows_new_ad(self, sparse: NDArray[Any]) -> NDArray[Any]:
        """``(n,)`` bool: rows of ``sparse`` (``(n, 26)`` hashes as in ``Impressions.sparse``) whose
        ad id (``ad_id_feature``) is a new ad, one that exists only under ``new-ads`` drift."""
        j = self.ad_id_feature
        card = int(self.cardinality[j])
        return np.isin(sparse[:, j], self.hash_table[j][card : card + int(self.n_new[j])])

    def sample(self, day: int, n: int, rng: np.random.Generator) -> Impressions:
        """Draw ``n`` impressions of ``day`` with labels from the planted click model."""
        counts, missing, z = self._dense(rng, n)
        idx = self._value_rows(rng, n, day)
        p = 1.0 / (1.0 + np.exp(-self._logit(day, z, idx)))
        label = (rng.random(n) < p).astype(np.int8)
        return Impressions(counts, missing, self._hashes(idx), label, p)

    def requests(self, day: int, n_requests: int, candidates: int, rng: np.random.Generator) -> Impressions:
        """Draw ``n_requests`` score requests of ``candidates`` ads each, as an ad server sends them:
        rows ``[r * candidates, (r + 1) * candidates)`` share one context (the integer features and
        every categorical outside ``AD_FEATURES``) and differ in the ad-side categoricals; labels
        and true probabilities from the planted click model on the rows as composed.

        >>> w = SyntheticWorld(WorldConfig(seed=1, total_rows=100_000))
        >>> imp = w.requests(0, 2, 3, np.random.default_rng(0))
        >>> imp.sparse.shape, bool((imp.dense[0] == imp.dense[2]).all()), bool((imp.sparse[0, 0] == imp.sparse[2, 0]))
        ((6, 26), True, True)
        """
        if n_requests < 1 or candidates < 1:
            raise InputError(f"requests and candidates must be at least 1, got {n_requests} and {candidates}")
        n = n_requests * candidates
        counts, missing, z = (np.repeat(a, candidates, axis=0) for a in self._dense(rng, n_requests))
        idx = self._value_rows(rng, n, day)
        context = [j for j in range(N_SPARSE) if j not in AD_FEATURES]
        idx[context] = np.repeat(idx[context, ::candidates], candidates, axis=1)
        p = 1.0 / (1.0 + np.exp(-self._logit(day, z, idx)))
        label = (rng.random(n) < p).astype(np.int8)
        return Impressions(counts, missing, self._hashes(idx), label, p)

    def day_blocks(self, day: int, rows: int) -> Iterator[Impressions]:
        """All ``rows`` impressions of ``day`` in the generator's fixed blocks (deterministic)."""
        for block, start in enumerate(range(0, rows, BLOCK_ROWS)):
            rng = np.random.default_rng([self.cfg.seed, day, block])
            yield self.sample(day, min(BLOCK_ROWS, rows - start), rng)
