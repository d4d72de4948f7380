"""The AdaPruner search: Bayesian optimisation over calibration data x metric mix x allocation.

Warm-up collects per-sample statistics of a candidate calibration pool once (cached on disk); every
trial then combines cached statistics for its samples and metric weights, prunes the model in place
(restored afterwards, :func:`~adapruner.search.trial.trial_model`) and reads validation text chunk by
chunk (stopping early when clearly worse than the incumbent). The final choice is the GP's
posterior-mean best, confirmed on more validation text among the top few (one pruned model at a time);
only then is the held-out test text read, for the report.

With ``search.second_objective`` (latency or non-embedding parameters, measured on every trial) the
search is multi-objective: a trial stops early only against a full trial no worse in the second
objective, the report adds the Pareto front (``pareto``) and how the artifact was picked (``pick``: the
best-quality trial within ``search.second_cap``, if given).

The state between trials goes through a :class:`~adapruner.search.store.SearchStore`: by default a file
in the output folder (:class:`~adapruner.search.store.FileStore`), in the service the worker's database.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapruner.adapters import get_adapter
from adapruner.config import CONFIRM_TOKENS_FACTOR, SearchJob
from adapruner.errors import UserError
from adapruner.evaluate import count_parameters, measure_speed
from adapruner.models import LoadedModel, load_model, release_memory
from adapruner.pipeline import eval_texts, evaluate_model, recover_pruned
from adapruner.prune.depth import BlockScores, fixed_batch
from adapruner.prune.plan import PlanError
from adapruner.report import build_report, save_result
from adapruner.search.cache import PoolStats, check_poolable, load_pools, pool_passes
from adapruner.search.executor import InlineExecutor, LocalExecutor, TrialExecutor, TrialTask, incumbents
from adapruner.search.objective import Observation, Validation, observe, validation_chunks
from adapruner.search.optimizer import BayesOptimizer, Strategy, Trial
from adapruner.search.records import FAILURES, SECOND_FIELD, SearchState, TrialDone, TrialRecord
from adapruner.search.baseline import fixed_baseline
from adapruner.search.space import Recipe, decode, fixed_params
from adapruner.search.store import STATE_NAME, FileStore, SearchStateError, SearchStore
from adapruner.search.strategies import make_strategy, strategy_from_state
from adapruner.search.trial import trial_model

__all__ = [
    "DEFAULT_CACHE",
    "FAILURES",
    "SECOND_FIELD",
    "STATE_NAME",
    "NoTrialCompleted",
    "SearchOutcome",
    "SearchRun",
    "SearchStateError",
    "TrialContext",
    "prune_recipe",
    "run_one",
    "run_search",
    "second_value",
]

DEFAULT_CACHE = Path.home() / ".cache" / "adapruner" / "stats"

Progress = Callable[[str, int, int], None]
TrialHook = Callable[[TrialDone], None]
ExecutorFactory = Callable[["SearchRun"], TrialExecutor]


class NoTrialCompleted(UserError, RuntimeError):
    """No trial of the search completed on all its validation chunks, so there is nothing to pick; the
    message names the trials' errors. Also a ``RuntimeError``, as it was before it was a user error."""


@dataclass
class SearchOutcome:
    model: Any
    tokenizer: Any
    report: dict[str, Any]


@dataclass
class Candidate:
    """A top trial confirmed on more validation text: its confirmed NLL and its test perplexity per text."""

    record: TrialRecord
    confirm_value: float
    test_ppl: dict[str, float]


def prune_recipe(loaded: LoadedModel, pools, recipe: Recipe, **kwargs) -> tuple[Any, list[str]]:
    """A pruned copy of ``loaded.model`` for ``recipe`` (``loaded`` stays dense) and its calibration sample
    ids; the keywords are :func:`~adapruner.search.trial.trial_model`'s. For callers that keep the model."""
    with trial_model(loaded, pools, recipe, **kwargs) as trial:
        return copy.deepcopy(trial.model), trial.sample_ids


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


