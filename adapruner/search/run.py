"""The AdaPruner search: Bayesian optimisation over calibration data x metric mix x allocation.

Warm-up collects per-sample statistics of a candidate calibration pool once (cached on disk); every
trial then combines cached statistics for its samples and metric weights, prunes a copy of the model
and reads validation text chunk by chunk (stopping early when clearly worse than the incumbent).
The final choice is the GP's posterior-mean best, confirmed on more validation text among the top few;
only then is the held-out test text read, for the report.

With ``search.second_objective`` (latency or non-embedding parameters, measured on every trial) the
search is multi-objective: a trial stops early only against a full trial no worse in the second
objective, the report adds the Pareto front (``pareto``) and how the artifact was picked (``pick``: the
best-quality trial within ``search.second_cap``, if given).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapruner.adapters import get_adapter
from adapruner.catalog import METRICS
from adapruner.compensate import build_compensator, pruned_inputs
from adapruner.config import CONFIRM_TOKENS_FACTOR, SearchJob
from adapruner.errors import UserError
from adapruner.evaluate import count_parameters, measure_speed
from adapruner.models import LoadedModel, load_model, release_memory
from adapruner.pipeline import build_report, eval_texts, evaluate_model, recover_pruned, save_result
from adapruner.prune import apply_plan, plan_model, remove_planned_blocks
from adapruner.prune.depth import BlockScores, fixed_batch
from adapruner.prune.plan import PlanError
from adapruner.search.cache import (
    POOLED_APPROXIMATE,
    POOLED_GRADIENT,
    PoolStats,
    choose_samples,
    load_pools,
    pool_passes,
    pool_tokens,
    pooled_scores,
)
from adapruner.search.objective import Observation, Validation, observe, validation_chunks
from adapruner.search.optimizer import BayesOptimizer
from adapruner.search.space import Recipe, decode, dims
from adapruner.stats import collect_statistics

STATE_NAME = "search_state.json"
# The trial record field of each second objective (it enters the GP as a logarithm).
SECOND_FIELD = {"latency": "latency_s", "params": "non_embedding_params"}
DEFAULT_CACHE = Path.home() / ".cache" / "adapruner" / "stats"
# What a failed trial's error means, for people (the trial record's ``failure``).
FAILURES = {"PlanError": "infeasible", "OutOfMemoryError": "out of memory", "FloatingPointError": "numerical"}

Progress = Callable[[str, int, int], None]
TrialHook = Callable[[dict[str, Any]], None]


class SearchStateError(UserError):
    """The output folder holds the state of a different search."""


@dataclass
class SearchOutcome:
    model: Any
    tokenizer: Any
    report: dict[str, Any]


def check_poolable(metrics: tuple[str, ...]) -> None:
    """Every searched metric must be computable from the pooled statistics."""
    for name in metrics:
        needs = METRICS.get(name).needs
        if needs - {"act"} and name not in POOLED_GRADIENT and name not in POOLED_APPROXIMATE:
            raise UserError(f"space.metrics: {name!r} cannot be combined from cached statistics yet")


def prune_recipe(
    loaded: LoadedModel,
    pools: Mapping[int, PoolStats],
    recipe: Recipe,
    *,
    ratio: float,
    targets: tuple[str, ...],
    seed: int,
    blocks: Callable[[str], torch.Tensor] | None = None,
) -> tuple[Any, list[str]]:
    """A pruned copy of ``loaded.model`` for ``recipe``; returns it with the calibration sample ids.
    ``pools`` holds one pool of statistics per calibration window length; the recipe's ``seq_len`` picks.
    ``blocks(criterion)`` gives the dense model's block scores ``[n_layers]`` when the recipe removes
    whole blocks (``depth_share > 0``): a :class:`~adapruner.prune.depth.BlockScores` shared by every
    trial of a search, computed once per criterion on a fixed calibration batch (not on the trial's
    samples: one-shot block criteria such as PPL cost a forward pass per block)."""
    pool = pools[recipe.seq_len]
    dense_adapter = get_adapter(loaded.model)
    ids = choose_samples(pool, weights=recipe.source_weights, n=recipe.samples, subset_seed=recipe.subset_seed)
    scores = pooled_scores(
        dense_adapter,
        pool,
        ids,
        mix=recipe.mix,
        aggregation=recipe.aggregation,
        normalization=recipe.normalization,
        kinds=targets,
        seed=seed,
    )
    plan = plan_model(
        dense_adapter,
        params_before=count_parameters(loaded.model, non_embedding=True),
        config=recipe.prune_config(ratio=ratio, targets=targets),
        block_scores=blocks,
    )
    model = copy.deepcopy(loaded.model)
    adapter = get_adapter(model)
    compensator = build_compensator(recipe.compensate)
    targets, stats = [], None
    if compensator.needs:  # the dense model's statistics of the chosen samples (one forward pass)
        targets = pruned_inputs(adapter, scores, plan)
        stats = collect_statistics(dense_adapter, pool_tokens(pool, ids), needs=compensator.needs)
    apply_plan(adapter, scores, plan, drop_blocks=False)
    compensator(adapter, targets, stats)
    remove_planned_blocks(adapter, plan)  # after compensation, which addresses the dense layer indices
    return model, ids


def second_value(model, job: SearchJob) -> dict[str, float]:
    """The non-embedding parameter count of ``model`` and, when the second objective is latency, its
    median forward latency (seconds) on ``latency_batch`` x ``latency_seq_len`` seeded random tokens."""
    search = job.search
    out: dict[str, float] = {"non_embedding_params": count_parameters(model, non_embedding=True)}
    if search.second_objective == "latency":
        speed = measure_speed(
            model, batch=search.latency_batch, seq_len=search.latency_seq_len, warmup=1, repeats=search.latency_repeats
        )
        out["latency_s"] = speed.latency_s
    return out


def _timed_observe(model, validation: Validation, **kwargs) -> tuple[Observation, float]:
    start = time.perf_counter()
    observation = observe(model, validation, **kwargs)
    return observation, time.perf_counter() - start


def _load_state(path: Path, job: SearchJob) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if SearchJob.model_validate(state["job"]) != job:
        raise SearchStateError(f"{path} holds a different search; use another --out or delete it")
    return state


def _save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def run_search(
    job: SearchJob,
    *,
    out: str | Path,
    loaded: LoadedModel | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
    progress: Progress | None = None,
    on_trial: TrialHook | None = None,
    max_new_trials: int | None = None,
) -> SearchOutcome | None:
    """Run (or resume) the search described by ``job`` into the folder ``out``.

    Every finished trial is written to ``out/search_state.json`` before the next starts; calling again
    with the same job resumes after the last finished trial (a trial that was running is re-run with
    the same parameters). ``max_new_trials`` stops after that many trials in this call and returns
    ``None`` (the search is not finished); otherwise the final model is chosen, saved with its
    report, and returned.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_poolable(job.space.metrics)
    state_path = out / STATE_NAME
    state = _load_state(state_path, job)
    timings: dict[str, float] = dict(state["timings"]) if state else {}
    records: dict[str, dict[str, Any]] = dict(state["records"]) if state else {}

    start = time.perf_counter()
    if loaded is None:
        loaded = load_model(job.model)
    adapter = get_adapter(loaded.model)
    space, search = job.space, job.search
    warm = time.perf_counter()
    pools = load_pools(
        adapter,
        loaded.tokenizer,
        space.sources,
        pool_size=space.pool_size,
        seq_lens=space.seq_lens,
        seed=search.seed,
        cache_dir=cache_dir,
        passes=pool_passes(space.metrics),  # only the backward passes the searched metrics read
        progress=progress,
    )
    timings.setdefault("warmup_s", round(time.perf_counter() - warm, 3))
    # Block scores for depth pruning: once per criterion, on first use, on a fixed batch of the pool.
    blocks = BlockScores(adapter, lambda: fixed_batch(pools[space.seq_lens[0]].tokens))
    validation = validation_chunks(
        loaded.tokenizer,
        search.validation,
        tokens_per_domain=search.validation_tokens,
        chunk_tokens=search.chunk_tokens,
        seq_len=search.eval_seq_len,
    )
    dense_obs, dense_s = _timed_observe(loaded.model, validation, reference=[0.0] * len(validation.chunks))
    timings["validation_pass_s"] = round(dense_s, 3)  # one validation pass of the dense model: the cost unit

    if state:
        optimizer = BayesOptimizer.from_state(state["optimizer"])
    else:
        optimizer = BayesOptimizer(
            dims(space),
            seed=search.seed,
            n_init=search.n_init,
            acq_restarts=search.acq_restarts,
            raw_samples=search.raw_samples,
            n_objectives=1 if search.second_objective is None else 2,
        )
    second_field = SECOND_FIELD.get(search.second_objective)

    def incumbent(second: dict[str, float] | None = None) -> dict[str, Any] | None:
        """The best full trial; given a trial's second objective, the best among those no worse in it
        (with two objectives a trial is only stopped early when it is dominated)."""
        full = [r for r in records.values() if r["status"] == "completed" and not r["stopped_early"]]
        if second is not None and second_field:
            full = [r for r in full if r[second_field] <= second[second_field]]
        return min(full, key=lambda r: r["value"]) if full else None

    def finished() -> int:
        return sum(1 for r in records.values() if r["status"] in ("completed", "failed"))

    def out_of_budget() -> bool:
        if finished() >= search.trials:
            return True
        spent = timings.get("trials_s", 0.0) + timings.get("ask_s", 0.0)
        if search.time_budget_s and spent >= search.time_budget_s:
            return True
        if search.patience:
            told = sorted((int(i), r) for i, r in records.items() if r["status"] == "completed")
            values = [r["value"] for _, r in told]
            if len(values) > search.patience and min(values[-search.patience :]) >= min(values[: -search.patience]):
                return True
        return False

    new_trials = 0
    while not out_of_budget() and (max_new_trials is None or new_trials < max_new_trials):
        rerun = [t for t in optimizer.trials() if t.status == "pending"]
        asked = time.perf_counter()
        trial = rerun[0] if rerun else optimizer.ask()
        timings["ask_s"] = round(timings.get("ask_s", 0.0) + time.perf_counter() - asked, 3)  # GP fit + acquisition
        recipe = decode(space, trial.params)
        record: dict[str, Any] = {"index": trial.index, "params": trial.params, "recipe": recipe.as_dict()}
        record |= _recipe_facts(job, recipe, optimizer if trial.generator == "gp" else None)
        t0 = time.perf_counter()
        model = None
        try:
            model, ids = prune_recipe(
                loaded, pools, recipe, ratio=job.ratio, targets=job.targets, seed=search.seed, blocks=blocks
            )
            second = second_value(model, job)
            record["widths"] = get_adapter(model).widths()  # kept KV groups and channels per layer
            best = incumbent(second)
            observation, eval_s = _timed_observe(
                model,
                validation,
                reference=dense_obs.chunk_nlls,
                incumbent=best["chunk_nlls"] if best and search.early_reject else None,
                reject_z=search.reject_z,
                min_fraction=search.min_fraction,
            )
            model = None
            values = [observation.value] + ([math.log(second[second_field])] if second_field else [])
            optimizer.tell(trial.index, value=values, noise=observation.noise, fidelity=observation.fidelity)
            record |= second | {
                "status": "completed",
                "value": observation.value,
                "noise": observation.noise,
                "fidelity": observation.fidelity,
                "stopped_early": observation.stopped_early,
                "chunk_nlls": list(observation.chunk_nlls),
                "validation_ppl": math.exp(observation.value),
                "samples": len(ids),
                "eval_s": round(eval_s, 3),
            }
        except (PlanError, FloatingPointError, torch.OutOfMemoryError) as error:
            # Out of memory says nothing about the recipe's quality: a constraint, not a bad value.
            optimizer.tell(trial.index, value=None, failed=True, infeasible=isinstance(error, torch.OutOfMemoryError))
            failure = FAILURES.get(type(error).__name__, "error")
            record |= {"status": "failed", "failure": failure, "error": f"{type(error).__name__}: {error}"}
        finally:  # the trial's copy (and, after an OOM, whatever its frames held) goes before the next trial
            model = None
            release_memory()
        record["seconds"] = round(time.perf_counter() - t0, 3)
        record["cost_vs_validation_pass"] = round(record["seconds"] / dense_s, 3)
        records[str(trial.index)] = record
        timings["trials_s"] = round(timings.get("trials_s", 0.0) + record["seconds"], 3)
        new_trials += 1
        _save_state(
            state_path,
            {
                "job": job.model_dump(mode="json"),
                "optimizer": optimizer.state_dict(),
                "records": records,
                "timings": timings,
            },
        )
        if on_trial:
            best = incumbent()
            on_trial(
                record | {"best_value": best["value"] if best else None, "finished": finished(), "total": search.trials}
            )

    if max_new_trials is not None and not out_of_budget():
        return None
    return _finish(job, out, loaded, pools, optimizer, records, timings, dense_obs, start, blocks=blocks)


