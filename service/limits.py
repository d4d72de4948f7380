"""How big a job may be: a server maximum per spec field and an estimated cost per job, both checked at
submit (and shown in ``GET /v1/catalog``). The cost formula is documented in docs/security.md.

The cost is counted in token-passes: one token through one forward pass of the model counts 1, a forward
and a backward pass count :data:`BACKWARD` (the backward pass costs about twice the forward). It does not
depend on the model's size: the work in FLOPs is about ``2 x parameters x cost``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import BaseModel

from adapruner.config import CONFIRM_TOKENS_FACTOR, EvalConfig, PruneJob, RecoverConfig, SearchJob
from service.settings import Settings

#: Token-passes of a token in a forward and backward pass (gradient metrics, recovery training).
BACKWARD = 3
#: Passes of the speed measurements (adapruner.evaluate.speed: measure_speed 2 warm-up + 5 timed,
#: measure_generation 1 warm-up + 3 timed, at batch 1 and at gen_batch).
SPEED_PASSES, GENERATION_PASSES = 7, 4

#: Field maxima: (dotted spec path, Settings attribute), by job kind. A path names an int, a tuple of ints
#: (each must be under the maximum) or a Range (its high end).
_EVALUATE = (
    ("evaluate.seq_len", "max_seq_len"),
    ("evaluate.max_tokens", "max_eval_tokens"),
    ("evaluate.batch_size", "max_batch_size"),
    ("evaluate.speed_batch", "max_batch_size"),
    ("evaluate.speed_seq_len", "max_seq_len"),
    ("evaluate.gen_prompt_len", "max_seq_len"),
    ("evaluate.gen_new_tokens", "max_seq_len"),
    ("evaluate.gen_batch", "max_batch_size"),
    ("recover.steps", "max_recover_steps"),
    ("recover.batch_size", "max_batch_size"),
    ("recover.seq_len", "max_seq_len"),
    ("recover.heldout_tokens", "max_eval_tokens"),
    ("recover.rank", "max_lora_rank"),
)
FIELD_LIMITS: dict[str, tuple[tuple[str, str], ...]] = {
    "prune": (("calibration.samples", "max_calibration_samples"), ("calibration.seq_len", "max_seq_len"), *_EVALUATE),
    "search": (
        ("search.trials", "max_trials"),
        ("space.samples", "max_calibration_samples"),
        ("space.seq_lens", "max_seq_len"),
        ("space.pool_size", "max_pool_size"),
        ("search.validation_tokens", "max_validation_tokens"),
        ("search.chunk_tokens", "max_validation_tokens"),
        ("search.eval_seq_len", "max_seq_len"),
        ("search.latency_batch", "max_batch_size"),
        ("search.latency_seq_len", "max_seq_len"),
        ("space.subset_seeds", "max_subset_seeds"),
        ("search.raw_samples", "max_raw_samples"),
        ("search.acq_restarts", "max_acq_restarts"),
        *_EVALUATE,
    ),
}
#: The key of the cost limit in the catalog's limits (beside the spec paths).
COST_KEY = "cost"


class LimitExceeded(Exception):
    """A job over a server limit; ``loc`` is the field inside the request body."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


def server_limits(settings: Settings) -> dict[str, dict[str, float]]:
    """The maxima this server enforces at submit, by job kind: dotted spec field -> maximum, and
    ``cost`` -> the largest estimated cost of one job in token-passes."""
    return {
        kind: {path: getattr(settings, name) for path, name in fields} | {COST_KEY: settings.max_job_cost}
        for kind, fields in FIELD_LIMITS.items()
    }


def _values(value: object) -> list[float]:
    if value is None:
        return []
    if isinstance(value, tuple):
        return [v for item in value for v in _values(item)]
    if isinstance(value, BaseModel):  # a Range: its ends
        return [value.low, value.high]
    return [value]


def _lookup(spec: BaseModel, path: str) -> object:
    value: object = spec
    for part in path.split("."):
        value = getattr(value, part)
    return value


