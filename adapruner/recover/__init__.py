"""Recovery after pruning: LoRA (merged) and continued pretraining, sharing one training loop."""

from adapruner.recover.base import (
    Recovery,
    RecoveryError,
    RecoveryResult,
    get_recovery,
    recover_model,
    train_causal_lm,
)

__all__ = ["Recovery", "RecoveryError", "RecoveryResult", "get_recovery", "recover_model", "train_causal_lm"]
