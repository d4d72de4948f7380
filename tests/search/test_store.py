"""The search's records and its file store: JSON round trips, the file that resume reads, a different job refused."""

from __future__ import annotations

import json

import pytest

from adapruner.config import SearchJob
from adapruner.search.records import SearchState, TrialRecord
from adapruner.search.store import STATE_NAME, FileStore, SearchStateError
from tests.conftest import tiny_search_spec


def make_job(texts, *, trials: int = 3) -> SearchJob:
    return SearchJob.model_validate(tiny_search_spec(texts, model="tiny", trials=trials))


def completed(index: int, value: float, **fields) -> TrialRecord:
    return TrialRecord(
        index=index,
        params={"samples": 4},
        recipe={"samples": 4, "mix": {"taylor": 1.0}},
        status="completed",
        value=value,
        noise=0.01,
        chunk_nlls=[value, value],
        **({"stopped_early": False} | fields),
    )


def test_a_record_leaves_out_what_does_not_apply_and_round_trips():
    failed = TrialRecord(index=1, params={"samples": 2}, recipe={"samples": 2})
    failed.fail(FloatingPointError("NaN scores"))
    assert failed.as_dict() == {
        "index": 1,
        "params": {"samples": 2},
        "recipe": {"samples": 2},
        "status": "failed",
        "failure": "numerical",
        "error": "FloatingPointError: NaN scores",
    }
    for record in (failed, completed(0, 2.5, latency_s=0.1)):
        assert TrialRecord.from_dict(json.loads(json.dumps(record.as_dict()))) == record


def test_the_state_knows_its_incumbent_and_what_each_trial_tells(job_texts):
    job = make_job(job_texts, trials=5)
    state = SearchState(job, records={0: completed(0, 3.0), 1: completed(1, 2.0, stopped_early=True)})
    failed = TrialRecord(index=2, params={}, recipe={})
    failed.fail(RuntimeError("boom"))
    state.records[2] = failed
    assert state.incumbent().index == 0  # an early-stopped trial is not a full one
    done = state.done(failed)
    assert (done.best_value, done.finished, done.total) == (3.0, 3, 5)
    assert done.as_dict() == failed.as_dict() | {"best_value": 3.0, "finished": 3, "total": 5}
    assert [r.index for r in state.trials()] == [0, 1, 2]


def test_the_file_store_writes_the_whole_state_and_resume_reads_it_back(tmp_path, job_texts):
    job = make_job(job_texts)
    store = FileStore(tmp_path, job)
    assert store.load() is None
    state = SearchState(job, {"version": 2, "trials": []}, {0: completed(0, 2.0)}, {"trials_s": 1.5})
    store.commit(state, state.records[0])
    saved = json.loads((tmp_path / STATE_NAME).read_text())
    assert set(saved) == {"job", "optimizer", "records", "timings"} and list(saved["records"]) == ["0"]
    assert store.load() == state
    with pytest.raises(SearchStateError, match="different search"):
        FileStore(tmp_path, make_job(job_texts, trials=4)).load()