@dataclass
class TrialContext:
    """What a trial runs on, built once per process and kept between its trials: the job, the dense
    model, the pools of per-sample statistics (one per calibration window length), the block scores for
    depth pruning and the validation chunks."""

    job: SearchJob
    loaded: LoadedModel
    pools: dict[int, PoolStats]
    blocks: BlockScores
    validation: Validation

    @classmethod
    def build(
        cls,
        job: SearchJob,
        *,
        loaded: LoadedModel | None = None,
        cache_dir: str | Path | None,
        progress: Progress | None = None,
    ) -> TrialContext:
        """Load the model (unless given) and the pools: read from ``cache_dir`` (keyed by the model's
        fingerprint) when a process of the same search has collected them, else collected here."""
        space, search = job.space, job.search
        loaded = load_model(job.model) if loaded is None else loaded
        adapter = get_adapter(loaded.model)
        pools = load_pools(
            adapter,
            loaded.tokenizer,
            space.sources,
            pool_size=space.pool_size,
            seq_lens=space.seq_lens,
            seed=search.seed,
            cache_dir=None if cache_dir is None else Path(cache_dir),
            passes=pool_passes(space.metrics),  # only the backward passes the searched metrics read
            progress=progress,
        )
        # Block scores for depth pruning: once per criterion, on first use, on a fixed batch of the pool.
        blocks = BlockScores(adapter, lambda: fixed_batch(pools[space.seq_lens[0]].tokens))
        return cls(job, loaded, pools, blocks, job_validation(job, loaded.tokenizer, search.validation_tokens))

    def trial_model(self, recipe: Recipe, *, keep: bool = False):
        """:func:`~adapruner.search.trial.trial_model` of ``recipe`` on this context's model."""
        job = self.job
        return trial_model(
            self.loaded,
            self.pools,
            recipe,
            ratio=job.ratio,
            targets=job.targets,
            seed=job.search.seed,
            blocks=self.blocks,
            keep=keep,
        )


def job_validation(job: SearchJob, tokenizer, tokens_per_domain: int) -> Validation:
    """The search's validation text, ``tokens_per_domain`` per domain, in early-stop chunks."""
    search = job.search
    return validation_chunks(
        tokenizer,
        search.validation,
        tokens_per_domain=tokens_per_domain,
        chunk_tokens=search.chunk_tokens,
        seq_len=search.eval_seq_len,
    )


def run_one(context: TrialContext, task: TrialTask) -> TrialRecord:
    """Prune in place, observe, restore: one trial's record (failed if it could not run). It tells the
    optimiser nothing: the driver does, from the record, wherever the trial ran."""
    recipe = decode(context.job.space, task.params)
    record = TrialRecord(index=task.index, params=task.params, recipe=recipe.as_dict())
    t0 = time.perf_counter()
    try:
        with context.trial_model(recipe) as pruned:
            _measure(context, task, record, pruned.model, samples=len(pruned.sample_ids))
    except (PlanError, FloatingPointError, torch.OutOfMemoryError) as error:
        # Out of memory says nothing about the recipe's quality: a constraint, not a bad value (see _tell).
        record.fail(error)
    finally:  # the trial's pruned tensors (and, after an OOM, whatever its frames held) go before the next
        release_memory()
    record.seconds = round(time.perf_counter() - t0, 3)
    return record


def _measure(context: TrialContext, task: TrialTask, record: TrialRecord, model, *, samples: int) -> None:
    """The pruned ``model``'s objectives, written into ``record``."""
    job = context.job
    search = job.search
    second = second_value(model, job)
    record.widths = get_adapter(model).widths()  # kept KV groups and channels per layer
    best = task.incumbent(second, search.second_objective)
    observation, eval_s = _timed_observe(
        model,
        context.validation,
        reference=task.reference,
        incumbent=best if search.early_reject else None,
        reject_z=search.reject_z,
        min_fraction=search.min_fraction,
    )
    record.non_embedding_params = second["non_embedding_params"]
    record.latency_s = second.get("latency_s")
    record.status = "completed"
    record.value, record.noise, record.fidelity = observation.value, observation.noise, observation.fidelity
    record.stopped_early = observation.stopped_early
    record.chunk_nlls = list(observation.chunk_nlls)
    record.validation_ppl = math.exp(observation.value)
    record.samples = samples
    record.eval_s = round(eval_s, 3)


