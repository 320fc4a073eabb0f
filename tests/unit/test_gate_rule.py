"""The gate's rule table: a candidate is refused only when worse by AUC and by log loss."""

from __future__ import annotations

import pytest

from ctr.retrain import gate


def evaluation(cand_auc: float, serv_auc: float | None, cand_ll: float = 0.45, serv_ll: float | None = 0.45) -> dict:
    return {
        "candidate_auc": cand_auc,
        "serving_auc": serv_auc,
        "serving_version": None if serv_auc is None else 3,
        "candidate_logloss": cand_ll,
        "serving_logloss": serv_ll if serv_auc is not None else None,
    }


@pytest.mark.parametrize(
    ("ev", "published", "says"),
    [
        (evaluation(0.70, None), True, "no serving version"),
        (evaluation(0.712, 0.710), True, ">= serving v3 0.7100 - 0.002"),
        (evaluation(0.7085, 0.710), True, ">= serving v3"),  # within epsilon
        # worse ranking by more than epsilon, but a lower log loss (a repaired calibration)
        (evaluation(0.705, 0.710, cand_ll=0.440, serv_ll=0.452), True, "but log loss 0.44000 < serving 0.45200"),
        # worse by both
        (evaluation(0.705, 0.710, cand_ll=0.452, serv_ll=0.452), False, "and log loss 0.45200 >= serving 0.45200"),
        # an evaluation without the serving version's log loss: AUC alone
        (evaluation(0.705, 0.710, cand_ll=0.40, serv_ll=None), False, "< serving v3 0.7100 - 0.002"),
    ],
)
def test_gate_rule_table(ev: dict, published: bool, says: str) -> None:
    ok, reason = gate(ev, 0.002)
    assert ok is published
    assert says in reason
