"""Serving: Triton on the model repository, and the score API in front of it."""
