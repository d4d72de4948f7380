"""Per-sample, per-unit statistics of a candidate calibration pool, so that trials combine them
instead of re-running forward and backward passes.

For every pool sample s (one forward and one backward pass each) the cache stores:
  - ``act_sq`` / ``act_sum``: ``[n, A]`` per-input-channel sums of x^2 and x of every unit module
    (concatenated over modules; A = sum of their in_features);
  - ``taylor_abs``: ``[n, U]`` per slice and unit, sum over the unit's weights of |W * g_s|;
  - ``taylor_vec``: ``[n, U]`` per slice and unit, sum over the unit's weights of W * g_s (signed);
  - ``taylor2_abs``: ``[n, U]`` per slice and unit, sum of |W * g_s - 1/2 * W^2 * g_s^2|;
  - ``nirvana_abs``: ``[n, U]`` per slice and unit, sum of |W * f_s| (NIRVANA's saliency of sample s);
  (U = sum over unit groups and their slices of n_units; g_s = dL_s/dW; f_s = dF_s/dW with F_s the network
  output of :func:`adapruner.stats.output_objective`, one more backward pass per sample);
  - ``tokens``: ``[n, seq_len]`` the samples' token ids, so that a trial can re-run its chosen samples
    (compensation reads their input covariance, too large to cache per sample).

Combining a subset S of samples is exact for activation metrics (``wanda``, ``flap``: sums of
moments), for ``taylor_vector`` (|sum_s sum W g_s| = |sum W * sum_s g_s|) and for the data-free ones.
It is an approximation for ``taylor``, ``taylor2`` and ``nirvana``: sum_s |W g_s| bounds |W sum_s g_s|
from above (the triangle inequality), i.e. per-sample saliencies are added instead of per-sample
gradients. ``bip`` is exact (activation moments). ``numerical`` is approximate: its Newton scores need the
full input covariance, of which only the diagonal is cached, so correlations between units are ignored
(see :mod:`adapruner.importance.numerical`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import torch

from adapruner.adapters.base import ModelAdapter, UnitGroup, slice_weight
from adapruner.calibration import Sample, sample_windows
from adapruner.config import CalibrationConfig, DataSource
from adapruner.importance.base import aggregate, build_metric, normalize
from adapruner.prune.plan import spread
from adapruner.models import input_device
from adapruner.stats import Statistics, calibration_mode, gradient_sink, output_objective, unit_modules

PER_UNIT = ("taylor_abs", "taylor_vec", "taylor2_abs", "nirvana_abs")
PASSES = ("loss", "output")  # the backward passes a pool can take
PASS_OF = {"taylor_abs": "loss", "taylor_vec": "loss", "taylor2_abs": "loss", "nirvana_abs": "output"}
PER_CHANNEL = ("act_sq", "act_sum")
# metric -> (pooled per-unit statistic, take |.| after summing over samples)
POOLED_GRADIENT = {
    "taylor": ("taylor_abs", False),
    "taylor2": ("taylor2_abs", False),
    "taylor_vector": ("taylor_vec", True),
    "nirvana": ("nirvana_abs", False),
}
# metrics combined from the cache with a documented approximation of statistics it does not hold
POOLED_APPROXIMATE = {"numerical": "diagonal of the input covariance"}
CACHE_VERSION = "v2"  # v2: nirvana_abs and tokens


@dataclass(frozen=True)
class Layout:
    """Where each module's channels and each group's slices sit in the concatenated statistics."""

    modules: tuple[tuple[str, int, int], ...]  # (name, offset, in_features)
    slices: tuple[tuple[int, str, int, int], ...]  # (group index, module, offset, n_units) per slice

    @classmethod
    def of(cls, adapter: ModelAdapter) -> Layout:
        modules, offset = [], 0
        for name in unit_modules(adapter):
            width = adapter.linear(name).in_features
            modules.append((name, offset, width))
            offset += width
        slices, offset = [], 0
        for index, group in enumerate(adapter.groups()):
            for slice_ in group.slices:
                slices.append((index, slice_.module, offset, group.n_units))
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
    tensors: dict[str, torch.Tensor]  # PER_CHANNEL: [n, A]; PER_UNIT: [n, U]
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


def pool_passes(metrics: Sequence[str]) -> tuple[str, ...]:
    """The backward passes a pool needs for the searched ``metrics``: ``loss`` (the Taylor family's
    per-unit sums) and ``output`` (NIRVANA's, one more backward that keeps the loss backward's graph)."""
    names = set(metrics)
    passes = []
    if names & {"taylor", "taylor2", "taylor_vector"}:
        passes.append("loss")
    if "nirvana" in names:
        passes.append("output")
    return tuple(passes)


def collect_pool_stats(
    adapter: ModelAdapter,
    samples: Sequence[Sample],
    *,
    passes: Sequence[str] = PASSES,
    progress: Callable[[int, int], None] | None = None,
) -> PoolStats:
    """One forward pass per sample and the backward ``passes`` (see :func:`pool_passes`); the model is
    left unchanged. Each weight's gradient is reduced to its units' sums as autograd produces it and
    freed, so a backward pass holds one gradient at a time; a statistic whose pass does not run is
    absent from ``tensors``."""
    layout = Layout.of(adapter)
    model = adapter.model
    device = input_device(model)
    linears = {name: adapter.linear(name) for name, _, _ in layout.modules}
    n = len(samples)
    keys = [k for k in PER_UNIT if PASS_OF[k] in passes]
    out = {k: torch.zeros(n, layout.channels) for k in PER_CHANNEL} | {k: torch.zeros(n, layout.units) for k in keys}
    current: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module, inputs):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            current[name] = torch.stack([x.square().sum(0), x.sum(0)])

        return record

    handles = [linears[name].register_forward_pre_hook(hook(name)) for name in linears]
    row_phase = [0, "loss"]
    reduce = _unit_reducer(adapter, layout, linears, out, row_phase)
    weights = {name: m.weight for name, m in linears.items()} if passes else {}
    with calibration_mode(model, trainable=list(weights.values()), hooks=handles), gradient_sink(weights, reduce):
        for row, sample in enumerate(samples):
            row_phase[0] = row
            ids = sample.input_ids[None].to(device)
            with torch.set_grad_enabled(bool(passes)):
                output = model(ids, labels=ids if "loss" in passes else None, use_cache=False)
            for name, offset, width in layout.modules:
                moments = current[name].cpu()
                out["act_sq"][row, offset : offset + width] = moments[0]
                out["act_sum"][row, offset : offset + width] = moments[1]
            if "loss" in passes:
                row_phase[1] = "loss"
                output.loss.backward(retain_graph="output" in passes)
            if "output" in passes:
                row_phase[1] = "output"
                output_objective(output.logits).backward()
            del output
            if progress:
                progress(row + 1, n)
    tokens = torch.stack([s.input_ids for s in samples])
    return PoolStats([s.id for s in samples], [s.source for s in samples], samples[0].input_ids.numel(), out, tokens)


def _unit_reducer(
    adapter: ModelAdapter,
    layout: Layout,
    linears: dict[str, torch.nn.Linear],
    out: dict[str, torch.Tensor],
    row_phase: list,
) -> Callable[[str, torch.Tensor], None]:
    """``consume(module, grad)`` for :func:`~adapruner.stats.gradient_sink`: writes the per-unit sums of
    the module's slices into row ``row_phase[0]`` of ``out`` (the loss pass's Taylor sums or the output
    pass's NIRVANA saliency, by ``row_phase[1]``)."""
    slices = [slice_ for group in adapter.groups() for slice_ in group.slices]
    by_module: dict[str, list[tuple[int, int, Any]]] = {}
    for (_, module, offset, n_units), slice_ in zip(layout.slices, slices, strict=True):
        by_module.setdefault(module, []).append((offset, n_units, slice_))

    def consume(name: str, grad: torch.Tensor) -> None:
        row, phase = row_phase
        w, g = linears[name].weight.detach().float(), grad.float()
        wg = w * g
        for offset, n_units, slice_ in by_module.get(name, ()):
            span = slice(offset, offset + n_units)

            def unit_sum(element: torch.Tensor) -> torch.Tensor:
                return slice_weight(element, slice_, n_units).sum((1, 2)).cpu()

            if phase == "output":
                out["nirvana_abs"][row, span] = unit_sum(wg.abs())
                continue
            out["taylor_abs"][row, span] = unit_sum(wg.abs())
            out["taylor_vec"][row, span] = unit_sum(wg)
            out["taylor2_abs"][row, span] = unit_sum((wg - 0.5 * w.square() * g.square()).abs())

    return consume


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
    passes>.pt`` and hold the sample ids with the statistics (``passes``: :func:`pool_passes`).
    """
    passes = tuple(p for p in PASSES if p in passes)
    tag = "" if passes == PASSES else f"|{','.join(passes) or 'forward'}"  # a full pool keeps its v2 key
    fingerprint = model_fingerprint(adapter.model) if cache_dir else ""
    parts = []
    for source in sources:
        key = hashlib.sha256(
            f"{source.model_dump_json()}|{seq_len}|{seed}|{pool_size}|{CACHE_VERSION}{tag}".encode()
        ).hexdigest()[:16]
        path = Path(cache_dir) / fingerprint / f"{key}.pt" if cache_dir else None
        if path is not None and path.is_file():
            saved = torch.load(path, weights_only=True)
            parts.append(
                PoolStats(saved["ids"], saved["sources"], saved["tokens"], saved["tensors"], saved["token_ids"])
            )
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
        parts.append(pool)
    return PoolStats.concat(parts)


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
        raise ValueError("this pool holds no token ids; rebuild its cache")
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
    """The weighted metric mix over the chosen samples: ``{(layer, kind): scores [n_units]}`` — the
    cached counterpart of :func:`adapruner.importance.score_groups`."""
    layout = Layout.of(adapter)
    rows = pool.rows(sample_ids)
    sums = {k: pool.tensors[k][rows].sum(0) for k in pool.tensors}
    stats = Statistics(n_tokens=len(sample_ids) * pool.tokens_per_sample, n_samples=len(sample_ids))
    for name, offset, width in layout.modules:  # on the device of the weight they meet
        device = adapter.linear(name).weight.device
        stats.act_sq[name] = sums["act_sq"][offset : offset + width].to(device)
        stats.act_sum[name] = sums["act_sum"][offset : offset + width].to(device)
    groups = adapter.groups()
    per_group_slices: dict[int, list[tuple[int, int]]] = {}
    for group_index, _module, offset, n_units in layout.slices:
        per_group_slices.setdefault(group_index, []).append((offset, n_units))
    total = sum(mix.values())
    scores: dict[tuple[int, str], torch.Tensor] = {}
    for index, group in enumerate(groups):
        if group.kind not in kinds:
            continue
        combined = torch.zeros(group.n_units, dtype=torch.float64)
        for name, weight in mix.items():
            if weight <= 0:
                continue
            raw = _pooled_metric(adapter, group, name, stats, sums, per_group_slices[index], aggregation, seed)
            combined += (weight / total) * normalize(raw, normalization)
        scores[group.key] = combined
    return scores


def _pooled_metric(
    adapter: ModelAdapter,
    group: UnitGroup,
    name: str,
    stats: Statistics,
    sums: dict[str, torch.Tensor],
    slices: list[tuple[int, int]],
    aggregation: str,
    seed: int,
) -> torch.Tensor:
    if name in POOLED_GRADIENT:
        key, absolute = POOLED_GRADIENT[name]
        if key not in sums:
            raise ValueError(f"metric {name!r}: this pool was built without its {PASS_OF[key]} backward pass")
        per_slice = torch.stack([sums[key][offset : offset + n] for offset, n in slices]).double()
        return aggregate(per_slice.abs() if absolute else per_slice, aggregation)
    return build_metric(name, seed=seed)(adapter, group, stats, aggregation=aggregation)
