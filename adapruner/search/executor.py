"""Where a search's trials run: the seam between the search's driver and the processes that prune.

The driver (:class:`~adapruner.search.run.SearchRun`) asks the optimiser, hands each trial to an
executor as a :class:`TrialTask` (plain JSON: it may cross a process or a machine), and gets back the
trial's :class:`~adapruner.search.records.TrialRecord`; it alone tells the optimiser and commits the state.
A task is run by :func:`adapruner.search.run.run_one` on a
:class:`~adapruner.search.run.TrialContext` (the dense model, the pooled statistics, the validation text),
built once per process and kept between its trials.

- :class:`InlineExecutor` (``search.parallel == 1``): one trial at a time in the driver's process, on
  the driver's own context: exactly the sequential search.
- :class:`LocalExecutor` (``search.parallel > 1`` in the CLI and the library): that many local worker
  processes (spawned, so CUDA and threads are safe), each with its own copy of the dense model and the
  pools read from the statistics cache (the driver's warm-up wrote it, keyed by model fingerprint);
  one trial more than the workers is in flight (``LOOKAHEAD``), queued until a worker is free.
- ``worker.trials.PoolExecutor`` (the service): each trial a job of kind ``search_trial`` on the worker
  pool's Redis stream and SQL rows, so a lost trial is reclaimed like any job.

The protocol: :meth:`TrialExecutor.capacity` says how many trials may be in flight now (free workers,
at most ``search.parallel`` of them running, plus any queued ahead), :meth:`TrialExecutor.submit` starts
one, :meth:`TrialExecutor.wait` blocks until at least one has finished and returns the finished ones; a
trial may come back twice (a re-issued trial whose first run also finished): the driver records it once.
"""

from __future__ import annotations

import os
import pickle
import queue as queue_module
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adapruner.search.records import SECOND_FIELD, TrialRecord

# How often a waiting LocalExecutor checks that its worker processes are alive.
POLL_S = 0.5
# Trials a LocalExecutor holds queued beyond its running ones: proposed while those run, so a worker
# that finishes starts its next trial at once instead of waiting for the driver's next proposal.
LOOKAHEAD = 1


@dataclass(frozen=True)
class Incumbent:
    """A full trial a new trial may be stopped early against: its value, second objective (None with
    one objective) and validation NLL per chunk."""

    value: float
    second: float | None
    chunk_nlls: list[float | None]


@dataclass(frozen=True)
class TrialTask:
    """One trial to run: its index and parameters, the dense model's NLL per validation chunk (the
    early stop's reference) and the full trials it may be stopped early against (with one objective
    the best only; with two, every full trial: the one to beat depends on the trial's second objective)."""

    index: int
    params: dict[str, Any]
    reference: list[float]
    incumbents: list[Incumbent] = field(default_factory=list)

    def incumbent(self, second: dict[str, float], kind: str | None) -> list[float | None] | None:
        """The chunk NLLs of the best incumbent no worse in the second objective ``kind`` than this
        trial's ``second`` (``{field: value}``), as ``SearchState.incumbent`` picks it; None when none is."""
        usable = [i for i in self.incumbents if kind is None or i.second <= second[SECOND_FIELD[kind]]]
        return min(usable, key=lambda i: i.value).chunk_nlls if usable else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialTask:
        incumbents = [Incumbent(**i) for i in data.get("incumbents", ())]
        return cls(int(data["index"]), dict(data["params"]), list(data["reference"]), incumbents)


class TrialExecutor(ABC):
    """Runs a search's trials (see the module's docstring for the protocol)."""

    @abstractmethod
    def capacity(self, in_flight: int) -> int:
        """How many trials may be in flight now, ``in_flight`` of them already: at least 1."""

    @abstractmethod
    def submit(self, task: TrialTask) -> None:
        """Start ``task`` (a re-issued index may already be running somewhere: harmless)."""

    @abstractmethod
    def wait(self) -> list[TrialRecord]:
        """Block until at least one submitted trial has finished; the records of those that have."""

    def close(self) -> None:
        """Stop whatever the executor started (called once the driver needs no more trials)."""


RunOne = Callable[[Any, TrialTask], TrialRecord]


