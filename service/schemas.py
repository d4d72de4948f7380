"""Request and response bodies of the REST API. Job specs are the library's own typed configs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from adapruner.search.records import TrialRecord
from service.jobs import JobRequest  # noqa: F401 (the body of POST /v1/jobs, kept importable here)
from service.models import JobStatus


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobOut(Out):
    id: str
    kind: str
    status: JobStatus
    spec: dict[str, Any]
    attempts: int = Field(description="runs started; events and trials carry this number")
    handovers: int = Field(
        default=0, description="runs a stopping worker handed back; they do not count towards max_attempts"
    )
    max_attempts: int
    deadline_s: float
    cancel_requested: bool
    worker_id: str | None
    error: str | None
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class TrialOut(Out):
    trial_index: int
    status: str
    value: float | None
    best_value: float | None
    seconds: float | None
    attempt: int
    record: TrialRecord = Field(description="the search's trial record (fields that do not apply are left out)")
    created_at: datetime

    @field_serializer("record")
    def _record(self, record: TrialRecord) -> dict[str, Any]:
        return record.as_dict()


class EventOut(Out):
    id: int
    kind: str
    data: dict[str, Any]
    created_at: datetime


class ArtifactOut(Out):
    path: str
    size: int
    url: str = ""


class CatalogEntry(BaseModel):
    name: str
    summary: str


class Catalog(BaseModel):
    plugins: dict[str, list[CatalogEntry]]
    job_kinds: list[str]
    schemas: dict[str, dict[str, Any]]
    limits: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="this server's maximum per job kind and field (dotted path inside the spec, e.g. search.trials;"
        " the largest value of each element for lists, the high end for ranges) and 'cost', the largest estimated"
        " cost of one job in token-passes (docs/security.md)",
    )


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
