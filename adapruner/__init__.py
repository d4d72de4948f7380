"""adapruner: automatic structured pruning of causal language models.

Importing the package is cheap and does not import torch (the API process imports
``adapruner.config``); the library functions below load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "adapruner.models",
    "load_pruned": "adapruner.artifacts",
    "save_pruned": "adapruner.artifacts",
    "run_prune": "adapruner.pipeline",
    "get_adapter": "adapruner.adapters",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adapruner' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
