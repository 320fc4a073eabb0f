"""The serving policy: which candidates are shown, and with what probability (the propensity).

Only shown ads get labels, so a model that never shows a new ad (scored through the shared
out-of-vocabulary row) never learns it. ε-greedy exploration: for each request, with probability
ε the top ``k`` slots go to ``k`` candidates drawn uniformly at random (in random order), else to
the ``k`` of highest pCTR. The propensity logged with every shown impression is the exact
probability that the policy shows that candidate, given the request's candidates::

    propensity(a) = (1 − ε) · 1[a in the greedy top k] + ε · k / n

with ``n`` candidates and ``k = min(top_k, n)``: in ``[ε·k/n, 1]``, and 1 for every shown ad when
ε = 0 (no exploration, the default). The propensities of all ``n`` candidates sum to ``k``.
Configured as data: ``CTR_EXPLORATION=none`` or ``epsilon:0.05`` (``ApiSettings.exploration``).

Where the propensity matters (selection bias), and how it is used:

- **Training: not weighted, on purpose.** The policy picks from the candidates' features alone
  (their pCTR and a coin), and the user clicks by the features, so among shown rows P(click | x)
  is the P(click | x) a pointwise CTR model estimates: selection changes which ``x`` are covered,
  not the label given ``x``. What it starves is coverage — a new ad that is never shown has no
  rows — and that is what ε buys back. Weighting by 1 / propensity would only re-weight the loss
  towards rarely shown ads, at the price of variance.
- **Monitor: the AUC of what was shown.** The windowed AUC and calibration are over shown
  impressions, the quantity the served ranking is judged on; under exploration they include the
  explored slots as shown. An estimate that must speak for all candidates — the CTR another
  policy would get — weights each shown impression by 1 / propensity (inverse propensity
  scoring) offline, from the logged column. Neither the explore/exploit draw, the unshown
  candidates nor the display position are logged.
- **Measured in the demo** (``ctr demo --exploration epsilon:E``): new ads' served pCTR against
  their true click probability per window, and the CTR of what was shown (``summary.json``,
  ``exploration``).

>>> import numpy as np
>>> policy = Exploration.parse("epsilon:0.1")
>>> order, propensity = policy.rank(np.array([0.1, 0.5, 0.3, 0.2]), 2, np.random.default_rng(3))
>>> order.tolist(), propensity.round(3).tolist()  # this draw explores: ad 0 is outside the greedy top 2
([2, 0], [0.95, 0.05])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctr.errors import InputError


@dataclass(frozen=True)
class Exploration:
    """ε-greedy over the top ``k`` slots; ε = 0 is pure exploitation."""

    epsilon: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and 0.0 <= self.epsilon <= 1.0):
            raise InputError(f"exploration epsilon must lie in [0, 1], got {self.epsilon}")

    @classmethod
    def parse(cls, text: str) -> Exploration:
        """``none`` or ``epsilon:E`` (E in [0, 1]); ``InputError`` naming the setting otherwise."""
        spec = text.strip().lower()
        if spec in ("", "none"):
            return cls()
        name, _, value = spec.partition(":")
        if name != "epsilon" or not value:
            raise InputError(f"CTR_EXPLORATION must be none or epsilon:E (e.g. epsilon:0.05), got {text!r}")
        try:
            return cls(float(value))
        except ValueError as exc:
            raise InputError(f"CTR_EXPLORATION: epsilon must be a number, got {value!r}") from exc

    def rank(
        self, pctr: NDArray[Any], top_k: int | None, rng: np.random.Generator
    ) -> tuple[NDArray[Any], NDArray[Any]]:
        """(indices of the shown candidates in display order ``(k,)``, their propensities ``(k,)``)."""
        n = int(pctr.size)
        k = n if top_k is None else min(top_k, n)
        greedy = np.argsort(-pctr, kind="stable")[:k]
        if self.epsilon == 0.0:
            return greedy, np.ones(k)
        explore = rng.random() < self.epsilon
        order = rng.permutation(n)[:k] if explore else greedy
        in_greedy = np.zeros(n, dtype=bool)
        in_greedy[greedy] = True
        propensity = (1.0 - self.epsilon) * in_greedy[order] + self.epsilon * k / n
        return order, propensity