def check_fields(kind: str, spec: BaseModel, settings: Settings) -> None:
    """Raise :class:`LimitExceeded` for the first field over its server maximum."""
    for path, name in FIELD_LIMITS[kind]:
        limit = getattr(settings, name)
        if any(v > limit for v in _values(_lookup(spec, path))):
            raise LimitExceeded(
                ("spec", *path.split(".")), f"at most {limit:,} on this server (ADAPRUNER_{name.upper()}); ask for less"
            )


@dataclass
class JobCost:
    """Estimated token-passes of a job, by part (docs/security.md has the formula)."""

    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        return ", ".join(f"{name} {value:,.0f}" for name, value in self.parts.items() if value)


def _evaluation(evaluate: EvalConfig) -> float:
    """Dense and pruned model: sliding-window perplexity on every text, and the speed measurements."""
    stride = evaluate.stride or max(evaluate.seq_len - 1, 1)
    ppl = len(evaluate.texts) * evaluate.max_tokens * evaluate.seq_len / stride
    speed = 0.0
    if evaluate.speed:
        speed = SPEED_PASSES * evaluate.speed_batch * evaluate.speed_seq_len
        speed += GENERATION_PASSES * (1 + evaluate.gen_batch) * (evaluate.gen_prompt_len + evaluate.gen_new_tokens)
    return 2 * (ppl + speed)


def _recovery(recover: RecoverConfig) -> float:
    """Training (forward and backward) and the held-out PPL before and after."""
    if not recover.enabled:
        return 0.0
    trained = recover.steps * recover.batch_size * recover.seq_len
    if recover.max_tokens is not None:
        trained = min(trained, recover.max_tokens)
    return BACKWARD * trained + 2 * recover.heldout_tokens


def job_cost(spec: PruneJob | SearchJob) -> JobCost:
    """The estimated cost of a prune or search job in token-passes (an upper bound: early-stopped trials
    and forward-only metrics cost less)."""
    cost = JobCost()
    if isinstance(spec, PruneJob):
        cost.parts["calibration"] = BACKWARD * spec.calibration.samples * spec.calibration.seq_len
    else:
        space, search = spec.space, spec.search
        cost.parts["pool"] = BACKWARD * space.pool_size * len(space.sources) * sum(space.seq_lens)
        validation = search.validation_tokens * len(search.validation)
        latency = (search.latency_repeats + 1) * search.latency_batch * search.latency_seq_len
        per_trial = validation + (latency if search.second_objective == "latency" else 0)
        confirm = min(search.top_k, search.trials) * CONFIRM_TOKENS_FACTOR * validation
        cost.parts["trials"] = (search.trials + 1) * per_trial + confirm  # + 1: the dense model's validation
    cost.parts["evaluation"] = _evaluation(spec.evaluate)
    cost.parts["recovery"] = _recovery(spec.recover)
    return cost


def check_cost(spec: PruneJob | SearchJob, settings: Settings, key_limit: int | None = None) -> JobCost:
    """Raise :class:`LimitExceeded` when the job's estimated cost is over its key's per-job limit
    (``key_limit``, set with ``adapruner keys create --max-job-cost``; ``None``: the server's)."""
    cost = job_cost(spec)
    limit = settings.max_job_cost if key_limit is None else key_limit
    if cost.total > limit:
        whose = "this server's" if key_limit is None else "this API key's"
        source = "ADAPRUNER_MAX_JOB_COST" if key_limit is None else "keys create --max-job-cost"
        raise LimitExceeded(
            ("spec",),
            f"estimated cost {math.ceil(cost.total):,} token-passes ({cost.describe()}) is over {whose} limit "
            f"of {limit:,} per job ({source}); ask for fewer samples, tokens, trials or steps (docs/security.md)",
        )
    return cost


def check_request(
    kind: str, spec: PruneJob | SearchJob, settings: Settings, key_limit: int | None = None
) -> JobCost:
    """Every size limit of a submitted job: the field maxima, then the cost (against ``key_limit`` if set)."""
    check_fields(kind, spec, settings)
    return check_cost(spec, settings, key_limit)
