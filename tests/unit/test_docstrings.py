"""The examples in module docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "ctr.settings",
    "ctr.model",
    "ctr.train",
    "ctr.data.encoded",
    "ctr.recalibration",
    "ctr.retrain",
    "monitor.decision",
    "monitor.run",
    "monitor.triggers",
    "monitor.stats",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
