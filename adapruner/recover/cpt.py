"""Continued pretraining: every parameter trains on the causal-LM loss over a token budget, as Sheared
LLaMA recovers its pruned models (Xia et al., ICLR 2024, arXiv 2310.06694); costlier than LoRA per step,
and the only method that can move the embeddings and norms."""

from __future__ import annotations

from torch import nn

from adapruner.config import RecoverConfig
from adapruner.recover.base import Recovery


class ContinuedPretraining(Recovery):
    name = "cpt"
    default_lr = 2e-5

    def wrap(self, model: nn.Module, config: RecoverConfig) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
