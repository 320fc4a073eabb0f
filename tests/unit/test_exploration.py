"""The serving policy: ε-greedy slates and the exact propensity of each shown ad."""

from __future__ import annotations

import numpy as np
import pytest

from ctr.errors import InputError
from ctr.serving.api import ApiSettings
from ctr.serving.exploration import Exploration


def test_no_exploration_is_the_greedy_top_k_with_propensity_one() -> None:
    pctr = np.array([0.2, 0.9, 0.1, 0.5])
    order, propensity = Exploration().rank(pctr, 2, np.random.default_rng(0))
    assert order.tolist() == [1, 3] and propensity.tolist() == [1.0, 1.0]
    order, _ = Exploration().rank(pctr, None, np.random.default_rng(0))
    assert order.tolist() == [1, 3, 0, 2]  # no top_k: every candidate, best first


@pytest.mark.parametrize(("epsilon", "n", "k"), [(0.1, 10, 3), (0.3, 5, 5), (1.0, 8, 2), (0.05, 100, 10)])
def test_propensities_are_bounded_and_match_the_policys_frequencies(epsilon: float, n: int, k: int) -> None:
    """Every logged propensity lies in [ε·k/n, 1], and it is the frequency with which the policy
    shows that ad: over many requests each candidate's share of slates equals its propensity."""
    rng = np.random.default_rng(7)
    pctr = rng.random(n)
    policy = Exploration(epsilon)
    shown = np.zeros(n)
    logged = np.full(n, np.nan)
    draws = 20_000
    for _ in range(draws):
        order, propensity = policy.rank(pctr, k, rng)
        assert len(set(order.tolist())) == len(order) == k
        assert np.all(propensity >= epsilon * k / n - 1e-12) and np.all(propensity <= 1.0 + 1e-12)
        shown[order] += 1
        earlier = logged[order]
        same = np.isnan(earlier) | np.isclose(earlier, propensity)
        assert same.all()  # an ad's propensity is the same in every slate it appears in
        logged[order] = propensity
    seen = ~np.isnan(logged)
    assert np.allclose(shown[seen] / draws, logged[seen], atol=0.015)
    greedy = np.argsort(-pctr, kind="stable")[:k]
    expected = np.full(n, epsilon * k / n)
    expected[greedy] += 1 - epsilon
    assert expected.sum() == pytest.approx(k)  # the propensities of all candidates sum to k
    assert np.allclose(logged[seen], expected[seen])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epsilon", "must be none or epsilon:E"),
        ("greedy:0.1", "must be none or epsilon:E"),
        ("epsilon:lots", "epsilon must be a number, got 'lots'"),
        ("epsilon:1.5", r"epsilon must lie in \[0, 1\], got 1.5"),
        ("epsilon:nan", r"epsilon must lie in \[0, 1\], got nan"),
    ],
)
def test_a_malformed_policy_is_refused_naming_the_setting(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Exploration.parse(text)


def test_the_api_checks_its_policy_before_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTR_EXPLORATION", "epsilon:2")
    with pytest.raises(InputError, match=r"exploration.*epsilon must lie in \[0, 1\], got 2.0"):
        ApiSettings.from_env()
    monkeypatch.setenv("CTR_EXPLORATION", "epsilon:0.05")
    assert ApiSettings.from_env().policy() == Exploration(0.05)
    monkeypatch.delenv("CTR_EXPLORATION")
    assert ApiSettings().policy() == Exploration(0.0)  # the default: no exploration
