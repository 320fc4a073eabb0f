"""Kubeflow pipeline with full and incremental modes."""