def _relevance(optimizer: BayesOptimizer) -> dict[str, float] | None:
    """The GP's relevance of each searched dimension (inverse lengthscales), or None when it cannot be fitted."""
    try:
        return optimizer.relevance()
    except ValueError:  # no trial is complete
        return None


def _recipe_facts(job: SearchJob, recipe: Recipe, fitted: BayesOptimizer | None) -> dict[str, Any]:
    """Trial-record fields besides the recipe: the prune job that re-runs it (and what that cannot carry
    over) and, for a trial the GP proposed, the GP's relevance of each dimension at that proposal."""
    facts: dict[str, Any] = {}
    try:
        spec, differs = recipe.prune_job(job)
    except ValueError:  # e.g. a calibration source that is also a test text: no prune job can run it
        pass
    else:
        facts["prune_job"] = {"spec": spec.model_dump(mode="json", exclude_defaults=True), "differs": differs}
    if fitted is not None and (relevance := _relevance(fitted)) is not None:
        facts["relevance"] = relevance
    return facts


def _eligible(job: SearchJob, full: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The full trials the artifact may come from: all of them, or with a second objective and
    ``second_cap`` those within the cap (the trial lowest in the second objective when none is); with
    a second objective also how the pick was made, for the report."""
    kind, cap = job.search.second_objective, job.search.second_cap
    if kind is None:
        return full, None
    key = SECOND_FIELD[kind]
    within = full if cap is None else [r for r in full if r[key] <= cap]
    pick = {"second_objective": kind, "field": key, "cap": cap, "cap_met": bool(within)}
    return within or [min(full, key=lambda r: (r[key], r["value"]))], pick


def _pareto(job: SearchJob, optimizer: BayesOptimizer, records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The non-dominated full trials (validation NLL vs the second objective), by validation NLL."""
    key = SECOND_FIELD[job.search.second_objective]
    points = []
    for trial in optimizer.pareto():
        record = records[str(trial.index)]
        points.append(
            {
                "index": trial.index,
                "value": record["value"],
                "validation_ppl": record["validation_ppl"],
                key: record[key],
                "non_embedding_params": record["non_embedding_params"],
                "ratio": job.ratio if record["recipe"].get("ratio") is None else record["recipe"]["ratio"],
            }
        )
    return points


def _finish(
    job: SearchJob,
    out: Path,
    loaded: LoadedModel,
    pools: Mapping[int, PoolStats],
    optimizer: BayesOptimizer,
    records: dict[str, dict[str, Any]],
    timings: dict[str, float],
    dense_obs: Observation,
    start: float,
    *,
    blocks: BlockScores | None = None,
) -> SearchOutcome:
    search = job.search
    full = [r for r in records.values() if r["status"] == "completed" and not r["stopped_early"]]
    if not full:
        raise RuntimeError("no trial completed; see the trial errors in search_state.json")
    means = optimizer.posterior([r["params"] for r in full])
    for record, (mean, std) in zip(full, means, strict=True):
        record["posterior_mean"], record["posterior_std"] = mean, std
    eligible, pick = _eligible(job, full)
    top = sorted(eligible, key=lambda r: r["posterior_mean"])[: search.top_k]
    # Confirm the top few on more validation text (the search chunks and, where there is more, more).
    more = validation_chunks(
        loaded.tokenizer,
        search.validation,
        tokens_per_domain=CONFIRM_TOKENS_FACTOR * search.validation_tokens,
        chunk_tokens=search.chunk_tokens,
        seq_len=search.eval_seq_len,
    )
    texts = eval_texts(loaded.tokenizer, job.evaluate)
    candidates = []
    for record in top:
        recipe = Recipe(**record["recipe"])
        model, ids = prune_recipe(
            loaded, pools, recipe, ratio=job.ratio, targets=job.targets, seed=search.seed, blocks=blocks
        )
        confirm = statistics.fmean(observe(model, more, reference=[0.0] * len(more.chunks)).chunk_nlls)
        candidates.append((confirm, record, model, ids))
    candidates.sort(key=lambda c: c[0])
    confirm_value, best, model, ids = candidates[0]

    eval_start = time.perf_counter()
    dense_eval = evaluate_model(loaded.model, texts, job.evaluate, tokenizer=loaded.tokenizer)
    recovery = None
    if job.recover.enabled:  # the best trial only; its test PPL before recovery is kept for the agreement
        model, recovery = recover_pruned(model, loaded.tokenizer, job.recover, texts=texts, evaluate=job.evaluate)
    pruned_eval = evaluate_model(model, texts, job.evaluate, tokenizer=loaded.tokenizer)
    # Validation vs test for every confirmed candidate (report only: the choice is already made).
    agreement = []
    no_speed = job.evaluate.model_copy(update={"speed": False, "zero_shot": ()})
    for value, record, candidate, _ in candidates:
        if record is best:
            test_ppl = recovery["perplexity_before"] if recovery else pruned_eval["perplexity"]
        else:
            test_ppl = evaluate_model(candidate, texts, no_speed)["perplexity"]
        agreement.append(
            {
                "index": record["index"],
                "validation_ppl": math.exp(value),
                "test_ppl": {label: test_ppl[label] for label in texts},
            }
        )
    timings["final_eval_s"] = round(time.perf_counter() - eval_start, 3)
    timings["total_s"] = round(time.perf_counter() - start, 3)

    trials = [records[k] for k in sorted(records, key=int)]
    done = [r for r in trials if r["status"] == "completed"]
    facts = {
        "calibration_samples": ids,
        "widths": get_adapter(model).widths(),
        "best": {
            "index": best["index"],
            "recipe": best["recipe"],
            "validation_ppl": math.exp(best["value"]),
            "confirmed_validation_ppl": math.exp(confirm_value),
            "posterior_mean": best["posterior_mean"],
        },
        "trials": trials,
        "validation_vs_test": agreement,
        "dense_validation_ppl": math.exp(dense_obs.value),
        "trial_cost": {
            "validation_pass_s": timings["validation_pass_s"],
            "warmup_s": timings["warmup_s"],
            "ask_s": timings.get("ask_s", 0.0),  # the optimiser's proposals, all trials together
            # per source and calibration window length (one pool each)
            "warmup_passes_per_source": timings["warmup_s"]
            / timings["validation_pass_s"]
            / (len(job.space.sources) * len(job.space.seq_lens)),
            "mean_trial_vs_pass": statistics.fmean(r["cost_vs_validation_pass"] for r in done) if done else None,
            "max_full_trial_vs_pass": max(
                (r["cost_vs_validation_pass"] for r in done if not r["stopped_early"]), default=None
            ),
            "stopped_early": sum(1 for r in done if r["stopped_early"]),
        },
    }
    if (relevance := _relevance(optimizer)) is not None:
        facts["relevance"] = {"method": "GP kernel inverse lengthscales", "values": relevance}
    if pick is not None:
        facts["pick"] = pick
        facts["pareto"] = _pareto(job, optimizer, records)
    if recovery:
        facts["recovery"] = recovery
    report = build_report(
        source=job.model.source,
        ratio_target=job.ratio if best["recipe"].get("ratio") is None else best["recipe"]["ratio"],
        config=job.model_dump(mode="json"),
        dense=dense_eval,
        pruned=pruned_eval,
        facts=facts,
        timings=timings,
    )
    save_result(model, loaded.tokenizer, out, job=job, report=report)
    return SearchOutcome(model, loaded.tokenizer, report)
