from __future__ import annotations

import json
import math
import time

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.artifacts import load_pruned
from adapruner.config import SearchJob
from adapruner.models import LoadedModel
from adapruner.search import run as search_run
from adapruner.search.cache import load_pools
from adapruner.search.records import TrialRecord
from adapruner.search.run import SearchStateError, run_search
from adapruner.search.space import decode
from tests.conftest import tiny_llama, tiny_search_spec


@pytest.fixture
def texts(job_texts):
    """The four small text files of tests/conftest.py (two calibration sources, validation, test)."""
    return job_texts


def make_job(texts, *, trials: int = 3, space: dict | None = None, search: dict | None = None) -> SearchJob:
    return SearchJob.model_validate(tiny_search_spec(texts, model="tiny", trials=trials, space=space, search=search))


@pytest.fixture
def loaded(tiny_tokenizer):
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64)
    return LoadedModel(model, tiny_tokenizer, "tiny")


@pytest.fixture
def wide(tiny_tokenizer):
    """A wider MLP, so that any ratio in a searched range can be met to the plan's 1% (8-channel steps)."""
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=4096)
    return LoadedModel(model, tiny_tokenizer, "tiny-wide")


def test_a_short_search_runs_end_to_end(tmp_path, texts, loaded):
    seen = []
    outcome = run_search(
        make_job(texts),
        out=tmp_path / "run",
        loaded=loaded,
        cache_dir=tmp_path / "cache",
        on_trial=lambda done: seen.append(done.as_dict()),
    )
    report = outcome.report
    assert [r["index"] for r in report["trials"]] == [0, 1, 2] == [r["index"] for r in seen]
    assert all(r["status"] == "completed" for r in report["trials"])
    assert report["best"]["index"] in {0, 1, 2}
    assert abs(report["ratio_achieved"] - 0.25) <= 0.01 * 0.25
    assert len(report["validation_vs_test"]) == 2
    assert report["trial_cost"]["mean_trial_vs_pass"] > 0
    label = f"file:{texts['test']}"
    assert report["pruned"]["perplexity"][label] > 0
    model, _ = load_pruned(tmp_path / "run")
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, outcome.model(ids).logits)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["best"] == report["best"]


def test_resume_continues_after_the_last_finished_trial(tmp_path, texts, loaded):
    job = make_job(texts, trials=3)  # trials 0-1 from the Sobol design, trial 2 from the GP
    straight = run_search(job, out=tmp_path / "straight", loaded=loaded, cache_dir=tmp_path / "cache").report
    assert (
        run_search(job, out=tmp_path / "resumed", loaded=loaded, cache_dir=tmp_path / "cache", max_new_trials=2) is None
    )
    state = json.loads((tmp_path / "resumed" / "search_state.json").read_text())
    assert sorted(state["records"]) == ["0", "1"]
    resumed = run_search(job, out=tmp_path / "resumed", loaded=loaded, cache_dir=tmp_path / "cache").report
    assert [r["params"] for r in resumed["trials"]] == [r["params"] for r in straight["trials"]]
    assert [r["value"] for r in resumed["trials"]] == pytest.approx([r["value"] for r in straight["trials"]])
    assert resumed["best"]["index"] == straight["best"]["index"]


def test_a_different_job_in_the_same_folder_is_refused(tmp_path, texts, loaded):
    run_search(make_job(texts, trials=1), out=tmp_path, loaded=loaded, cache_dir=None, max_new_trials=1)
    with pytest.raises(SearchStateError, match="different search"):
        run_search(make_job(texts, trials=2), out=tmp_path, loaded=loaded, cache_dir=None)


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path, texts, loaded, monkeypatch):
    real = search_run.trial_model
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("NaN scores")
        return real(*args, **kwargs)

    monkeypatch.setattr(search_run, "trial_model", flaky)
    report = run_search(make_job(texts), out=tmp_path, loaded=loaded, cache_dir=None).report
    statuses = [r["status"] for r in report["trials"]]
    assert statuses == ["completed", "failed", "completed"]
    assert "NaN scores" in report["trials"][1]["error"]
    assert report["trials"][1]["failure"] == "numerical"


def test_an_infeasible_trial_says_so(tmp_path, texts, loaded, monkeypatch):
    from adapruner.prune.plan import PlanError

    def infeasible(*args, **kwargs):
        raise PlanError("the ratio cannot be met")

    monkeypatch.setattr(search_run, "trial_model", infeasible)
    job = make_job(texts, trials=1)
    with pytest.raises(RuntimeError, match="no trial completed"):
        run_search(job, out=tmp_path, loaded=loaded, cache_dir=None)
    record = json.loads((tmp_path / "search_state.json").read_text())["records"]["0"]
    assert record["status"] == "failed" and record["failure"] == "infeasible"


