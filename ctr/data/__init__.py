"""Criteo-layout data: streaming reader, parquet shards, the synthetic generator."""
