"""ctr-loop: CTR ranking with drift-triggered retraining."""
