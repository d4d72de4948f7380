"""Memory behaviour of a search: an out-of-memory trial is an infeasible trial whose memory is freed
before the next one, and the search goes on."""

from __future__ import annotations

import contextlib
import gc
import json
import weakref

import torch

from adapruner.search import run as search_run
from adapruner.search.run import run_search
from tests.search.test_run import loaded, make_job, texts  # noqa: F401 (fixtures)


def test_an_out_of_memory_trial_is_infeasible_freed_and_the_search_goes_on(
    tmp_path, texts, loaded, monkeypatch  # noqa: F811
):
    real_prune, real_observe = search_run.trial_model, search_run._timed_observe
    trial_models: list[weakref.ref] = []
    alive_at_next_trial: list[list[bool]] = []  # per trial_model call: which earlier trials' objects live
    emptied = []

    @contextlib.contextmanager
    def prune(loaded, *args, **kwargs):
        alive_at_next_trial.append([ref() is not None for ref in trial_models])
        dense = {id(p) for p in loaded.model.parameters()}
        with real_prune(loaded, *args, **kwargs) as trial:
            # the model is pruned in place: the trial's own objects are the Parameters surgery made
            pruned = next(p for p in trial.model.parameters() if id(p) not in dense)
            trial_models.append(weakref.ref(pruned))
            del pruned
            yield trial

    def observe(model, validation, **kwargs):
        if len(trial_models) == 2:  # the second trial runs out of memory while it is evaluated
            held = torch.empty(1024)  # a tensor of the trial that the error's frames reference
            trial_models.append(weakref.ref(held))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_observe(model, validation, **kwargs)

    monkeypatch.setattr(search_run, "trial_model", prune)
    monkeypatch.setattr(search_run, "_timed_observe", observe)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # as on a GPU: the cache is emptied
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    gc.disable()  # only release_memory may collect: the test sees what the search itself frees
    try:
        outcome = run_search(make_job(texts, trials=4), out=tmp_path, loaded=loaded, cache_dir=None)
    finally:
        gc.enable()
    statuses = [r["status"] for r in outcome.report["trials"]]
    assert statuses == ["completed", "failed", "completed", "completed"]
    failed = outcome.report["trials"][1]
    assert failed["failure"] == "out of memory" and "Tried to allocate" in failed["error"]
    state = search_run.BayesOptimizer.from_state(json.loads((tmp_path / "search_state.json").read_text())["optimizer"])
    assert [t.infeasible for t in state.trials()] == [False, True, False, False]
    # The four trials' calls (the final step re-prunes its top trials after them).
    assert alive_at_next_trial[:4] == [[], [False], [False] * 3, [False] * 4], "a trial's objects outlived it"
    assert len(emptied) >= 4  # after every trial, the OOM one included


def test_a_consumed_model_is_pruned_in_place_for_the_final_model_never_copied(
    tmp_path, texts, loaded, monkeypatch  # noqa: F811
):
    real_deepcopy = search_run.copy.deepcopy

    def no_model_copy(value, memo=None):
        if isinstance(value, torch.nn.Module):
            raise AssertionError("the search copied the model")
        return real_deepcopy(value, memo)

    monkeypatch.setattr(search_run.copy, "deepcopy", no_model_copy)
    outcome = run_search(make_job(texts, trials=2), out=tmp_path, loaded=loaded, cache_dir=None, consume=True)
    assert outcome.model is loaded.model  # the one model: pruned in place for the pick
    assert outcome.report["params_after"] < outcome.report["params_before"]
