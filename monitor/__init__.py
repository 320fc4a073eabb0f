"""Monitor: rolling AUC from logged clicks and the retraining trigger."""