def test_a_search_without_a_completed_trial_is_a_user_error_naming_its_errors(tmp_path, texts, loaded, monkeypatch):
    from adapruner.errors import UserError
    from adapruner.prune.plan import PlanError

    def infeasible(*args, **kwargs):
        raise PlanError("the ratio cannot be met")

    monkeypatch.setattr(search_run, "trial_model", infeasible)
    with pytest.raises(UserError) as caught:
        run_search(make_job(texts, trials=2), out=tmp_path, loaded=loaded, cache_dir=None)
    assert isinstance(caught.value, search_run.NoTrialCompleted)
    assert str(caught.value) == "no trial completed: 2 of 2 trials failed: PlanError: the ratio cannot be met"


def test_every_trial_records_the_prune_job_of_its_recipe_and_gp_trials_the_relevance(tmp_path, texts, loaded):
    """A trial record holds what the dashboard shows: the prune job that re-runs its recipe (and what that
    cannot carry over), and from the GP's proposals on the relevance of each searched dimension."""
    from adapruner.config import PruneJob

    job = make_job(texts, trials=3)  # trials 0-1: Sobol; trial 2: the GP's
    report = run_search(job, out=tmp_path, loaded=loaded, cache_dir=None).report
    names = set(report["trials"][0]["params"])
    for record in report["trials"]:
        recipe = record["recipe"]
        spec = PruneJob.model_validate(record["prune_job"]["spec"])
        assert spec.importance.mix == {k: w for k, w in recipe["mix"].items() if w > 0}
        assert (spec.calibration.samples, spec.calibration.seq_len) == (recipe["samples"], recipe["seq_len"])
        assert spec.prune.depth_slope == recipe["depth_slope"] and spec.prune.ratio == job.ratio
        assert spec.model.source == "tiny" and spec.evaluate == job.evaluate
        assert any(f"subset {recipe['subset_seed']}" in d for d in record["prune_job"]["differs"])
        assert len(record["widths"]) == 4 and all(w["heads"] >= 1 and w["channels"] >= 1 for w in record["widths"])
    best = report["trials"][report["best"]["index"]]
    assert best["widths"] == report["widths"]
    assert "relevance" not in report["trials"][0] and "relevance" not in report["trials"][1]
    relevance = report["trials"][2]["relevance"]
    choices = {"normalization", "compensate"}  # the space's choice dimensions; shares sum to 1 within each kind
    assert set(relevance) == names and choices < names
    assert sum(v for k, v in relevance.items() if k not in choices) == pytest.approx(1.0)
    assert sum(v for k, v in relevance.items() if k in choices) == pytest.approx(1.0)
    final = report["relevance"]
    assert final["method"] == "GP kernel inverse lengthscales" and set(final["values"]) == names


def test_the_time_budget_counts_the_optimisers_proposals(tmp_path, texts, loaded, monkeypatch):
    """On a small model the GP's fit and acquisition can cost more than a trial: the budget counts them too."""
    real = search_run.BayesOptimizer.ask

    def slow_ask(self):
        time.sleep(0.4)
        return real(self)

    monkeypatch.setattr(search_run.BayesOptimizer, "ask", slow_ask)
    job = make_job(texts, trials=50, search={"time_budget_s": 1.0})
    report = run_search(job, out=tmp_path, loaded=loaded, cache_dir=None).report
    # Every trial costs at least 0.4 s of asking: the third ends past 1 s, so no fourth starts.
    assert 1 <= len(report["trials"]) <= 3
    assert report["trial_cost"]["ask_s"] >= 0.4 * len(report["trials"])


def dominated(point: tuple[float, float], others: list[tuple[float, float]]) -> bool:
    return any(o[0] <= point[0] and o[1] <= point[1] and o != point for o in others)


@pytest.mark.parametrize(
    ("second", "space"),
    [("latency", {"seq_lens": [16, 24]}), ("params", {"ratio": {"low": 0.1, "high": 0.4}})],
)
def test_a_two_objective_search_reports_its_pareto_front(tmp_path, texts, wide, second, space):
    job = make_job(texts, space=space, search={"second_objective": second, "early_reject": False})
    report = run_search(job, out=tmp_path / "run", loaded=wide, cache_dir=tmp_path / "cache").report
    field = search_run.SECOND_FIELD[second]
    full = [r for r in report["trials"] if r["status"] == "completed" and not r["stopped_early"]]
    assert len(full) == 3 and all(r[field] > 0 and r["non_embedding_params"] > 0 for r in full)
    points = {r["index"]: (r["value"], r[field]) for r in full}
    front = report["pareto"]
    assert front and [p["value"] for p in front] == sorted(p["value"] for p in front)
    assert {p["index"] for p in front} == {i for i, pt in points.items() if not dominated(pt, list(points.values()))}
    for p in front:
        assert p[field] == points[p["index"]][1] and p["validation_ppl"] == pytest.approx(math.exp(p["value"]))
    assert report["pick"] == {"second_objective": second, "field": field, "cap": None, "cap_met": True}
    if second == "params":  # the searched ratio is applied: different trials keep different sizes
        assert len({r["non_embedding_params"] for r in full}) == 3
        best = next(r for r in full if r["index"] == report["best"]["index"])
        assert report["params_after"] == best["non_embedding_params"]
        assert report["ratio_target"] == best["recipe"]["ratio"]


