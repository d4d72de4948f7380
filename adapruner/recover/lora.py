"""LoRA recovery (Hu et al., ICLR 2022, arXiv 2106.09685) through peft, as LLM-Pruner recovers pruned
models (Ma et al., NeurIPS 2023): low-rank adapters on the attention and MLP projections, trained, then
merged into the weights so that the artifact is a plain model of the pruned shapes."""

from __future__ import annotations

from torch import nn

from adapruner.config import RecoverConfig
from adapruner.recover.base import Recovery, RecoveryError


class LoraRecovery(Recovery):
    name = "lora"
    default_lr = 2e-4

    def wrap(self, model: nn.Module, config: RecoverConfig) -> nn.Module:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise RecoveryError("recover.method: 'lora' needs peft: pip install 'adapruner[recover]'") from None

        present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        missing = [name for name in config.target_modules if name not in present]
        if missing:
            raise RecoveryError(
                f"recover.target_modules: {', '.join(missing)} not in the model; linear modules: "
                f"{', '.join(sorted(present))}"
            )
        lora = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
            bias="none",
        )
        return get_peft_model(model, lora)

    def unwrap(self, trained: nn.Module) -> nn.Module:
        """Fold ``B @ A * alpha / r`` into each target weight and drop the adapters."""
        return trained.merge_and_unload()
