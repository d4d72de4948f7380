"""Search efficiency benchmark (issue 21): the search against strong fixed recipes, the strategies against
each other with and without a warm start, and parallel scaling.

Texts: the three built-in corpora. For each target domain the objective (``search.validation``) is its
validation partition and the report its test partition, never used to choose. Settings: ``in-domain``
(the calibration pool holds the train partitions of all three corpora, the target's included) and
``lodo`` (leave-one-domain-out: the other two corpora's train partitions only).

- Strong fixed baselines, per setting and target: every data-aware metric (and the magnitude ones,
  without compensation) pruning MLP channels only with each compensator, on ``--fixed-samples`` samples
  of the search's candidate pool (the even mix of the setting's sources and, in-domain, the target's
  own train partition); NIRVANA's metric with its own allocation (one ``prune`` job each); LLM-Pruner's
  published setting (Taylor over heads and channels, blocks 4..-2, 10 x 64 tokens). The best one on the
  validation text is reported on the test text.
- Searches: ``--strategies`` cold and ``--warm-strategies`` warm on the first setting's first seed,
  ``--seed-strategies`` on its other seeds, ``--setting-strategies`` in the other settings (all by default);
  after k trials the incumbent is the best full trial on validation so far, and only it is read on the
  test text (once per change). A warm start takes the trials of an earlier GP search of the same texts at
  ``--warm-ratio`` (one per seed).
- Parallel scaling: ``search.parallel`` workers (1, 2, 4, 8), trials per hour and final quality; on a
  machine of two cores or fewer on the tiny model.

Every result goes into ``--out``/results.json as it is made; ``--resume`` continues an interrupted run
(and with every result there, only rebuilds the tables). ``--parts`` runs the quality part (dense, fixed
recipes, searches), the scaling part or both; each writes its own section with the command that made it.

    .venv/bin/python bench/search_efficiency.py --write [--resume]          # the issue's whole run: days on 2 CPU cores
    .venv/bin/python bench/search_efficiency.py --quick --out /tmp/se       # the tiny model, under a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import ROOT, provenance, write_section  # noqa: E402
from common import fixed_prune_job, fixed_recipe, geo_mean, search_validation  # noqa: E402
from scale import verdict  # noqa: E402

CORPORA = ("pydoc", "jargon", "gnu-standards")
SETTINGS = ("in-domain", "lodo")
# quality: the dense model, the fixed recipes and the searches; scaling: parallel trials. Each its section.
PARTS = ("quality", "scaling")
PRIOR_SEED = 1000  # a warm start's earlier search draws other Sobol points than the searches it serves
# Targets of issue 21.
FIXED_TARGET, REACH_TARGET, GP_VS_RANDOM_TARGET, LINEAR_TARGET = 0.90, 12, 0.90, 0.85
STEADY_ROUNDS = 3  # the scaling part's steady rate needs two rounds of trials past the first
TARGET_TRIALS = 30  # the trial count the targets are stated for
CURVE_POINTS = (1, 5, 8, 10, 12, 15, 20, 30)
LLM_PRUNER = "LLM-Pruner (taylor, heads+channels, blocks 4..-2, 10 x 64 tokens)"

FULL = dict(
    model="smollm2-135m",
    seeds="0,1,2",
    trials=30,
    strategies="gp,random,tpe,evolution",
    domains=",".join(CORPORA),
    settings=",".join(SETTINGS),
    validation_tokens=8192,
    test_tokens=16_384,
    chunk_tokens=1024,
    eval_seq_len=512,
    pool_size=32,
    samples="8,32",
    seq_len=256,
    metrics="taylor,taylor_vector,wanda,flap,bip,nirvana,numerical",
    magnitude="random,l1,l2",
    compensators="none,bias,reformation,obs,numerical",
    space_metrics="taylor,taylor_vector,wanda,flap,l2,bip,nirvana,numerical",
    space_compensators="none,bias,reformation,obs,numerical",
    n_init=None,
    warm_trials=15,
    workers="1,2,4,8",
    scaling_trials=16,
)
QUICK = FULL | dict(
    model="tiny",
    seeds="0",
    trials=3,
    strategies="gp,random",
    domains="jargon",
    validation_tokens=256,
    test_tokens=256,
    chunk_tokens=64,
    eval_seq_len=64,
    pool_size=4,
    samples="2,4",
    seq_len=64,
    metrics="wanda",
    magnitude="l2",
    compensators="none,bias",
    space_metrics="wanda,flap",
    space_compensators="none,bias",
    n_init=2,
    warm_trials=2,
    workers="1,2",
    scaling_trials=6,  # three rounds of two workers: a steady rate
)
# What a cached result depends on besides its key: a resumed run must use the same values.
FINGERPRINT = (
    "model", "ratio", "trials", "validation_tokens", "test_tokens", "chunk_tokens", "eval_seq_len", "pool_size",
    "samples", "seq_len", "space_metrics", "space_compensators", "n_init", "warm_ratio", "warm_trials",
    "fixed_samples",
)  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="the tiny model, a few trials: a check of this script")
    add("--model", help="model source, or 'tiny' (a random-init tiny LLaMA with SmolLM2's tokenizer)")
    add("--ratio", type=float, default=0.2)
    add("--seeds", help="comma-separated search seeds")
    add("--trials", type=int, help="trials per search")
    add("--strategies", help="search strategies (adapruner.catalog.STRATEGIES)")
    add("--domains", help=f"target domains, from {', '.join(CORPORA)}")
    add("--settings", help="in-domain, lodo (leave-one-domain-out) or both")
    add("--validation-tokens", type=int, help="validation tokens of the target (the objective)")
    add("--test-tokens", type=int, help="test tokens of the target (the report)")
    add("--chunk-tokens", type=int, help="validation chunk (the early-stop step)")
    add("--eval-seq-len", type=int, help="window of the validation and test perplexity")
    add("--pool-size", type=int, help="candidate calibration samples per source")
    add("--samples", help="LOW,HIGH calibration samples a trial chooses from")
    add("--fixed-samples", type=int, help="calibration samples of a fixed recipe (default: the HIGH of --samples)")
    add("--seq-len", type=int, help="calibration window")
    add("--metrics", help="data-aware metrics of the fixed recipes (each with every compensator)")
    add("--magnitude", help="data-free metrics of the fixed recipes (no compensation)")
    add("--compensators", help="compensators of the fixed recipes")
    add("--fixed-calibration", default="pool,target", help="pool (the setting's sources evenly), target, each")
    add("--space-metrics", help="metrics the search mixes")
    add("--space-compensators", help="compensators the search chooses from")
    add("--n-init", type=int, help="Sobol trials before the model-based strategies (default: the library's)")
    add("--warm-strategies", help="strategies also run with a warm start, or none (default: each that uses priors)")
    add("--seed-strategies", help="strategies run on every seed (default: all; the rest on the first seed only)")
    add("--setting-strategies", help="strategies run in the settings after the first (default: all)")
    add("--warm-ratio", type=float, default=0.3, help="ratio of the earlier search a warm start reads")
    add("--warm-trials", type=int, help="trials of that earlier search")
    add("--workers", help="search.parallel values of the scaling part")
    add("--scaling-trials", type=int, help="trials per scaling search")
    add("--scaling-seeds", help="seeds of the one-worker scaling searches (default: --seeds)")
    add("--scaling-model", help="model of the scaling part (default: tiny on <= 2 cores, else --model)")
    add("--parts", default=",".join(PARTS), help=f"parts to run, from {', '.join(PARTS)}; each writes its own section")
    add("--out", type=Path, help="results and search folders (default runs/search_efficiency[-quick])")
    add("--resume", action="store_true", help="continue the run cached in --out")
    add("--fresh", action="store_true", help="delete what --out holds and start over")
    add("--write", action="store_true", help="(re)write this run's section of BENCHMARKS.md")
    add("--section", help="the quality section (default search-efficiency[-quick]; scaling: SECTION-scaling)")
    add("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md", help="file to write")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.seed_strategies = args.seed_strategies or args.strategies
    args.setting_strategies = args.setting_strategies or args.strategies
    suffix = "-quick" if args.quick else ""
    args.out = args.out or ROOT / "runs" / f"search_efficiency{suffix}"
    args.section = args.section or f"search-efficiency{suffix}"
    args.fixed_samples = args.fixed_samples or int(args.samples.split(",")[1])
    for name, valid in (("settings", SETTINGS), ("domains", CORPORA), ("parts", PARTS)):
        if bad := [v for v in _list(getattr(args, name)) if v not in valid]:
            parser.error(f"--{name}: {', '.join(bad)} not one of {', '.join(valid)}")
    if args.resume and args.fresh:
        parser.error("--resume continues the cached run, --fresh deletes it: pass one")
    return args


def _list(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def _seeds(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in _list(args.seeds)]


# ---- results cache -----------------------------------------------------------------------------------
class Cache:
    """Every result of the run by key, in ``folder/results.json``, written after each one."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.folder, self.path = args.out, args.out / "results.json"
        self.options = {k: getattr(args, k) for k in FINGERPRINT}
        if self.path.exists() and args.fresh:
            shutil.rmtree(self.folder)
        if self.path.exists() and not args.resume:
            raise SystemExit(f"{self.path} holds an earlier run: pass --resume to continue it or --fresh to start over")
        data = json.loads(self.path.read_text()) if self.path.exists() else {"options": self.options, "entries": {}}
        if data["options"] != self.options:
            changed = sorted(k for k in self.options if data["options"].get(k) != self.options[k])
            raise SystemExit(f"{self.path} was made with other values of {', '.join(changed)}; use another --out")
        self.entries: dict[str, Any] = data["entries"]

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.entries:
            self.entries[key] = make()
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"options": self.options, "entries": self.entries}, indent=1))
            tmp.replace(self.path)
        return self.entries[key]


