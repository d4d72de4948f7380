"""Typed configs for every stage, shared by the CLI, the API schema and the job row.

This package must not import torch: the API process validates job specs with it.
Every model forbids unknown fields, so a typo is an error that names the field.
Split by concern: ``values`` (the strict base), ``data`` (text sources), ``stages`` (one config per
stage), ``heldout`` (report text is never chosen or trained on), ``search`` (space and budget) and
``jobs`` (the two jobs); import the public names from here.
"""

from adapruner.config.data import PARTITION_SPLITS, DataSource, Split, text_key
from adapruner.config.heldout import check_calibration_held_out, check_recovery_held_out, check_search_held_out
from adapruner.config.jobs import PruneJob, SearchJob
from adapruner.config.search import CONFIRM_TOKENS_FACTOR, Range, SearchConfig, SearchSpace
from adapruner.config.stages import (
    DEFAULT_CHANNEL_MULTIPLE,
    EXPORT_TYPES,
    LORA_TARGETS,
    CalibrationConfig,
    CompensateConfig,
    EvalConfig,
    ExportConfig,
    ImportanceConfig,
    ModelSpec,
    PruneConfig,
    RecoverConfig,
)
from adapruner.config.values import StrictModel, text_problem, value_problem

__all__ = [
    "CONFIRM_TOKENS_FACTOR",
    "DEFAULT_CHANNEL_MULTIPLE",
    "EXPORT_TYPES",
    "LORA_TARGETS",
    "PARTITION_SPLITS",
    "CalibrationConfig",
    "CompensateConfig",
    "DataSource",
    "EvalConfig",
    "ExportConfig",
    "ImportanceConfig",
    "ModelSpec",
    "PruneConfig",
    "PruneJob",
    "Range",
    "RecoverConfig",
    "SearchConfig",
    "SearchJob",
    "SearchSpace",
    "Split",
    "StrictModel",
    "check_calibration_held_out",
    "check_recovery_held_out",
    "check_search_held_out",
    "text_key",
    "text_problem",
    "value_problem",
]
