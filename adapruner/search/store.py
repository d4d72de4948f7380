"""Where a search keeps its state between trials: the seam between the search and its host.

The search asks its store once for the state to resume from (:meth:`SearchStore.load`) and hands it every
finished trial (:meth:`SearchStore.commit`), before the next trial starts. The CLI keeps the state in a
file of its output folder (:class:`FileStore`); the service's worker writes each trial as a row of its
database (``worker.store.LeaseStore``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

from adapruner.config import SearchJob
from adapruner.errors import UserError
from adapruner.search.records import SearchState, TrialRecord

STATE_NAME = "search_state.json"


class SearchStateError(UserError):
    """The output folder holds the state of a different search."""


class SearchStore(ABC):
    """A search's saved state: what it resumes from and where each finished trial goes."""

    @abstractmethod
    def load(self) -> SearchState | None:
        """The state of the earlier trials of this search, or None when it starts afresh."""

    @abstractmethod
    def commit(self, state: SearchState, record: TrialRecord) -> None:
        """Save ``state`` after its newly finished trial ``record`` (already in ``state.records``)."""


class FileStore(SearchStore):
    """The whole state in ``folder/search_state.json``, replaced atomically after every trial; a folder
    that holds the state of a different job is refused (:class:`SearchStateError`)."""

    def __init__(self, folder: str | Path, job: SearchJob) -> None:
        self.path = Path(folder) / STATE_NAME
        self.job = job

    def load(self) -> SearchState | None:
        if not self.path.is_file():
            return None
        state = SearchState.from_dict(json.loads(self.path.read_text()))
        if state.job != self.job:
            raise SearchStateError(f"{self.path} holds a different search; use another --out or delete it")
        return state

    def commit(self, state: SearchState, record: TrialRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.as_dict()))
        tmp.replace(self.path)
