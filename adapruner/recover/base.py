"""Recovery after pruning: a short causal-LM training run that wins back some of the quality pruning lost.

LLM-Pruner (Ma et al., NeurIPS 2023, arXiv 2305.11627) recovers with LoRA on general text and merges the
adapters into the weights; Sheared LLaMA (Xia et al., ICLR 2024, arXiv 2310.06694) continues
pretraining every parameter. Both are a :class:`Recovery` here: which parameters train (``wrap``) and
how the trained module becomes a plain model again (``unwrap``); the training loop is shared.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from adapruner.calibration import token_stream
from adapruner.catalog import RECOVERY
from adapruner.config import RecoverConfig
from adapruner.errors import UserError
from adapruner.models.loading import input_device
from adapruner.evaluate import perplexity

Progress = Callable[[str, int, int], None]
LossHook = Callable[[int, float], None]
"""``on_loss(step, loss)``: called after every optimiser step with the step's training loss."""


class RecoveryError(UserError):
    """Recovery cannot run as configured; the message names the field and the fix."""


class Recovery:
    """A recovery method: which parameters train and how the trained module becomes a plain model."""

    name: ClassVar[str]
    default_lr: ClassVar[float]

    def wrap(self, model: nn.Module, config: RecoverConfig) -> nn.Module:
        """Return the module to train (``requires_grad`` set on exactly the trained parameters)."""
        raise NotImplementedError

    def unwrap(self, trained: nn.Module) -> nn.Module:
        """Return a plain ``transformers`` model holding the trained weights."""
        return trained


def get_recovery(name: str) -> Recovery:
    return RECOVERY.get(name)()


@dataclass
class RecoveryResult:
    """What a recovery run did: the per-step training loss and the held-out PPL before and after."""

    method: str
    steps: int
    tokens: int
    learning_rate: float
    trainable_params: int
    seconds: float
    heldout: str  # label of the held-out text
    heldout_ppl_before: float
    heldout_ppl_after: float
    loss_curve: list[float] = field(default_factory=list)  # training loss of every step

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "steps": self.steps,
            "tokens": self.tokens,
            "learning_rate": self.learning_rate,
            "trainable_params": self.trainable_params,
            "seconds": round(self.seconds, 3),
            "heldout": self.heldout,
            "heldout_ppl_before": self.heldout_ppl_before,
            "heldout_ppl_after": self.heldout_ppl_after,
            "loss_curve": [round(loss, 5) for loss in self.loss_curve],
        }


def planned_steps(config: RecoverConfig) -> int:
    """Optimiser steps within both ``config.steps`` and the token budget ``config.max_tokens``."""
    per_step = config.batch_size * config.seq_len
    if config.max_tokens is None:
        return config.steps
    if config.max_tokens < per_step:
        raise RecoveryError(
            f"recover.max_tokens: {config.max_tokens} is less than one step "
            f"(batch_size x seq_len = {per_step}); raise it or lower recover.batch_size"
        )
    return min(config.steps, config.max_tokens // per_step)


def training_windows(tokenizer: Any, config: RecoverConfig) -> torch.Tensor:
    """Non-overlapping windows of the training text: LongTensor ``[n_windows, seq_len]``, read only as
    far as the run needs (fewer windows than the run are reused in further epochs)."""
    seq_len = config.seq_len
    need = planned_steps(config) * config.batch_size * seq_len
    stream = token_stream(tokenizer, config.train_source, "calibration", max_tokens=need)
    n = stream.numel() // seq_len
    if n == 0:
        raise RecoveryError(
            f"recover.seq_len: {config.train_source.label()} has {stream.numel()} tokens, fewer than one "
            f"window of {seq_len}; lower recover.seq_len or use a larger source"
        )
    return stream[: n * seq_len].view(n, seq_len)


def batches(windows: torch.Tensor, *, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """``steps`` batches ``[batch_size, seq_len]`` of ``windows`` (``[n, seq_len]``), each epoch in a
    seeded random order; a batch never holds the same window twice."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(windows.shape[0], generator=generator).tolist()
        picked, order = order[:batch_size], order[batch_size:]
        yield windows[picked]


def lr_factor(step: int, *, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% of the peak at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_causal_lm(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: Progress | None = None,
    on_loss: LossHook | None = None,
) -> list[float]:
    """Train the parameters of ``model`` that require grad on next-token prediction over ``windows``
    (``[n, seq_len]``) with AdamW; returns the training loss of every step.

    The model is in train mode during the run (LoRA dropout active) and in eval mode after it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RecoveryError("recover: no parameter to train; check recover.target_modules")
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    warmup = min(warmup_steps, steps // 5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps=steps, warmup=warmup))
    losses: list[float] = []
    model.train()
    try:
        with torch.enable_grad():
            for step, ids in enumerate(batches(windows, batch_size=batch_size, steps=steps, seed=seed), 1):
                ids = ids.to(device)
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                if not torch.isfinite(loss):
                    raise RecoveryError(
                        f"recover.learning_rate: the training loss is {loss.item()} at step {step}; "
                        "lower the learning rate"
                    )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                if on_loss:
                    on_loss(step, losses[-1])
                if progress:
                    progress("recovery", step, steps)
    finally:
        model.eval()
        optimizer.zero_grad(set_to_none=True)
    return losses


def recover_model(
    model: nn.Module,
    tokenizer: Any,
    config: RecoverConfig,
    *,
    progress: Progress | None = None,
    on_loss: LossHook | None = None,
) -> tuple[nn.Module, RecoveryResult]:
    """Train ``model`` (changed in place) as ``config`` says and return the plain trained model with a
    record of the run; PPL on the source's validation split is measured before and after."""
    if not config.enabled:
        raise RecoveryError("recover.method: 'none' runs no recovery; choose one of " + ", ".join(RECOVERY.names()))
    recovery = get_recovery(config.method)
    start = time.perf_counter()
    heldout = token_stream(tokenizer, config.heldout_source, "evaluation", max_tokens=config.heldout_tokens)
    before = perplexity(model, heldout, seq_len=config.seq_len).ppl
    windows = training_windows(tokenizer, config)
    steps = planned_steps(config)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    learning_rate = config.learning_rate or recovery.default_lr
    device = input_device(model)
    # Seeded LoRA initialisation and dropout, without moving the caller's random state.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        wrapped = recovery.wrap(model, config)
        trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        losses = train_causal_lm(
            wrapped,
            windows,
            steps=steps,
            batch_size=config.batch_size,
            learning_rate=learning_rate,
            warmup_steps=config.warmup_steps,
            weight_decay=config.weight_decay,
            seed=config.seed,
            progress=progress,
            on_loss=on_loss,
        )
    plain = recovery.unwrap(wrapped)
    for name, param in plain.named_parameters():
        param.requires_grad_(flags.get(name, False))
    after = perplexity(plain, heldout, seq_len=config.seq_len).ppl
    result = RecoveryResult(
        method=config.method,
        steps=steps,
        tokens=steps * config.batch_size * config.seq_len,
        learning_rate=learning_rate,
        trainable_params=trainable,
        seconds=time.perf_counter() - start,
        heldout=config.heldout_source.label(),
        heldout_ppl_before=before,
        heldout_ppl_after=after,
        loss_curve=losses,
    )
    return plain.eval(), result
