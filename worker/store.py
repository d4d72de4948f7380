"""The worker's search store: a search's state in SQL, the record of truth whatever host ran the earlier
attempts. Each finished trial is a row of the trials table; the job's ``search_state`` column holds only
the optimizer's state and the time spent, so a trial's write does not carry the earlier trials' records.
A new attempt rebuilds the :class:`~adapruner.search.records.SearchState` from the rows and that column.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from adapruner.config import SearchJob
from adapruner.search.records import SearchState, TrialRecord
from adapruner.search.store import SearchStore
from service.db import transaction
from service.models import Job, Trial
from worker import lease


def state_column(state: SearchState) -> dict[str, Any]:
    """What the job row's ``search_state`` column holds: the optimizer's state without its trials (each
    trial row carries its own entry) and the timings, so its size does not grow with the trial count."""
    optimizer = {k: v for k, v in state.optimizer.items() if k != "trials"}
    return {"optimizer": optimizer, "timings": state.timings}


def trial_entry(state: SearchState, index: int) -> dict[str, Any] | None:
    """The optimizer's entry of trial ``index`` (None when the optimizer holds none)."""
    return next((t for t in state.optimizer.get("trials", ()) if t.get("index") == index), None)


class LeaseStore(SearchStore):
    """The search state of job ``job_id`` in SQL, every write fenced by the attempt's lease ``token``."""

    def __init__(self, factory, *, job_id: str, token: str, job: SearchJob) -> None:
        self.factory, self.job_id, self.token, self.job = factory, job_id, token, job

    def load(self) -> SearchState | None:
        with transaction(self.factory) as session:
            column = session.scalar(select(Job.search_state).where(Job.id == self.job_id))
            rows = session.scalars(select(Trial).where(Trial.job_id == self.job_id).order_by(Trial.trial_index))
            rows = [(TrialRecord.from_dict(row.record), row.optimizer) for row in rows]
        if not column:
            return None
        records = {record.index: record for record, _ in rows}
        optimizer = column["optimizer"] | {"trials": [entry for _, entry in rows if entry is not None]}
        return SearchState(self.job, optimizer, records, dict(column["timings"]))

    def commit(self, state: SearchState, record: TrialRecord) -> None:
        with transaction(self.factory) as session:
            lease.record_trial(
                session,
                job_id=self.job_id,
                token=self.token,
                done=state.done(record),
                state=state_column(state),
                optimizer=trial_entry(state, record.index),
            )