class InlineExecutor(TrialExecutor):
    """One trial at a time, in the driver's process, on the driver's context (``run_one(context, task)``)."""

    def __init__(self, context: Any, run_one: RunOne) -> None:
        self.context, self.run_one = context, run_one
        self.tasks: deque[TrialTask] = deque()

    def capacity(self, in_flight: int) -> int:
        return 1

    def submit(self, task: TrialTask) -> None:
        self.tasks.append(task)

    def wait(self) -> list[TrialRecord]:
        return [self.run_one(self.context, self.tasks.popleft())]


class TrialWorkerDied(RuntimeError):
    """A local trial worker process ended without reporting its trial."""


class LocalExecutor(TrialExecutor):
    """``workers`` local processes (spawned), each building its own context once: the dense model (a copy
    of the driver's, or loaded from the job's model spec) and the pools from ``cache_dir``.

    ``model`` is the driver's dense :class:`~adapruner.models.LoadedModel` when the caller passed one in
    (it is copied to each process by value, never shared: each trial prunes its process's copy in place),
    else None (each process loads ``job.model``). A trial that raises an error the search does not record
    as a failed trial, or a process that dies, stops the search with that error (:class:`TrialWorkerDied`)."""

    def __init__(self, job: Any, *, workers: int, cache_dir: Path | None, model: Any | None = None) -> None:
        self.job, self.workers, self.cache_dir, self.model = job, workers, cache_dir, model
        self.procs: list[Any] = []  # started on the first trial

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        payload = pickle.dumps(self.model) if self.model is not None else None  # by value: no shared storage
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        cache = None if self.cache_dir is None else str(self.cache_dir)
        args = (self.job.model_dump_json(), payload, cache, threads, self.tasks, self.results)
        self.procs = [ctx.Process(target=_local_worker, args=args, daemon=True) for _ in range(self.workers)]
        for proc in self.procs:
            proc.start()

    def capacity(self, in_flight: int) -> int:
        return self.workers + LOOKAHEAD

    def submit(self, task: TrialTask) -> None:
        if not self.procs:
            self._start()
        self.tasks.put(task.as_dict())

    def wait(self) -> list[TrialRecord]:
        got = []
        while not got:
            try:
                got.append(self.results.get(timeout=POLL_S))
            except queue_module.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise TrialWorkerDied(f"a local trial worker ended with exit code {dead[0].exitcode}") from None
        while True:
            try:
                got.append(self.results.get_nowait())
            except queue_module.Empty:
                break
        return [_result(kind, value) for kind, value in got]

    def close(self) -> None:
        if not self.procs:
            return
        for _ in self.procs:
            self.tasks.put(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.tasks.close()
        self.results.close()


def _result(kind: str, value: Any) -> TrialRecord:
    if kind == "error":
        raise RuntimeError(f"a trial failed in a local trial worker:\n{value}")
    return TrialRecord.from_dict(value)


def _local_worker(job_json: str, payload: bytes | None, cache_dir: str | None, threads: int, tasks, results) -> None:
    """A LocalExecutor's process: build the context once, then run tasks until told to stop (None)."""
    import torch

    from adapruner.config import SearchJob
    from adapruner.search.run import TrialContext, run_one

    torch.set_num_threads(threads)
    job = SearchJob.model_validate_json(job_json)
    context = TrialContext.build(job, loaded=None if payload is None else pickle.loads(payload), cache_dir=cache_dir)
    while (task := tasks.get()) is not None:
        try:
            results.put(("record", run_one(context, TrialTask.from_dict(task)).as_dict()))
        except Exception:  # noqa: BLE001 (reported to the driver, which stops the search with it)
            results.put(("error", traceback.format_exc()))


def incumbents(records: Sequence[TrialRecord], kind: str | None) -> list[Incumbent]:
    """What a new trial may be stopped early against: the best full trial, or with a second objective
    ``kind`` every full trial (in record order, so ties are broken as ``SearchState.incumbent`` does)."""
    full = [r for r in records if r.full]
    if kind is None:
        full = [min(full, key=lambda r: r.value)] if full else []
    return [Incumbent(r.value, r.second(kind) if kind else None, list(r.chunk_nlls or ())) for r in full]
