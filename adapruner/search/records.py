"""A search's typed records: one trial's outcome (:class:`TrialRecord`), what a finished trial tells the
caller (:class:`TrialDone`) and everything a resumed search starts from (:class:`SearchState`).

The CLI's trial printer, the worker's lease store, the API's trial schema and the search report share
these types; their JSON (``as_dict`` / ``from_dict``) is what ``search_state.json``, the trials table and
the report's ``trials`` hold. Torch-free: the API process imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from adapruner.config import SearchJob

# The trial record field of each second objective (it enters the GP as a logarithm).
SECOND_FIELD = {"latency": "latency_s", "params": "non_embedding_params"}
# What a failed trial's error means, for people (the trial record's ``failure``).
FAILURES = {"PlanError": "infeasible", "OutOfMemoryError": "out of memory", "FloatingPointError": "numerical"}


@dataclass
class TrialRecord:
    """One trial: its parameters and recipe, and once run its outcome. A field that does not apply (a
    failed trial's value, a completed trial's error) is None and left out of the JSON."""

    index: int
    params: dict[str, Any]
    recipe: dict[str, Any]  # the trial's :class:`~adapruner.search.space.Recipe` as JSON
    prune_job: dict[str, Any] | None = None  # {"spec": the prune job that re-runs the recipe, "differs": [...]}
    relevance: dict[str, float | None] | None = None  # the GP's relevance per dimension at its proposal
    widths: list[dict[str, int]] | None = None  # kept KV groups and channels per layer
    non_embedding_params: int | None = None
    latency_s: float | None = None  # with search.second_objective "latency"
    status: str = "pending"  # "completed" or "failed" once run
    value: float | None = None  # mean validation NLL per token over the chunks read
    noise: float | None = None
    fidelity: float | None = None
    stopped_early: bool | None = None
    chunk_nlls: list[float | None] | None = None  # per chunk read (None: non-finite, as the service stores it)
    validation_ppl: float | None = None
    samples: int | None = None
    eval_s: float | None = None
    failure: str | None = None  # a FAILURES value, or "error"
    error: str | None = None
    seconds: float | None = None
    cost_vs_validation_pass: float | None = None
    posterior_mean: float | None = None  # set for full trials when the search ends
    posterior_std: float | None = None

    @property
    def full(self) -> bool:
        """Completed on all validation chunks (not stopped early)."""
        return self.status == "completed" and not self.stopped_early

    def second(self, kind: str) -> float:
        """The value of the second objective ``kind`` (a :data:`SECOND_FIELD` key)."""
        return getattr(self, SECOND_FIELD[kind])

    def fail(self, error: BaseException) -> None:
        self.status = "failed"
        self.failure = FAILURES.get(type(error).__name__, "error")
        self.error = f"{type(error).__name__}: {error}"

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        return cls(**data)


@dataclass(frozen=True)
class TrialDone:
    """What the search tells after each trial: its record, the best full trial's value so far, and how
    many trials of the budget have finished."""

    record: TrialRecord
    best_value: float | None
    finished: int
    total: int

    def as_dict(self) -> dict[str, Any]:
        return self.record.as_dict() | {"best_value": self.best_value, "finished": self.finished, "total": self.total}


@dataclass
class SearchState:
    """Everything a search resumes from: its job, the optimizer's state, the finished trials (by index)
    and the time spent so far (``warmup_s``, ``validation_pass_s``, ``ask_s``, ``trials_s``)."""

    job: SearchJob
    optimizer: dict[str, Any] | None = None  # BayesOptimizer.state_dict(); None before the first trial
    records: dict[int, TrialRecord] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def incumbent(self, second: Mapping[str, float] | None = None) -> TrialRecord | None:
        """The best full trial; given a trial's second objective (``{field: value}``, see
        :data:`SECOND_FIELD`), the best among those no worse in it (with two objectives a trial is only
        stopped early when it is dominated)."""
        full = [r for r in self.records.values() if r.full]
        kind = self.job.search.second_objective
        if second is not None and kind:
            full = [r for r in full if r.second(kind) <= second[SECOND_FIELD[kind]]]
        return min(full, key=lambda r: r.value) if full else None

    def finished(self) -> int:
        return sum(1 for r in self.records.values() if r.status in ("completed", "failed"))

    def done(self, record: TrialRecord) -> TrialDone:
        best = self.incumbent()
        return TrialDone(record, best.value if best else None, self.finished(), self.job.search.trials)

    def trials(self) -> list[TrialRecord]:
        """The records in index order."""
        return [self.records[i] for i in sorted(self.records)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job.model_dump(mode="json"),
            "optimizer": self.optimizer,
            "records": {str(i): r.as_dict() for i, r in sorted(self.records.items())},
            "timings": self.timings,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchState:
        records = {int(i): TrialRecord.from_dict(r) for i, r in data["records"].items()}
        return cls(SearchJob.model_validate(data["job"]), data["optimizer"], records, dict(data["timings"]))
