"""The explicit list of every plug-in, by kind. Importing this module does not import torch."""

from __future__ import annotations

from adapruner.registry import Registry

ADAPTERS = Registry("model_type")
ADAPTERS.add("llama", "adapruner.adapters.llama:LlamaAdapter", "LLaMA 1/2/3 and SmolLM (GQA-aware)")

METRICS = Registry("metric")
METRICS.add("random", "adapruner.importance.magnitude:RandomImportance", "seeded random scores (a floor)")
METRICS.add("l1", "adapruner.importance.magnitude:L1Importance", "sum of |W| over the unit's weights")
METRICS.add("l2", "adapruner.importance.magnitude:L2Importance", "sum of W^2 over the unit's weights")
METRICS.add("taylor", "adapruner.importance.taylor:TaylorImportance", "first-order Taylor |W*dL/dW|, element-wise")
METRICS.add(
    "taylor2",
    "adapruner.importance.taylor:SecondOrderTaylorImportance",
    "first + second order Taylor with a diagonal Fisher Hessian (LLM-Pruner 'param_mix')",
)
METRICS.add(
    "taylor_vector",
    "adapruner.importance.taylor:VectorTaylorImportance",
    "vector-wise Taylor |sum W*dL/dW| per unit weight vector (LLM-Pruner 'vectorize')",
)
METRICS.add("wanda", "adapruner.importance.activation:WandaImportance", "structured Wanda |W| * ||X||")
METRICS.add(
    "flap",
    "adapruner.importance.activation:FlapImportance",
    "FLAP fluctuation: variance of the input channel times ||W[:, j]||^2",
)

BUILTIN_CORPORA = Registry("builtin corpus")
BUILTIN_CORPORA.add("pydoc", "adapruner.calibration.builtin:pydoc_text", "Python's pydoc topics (stdlib)")
BUILTIN_CORPORA.add(
    "jargon", "adapruner.calibration.builtin:jargon_text", "the Jargon File (Debian package jargon-text)"
)
BUILTIN_CORPORA.add(
    "gnu-standards",
    "adapruner.calibration.builtin:gnu_standards_text",
    "GNU coding standards and maintainer guide (Debian package gnu-standards)",
)
