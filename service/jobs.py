"""The service's job envelopes: a job's library config (:mod:`adapruner.config`) with how the service runs
it (``deadline_s``, ``max_attempts``). Pydantic only (no torch, no database), so the API, the worker, the
service commands and the Python client's callers share these types."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from adapruner.config import PruneJob, SearchJob, StrictModel


class JobOptions(StrictModel):
    """How the service runs a job: ``deadline_s`` from its first start (``None``: the server default),
    ``max_attempts`` deliveries before it is dead-lettered (``None``: the server default)."""

    deadline_s: float | None = Field(default=None, gt=0)
    max_attempts: int | None = Field(default=None, ge=1, le=20)


class PruneRequest(JobOptions):
    """A prune job submitted to the service."""

    kind: Literal["prune"] = "prune"
    spec: PruneJob = Field(default_factory=PruneJob)


class SearchRequest(JobOptions):
    """A search job submitted to the service."""

    kind: Literal["search"] = "search"
    spec: SearchJob = Field(default_factory=SearchJob)


#: A submitted job of any kind, told apart by ``kind``.
JobRequest = Annotated[PruneRequest | SearchRequest, Field(discriminator="kind")]

#: The config of each job kind (the job row's ``spec``).
JOB_SPECS: dict[str, type[StrictModel]] = {"prune": PruneJob, "search": SearchJob}
