"""Kubeflow pipeline with full and incremental modes (see issue 5)."""
