"""Warm start: a search starts from the completed trials of earlier searches of the same model, as prior
observations outside its trial budget; another model's search is refused."""

from __future__ import annotations

import json
import shutil

import pytest

from adapruner.config import SearchJob
from adapruner.models import LoadedModel
from adapruner.search.records import SearchState, TrialRecord
from adapruner.search.run import run_search
from adapruner.search.space import dims
from adapruner.search.store import FileStore
from adapruner.search.strategies import WarmStartError, make_strategy
from tests.conftest import tiny_llama, tiny_search_spec


@pytest.fixture
def job_of(job_texts):
    def make(
        *,
        trials: int = 3,
        model: str = "tiny",
        ratio: float = 0.25,
        search: dict | None = None,
        space: dict | None = None,
    ) -> SearchJob:
        spec = tiny_search_spec(job_texts, model=model, trials=trials, search=search, space=space)
        return SearchJob.model_validate(spec | {"ratio": ratio})

    return make


def earlier_search(folder, job: SearchJob, values: list[float | None]) -> list[TrialRecord]:
    """A search state in ``folder`` with one trial per value (None: a failed trial), without running it."""
    strategy = make_strategy(job)
    records = {}
    for value in values:
        trial = strategy.ask()
        record = TrialRecord(index=trial.index, params=trial.params, recipe={})
        if value is None:
            record.status, record.failure, record.error = "failed", "error", "RuntimeError: x"
        else:
            record.status, record.value, record.noise, record.fidelity = "completed", value, 1e-3, 1.0
            record.stopped_early = False
        records[trial.index] = record
    FileStore(folder, job).commit(SearchState(job, strategy.state_dict(), records), records[0])
    return list(records.values())


def test_the_completed_trials_of_an_earlier_search_become_priors(tmp_path, job_of):
    earlier = earlier_search(tmp_path / "a", job_of(ratio=0.3), [2.0, None, 1.5])
    strategy = make_strategy(job_of(search={"warm_start": [str(tmp_path / "a")]}))
    priors = strategy.priors()
    assert [p.params for p in priors] == [earlier[0].params, earlier[2].params]
    assert [p.value for p in priors] == [2.0, 1.5] and [p.index for p in priors] == [-1, -2]
    assert strategy.trials() == []  # no trial of this search


def test_a_warm_start_from_another_model_names_the_field(tmp_path, job_of):
    earlier_search(tmp_path / "a", job_of(model="other"), [2.0])
    with pytest.raises(WarmStartError, match=r"^search.warm_start: .* model 'other', this search prunes 'tiny'"):
        make_strategy(job_of(search={"warm_start": [str(tmp_path / "a")]}))
    with pytest.raises(WarmStartError, match="search.warm_start: .* holds neither search_state.json nor report.json"):
        make_strategy(job_of(search={"warm_start": [str(tmp_path / "missing")]}))


def test_random_search_ignores_priors_and_says_so(tmp_path, job_of):
    earlier_search(tmp_path / "a", job_of(), [2.0])
    with pytest.warns(UserWarning, match="'random' strategy ignores prior trials"):
        strategy = make_strategy(job_of(search={"strategy": "random", "warm_start": [str(tmp_path / "a")]}))
    assert strategy.priors() == []


def test_priors_outside_the_space_are_left_out(tmp_path, job_of):
    earlier_search(tmp_path / "a", job_of(), [2.0])
    warm = {"warm_start": [str(tmp_path / "a")]}
    fewer = job_of(search=warm, space={"subset_seeds": 1})
    assert "subset_seed" not in {d.name for d in dims(fewer.space)}
    assert len(make_strategy(fewer).priors()) == 1  # a parameter this space fixes is ignored
    wider = job_of(search=warm, space={"subset_seeds": 8, "pool_size": 8, "samples": {"low": 2, "high": 12}})
    assert len(make_strategy(wider).priors()) == 1  # inside the wider ranges
    narrower = job_of(search=warm, space={"metrics": ["taylor", "wanda"]})  # no metric:l2 dimension
    assert len(make_strategy(narrower).priors()) == 1
    other = job_of(search=warm, space={"metrics": ["taylor", "wanda", "flap"]})  # metric:flap was not searched
    assert make_strategy(other).priors() == []


def test_warm_start_round_trip_from_a_finished_search(tmp_path, job_of, tiny_tokenizer):
    """A finished tiny search's folder (its state, or only its report) warm-starts a search at another
    ratio: its trials are the priors, the GP proposes from the first trial on, the budget is unchanged."""
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64)
    loaded = LoadedModel(model, tiny_tokenizer, "tiny")
    cache = tmp_path / "cache"
    first = run_search(job_of(trials=3), out=tmp_path / "first", loaded=loaded, cache_dir=cache).report
    job = job_of(trials=2, ratio=0.31, search={"warm_start": [str(tmp_path / "first")]})
    report = run_search(job, out=tmp_path / "warm", loaded=loaded, cache_dir=cache).report
    assert [(r["index"], r["status"]) for r in report["trials"]] == [(0, "completed"), (1, "completed")]
    state = json.loads((tmp_path / "warm" / "search_state.json").read_text())
    priors = state["optimizer"]["priors"]
    assert [p["params"] for p in priors] == [r["params"] for r in first["trials"]]
    assert [p["value"] for p in priors] == [r["value"] for r in first["trials"]]
    assert all(p["generator"] == "prior" for p in priors)
    # 3 completed priors >= n_init (2): no Sobol design, the GP proposes from trial 0 on
    assert [t["generator"] for t in state["optimizer"]["trials"]] == ["gp", "gp"]
    # the report alone (no search_state.json) gives the same priors
    shutil.copytree(tmp_path / "first", tmp_path / "report_only")
    (tmp_path / "report_only" / "search_state.json").unlink()
    from_report = make_strategy(job_of(trials=2, ratio=0.31, search={"warm_start": [str(tmp_path / "report_only")]}))
    assert [(p.params, p.value) for p in from_report.priors()] == [(p["params"], p["value"]) for p in priors]
