"""Search over calibration data x metric mix x allocation (AdaPruner), as an ask/tell library API.

Importing the package does not import torch (the API process reads :mod:`adapruner.search.records`); the
names below load on first use."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "BayesOptimizer": "adapruner.search.optimizer",
    "Dim": "adapruner.search.optimizer",
    "Trial": "adapruner.search.optimizer",
    "SearchOutcome": "adapruner.search.run",
    "run_search": "adapruner.search.run",
}

__all__ = ["BayesOptimizer", "Dim", "SearchOutcome", "Trial", "run_search"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