def timed(make: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """``make`` with its wall time added to its result as ``seconds``."""

    def run() -> dict[str, Any]:
        start = time.perf_counter()
        result = make()
        return result | {"seconds": time.perf_counter() - start}

    return run


# ---- the model, texts and jobs -----------------------------------------------------------------------
def tiny_model_folder(out: Path) -> Path:
    """bench/scale.py's random-init tiny LLaMA with SmolLM2's tokenizer, saved once as a model folder (so
    that a search's workers can load it by path)."""
    from scale import build_model, load_tokenizer

    folder = out / "tiny-model"
    if not (folder / "config.json").exists():
        build_model("tiny", "cpu").float().save_pretrained(folder)
        load_tokenizer().save_pretrained(folder)
    return folder


def source(name: str, split: str | None = None) -> Any:
    from adapruner.config import DataSource

    return DataSource(kind="builtin", name=name, split=split)


def pool_sources(setting: str, domain: str) -> tuple[Any, ...]:
    """The calibration pool's sources: every corpus in-domain, the others leaving the target out."""
    return tuple(source(n) for n in CORPORA if setting == "in-domain" or n != domain)


class Lab:
    """The loaded models, the cache and the jobs of one run."""

    def __init__(self, args: argparse.Namespace, cache: Cache) -> None:
        self.args, self.cache = args, cache
        self.models: dict[str, Any] = {}
        self.pools: dict[tuple, Any] = {}
        self.validations: dict[str, Any] = {}
        self.test_texts: dict[str, Any] = {}

    def model_source(self, name: str) -> str:
        return str(tiny_model_folder(self.args.out)) if name == "tiny" else name

    def loaded(self, name: str | None = None) -> Any:
        from adapruner.models import load_model

        name = name or self.args.model
        if name not in self.models:
            self.models[name] = load_model(self.model_source(name))
        return self.models[name]

    @cached_property
    def cache_dir(self) -> Path:
        from adapruner.search.run import DEFAULT_CACHE

        return self.args.out / "stats" if self.args.quick else DEFAULT_CACHE

    def evaluate(self, domain: str) -> Any:
        from adapruner.config import EvalConfig

        args = self.args
        return EvalConfig(
            texts=(source(domain, "test"),), max_tokens=args.test_tokens, seq_len=args.eval_seq_len, speed=False
        )

    def search_job(self, setting: str, domain: str, *, strategy: str, seed: int, **search: Any) -> Any:
        """The search of ``domain`` in ``setting``; ``search`` overrides SearchConfig fields (and ``ratio``)."""
        from adapruner.config import SearchJob

        args = self.args
        low, high = (int(v) for v in args.samples.split(","))
        ratio = search.pop("ratio", args.ratio)
        model = search.pop("model", args.model)
        config = dict(
            trials=args.trials,
            strategy=strategy,
            seed=seed,
            validation=(source(domain, "validation"),),
            validation_tokens=args.validation_tokens,
            chunk_tokens=args.chunk_tokens,
            eval_seq_len=args.eval_seq_len,
            top_k=1,
        ) | ({"n_init": args.n_init} if args.n_init else {})
        return SearchJob(
            model={"source": self.model_source(model)},
            ratio=ratio,
            space=dict(
                sources=pool_sources(setting, domain),
                pool_size=args.pool_size,
                samples={"low": low, "high": high},
                seq_lens=(args.seq_len,),
                metrics=tuple(_list(args.space_metrics)),
                compensators=tuple(_list(args.space_compensators)),
            ),
            search=config | search,
            evaluate=self.evaluate(domain),
        )

    def validation(self, domain: str) -> Any:
        """The searches' validation chunks of ``domain`` (the fixed recipes are chosen on the same)."""
        if domain not in self.validations:
            job = self.search_job("lodo", domain, strategy="random", seed=0)
            self.validations[domain] = search_validation(self.loaded().tokenizer, job.search)
        return self.validations[domain]

    def validation_ppl(self, model: Any, domain: str) -> float:
        """``model``'s perplexity on the searches' validation chunks of ``domain`` (all of them, no early stop)."""
        from adapruner.search.objective import observe

        validation = self.validation(domain)
        return math.exp(observe(model, validation, reference=[0.0] * len(validation.chunks)).value)

    def test_ppl(self, model: Any, domain: str) -> float:
        from adapruner.pipeline import eval_texts, evaluate_model

        config = self.evaluate(domain)
        if domain not in self.test_texts:
            self.test_texts[domain] = eval_texts(self.loaded().tokenizer, config)
        return evaluate_model(model, self.test_texts[domain], config)["perplexity"][source(domain, "test").label()]

    def fixed_pools(self, setting: str, domain: str) -> dict[int, Any]:
        """The candidate pool of the setting's sources (seed 0), with the statistics of every metric here."""
        from adapruner.adapters import get_adapter
        from adapruner.search.cache import load_pools, pool_passes

        args, sources = self.args, pool_sources(setting, domain)
        if sources not in self.pools:
            metrics = {*_list(args.metrics), *_list(args.magnitude), *_list(args.space_metrics)}
            self.pools[sources] = load_pools(
                get_adapter(self.loaded().model),
                self.loaded().tokenizer,
                sources,
                pool_size=args.pool_size,
                seq_lens=(args.seq_len,),
                seed=0,
                cache_dir=self.cache_dir,
                passes=pool_passes(sorted(metrics)),
            )
        return self.pools[sources]


# ---- strong fixed recipes ----------------------------------------------------------------------------
class Fixed:
    """One fixed recipe: ``pool`` rows prune from the search's candidate pool (as a trial does), ``job``
    rows run one ``prune`` job (NIRVANA's allocation, LLM-Pruner's own calibration size)."""

    def __init__(self, name: str, metric: str, compensate: str, weights: dict[str, float], kind: str, **prune: Any):
        self.name, self.metric, self.compensate, self.weights, self.kind = name, metric, compensate, weights, kind
        self.targets = prune.pop("targets", ("channels",))
        self.samples, self.seq_len = prune.pop("samples", None), prune.pop("seq_len", None)
        self.prune = prune  # more PruneConfig fields of a job row


def calibrations(args: argparse.Namespace, setting: str, domain: str) -> dict[str, dict[str, float]]:
    """The calibration choices of the fixed recipes: name -> source weights."""
    labels = [s.label() for s in pool_sources(setting, domain)]
    out: dict[str, dict[str, float]] = {}
    for choice in _list(args.fixed_calibration):
        if choice == "pool":
            out["pool"] = dict.fromkeys(labels, 1.0)
        elif choice == "target" and setting == "in-domain":
            out[domain] = {source(domain).label(): 1.0}
        elif choice == "each":
            out |= {label.removeprefix("builtin:"): {label: 1.0} for label in labels}
        elif choice not in ("pool", "target", "each"):
            raise SystemExit(f"--fixed-calibration: {choice!r} is not one of pool, target, each")
    return out


def fixed_recipes(args: argparse.Namespace, setting: str, domain: str) -> list[Fixed]:
    """Every metric x compensator on channels, the magnitude metrics, NIRVANA with its allocation x every
    compensator, per calibration choice; and LLM-Pruner's published setting on the even pool."""
    size = {"samples": args.fixed_samples, "seq_len": args.seq_len}
    rows = []
    for cal, weights in calibrations(args, setting, domain).items():
        pairs = [(m, c) for m in _list(args.metrics) for c in _list(args.compensators)]
        pairs += [(m, "none") for m in _list(args.magnitude)]
        for metric, comp in pairs:
            name = f"{metric}{'' if comp == 'none' else ' + ' + comp}, calibration {cal}"
            rows.append(Fixed(name, metric, comp, weights, "pool", **size))
        for comp in _list(args.compensators):
            name = f"nirvana, nirvana allocation{'' if comp == 'none' else ' + ' + comp}, calibration {cal}"
            rows.append(Fixed(name, "nirvana", comp, weights, "job", allocation="nirvana", **size))
    even = {s.label(): 1.0 for s in pool_sources(setting, domain)}
    published = dict(targets=("heads", "channels"), allocation="protected", protect_first=4, protect_last=2)
    rows.append(Fixed(LLM_PRUNER, "taylor", "none", even, "job", samples=10, seq_len=64, **published))
    return rows


def fixed_result(lab: Lab, setting: str, domain: str, row: Fixed, *, test: bool) -> dict[str, Any]:
    """Prune ``row`` once: its validation PPL (and with ``test`` its test PPL), or the error that stopped it."""
    try:
        with pruned_model(lab, setting, domain, row) as model:
            result = {"validation_ppl": lab.validation_ppl(model, domain)}
            if test:
                result["test_ppl"] = lab.test_ppl(model, domain)
    except Exception as error:  # a recipe that cannot run is a row of the table, not the end of the run
        result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    print(f"{setting} {domain} {row.name}: {result}", file=sys.stderr)
    return result


@contextmanager
def pruned_model(lab: Lab, setting: str, domain: str, row: Fixed) -> Iterator[Any]:
    """The model pruned for ``row``: the loaded model in place (restored afterwards) for a pool row, a
    pruned copy for a job row."""
    from adapruner.models import release_memory
    from adapruner.pipeline import prune_copy
    from adapruner.search.trial import trial_model

    args, loaded = lab.args, lab.loaded()
    if row.kind == "pool":
        recipe = fixed_recipe(
            row.weights, row.metric, samples=row.samples, seq_len=row.seq_len, compensate=row.compensate
        )
        pools = lab.fixed_pools(setting, domain)
        with trial_model(loaded, pools, recipe, ratio=args.ratio, targets=row.targets, seed=0) as trial:
            yield trial.model
        return
    job = fixed_prune_job(
        metric=row.metric,
        ratio=args.ratio,
        targets=row.targets,
        samples=row.samples,
        seq_len=row.seq_len,
        evaluate=lab.evaluate(domain),
        compensate=row.compensate,
        sources=tuple(s for s in pool_sources(setting, domain) if row.weights.get(s.label(), 0) > 0),
        model={"source": lab.model_source(args.model)},
        **row.prune,
    )
    model, _ = prune_copy(loaded, job)
    try:
        yield model
    finally:
        del model
        release_memory()


def fixed_part(lab: Lab, setting: str, domain: str) -> dict[str, Any]:
    """Every fixed recipe on validation; the best one and LLM-Pruner's setting also on the test text."""
    cache, rows = lab.cache, fixed_recipes(lab.args, setting, domain)
    where = f"{setting}/{domain}"
    results = {
        row.name: cache.get(
            f"fixed/{where}/{row.name}", timed(lambda row=row: fixed_result(lab, setting, domain, row, test=False))
        )
        for row in rows
    }
    ran = [row for row in rows if "validation_ppl" in results[row.name]]
    best = min(ran, key=lambda row: results[row.name]["validation_ppl"]) if ran else None
    tested = {}
    for row in dict.fromkeys(r for r in (best, next(r for r in rows if r.name == LLM_PRUNER)) if r is not None):
        make = timed(lambda row=row: fixed_result(lab, setting, domain, row, test=True))
        tested[row.name] = cache.get(f"fixed-test/{where}/{row.name}", make)
    return {"rows": results, "best": best.name if best else None, "tested": tested}


def dense_part(lab: Lab, domain: str) -> dict[str, Any]:
    def make() -> dict[str, Any]:
        model = lab.loaded().model
        return {"validation_ppl": lab.validation_ppl(model, domain), "test_ppl": lab.test_ppl(model, domain)}

    return lab.cache.get(f"dense/{domain}", timed(make))


# ---- searches ----------------------------------------------------------------------------------------
def uses_priors(strategy: str) -> bool:
    from adapruner.catalog import STRATEGIES

    return STRATEGIES.get(strategy).uses_priors


def run_trials(lab: Lab, job: Any, folder: Path) -> Any:
    """The search ``job``'s trials (resumed from ``folder`` when it holds some), without its final step."""
    from adapruner.search.run import SearchRun
    from adapruner.search.store import FileStore

    run = SearchRun.start(job, FileStore(folder, job), loaded=lab.loaded(), cache_dir=lab.cache_dir, progress=None)
    run.run_trials()
    return run


def prior_folder(lab: Lab, setting: str, domain: str, seed: int) -> Path:
    """The earlier search a warm start reads: a GP search of the same texts at ``--warm-ratio``."""
    args = lab.args
    folder = args.out / "priors" / setting / domain / str(seed)

    def make() -> dict[str, Any]:
        job = lab.search_job(
            setting, domain, strategy="gp", seed=PRIOR_SEED + seed, ratio=args.warm_ratio, trials=args.warm_trials
        )
        run = run_trials(lab, job, folder)
        return {"trials": len(run.state.trials()), "timings": run.state.timings}

    lab.cache.get(f"prior/{setting}/{domain}/{seed}", timed(make))
    return folder


def search_part(lab: Lab, setting: str, domain: str, strategy: str, seed: int, warm: bool) -> dict[str, Any]:
    args = lab.args
    name = f"{strategy}/{seed}/{'warm' if warm else 'cold'}"

    def make() -> dict[str, Any]:
        warm_start = (str(prior_folder(lab, setting, domain, seed)),) if warm else ()
        job = lab.search_job(setting, domain, strategy=strategy, seed=seed, warm_start=warm_start)
        run = run_trials(lab, job, args.out / "searches" / setting / domain / name.replace("/", "-"))
        return curve(lab, run, domain)

    return lab.cache.get(f"search/{setting}/{domain}/{name}", timed(make))


def curve(lab: Lab, run: Any, domain: str) -> dict[str, Any]:
    """After each trial k, the incumbent (the best full trial so far on validation, as the search defines
    it) and the test PPL of every incumbent (read once, when it first becomes the incumbent)."""
    from adapruner.search.records import SearchState
    from adapruner.search.space import Recipe
    from adapruner.search.trial import trial_model

    job, records = run.job, run.state.trials()
    incumbents = []
    for k in range(1, len(records) + 1):
        best = SearchState(job, records={r.index: r for r in records[:k]}).incumbent()
        incumbents.append(None if best is None else best.index)
    test, test_s = {}, []
    for index in dict.fromkeys(i for i in incumbents if i is not None):
        start = time.perf_counter()
        recipe = Recipe(**run.state.records[index].recipe)
        kwargs = dict(ratio=job.ratio, targets=job.targets, seed=job.search.seed, blocks=run.blocks)
        with trial_model(lab.loaded(), run.pools, recipe, **kwargs) as trial:
            test[str(index)] = lab.test_ppl(trial.model, domain)
        test_s.append(time.perf_counter() - start)
    return {
        "incumbents": incumbents,
        "test_ppl": test,
        "validation_ppl": {str(r.index): r.validation_ppl for r in records if r.full},
        "trial_s": [r.seconds for r in records],
        "test_eval_s": test_s,
        "timings": run.state.timings,
    }


def best_at(entry: dict[str, Any], k: int) -> float | None:
    """The test PPL of the incumbent after ``k`` trials (None: no full trial yet)."""
    index = entry["incumbents"][min(k, len(entry["incumbents"])) - 1]
    return None if index is None else entry["test_ppl"][str(index)]


def reach(entry: dict[str, Any], value: float | None, trials: int) -> int:
    """The first trial count whose incumbent is at most ``value`` in test PPL; ``trials + 1`` when none is."""
    for k in range(1, trials + 1):
        at = best_at(entry, k)
        if at is not None and value is not None and at <= value:
            return k
    return trials + 1


# ---- parallel scaling --------------------------------------------------------------------------------
def scaling_model(args: argparse.Namespace) -> str:
    return args.scaling_model or ("tiny" if (os.cpu_count() or 1) <= 2 else args.model)


def scaling_target(args: argparse.Namespace) -> tuple[str, str]:
    """The setting and target domain of the scaling searches: the first of each."""
    return _list(args.settings)[0], _list(args.domains)[0]


def scaling_run(lab: Lab, model: str, workers: int, seed: int) -> dict[str, Any]:
    """One whole search with ``search.parallel = workers`` (a fresh folder: one uninterrupted timing),
    each worker on one thread (the executor gives each local worker ``cores // workers``; the one-worker
    search, which runs in this process, is set to one thread too), as each GPU worker has its own device.

    ``startup_s`` is the time from the call to the ``workers``-th finished trial (the first round holds
    each worker's start: spawning, loading the model and the pools), ``trial_phase_s`` to the last one
    (the steady rate, :func:`steady_per_hour`, is read between the two); ``ask_s`` the driver's time in
    the optimiser's proposals (serial: a bound on the rate)."""
    import torch

    from adapruner.search.run import run_search

    args = lab.args
    setting, domain = scaling_target(args)
    folder = args.out / "scaling" / f"{workers}-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    job = lab.search_job(
        setting, domain, strategy="gp", seed=seed, trials=args.scaling_trials, parallel=workers, model=model
    )
    finished: list[float] = []
    threads, start = torch.get_num_threads(), time.perf_counter()
    torch.set_num_threads(1)
    try:
        outcome = run_search(
            job,
            out=folder,
            loaded=lab.loaded(model),
            cache_dir=lab.cache_dir,
            on_trial=lambda done: finished.append(time.perf_counter() - start),
        )
    finally:
        torch.set_num_threads(threads)
    return {
        "trials": len(finished),
        "startup_s": finished[min(workers, len(finished)) - 1],
        "trial_phase_s": finished[-1],
        "ask_s": outcome.report["trial_cost"]["ask_s"],
        "test_ppl": outcome.report["pruned"]["perplexity"][source(domain, "test").label()],
        "total_s": time.perf_counter() - start,
    }