def test_the_second_cap_limits_the_artifact_to_trials_within_it(texts):
    job = make_job(texts, search={"second_objective": "latency", "second_cap": 0.5})
    full = [
        TrialRecord(index=i, params={}, recipe={}, status="completed", value=v, stopped_early=False, latency_s=s)
        for i, v, s in ((0, 1.0, 0.9), (1, 2.0, 0.4), (2, 3.0, 0.2))
    ]
    eligible, pick = search_run._eligible(job, full)
    eligible = [r.as_dict() for r in eligible]
    assert [r["index"] for r in eligible] == [1, 2] and pick["cap_met"]
    tight = make_job(texts, search={"second_objective": "latency", "second_cap": 0.1})
    eligible, pick = search_run._eligible(tight, full)
    eligible = [r.as_dict() for r in eligible]
    assert [r["index"] for r in eligible] == [2] and not pick["cap_met"]  # none within: the fastest
    assert search_run._eligible(make_job(texts), full) == (full, None)


def test_params_resume_gives_the_same_trials_as_a_straight_run(tmp_path, texts, wide):
    job = make_job(texts, space={"ratio": {"low": 0.1, "high": 0.4}}, search={"second_objective": "params"})
    straight = run_search(job, out=tmp_path / "straight", loaded=wide, cache_dir=tmp_path / "cache").report
    run_search(job, out=tmp_path / "resumed", loaded=wide, cache_dir=tmp_path / "cache", max_new_trials=2)
    resumed = run_search(job, out=tmp_path / "resumed", loaded=wide, cache_dir=tmp_path / "cache").report
    assert [r["params"] for r in resumed["trials"]] == [r["params"] for r in straight["trials"]]
    sizes = [r["non_embedding_params"] for r in straight["trials"]]
    assert [r["non_embedding_params"] for r in resumed["trials"]] == sizes
    assert resumed["pareto"] == straight["pareto"]


def test_each_seq_len_has_its_pool_and_the_recipe_picks_it(tmp_path, texts, loaded):
    job = make_job(texts, space={"seq_lens": [16, 24]})
    adapter = get_adapter(loaded.model)
    kwargs = dict(pool_size=4, seed=0, cache_dir=tmp_path / "cache")
    pools = load_pools(adapter, loaded.tokenizer, job.space.sources, seq_lens=job.space.seq_lens, **kwargs)
    assert {n: p.tokens_per_sample for n, p in pools.items()} == {16: 16, 24: 24}
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 2 * len(job.space.sources)
    # Sample ids are stable: the pool of one length is the same alone or next to another.
    alone = load_pools(adapter, loaded.tokenizer, job.space.sources, seq_lens=(24,), **kwargs)
    assert alone[24].sample_ids == pools[24].sample_ids
    for n in (16, 24):
        recipe = decode(job.space, {"seq_len": str(n), "samples": 4})
        _, ids = search_run.prune_recipe(loaded, pools, recipe, ratio=0.25, targets=job.targets, seed=0)
        assert ids and set(ids) <= set(pools[n].sample_ids) and all(i.endswith(f"+{n}") for i in ids)


def test_the_new_metrics_and_compensators_are_searched(tmp_path, texts, loaded):
    job = make_job(
        texts,
        trials=4,
        space={"metrics": ["bip", "nirvana", "numerical"], "compensators": ["none", "reformation", "bias"]},
    )
    outcome = run_search(job, out=tmp_path / "run", loaded=loaded, cache_dir=tmp_path / "cache")
    trials = outcome.report["trials"]
    assert all(r["status"] == "completed" for r in trials)
    assert {r["recipe"]["compensate"] for r in trials} <= {"none", "reformation", "bias"}
    assert set(trials[0]["recipe"]["mix"]) == {"bip", "nirvana", "numerical"}
    model, _ = load_pruned(tmp_path / "run")  # whichever compensator won, the artifact reloads
    ids = torch.arange(10)[None]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, outcome.model(ids).logits, rtol=0, atol=0)


def test_prune_recipe_compensation_lowers_the_output_error(texts, loaded):
    """The trial's compensator fits the dense statistics of the trial's own samples: on those tokens the
    first MLP's output is closer to the dense one than without compensation (no heads are pruned here,
    so that layer's kept inputs are the dense ones)."""
    from adapruner.search.cache import pool_tokens
    from tests.search.test_trial import down_proj_output

    job = make_job(texts, space={"compensators": ["none", "reformation"]})
    adapter = get_adapter(loaded.model)
    pools = load_pools(
        adapter, loaded.tokenizer, job.space.sources, pool_size=4, seq_lens=(16,), seed=0, cache_dir=None
    )
    errors = {}
    for method in ("none", "reformation"):
        recipe = decode(job.space, {"compensate": method})
        assert recipe.attn_share == 0
        model, ids = search_run.prune_recipe(loaded, pools, recipe, ratio=0.25, targets=job.targets, seed=0)
        tokens = pool_tokens(pools[16], ids)
        dense = down_proj_output(loaded.model, tokens)
        errors[method] = float((down_proj_output(model, tokens) - dense).square().sum())
    assert errors["reformation"] < errors["none"]
