"""Parallel trials (issue 21 item 1): the driver keeps several trials in flight through an executor,
records each trial index once whatever comes back, re-issues every pending trial on resume, and runs
``search.parallel`` local worker processes in the CLI and the library."""

from __future__ import annotations

import json

import pytest

from adapruner.config import SearchJob
from adapruner.search.executor import LOOKAHEAD, InlineExecutor, LocalExecutor, TrialExecutor, TrialTask
from adapruner.search.records import TrialRecord
from adapruner.search.run import run_one, run_search
from tests.search.test_run import loaded, make_job, texts  # noqa: F401 (fixtures)


class Crash(Exception):
    """The driver dies (as a SIGKILL would stop it: nothing after the last commit is saved)."""


class Shuffled(TrialExecutor):
    """Runs its trials in this process, ``capacity`` in flight, returning them last first and each
    finished one twice (a re-issued trial whose first run also reported); ``crash_after`` results in,
    it raises :class:`Crash` instead of returning."""

    def __init__(self, context, *, capacity: int, crash_after: int | None = None) -> None:
        self.context, self.size, self.crash_after = context, capacity, crash_after
        self.tasks: list[TrialTask] = []
        self.submitted: list[tuple[int, list[int]]] = []  # (index, indices in flight when it was submitted)
        self.returned = 0

    def capacity(self, in_flight: int) -> int:
        return self.size

    def submit(self, task: TrialTask) -> None:
        self.submitted.append((task.index, [t.index for t in self.tasks]))
        self.tasks.append(task)

    def wait(self) -> list[TrialRecord]:
        if self.crash_after is not None and self.returned >= self.crash_after:
            raise Crash
        task = self.tasks.pop()
        record = run_one(self.context, task)
        self.returned += 1
        copy = TrialRecord.from_dict(json.loads(json.dumps(record.as_dict())))
        return [record, copy]


def test_trials_in_flight_are_each_recorded_once_and_asked_with_pending_points(tmp_path, texts, loaded):
    job = make_job(texts, trials=5)
    executors = []

    def shuffled(run):
        executors.append(Shuffled(run.context, capacity=3))
        return executors[-1]

    seen = []
    report = run_search(
        job, out=tmp_path, loaded=loaded, cache_dir=None, executor=shuffled, on_trial=lambda d: seen.append(d)
    ).report
    assert [r["index"] for r in report["trials"]] == [0, 1, 2, 3, 4]
    assert sorted(d.record.index for d in seen) == [0, 1, 2, 3, 4] and len(seen) == 5
    assert [d.finished for d in seen] == [1, 2, 3, 4, 5]
    submitted = executors[0].submitted
    assert [i for i, _ in submitted] == [0, 1, 2, 3, 4]
    assert max(len(others) for _, others in submitted) == 2  # three in flight at once, never more
    assert len({json.dumps(r["params"], sort_keys=True) for r in report["trials"]}) == 5  # distinct proposals
    assert all(r["status"] == "completed" and r["cost_vs_validation_pass"] > 0 for r in report["trials"])


def test_a_driver_that_dies_resumes_every_pending_trial_with_its_parameters(tmp_path, texts, loaded):
    job = make_job(texts, trials=5)
    first = []

    def crashing(run):
        first.append(Shuffled(run.context, capacity=3, crash_after=1))
        return first[-1]

    with pytest.raises(Crash):
        run_search(job, out=tmp_path, loaded=loaded, cache_dir=None, executor=crashing)
    state = json.loads((tmp_path / "search_state.json").read_text())
    assert sorted(state["records"]) == ["2"]  # the last submitted came back first; 0 and 1 were in flight
    pending = {t["index"]: t["params"] for t in state["optimizer"]["trials"] if t["status"] == "pending"}
    assert sorted(pending) == [0, 1]
    resumed = []

    def inline(run):
        resumed.append(Shuffled(run.context, capacity=1))
        return resumed[-1]

    report = run_search(job, out=tmp_path, loaded=loaded, cache_dir=None, executor=inline).report
    assert [i for i, _ in resumed[0].submitted] == [0, 1, 3, 4]  # both pending re-issued first, then new asks
    trials = {r["index"]: r for r in report["trials"]}
    assert sorted(trials) == [0, 1, 2, 3, 4]
    assert all(trials[i]["params"] == pending[i] for i in pending)


def test_parallel_one_is_the_inline_executor(tmp_path, texts, loaded):
    from adapruner.search.run import SearchRun
    from adapruner.search.store import FileStore

    job = make_job(texts, trials=1)
    run = SearchRun.start(job, FileStore(tmp_path, job), loaded=loaded, cache_dir=None, progress=None)
    assert isinstance(run.executor(), InlineExecutor)


def test_parallel_is_a_bounded_job_field():
    assert SearchJob().search.parallel == 1
    with pytest.raises(ValueError, match="parallel"):
        SearchJob.model_validate({"search": {"parallel": 0}})


@pytest.mark.slow
def test_a_parallel_search_runs_in_local_worker_processes(tmp_path, texts, loaded, monkeypatch):
    submitted, at_first_wait = [], []
    submit, wait = LocalExecutor.submit, LocalExecutor.wait
    monkeypatch.setattr(LocalExecutor, "submit", lambda self, task: (submitted.append(task.index), submit(self, task)))
    monkeypatch.setattr(LocalExecutor, "wait", lambda self: (at_first_wait.append(len(submitted)), wait(self))[1])
    job = make_job(texts, trials=4, search={"parallel": 2})
    report = run_search(job, out=tmp_path / "run", loaded=loaded, cache_dir=tmp_path / "cache").report
    # a trial queued beyond the two running ones: a worker that finishes starts the next at once
    assert at_first_wait[0] == 2 + LOOKAHEAD
    assert [r["index"] for r in report["trials"]] == [0, 1, 2, 3]
    assert all(r["status"] == "completed" for r in report["trials"])
    assert report["best"]["index"] in {0, 1, 2, 3}
    # one cached pool per source, under the model's fingerprint: the driver's, which both workers read
    assert len(list((tmp_path / "cache").glob("*/*.pt"))) == len(job.space.sources)
