"""What a submitted job must pass before it is recorded: the deadline, the size limits and cost
(:mod:`service.limits`) and where its model and data come from (:mod:`service.confine`)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service import crud
from service.confine import SourcePolicy, SourceRefused, check_spec
from service.jobs import PruneRequest, SearchRequest
from service.limits import JobCost, LimitExceeded, check_request
from service.settings import Settings


class Refused(Exception):
    """The job is refused (HTTP 422); ``loc`` is the field inside the request body."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


def check_sources(session: Session, *, spec, owner_id: int | None, settings: Settings) -> None:
    """Raise :class:`~service.confine.SourceRefused` when the spec names a model or data its owner may not
    read (the API at submit, the worker before it reads anything)."""
    check_spec(
        spec,
        SourcePolicy.from_settings(settings),
        owns_job=lambda job_id: crud.reusable_job(session, job_id=job_id, owner_id=owner_id) is not None,
    )


def admit(
    session: Session,
    *,
    request: PruneRequest | SearchRequest,
    owner_id: int | None,
    settings: Settings,
    cost_limit: int | None = None,
) -> JobCost:
    """Raise :class:`Refused` for a job this server does not run; returns its estimated cost. ``cost_limit`` is
    the owner key's own limit on a job's cost (``None``: the server's)."""
    if request.deadline_s is not None and request.deadline_s > settings.max_deadline_s:
        raise Refused(("deadline_s",), f"at most {settings.max_deadline_s:g} s on this server; ask for less")
    try:
        cost = check_request(request.kind, request.spec, settings, cost_limit)
        check_sources(session, spec=request.spec, owner_id=owner_id, settings=settings)
    except LimitExceeded as error:
        raise Refused(error.loc, error.msg) from None
    except SourceRefused as error:
        raise Refused(("spec", *error.loc), error.msg) from None
    return cost