def steady_per_hour(run: dict[str, Any], workers: int) -> float | None:
    """Trials per hour after the first round: the trials after the first ``workers`` over the time from
    the ``workers``-th finished trial to the last; None with fewer than :data:`STEADY_ROUNDS` rounds (the
    first round's trials come back together, so one round past it would time their batch, not a rate)."""
    trials, span = run["trials"], run["trial_phase_s"] - run["startup_s"]
    if trials < STEADY_ROUNDS * workers or span <= 0:
        return None
    return 3600 * (trials - workers) / span


def scaling_part(lab: Lab) -> dict[str, Any]:
    """Every worker count (seed 0; every seed with one worker, for the seed-to-seed spread)."""
    args = lab.args
    model, seeds = scaling_model(args), [int(s) for s in _list(args.scaling_seeds or args.seeds)]
    runs = {}
    for workers in (int(n) for n in _list(args.workers)):
        for seed in seeds if workers == 1 else seeds[:1]:
            make = timed(lambda w=workers, s=seed: scaling_run(lab, model, w, s))
            runs[f"{workers}/{seed}"] = lab.cache.get(f"scaling/{model}/{workers}/{seed}", make)
    return {"model": model, "runs": runs, "cores": os.cpu_count() or 1}


# ---- the whole run -----------------------------------------------------------------------------------
def variants(args: argparse.Namespace, setting: str, seed: int) -> list[tuple[str, bool]]:
    """(strategy, warm start) of the searches of ``setting`` and ``seed``. The first setting's first seed:
    each strategy cold, and warm where it uses priors (``--warm-strategies``); its other seeds: the
    ``--seed-strategies`` cold; the other settings: the ``--setting-strategies`` cold on the first seed."""
    first_setting, first_seed = setting == _list(args.settings)[0], seed == _seeds(args)[0]
    if not first_setting:
        return [(s, False) for s in _list(args.setting_strategies)] if first_seed else []
    if not first_seed:
        return [(s, False) for s in _list(args.seed_strategies)]
    strategies = _list(args.strategies)
    warm = strategies if args.warm_strategies is None else _list(args.warm_strategies.replace("none", ""))
    return [(s, False) for s in strategies] + [(s, True) for s in warm if uses_priors(s)]


