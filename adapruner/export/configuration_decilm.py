"""The configuration class of a DeciLM / Nemotron-NAS folder written by ``adapruner export --format decilm``.

The export copies this file beside ``config.json`` (whose ``auto_map`` names it), so that
``AutoConfig.from_pretrained(folder, trust_remote_code=True)`` works, which is how vLLM (``--trust-remote-code``)
and TensorRT-LLM read a ``nemotron-nas`` config. Their loaders read each block's settings as attributes
(``block_configs[i].attention.no_op``) and test for optional ones with ``hasattr`` (``ffn.ffn_mult``,
``ffn.hidden_act``), so a block holds exactly the keys written in ``config.json``, nothing defaulted.
This file imports only ``transformers``: it must load without adapruner installed.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class BlockPart:
    """One part of a block (``attention`` or ``ffn``): its ``config.json`` keys as attributes."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class BlockConfig:
    """One decoder block: ``attention`` and ``ffn``, each with ``no_op`` and its width."""

    def __init__(self, attention: dict[str, Any], ffn: dict[str, Any]) -> None:
        self.attention, self.ffn = BlockPart(**attention), BlockPart(**ffn)

    def to_dict(self) -> dict[str, Any]:
        return {"attention": self.attention.to_dict(), "ffn": self.ffn.to_dict()}


class DeciLMConfig(PretrainedConfig):
    """A LLaMA-style config whose layers differ: ``block_configs`` gives each block's KV grouping
    (``attention.n_heads_in_group``) and MLP width (``ffn.intermediate_size``), or ``no_op``."""

    model_type = "nemotron-nas"

    def __init__(self, block_configs: list[dict[str, Any] | BlockConfig] | None = None, **kwargs: Any) -> None:
        blocks = block_configs or []
        self.block_configs = [b if isinstance(b, BlockConfig) else BlockConfig(**b) for b in blocks]
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["block_configs"] = [block.to_dict() for block in self.block_configs]
        return out
