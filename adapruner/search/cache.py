"""Per-sample, per-unit statistics of a candidate calibration pool, so that trials combine them
instead of re-running forward and backward passes.

Every metric declares what it is pooled from (``Importance.pooled_from``, :mod:`adapruner.importance.base`).
For every pool sample s (one forward pass, and the backward passes that the searched metrics need) the
cache stores:
  - ``act_sq`` / ``act_sum``: ``[n, A]`` per-input-channel sums of x^2 and x of every unit module
    (concatenated over modules; A = sum of their in_features): the metrics pooled from the moments;
  - one ``[n, U]`` tensor per per-unit statistic that a registered metric declares (built-in: ``taylor_abs``,
    ``taylor2_abs``, ``taylor_vec`` from the loss backward, ``nirvana_abs`` from the output backward): per
    slice and unit, the metric's own unit terms (:meth:`~adapruner.importance.base.Importance.unit_terms`)
    on sample s's gradient (U = sum over unit groups and their slices of n_units);
  - ``tokens``: ``[n, seq_len]`` the samples' token ids, so that a trial can re-run its chosen samples
    (compensation reads their input covariance, too large to cache per sample).

A subset S of samples gets a :class:`~adapruner.stats.Statistics` of the moments and per-unit sums over S,
scored by the same :func:`~adapruner.importance.score_groups` as a prune. This is exact for activation
metrics (``wanda``, ``flap``, ``bip``: sums of moments), for ``taylor_vector`` (linear in the gradient) and
for the data-free ones. It is an approximation for ``taylor``, ``taylor2`` and ``nirvana``: sum_s |W g_s|
bounds |W sum_s g_s| from above (the triangle inequality), i.e. per-sample saliencies are added instead of
per-sample gradients. ``numerical`` is approximate: its Newton scores need the full input covariance, of
which only the diagonal is cached, so correlations between units are ignored
(see :mod:`adapruner.importance.numerical`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from adapruner.adapters.base import CoupledSlice, ModelAdapter
from adapruner.calibration import Sample, sample_windows
from adapruner.catalog import METRICS
from adapruner.config import CalibrationConfig, DataSource
from adapruner.errors import UserError
from adapruner.importance.base import Importance, build_metric, per_unit, score_groups
from adapruner.prune.plan import spread
from adapruner.stats import (
    PASS_OF,
    PASSES,
    Statistics,
    backward_passes,
    calibration_passes,
    unit_modules,
    unit_term_reducer,
)

PER_CHANNEL = ("act_sq", "act_sum")
POOL_NEEDS = {"act", "grad", "fisher", "out_grad"}  # what per-sample statistics can be built from
CACHE_VERSION = "v2"  # v2: nirvana_abs and tokens


@dataclass(frozen=True)
class Layout:
    """Where each module's channels and each slice's units sit in the concatenated statistics."""

    modules: tuple[tuple[str, int, int], ...]  # (name, offset, in_features)
    slices: tuple[tuple[CoupledSlice, int, int], ...]  # (slice, offset, n_units), group by group

    @classmethod
    def of(cls, adapter: ModelAdapter) -> Layout:
        modules, offset = [], 0
        for name in unit_modules(adapter):
            width = adapter.linear(name).in_features
            modules.append((name, offset, width))
            offset += width
        slices, offset = [], 0
        for group in adapter.groups():
            for slice_ in group.slices:
                slices.append((slice_, offset, group.n_units))
                offset += group.n_units
        return cls(tuple(modules), tuple(slices))

    @property
    def channels(self) -> int:
        return sum(width for _, _, width in self.modules)

    @property
    def units(self) -> int:
        return sum(n for *_, n in self.slices)


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the config and a sample of every parameter (shape, first and last values)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        digest.update(name.encode() + str(tuple(param.shape)).encode())
        digest.update(torch.cat([flat[:64], flat[-64:]]).float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class PoolStats:
    """Statistics of every pool sample; rows follow ``sample_ids``."""

    sample_ids: list[str]
    sources: list[str]
    tokens_per_sample: int
    tensors: dict[str, torch.Tensor]  # PER_CHANNEL: [n, A]; per-unit statistics: [n, U]
    tokens: torch.Tensor | None = None  # [n, seq_len] token ids

    def rows(self, ids: Sequence[str]) -> torch.Tensor:
        index = {sid: i for i, sid in enumerate(self.sample_ids)}
        return torch.tensor([index[i] for i in ids], dtype=torch.long)

    @classmethod
    def concat(cls, parts: Sequence[PoolStats]) -> PoolStats:
        return cls(
            [i for p in parts for i in p.sample_ids],
            [s for p in parts for s in p.sources],
            parts[0].tokens_per_sample,
            {k: torch.cat([p.tensors[k] for p in parts]) for k in parts[0].tensors},
            torch.cat([p.tokens for p in parts]) if all(p.tokens is not None for p in parts) else None,
        )


def unit_statistics(passes: Sequence[str] = PASSES) -> dict[str, Importance]:
    """``{statistic: metric}`` for every registered metric pooled from a per-unit statistic (its
    ``pooled_from``) taken in one of the backward ``passes`` (the metric's needs tell which one), in
    registration order."""
    out: dict[str, Importance] = {}
    for name in METRICS.names():
        metric = build_metric(name)
        key = metric.pooled_from
        if not per_unit(metric):
            continue
        taken = backward_passes(metric.needs)
        if len(taken) != 1 or not metric.needs <= POOL_NEEDS or key in PER_CHANNEL or key in out:
            raise ValueError(
                f"metric {name!r}: a per-unit statistic ({key!r}) needs a name of its own and the gradients of "
                f"one backward pass ({', '.join(sorted(POOL_NEEDS))})"
            )
        if taken[0] in passes:
            out[key] = metric
    return out


def poolable(name: str) -> bool:
    """Whether the metric ``name`` can be combined from a pool: it declares what it is pooled from, or it
    reads no statistics (data-free)."""
    metric = METRICS.get(name)
    return metric.pooled_from is not None or not metric.needs


def check_poolable(metrics: Sequence[str]) -> None:
    """Every searched metric must be computable from the pooled statistics."""
    for name in metrics:
        if not poolable(name):
            raise UserError(f"space.metrics: {name!r} cannot be combined from cached statistics yet")


def pool_passes(metrics: Sequence[str]) -> tuple[str, ...]:
    """The backward passes a pool needs for the searched ``metrics``: those of their per-unit statistics
    (``loss`` for the Taylor family, ``output`` for NIRVANA's, which keeps the loss backward's graph)."""
    needs = [m.needs for m in map(build_metric, metrics) if per_unit(m)]
    return backward_passes(set().union(*needs))


def collect_pool_stats(
    adapter: ModelAdapter,
    samples: Sequence[Sample],
    *,
    passes: Sequence[str] = PASSES,
    progress: Callable[[int, int], None] | None = None,
) -> PoolStats:
    """One forward pass per sample and the backward ``passes`` (see :func:`pool_passes`); the model is
    left unchanged. Each weight's gradient is reduced to the unit terms of every per-unit statistic of its
    pass (:func:`unit_statistics`) as autograd produces it and freed, so a backward pass holds one gradient
    at a time; a statistic whose pass does not run is absent from ``tensors``."""
    layout = Layout.of(adapter)
    n = len(samples)
    statistics = unit_statistics(passes)
    out = {k: torch.zeros(n, layout.channels) for k in PER_CHANNEL}
    out |= {k: torch.zeros(n, layout.units) for k in statistics}
    current = Statistics(n_tokens=samples[0].input_ids.numel(), n_samples=1)  # one sample's statistics
    row = [0]
    offsets = {slice_: offset for slice_, offset, _ in layout.slices}

    def write(key: str, slice_: CoupledSlice, terms: torch.Tensor) -> None:
        out[key][row[0], offsets[slice_] : offsets[slice_] + terms.numel()] = terms.cpu()

    reduce = unit_term_reducer(adapter, current, statistics, write=write)
    needs = {"act"} | {need for need, taken in PASS_OF.items() if taken in passes}
    batch = torch.stack([s.input_ids for s in samples])
    for _ in calibration_passes(adapter, batch, current, needs=needs, step=1, consume=reduce):
        for name, offset, width in layout.modules:
            out["act_sq"][row[0], offset : offset + width] = current.act_sq.pop(name).cpu()
            out["act_sum"][row[0], offset : offset + width] = current.act_sum.pop(name).cpu()
        row[0] += 1
        if progress:
            progress(row[0], n)
    return PoolStats([s.id for s in samples], [s.source for s in samples], samples[0].input_ids.numel(), out, batch)


def load_pool(
    adapter: ModelAdapter,
    tokenizer,
    sources: Sequence[DataSource],
    *,
    pool_size: int,
    seq_len: int,
    seed: int,
    cache_dir: Path | None,
    passes: Sequence[str] = PASSES,
    progress: Callable[[str, int, int], None] | None = None,
) -> PoolStats:
    """The candidate pool of ``pool_size`` samples per source, from the disk cache where present.

    Cache files live at ``cache_dir/<model fingerprint>/<hash of source, seq_len, seed, pool_size,
    passes>.pt`` and hold the sample ids with the statistics (``passes``: :func:`pool_passes`); a file
    without a statistic that a metric registered since declares is rebuilt.
    """
    passes = tuple(p for p in PASSES if p in passes)
    tag = "" if passes == PASSES else f"|{','.join(passes) or 'forward'}"  # a full pool keeps its v2 key
    fingerprint = model_fingerprint(adapter.model) if cache_dir else ""
    expected = set(PER_CHANNEL) | set(unit_statistics(passes))
    parts = []
    for source in sources:
        key = hashlib.sha256(
            f"{source.model_dump_json()}|{seq_len}|{seed}|{pool_size}|{CACHE_VERSION}{tag}".encode()
        ).hexdigest()[:16]
        path = Path(cache_dir) / fingerprint / f"{key}.pt" if cache_dir else None
        if path is not None and (saved := _read_pool(path, expected)) is not None:
            parts.append(saved)
            continue
        samples = sample_windows(
            tokenizer, CalibrationConfig(sources=(source,), samples=pool_size, seq_len=seq_len, seed=seed)
        )
        stage = f"statistics {source.label()}"
        pool = collect_pool_stats(
            adapter,
            samples,
            passes=passes,
            progress=(lambda done, total, stage=stage: progress(stage, done, total)) if progress else None,
        )
        if path is not None:
            _write_pool(path, pool)
        parts.append(pool)
    return PoolStats.concat(parts)


def _read_pool(path: Path, expected: set[str]) -> PoolStats | None:
    """The pool saved at ``path``, or ``None`` when there is none or it lacks an ``expected`` statistic."""
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=True)
    if not expected <= set(saved["tensors"]):
        return None
    return PoolStats(saved["ids"], saved["sources"], saved["tokens"], saved["tensors"], saved["token_ids"])


def _write_pool(path: Path, pool: PoolStats) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "ids": pool.sample_ids,
            "sources": pool.sources,
            "tokens": pool.tokens_per_sample,
            "tensors": pool.tensors,
            "token_ids": pool.tokens,
        },
        tmp,
    )
    tmp.replace(path)


def load_pools(
    adapter: ModelAdapter,
    tokenizer,
    sources: Sequence[DataSource],
    *,
    pool_size: int,
    seq_lens: Sequence[int],
    seed: int,
    cache_dir: Path | None,
    passes: Sequence[str] = PASSES,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[int, PoolStats]:
    """One candidate pool per calibration window length (``{seq_len: pool}``), each cached under its own
    key. The warm-up cost adds up: about ``sum(seq_lens)`` tokens per pool sample instead of one length's.
    Sample ids name their window (``source@offset+length``), so a choice is stable per length."""
    pools = {}
    for seq_len in seq_lens:
        tagged = progress
        if progress and len(seq_lens) > 1:
            tagged = lambda stage, done, total, n=seq_len: progress(f"{stage} @{n}", done, total)  # noqa: E731
        pools[seq_len] = load_pool(
            adapter,
            tokenizer,
            sources,
            pool_size=pool_size,
            seq_len=seq_len,
            seed=seed,
            cache_dir=cache_dir,
            passes=passes,
            progress=tagged,
        )
    return pools


def choose_samples(pool: PoolStats, *, weights: dict[str, float], n: int, subset_seed: int) -> list[str]:
    """``n`` sample ids split over sources in proportion to ``weights`` (source label -> weight), each
    source's share drawn from its pool by a seeded subset ``subset_seed`` (stable for a given pool)."""
    labels = list(dict.fromkeys(pool.sources))
    by_source = {
        label: [i for i, s in zip(pool.sample_ids, pool.sources, strict=True) if s == label] for label in labels
    }
    capacity = [len(by_source[label]) for label in labels]
    counts = spread(min(n, sum(capacity)), len(labels), weights=[weights.get(label, 0.0) for label in labels])
    # Move what a source cannot supply to the others.
    overflow = sum(max(c - cap, 0) for c, cap in zip(counts, capacity, strict=True))
    counts = [min(c, cap) for c, cap in zip(counts, capacity, strict=True)]
    for i in sorted(range(len(labels)), key=lambda i: -weights.get(labels[i], 0.0)):
        extra = min(overflow, capacity[i] - counts[i])
        counts[i] += extra
        overflow -= extra
    chosen = []
    for label, count in zip(labels, counts, strict=True):
        chosen += random.Random(f"{subset_seed}:{label}").sample(by_source[label], count)
    return chosen


def pool_tokens(pool: PoolStats, sample_ids: Sequence[str]) -> torch.Tensor:
    """The token ids ``[n, seq_len]`` of the chosen pool samples."""
    if pool.tokens is None:
        raise UserError("this pool of statistics holds no token ids; delete its cache (--cache-dir) to rebuild it")
    return pool.tokens[pool.rows(sample_ids)]


def pooled_scores(
    adapter: ModelAdapter,
    pool: PoolStats,
    sample_ids: Sequence[str],
    *,
    mix: dict[str, float],
    aggregation: str,
    normalization: str,
    kinds: Sequence[str],
    seed: int = 0,
) -> dict[tuple[int, str], torch.Tensor]:
    """The weighted metric mix over the chosen samples: ``{(layer, kind): scores [n_units]}`` — the same
    :func:`adapruner.importance.score_groups` as a prune, on the samples' :func:`pooled_statistics`."""
    stats = pooled_statistics(adapter, pool, sample_ids, metrics=[name for name, w in mix.items() if w > 0])
    groups = [group for group in adapter.groups() if group.kind in kinds]
    return score_groups(
        adapter, groups, stats, mix=mix, aggregation=aggregation, normalization=normalization, seed=seed
    )


def pooled_statistics(
    adapter: ModelAdapter, pool: PoolStats, sample_ids: Sequence[str], *, metrics: Sequence[str]
) -> Statistics:
    """The statistics of the chosen pool samples that ``metrics`` read: the input moments (on the device of
    the weight they meet) and, per slice, the sums of the metrics' per-unit statistics."""
    layout = Layout.of(adapter)
    rows = pool.rows(sample_ids)
    stats = Statistics(n_tokens=len(sample_ids) * pool.tokens_per_sample, n_samples=len(sample_ids))
    act_sq, act_sum = (pool.tensors[k][rows].sum(0) for k in PER_CHANNEL)
    for name, offset, width in layout.modules:
        device = adapter.linear(name).weight.device
        stats.act_sq[name] = act_sq[offset : offset + width].to(device)
        stats.act_sum[name] = act_sum[offset : offset + width].to(device)
    for name in metrics:
        metric = METRICS.get(name)
        if not poolable(name):
            raise ValueError(f"metric {name!r} cannot be combined from pooled statistics")
        key = metric.pooled_from
        if not per_unit(metric) or key in stats.unit_sums:
            continue
        if key not in pool.tensors:
            missing = backward_passes(metric.needs)[0]
            raise ValueError(f"metric {name!r}: this pool was built without its {missing} backward pass")
        sums = pool.tensors[key][rows].sum(0)
        stats.unit_sums[key] = {slice_: sums[offset : offset + n] for slice_, offset, n in layout.slices}
    return stats