def collect(lab: Lab) -> dict[str, Any]:
    """Every result of the ``--parts`` (from the cache where it is there), in the order they are made: the
    scaling part; per setting the dense model, the fixed recipes and the first seed's searches; then the
    other seeds' searches (so that a run cut short still holds whole settings)."""
    args = lab.args
    out: dict[str, Any] = {"dense": {}, "fixed": {}, "searches": {}}
    if "scaling" in _list(args.parts):
        out["scaling"] = scaling_part(lab)
    if "quality" not in _list(args.parts):
        return out
    seeds, domains = _seeds(args), _list(args.domains)
    for setting in _list(args.settings):
        for domain in domains:
            out["dense"][domain] = dense_part(lab, domain)
            out["fixed"][setting, domain] = fixed_part(lab, setting, domain)
    plan = [(setting, seed) for seed in seeds for setting in _list(args.settings)]
    for setting, seed in plan:
        for domain in domains:
            for strategy, warm in variants(args, setting, seed):
                entry = search_part(lab, setting, domain, strategy, seed, warm)
                out["searches"][setting, domain, strategy, warm, seed] = entry
    out["priors"] = {k: v for k, v in lab.cache.entries.items() if k.startswith("prior/")}
    return out


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _cell(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def gp_result(args: argparse.Namespace, results: dict[str, Any], setting: str, domain: str) -> float | None:
    """The cold GP search's test PPL after all its trials, median over the seeds."""
    runs = [results["searches"].get((setting, domain, "gp", False, seed)) for seed in _seeds(args)]
    return median([v for r in runs if r is not None and (v := best_at(r, args.trials)) is not None])


def fixed_table(args: argparse.Namespace, results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Strong fixed recipes against the GP search per setting and target, and the target per setting."""
    lines = [
        "| setting | target | dense | fixed recipes (failed) | best fixed on validation | its validation PPL "
        "| its test PPL | LLM-Pruner test PPL | GP search test PPL | search / best fixed |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for setting in _list(args.settings):
        ratios = []
        for domain in _list(args.domains):
            fixed, dense = results["fixed"][setting, domain], results["dense"][domain]
            best = fixed["best"]
            tested = fixed["tested"].get(best, {}) if best else {}
            failed = sum(1 for r in fixed["rows"].values() if "error" in r)
            peer = fixed["tested"][LLM_PRUNER]
            ours, theirs = gp_result(args, results, setting, domain), tested.get("test_ppl")
            ratio = ours / theirs if ours is not None and theirs else None
            ratios += [ratio] if ratio is not None else []
            lines.append(
                f"| {setting} | {domain} | {dense['test_ppl']:.2f} | {len(fixed['rows'])} ({failed}) | {best or '-'} | "
                f"{_cell(tested.get('validation_ppl'))} | {_cell(theirs)} | "
                f"{_cell(peer.get('test_ppl')) if 'error' not in peer else 'failed'} | {_cell(ours)} | "
                f"{_cell(ratio, '.3f')} |"
            )
        value = geo_mean(ratios) if len(ratios) == len(_list(args.domains)) else None
        name = f"{setting}: GP search / best fixed recipe in test PPL, geo-mean over {len(_list(args.domains))} targets"
        verdicts.append(verdict(name, value, FIXED_TARGET, "x", ".3f"))
    return lines, verdicts


def _seed_runs(args: argparse.Namespace, results: dict[str, Any], setting: str, domain: str, strategy: str, warm: bool):
    return [r for s in _seeds(args) if (r := results["searches"].get((setting, domain, strategy, warm, s))) is not None]


def strategy_table(args: argparse.Namespace, results: dict[str, Any], setting: str, domain: str) -> list[str]:
    """Best test PPL against trials (median over seeds) for each strategy, cold and warm, with the trials
    each needs to reach random search's final result and the trials a warm start saves."""
    trials = args.trials
    points = [k for k in CURVE_POINTS if k < trials] + [trials]
    head = " | ".join(f"k={k}" for k in points)
    lines = [
        f"| strategy | start | seeds | {head} | trials to reach random's {trials}-trial PPL "
        "| trials saved by the warm start |",
        "|---|---|---:|" + "---:|" * (len(points) + 2),
    ]
    randoms = {s: r for s in _seeds(args) if (r := results["searches"].get((setting, domain, "random", False, s)))}
    for strategy, warm in dict.fromkeys(v for seed in _seeds(args) for v in variants(args, setting, seed)):
        cells = [str(len(_seed_runs(args, results, setting, domain, strategy, warm)))]
        for k in points:
            values = [v for r in _seed_runs(args, results, setting, domain, strategy, warm) if (v := best_at(r, k))]
            cells.append(_cell(median(values)))
        reached = [
            reach(run, best_at(randoms[seed], trials), trials)
            for seed in randoms
            if (run := results["searches"].get((setting, domain, strategy, warm, seed))) is not None
        ]
        saved = warm_saved(args, results, setting, domain, strategy) if warm else []
        lines.append(
            f"| {strategy} | {'warm' if warm else 'cold'} | "
            + " | ".join(cells)
            + f" | {_cell(median(reached), '.1f')} | {_cell(median(saved), '.1f') if warm else '-'} |"
        )
    return lines


def warm_saved(
    args: argparse.Namespace, results: dict[str, Any], setting: str, domain: str, strategy: str
) -> list[int]:
    """Per seed: the trials the cold search needs to reach its own final test PPL, less those the warm one
    needs to reach it (a run that never does counts as trials + 1)."""
    out = []
    for seed in _seeds(args):
        cold = results["searches"].get((setting, domain, strategy, False, seed))
        warm = results["searches"].get((setting, domain, strategy, True, seed))
        if cold is None or warm is None:
            continue
        final = best_at(cold, args.trials)
        out.append(reach(cold, final, args.trials) - reach(warm, final, args.trials))
    return out


def strategy_verdicts(args: argparse.Namespace, results: dict[str, Any]) -> list[str]:
    """GP against random search over every (setting, target, seed): trials to reach random's final test
    PPL, and the ratio of the final test PPLs (medians)."""
    reached, ratios = [], []
    for (setting, domain, strategy, warm, seed), gp in results["searches"].items():
        rand = results["searches"].get((setting, domain, "random", False, seed))
        if strategy != "gp" or warm or rand is None:
            continue
        final = best_at(rand, args.trials)
        reached.append(reach(gp, final, args.trials))
        if final is not None and (ours := best_at(gp, args.trials)) is not None:
            ratios.append(ours / final)
    runs = f"median of {len(reached)} (setting, target, seed) runs"
    return [
        verdict(
            f"GP trials to reach random search's {args.trials}-trial test PPL, {runs}",
            median(reached),
            REACH_TARGET,
            " trials",
        ),
        verdict(
            f"GP / random search test PPL after {args.trials} trials, {runs}",
            median(ratios),
            GP_VS_RANDOM_TARGET,
            "x",
            ".3f",
        ),
    ]


def verdict_at_least(name: str, value: float | None, limit: float, unit: str) -> str:
    """A lower-bound target, written as :func:`scale.verdict` writes upper bounds."""
    if value is None:
        return f"- {name}: not measured (target >= {limit}{unit}): not met"
    return f"- {name}: {value:.2f}{unit} (target >= {limit}{unit}): {'met' if value >= limit else 'not met'}"


def scaling_lines(scaling: dict[str, Any]) -> list[str]:
    """The scaling table and its targets (steady throughput up to the cores, quality within the seed spread)."""
    runs, cores = scaling["runs"], scaling["cores"]
    first_seed = _first_seed(runs)
    one = runs.get(f"1/{first_seed}", {})
    base = steady_per_hour(one, 1) if "trials" in one else None  # absent where the one-worker search failed
    serial = [r["test_ppl"] for k, r in runs.items() if k.startswith("1/") and "test_ppl" in r]
    lines = [
        "| workers | seed | trials | to the first round s | to the last trial s | the driver's proposals s "
        "| steady trials per hour | x linear | test PPL |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for key, run in runs.items():
        workers, seed = (int(v) for v in key.split("/"))
        if "error" in run:
            lines.append(f"| {workers} | {seed} | failed: {run['error']} | | | | | | |")
            continue
        rate = steady_per_hour(run, workers)
        linear = rate / (workers * base) if base and rate else None
        beyond = f" (beyond the {cores} cores)" if workers > cores else ""
        lines.append(
            f"| {workers}{beyond} | {seed} | {run['trials']} | {run['startup_s']:.1f} | {run['trial_phase_s']:.1f} | "
            f"{run['ask_s']:.1f} | "
            f"{_cell(rate, '.0f')} | {_cell(linear)} | {run['test_ppl']:.2f} |"
        )
        if 1 < workers <= cores and str(seed) == first_seed:
            targets.append(verdict_at_least(f"{workers} workers: steady throughput", linear, LINEAR_TARGET, "x linear"))
            targets.append(quality_verdict(workers, run["test_ppl"], serial))
    if not targets:
        targets.append(f"- no worker count between 2 and the {cores} cores was measured: not met")
    return [*lines, "", "Targets (issue 21, up to the cores available):", "", *targets]


def _first_seed(runs: dict[str, Any]) -> str:
    return next(iter(runs)).split("/")[1]


def quality_verdict(workers: int, value: float, serial: list[float]) -> str:
    """``value`` no worse than the one-worker searches' median by more than their seed-to-seed spread (max -
    min): parallel trials must not cost quality (a better result passes)."""
    if len(serial) < 2:
        return f"- {workers} workers: final test PPL: fewer than two one-worker seeds, no spread to judge by: not met"
    spread, middle = max(serial) - min(serial), statistics.median(serial)
    ok = value <= middle + spread
    return (
        f"- {workers} workers: final test PPL {value:.2f} against {middle:.2f} with one worker, at most the seed "
        f"spread {spread:.2f} ({len(serial)} seeds) worse: {'met' if ok else 'not met'}"
    )


# ---- the section -------------------------------------------------------------------------------------
def setting_line(args: argparse.Namespace) -> str:
    low, high = _list(args.samples)
    return (
        f"{args.model} at ratio {args.ratio:g}, {args.trials} trials per search, seeds {args.seeds}; objective "
        f"{args.validation_tokens} validation tokens of the target (chunks of {args.chunk_tokens}, window "
        f"{args.eval_seq_len}), report {args.test_tokens} test tokens of it; calibration pool {args.pool_size} x "
        f"{args.seq_len} tokens per source, {low}..{high} samples a trial; space metrics {args.space_metrics}, "
        f"compensators {args.space_compensators}; fixed recipes on {args.fixed_samples} samples."
    )


def _provenance(argv: list[str]) -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return provenance("search_efficiency.py", argv, device)


def quality_section(args: argparse.Namespace, argv: list[str], results: dict[str, Any]) -> str:
    fixed_lines, fixed_verdicts = fixed_table(args, results)
    lines = [
        "## Search efficiency: the search against strong fixed recipes, the strategies",
        "",
        _provenance(argv),
        "",
        setting_line(args),
        "",
        "### Strong fixed recipes against the GP search (test PPL; the fixed recipe chosen on validation)",
        "",
        *fixed_lines,
        "",
        "Targets (issue 21):",
        "",
        *fixed_verdicts,
    ]
    for setting in _list(args.settings):
        for domain in _list(args.domains):
            if any(k[:2] == (setting, domain) and k[2] != "gp" for k in results["searches"]):
                title = f"### Strategies, {setting}, target {domain}: the incumbent's test PPL after k trials"
                lines += ["", title, "", *strategy_table(args, results, setting, domain)]
    lines += ["", "Targets (issue 21):", "", *strategy_verdicts(args, results)]
    return "\n".join(lines)


def scaling_section(args: argparse.Namespace, argv: list[str], results: dict[str, Any]) -> str:
    scaling = results["scaling"]
    setting, domain = scaling_target(args)
    return "\n".join(
        [
            f"## Search efficiency: parallel trials ({scaling['model']} model, {scaling['cores']} cores)",
            "",
            _provenance(argv),
            "",
            f"GP searches of {args.scaling_trials} trials ({setting}, target {domain}; the quality part's texts and "
            "space), each worker on one thread; the one-worker search runs in the driver's process. The steady "
            f"rate is read after the first round, with at least {STEADY_ROUNDS} rounds of trials (else -).",
            "",
            *scaling_lines(scaling),
        ]
    )


SECTIONS = {"quality": ("", quality_section), "scaling": ("-scaling", scaling_section)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    lab = Lab(args, Cache(args))
    results = collect(lab)
    for part in _list(args.parts):
        suffix, make = SECTIONS[part]
        body = make(args, argv, results)
        print(body + "\n")
        if args.write:
            write_section(args.section + suffix, body, args.benchmarks)


if __name__ == "__main__":
    main()