def run_search(
    job: SearchJob,
    *,
    out: str | Path,
    store: SearchStore | None = None,
    loaded: LoadedModel | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
    progress: Progress | None = None,
    on_trial: TrialHook | None = None,
    max_new_trials: int | None = None,
    consume: bool = False,
    executor: ExecutorFactory | None = None,
) -> SearchOutcome | None:
    """Run (or resume) the search described by ``job``; the final model and its report go to ``out``.

    Every finished trial is committed to ``store`` (default: ``out/search_state.json``) before the next
    starts; calling again with the same job and store resumes after the last finished trial (a trial
    that was running is re-run with the same parameters). ``max_new_trials`` stops after that many
    trials in this call and returns ``None`` (the search is not finished); otherwise the final model is
    chosen, saved with its report, and returned. A ``loaded`` model passed in is left dense (the final
    model is a pruned copy) unless ``consume`` gives it to the search; one loaded here, or consumed, is
    pruned in place for the final model (one model in memory).

    ``search.parallel`` trials run at once: by default in local worker processes (:class:`LocalExecutor`);
    ``executor(run)`` gives a host's own (the service's worker pool).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_poolable(job.space.metrics)
    store = FileStore(out, job) if store is None else store
    run = SearchRun.start(job, store, loaded=loaded, cache_dir=cache_dir, progress=progress, consume=consume)
    run.run_trials(on_trial=on_trial, max_new_trials=max_new_trials, executor=executor)
    if max_new_trials is not None and not run.out_of_budget():
        return None
    return run.finish(out)


class SearchRun:
    """One call's run of a search: the warmed-up model and pools, the optimizer and the state so far."""

    def __init__(self, job: SearchJob, store: SearchStore, state: SearchState, loaded: LoadedModel, *, own: bool):
        self.job, self.store, self.state, self.loaded = job, store, state, loaded
        self.own = own  # the model was loaded here: the final model may be pruned in place
        self.given: LoadedModel | None = None  # the caller's model (local trial workers copy it)
        self.start_time = time.perf_counter()
        self.optimizer = self._optimizer()
        self.facts: dict[int, TrialRecord] = {}  # per trial in flight: what was noted at its proposal

    @classmethod
    def start(
        cls,
        job: SearchJob,
        store: SearchStore,
        *,
        loaded: LoadedModel | None,
        cache_dir: Path | None,
        progress: Progress | None,
        consume: bool = False,
    ) -> SearchRun:
        """Load the state and the model and warm up: pools, block scores, the dense validation pass."""
        state = store.load() or SearchState(job)
        own = loaded is None or consume
        run = cls(job, store, state, load_model(job.model) if loaded is None else loaded, own=own)
        run.given = loaded
        run.warm_up(cache_dir=cache_dir, progress=progress)
        return run

    def _optimizer(self) -> Strategy:
        """The saved strategy, else ``search.strategy`` afresh (told the warm start's priors)."""
        if self.state.optimizer is not None:
            return strategy_from_state(self.state.optimizer)
        strategy = make_strategy(self.job)
        if self.job.search.fixed_recipe and (params := fixed_params(self.job)) is not None:
            strategy.enqueue(params)  # the first trial: the best fixed recipe measured, prune's default
        return strategy

    # ---- warm-up ---------------------------------------------------------------------------------
    def warm_up(self, *, cache_dir: Path | None, progress: Progress | None) -> None:
        """The trial context (pools of per-sample statistics, one per calibration window length, written
        to ``cache_dir`` for other processes of the search; block scores for depth pruning; validation
        chunks) and the dense model's validation pass (the early stop's reference, the cost unit of a trial)."""
        timings = self.state.timings
        warm = time.perf_counter()
        self.context = TrialContext.build(self.job, loaded=self.loaded, cache_dir=cache_dir, progress=progress)
        self.cache_dir = cache_dir
        timings.setdefault("warmup_s", round(time.perf_counter() - warm, 3))
        self.pools, self.blocks, self.validation = self.context.pools, self.context.blocks, self.context.validation
        chunks = len(self.validation.chunks)
        self.dense_obs, self.dense_s = _timed_observe(self.loaded.model, self.validation, reference=[0.0] * chunks)
        timings["validation_pass_s"] = round(self.dense_s, 3)  # one validation pass of the dense model

    def _validation(self, tokens_per_domain: int) -> Validation:
        return job_validation(self.job, self.loaded.tokenizer, tokens_per_domain)

    def _trial_model(self, recipe: Recipe, *, keep: bool = False):
        return self.context.trial_model(recipe, keep=keep)

    # ---- trials ----------------------------------------------------------------------------------
    def executor(self) -> TrialExecutor:
        """Where this search's trials run without a host's executor: in this process when
        ``search.parallel`` is 1, else in that many local worker processes."""
        workers = self.job.search.parallel
        if workers == 1:
            return InlineExecutor(self.context, run_one)
        return LocalExecutor(self.job, workers=workers, cache_dir=self.cache_dir, model=self.given)

    def run_trials(
        self,
        *,
        on_trial: TrialHook | None = None,
        max_new_trials: int | None = None,
        executor: ExecutorFactory | None = None,
    ) -> None:
        """Run trials until the budget is spent (or ``max_new_trials`` ran), committing each as it comes
        back: up to the executor's capacity (``search.parallel`` at most) run at once. The trials that
        were running when an earlier call stopped (pending in the optimiser) are re-issued first; a trial
        reported twice is recorded once."""
        pool = executor(self) if executor is not None else self.executor()
        in_flight: set[int] = set()
        new_trials = 0
        try:
            while self._fill(pool, in_flight, new_trials, max_new_trials):
                waited = time.perf_counter()
                records = pool.wait()
                self._add_time("trials_s", time.perf_counter() - waited)  # wall time: trials overlap
                for record in records:
                    if record.index not in in_flight or record.index in self.state.records:
                        continue  # reported twice: recorded once
                    in_flight.discard(record.index)
                    self._record(record)
                    new_trials += 1
                    if on_trial:
                        on_trial(self.state.done(record))
        finally:
            pool.close()

    def _fill(self, pool: TrialExecutor, in_flight: set[int], new_trials: int, max_new_trials: int | None) -> bool:
        """Submit trials while the executor has room and the budgets allow; whether any is in flight."""
        while self._may_start(in_flight, new_trials, max_new_trials) and len(in_flight) < pool.capacity(len(in_flight)):
            task = self._next_task(in_flight)
            in_flight.add(task.index)
            pool.submit(task)
        return bool(in_flight)

    def _may_start(self, in_flight: set[int], new_trials: int, max_new_trials: int | None) -> bool:
        """Whether one more trial may start with ``in_flight`` running: within the budgets, counting them."""
        if max_new_trials is not None and new_trials + len(in_flight) >= max_new_trials:
            return False
        if self.state.finished() + len(in_flight) >= self.job.search.trials:
            return False
        return not self.out_of_budget()

    def out_of_budget(self) -> bool:
        """The trial budget, the time budget (trials and the optimiser's proposals) or the patience is spent."""
        search, state, timings = self.job.search, self.state, self.state.timings
        if state.finished() >= search.trials:
            return True
        spent = timings.get("trials_s", 0.0) + timings.get("ask_s", 0.0)
        if search.time_budget_s and spent >= search.time_budget_s:
            return True
        if search.patience:
            values = [r.value for r in state.trials() if r.status == "completed"]
            if len(values) > search.patience and min(values[-search.patience :]) >= min(values[: -search.patience]):
                return True
        return False

    def _add_time(self, name: str, seconds: float) -> None:
        timings = self.state.timings
        timings[name] = round(timings.get(name, 0.0) + seconds, 3)

    def _ask(self, in_flight: set[int]) -> Trial:
        """A trial that was running when an earlier call stopped (pending, not in flight now), else the
        optimizer's next proposal (with the trials in flight as pending points)."""
        rerun = [t for t in self.optimizer.trials() if t.status == "pending" and t.index not in in_flight]
        asked = time.perf_counter()
        trial = rerun[0] if rerun else self.optimizer.ask()
        self._add_time("ask_s", time.perf_counter() - asked)  # GP fit + acquisition
        return trial

    def _next_task(self, in_flight: set[int]) -> TrialTask:
        """Ask, and note the facts of the proposal (its prune job; the GP's relevance at the proposal)."""
        trial = self._ask(in_flight)
        recipe = decode(self.job.space, trial.params)
        facts = TrialRecord(index=trial.index, params=trial.params, recipe=recipe.as_dict())
        self._recipe_facts(facts, recipe, self.optimizer if trial.generator == "gp" else None)
        self.facts[trial.index] = facts
        done = self.state.records.values()
        return TrialTask(
            trial.index,
            trial.params,
            list(self.dense_obs.chunk_nlls),
            incumbents(list(done), self.job.search.second_objective),
        )

    def _record(self, record: TrialRecord) -> None:
        """A finished trial: told to the optimiser, with its proposal's facts and cost, committed."""
        facts = self.facts.pop(record.index, None)
        if facts is not None:
            record.prune_job, record.relevance = facts.prune_job, facts.relevance
        record.cost_vs_validation_pass = round(record.seconds / self.dense_s, 3)
        self._tell(record)
        self.state.records[record.index] = record
        self.state.optimizer = self.optimizer.state_dict()
        self.store.commit(self.state, record)

    def _tell(self, record: TrialRecord) -> None:
        """The optimiser told a trial's outcome, read from its record."""
        if record.status == "failed":
            infeasible = record.failure == FAILURES["OutOfMemoryError"]
            self.optimizer.tell(record.index, value=None, failed=True, infeasible=infeasible)
            return
        field = SECOND_FIELD.get(self.job.search.second_objective)
        values = [record.value] + ([math.log(getattr(record, field))] if field else [])
        self.optimizer.tell(record.index, value=values, noise=record.noise, fidelity=record.fidelity)

    def _recipe_facts(self, record: TrialRecord, recipe: Recipe, fitted: BayesOptimizer | None) -> None:
        """Record fields besides the recipe: the prune job that re-runs it (and what that cannot carry over)
        and, for a trial the GP proposed, the GP's relevance of each dimension at that proposal."""
        try:
            spec, differs = recipe.prune_job(self.job)
        except ValueError:  # e.g. a calibration source that is also a test text: no prune job can run it
            pass
        else:
            record.prune_job = {"spec": spec.model_dump(mode="json", exclude_defaults=True), "differs": differs}
        if fitted is not None:
            record.relevance = _relevance(fitted)

    # ---- the final pick --------------------------------------------------------------------------
    def pick(self) -> tuple[list[TrialRecord], dict[str, Any] | None]:
        """The top few eligible full trials by the GP's posterior mean (every full trial gets its posterior
        mean and std), and with a second objective how the pick was made."""
        full = [r for r in self.state.trials() if r.full]
        if not full:
            raise NoTrialCompleted(_no_trial_message(self.state.trials()))
        means = self.optimizer.posterior([r.params for r in full])
        for record, (mean, std) in zip(full, means, strict=True):
            record.posterior_mean, record.posterior_std = mean, std
        eligible, pick = _eligible(self.job, full)
        return sorted(eligible, key=lambda r: r.posterior_mean)[: self.job.search.top_k], pick

    def confirm(self, top: list[TrialRecord], texts: dict[str, torch.Tensor]) -> list[Candidate]:
        """Each top trial pruned again, one at a time, and read on more validation text (the search's chunks
        and, where there is more, more) and on the test texts (for the report's validation-vs-test
        agreement only: the choice is made on validation text); best confirmed first."""
        more = self._validation(CONFIRM_TOKENS_FACTOR * self.job.search.validation_tokens)
        no_speed = self.job.evaluate.perplexity_only()
        candidates = []
        for record in top:
            with self._trial_model(Recipe(**record.recipe)) as pruned:
                nlls = observe(pruned.model, more, reference=[0.0] * len(more.chunks)).chunk_nlls
                test_ppl = evaluate_model(pruned.model, texts, no_speed)["perplexity"]
            candidates.append(Candidate(record, statistics.fmean(nlls), test_ppl))
            release_memory()
        return sorted(candidates, key=lambda c: c.confirm_value)

    def final_model(self, recipe: Recipe) -> tuple[Any, list[str]]:
        """The pruned model of ``recipe`` and its sample ids: the loaded model itself when it was loaded
        here (pruned in place for good), else a pruned copy (the caller's model stays dense)."""
        if not self.own:
            return prune_recipe(
                self.loaded,
                self.pools,
                recipe,
                ratio=self.job.ratio,
                targets=self.job.targets,
                seed=self.job.search.seed,
                blocks=self.blocks,
            )
        with self._trial_model(recipe, keep=True) as pruned:
            return pruned.model, pruned.sample_ids

    def finish(self, out: Path) -> SearchOutcome:
        """Pick, confirm, evaluate the dense and the chosen model (recovered when the job says), report, save."""
        job, timings, tokenizer = self.job, self.state.timings, self.loaded.tokenizer
        top, pick = self.pick()
        texts = eval_texts(tokenizer, job.evaluate)
        candidates = self.confirm(top, texts)
        best = candidates[0]
        fixed = None
        if job.search.fixed_recipe:  # on the dense model, before the final model is pruned (in place)
            fixed = fixed_baseline(self.loaded, job, texts)
            fixed.search_test_ppl = best.test_ppl
            timings["fixed_s"] = fixed.seconds
        eval_start = time.perf_counter()
        dense_eval = evaluate_model(self.loaded.model, texts, job.evaluate, tokenizer=tokenizer)
        model, ids = self.final_model(Recipe(**best.record.recipe))
        recovery = None
        if job.recover.enabled:  # the best trial only
            model, recovery = recover_pruned(model, tokenizer, job.recover, texts=texts, evaluate=job.evaluate)
        pruned_eval = evaluate_model(model, texts, job.evaluate, tokenizer=tokenizer)
        timings["final_eval_s"] = round(time.perf_counter() - eval_start, 3)
        timings["total_s"] = round(time.perf_counter() - self.start_time, 3)
        facts = self._facts(best, candidates, ids, get_adapter(model).widths(), pick)
        if recovery:
            facts["recovery"] = recovery
        if fixed is not None:
            facts["fixed"] = fixed.as_dict()
        report = build_report(
            source=job.model.source,
            ratio_target=_ratio(job, best.record),
            config=job.model_dump(mode="json"),
            dense=dense_eval,
            pruned=pruned_eval,
            facts=facts,
            timings=timings,
        )
        save_result(model, tokenizer, out, job=job, report=report)
        return SearchOutcome(model, tokenizer, report)

    # ---- the report ------------------------------------------------------------------------------
    def _facts(
        self,
        best: Candidate,
        candidates: list[Candidate],
        ids: list[str],
        widths: list[dict[str, int]],
        pick: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The search's part of the report: the best trial, every trial, validation vs test, the cost."""
        record = best.record
        facts: dict[str, Any] = {
            "calibration_samples": ids,
            "widths": widths,
            "best": {
                "index": record.index,
                "recipe": record.recipe,
                "validation_ppl": math.exp(record.value),
                "confirmed_validation_ppl": math.exp(best.confirm_value),
                "posterior_mean": record.posterior_mean,
            },
            "trials": [r.as_dict() for r in self.state.trials()],
            "validation_vs_test": [
                {"index": c.record.index, "validation_ppl": math.exp(c.confirm_value), "test_ppl": c.test_ppl}
                for c in candidates
            ],
            "dense_validation_ppl": math.exp(self.dense_obs.value),
            "trial_cost": _trial_cost(self.job, self.state),
        }
        if (relevance := _relevance(self.optimizer)) is not None:
            facts["relevance"] = {"method": "GP kernel inverse lengthscales", "values": relevance}
        if pick is not None:
            facts["pick"] = pick
            facts["pareto"] = _pareto(self.job, self.optimizer, self.state)
        return facts


def _ratio(job: SearchJob, record: TrialRecord) -> float:
    """The pruning ratio of a trial: the one it searched, else the job's."""
    return job.ratio if record.recipe.get("ratio") is None else record.recipe["ratio"]


def _no_trial_message(records: list[TrialRecord], shown: int = 3) -> str:
    """Why there is nothing to pick: the failed trials' errors (the first few distinct ones)."""
    errors = list(dict.fromkeys(r.error for r in records if r.status == "failed"))
    if not errors:
        return f"no trial completed: all {len(records)} trials stopped early"
    more = f"; and {len(errors) - shown} more" if len(errors) > shown else ""
    failed = sum(1 for r in records if r.status == "failed")
    return f"no trial completed: {failed} of {len(records)} trials failed: " + "; ".join(errors[:shown]) + more


def _trial_cost(job: SearchJob, state: SearchState) -> dict[str, Any]:
    """What the trials cost, in units of one validation pass of the dense model."""
    timings = state.timings
    done = [r for r in state.trials() if r.status == "completed"]
    return {
        "validation_pass_s": timings["validation_pass_s"],
        "warmup_s": timings["warmup_s"],
        "ask_s": timings.get("ask_s", 0.0),  # the optimiser's proposals, all trials together
        # per source and calibration window length (one pool each)
        "warmup_passes_per_source": timings["warmup_s"]
        / timings["validation_pass_s"]
        / (len(job.space.sources) * len(job.space.seq_lens)),
        "mean_trial_vs_pass": statistics.fmean(r.cost_vs_validation_pass for r in done) if done else None,
        "max_full_trial_vs_pass": max((r.cost_vs_validation_pass for r in done if not r.stopped_early), default=None),
        "stopped_early": sum(1 for r in done if r.stopped_early),
    }


def _relevance(optimizer: Strategy) -> dict[str, float] | None:
    """The GP's relevance of each searched dimension (inverse lengthscales), or None when it cannot be fitted."""
    try:
        return optimizer.relevance()
    except ValueError:  # no trial is complete
        return None


def _eligible(job: SearchJob, full: list[TrialRecord]) -> tuple[list[TrialRecord], dict[str, Any] | None]:
    """The full trials the artifact may come from: all of them, or with a second objective and
    ``second_cap`` those within the cap (the trial lowest in the second objective when none is); with
    a second objective also how the pick was made, for the report."""
    kind, cap = job.search.second_objective, job.search.second_cap
    if kind is None:
        return full, None
    within = full if cap is None else [r for r in full if r.second(kind) <= cap]
    pick = {"second_objective": kind, "field": SECOND_FIELD[kind], "cap": cap, "cap_met": bool(within)}
    return within or [min(full, key=lambda r: (r.second(kind), r.value))], pick


def _pareto(job: SearchJob, optimizer: Strategy, state: SearchState) -> list[dict[str, Any]]:
    """The non-dominated full trials (validation NLL vs the second objective), by validation NLL."""
    kind = job.search.second_objective
    points = []
    for trial in optimizer.pareto():
        record = state.records[trial.index]
        points.append(
            {
                "index": trial.index,
                "value": record.value,
                "validation_ppl": record.validation_ppl,
                SECOND_FIELD[kind]: record.second(kind),
                "non_embedding_params": record.non_embedding_params,
                "ratio": _ratio(job, record),
            }
        )
    return points
