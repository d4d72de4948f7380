"""The two jobs: :class:`PruneJob` and :class:`SearchJob`, each everything one run needs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adapruner.config.data import DataSource
from adapruner.config.heldout import check_calibration_held_out, check_recovery_held_out, check_search_held_out
from adapruner.config.search import SearchConfig, SearchSpace
from adapruner.config.stages import (
    CalibrationConfig,
    CompensateConfig,
    EvalConfig,
    ExportConfig,
    ImportanceConfig,
    ModelSpec,
    PruneConfig,
    RecoverConfig,
)
from adapruner.config.values import StrictModel


def _default_test_sources() -> tuple[DataSource, ...]:
    return tuple(DataSource(kind="builtin", name=n, split="test") for n in ("jargon", "gnu-standards"))


class PruneJob(StrictModel):
    """Everything one ``adapruner prune`` run needs; saved with the artifact."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    importance: ImportanceConfig = Field(default_factory=ImportanceConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    compensate: CompensateConfig = Field(default_factory=CompensateConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    recover: RecoverConfig = Field(default_factory=RecoverConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _no_shared_text(self) -> PruneJob:
        check_calibration_held_out(self.calibration.sources, self.evaluate.texts)
        check_recovery_held_out(self.recover, self.evaluate.texts)
        return self


class SearchJob(StrictModel):
    """Everything one ``adapruner search`` run needs; the worker stores it as the job row's spec."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    ratio: float = Field(default=0.2, gt=0.0, lt=1.0, description="share of non-embedding params to remove")
    targets: tuple[Literal["heads", "channels"], ...] = ("heads", "channels")
    space: SearchSpace = Field(default_factory=SearchSpace)
    search: SearchConfig = Field(default_factory=SearchConfig)
    evaluate: EvalConfig = Field(default_factory=lambda: EvalConfig(texts=_default_test_sources()))
    recover: RecoverConfig = Field(default_factory=RecoverConfig, description="applied to the best trial")
    export: ExportConfig = Field(default_factory=ExportConfig, description="formats written for the best trial")

    @model_validator(mode="after")
    def _held_out(self) -> SearchJob:
        check_search_held_out(self.search.validation, self.space.sources, self.evaluate.texts)
        check_recovery_held_out(self.recover, self.evaluate.texts)
        return self

    @model_validator(mode="after")
    def _whole_model(self) -> SearchJob:
        if self.model.sequential:
            raise ValueError(
                "model.sequential: a search's trials run whole-model passes; prune with model.sequential, "
                "or spread the model over several GPUs with model.gpus"
            )
        return self

    @model_validator(mode="after")
    def _searched_ratio(self) -> SearchJob:
        searched = self.space.ratio is not None and not self.space.ratio.fixed
        if searched and self.search.second_objective is None:
            raise ValueError(
                "space.ratio: a searched ratio needs search.second_objective (quality alone prefers the lowest "
                "ratio); fix the ratio with the job's ratio or set a second objective"
            )
        if self.search.second_objective == "params" and not searched:
            raise ValueError(
                "space.ratio: search.second_objective 'params' needs a searched ratio range (low < high), "
                "e.g. {low: 0.1, high: 0.3}: at a fixed ratio the parameter count barely moves"
            )
        return self

