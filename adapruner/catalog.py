"""The explicit list of every plug-in, by kind. Importing this module does not import torch."""

from __future__ import annotations

from adapruner.registry import Registry

ADAPTERS = Registry("model_type")
ADAPTERS.add("llama", "adapruner.adapters.llama:LlamaAdapter", "LLaMA 1/2/3 and SmolLM (GQA-aware)")
ADAPTERS.add("mistral", "adapruner.adapters.mistral:MistralAdapter", "Mistral (LLaMA layout, sliding window)")
ADAPTERS.add("qwen2", "adapruner.adapters.qwen2:Qwen2Adapter", "Qwen2/2.5 (q/k/v biases)")
ADAPTERS.add("qwen3", "adapruner.adapters.qwen3:Qwen3Adapter", "Qwen3 (per-head q/k norms shared by all heads)")
ADAPTERS.add("gemma", "adapruner.adapters.gemma:GemmaAdapter", "Gemma 1 (tied, scaled embeddings)")
ADAPTERS.add("gemma2", "adapruner.adapters.gemma:GemmaAdapter", "Gemma 2 (extra norms, sliding window, softcaps)")
ADAPTERS.add(
    "gemma3_text",
    "adapruner.adapters.gemma:GemmaAdapter",
    "Gemma 3 text-only (q/k norms); the multimodal 'gemma3' is not supported",
)
ADAPTERS.add("phi3", "adapruner.adapters.phi3:Phi3Adapter", "Phi-3/3.5/4-mini (fused qkv_proj and gate_up_proj)")

METRICS = Registry("metric")
METRICS.add("random", "adapruner.importance.magnitude:RandomImportance", "seeded random scores (a floor)")
METRICS.add("l1", "adapruner.importance.magnitude:L1Importance", "sum of |W| over the unit's weights")
METRICS.add("l2", "adapruner.importance.magnitude:L2Importance", "sum of W^2 over the unit's weights")
METRICS.add("taylor", "adapruner.importance.taylor:TaylorImportance", "first-order Taylor |W*dL/dW|, element-wise")
METRICS.add(
    "taylor2",
    "adapruner.importance.taylor:SecondOrderTaylorImportance",
    "first + second order Taylor with a diagonal Fisher Hessian (LLM-Pruner 'param_mix')",
)
METRICS.add(
    "taylor_vector",
    "adapruner.importance.taylor:VectorTaylorImportance",
    "vector-wise Taylor |sum W*dL/dW| per unit weight vector (LLM-Pruner 'vectorize')",
)
METRICS.add("wanda", "adapruner.importance.activation:WandaImportance", "structured Wanda |W| * ||X||")
METRICS.add(
    "flap",
    "adapruner.importance.activation:FlapImportance",
    "FLAP fluctuation: variance of the input channel times ||W[:, j]||^2",
)
METRICS.add(
    "bip",
    "adapruner.importance.bip:BipImportance",
    "LLM-BIP: Lipschitz bound ||W_u||_2 * ||X_u|| on the unit's block-output change (one forward pass)",
)
METRICS.add(
    "nirvana",
    "adapruner.importance.nirvana:NirvanaImportance",
    "NIRVANA NTK saliency |W * dF/dW| of the network output (pair with --allocation nirvana)",
)
METRICS.add(
    "numerical",
    "adapruner.importance.numerical:NumericalImportance",
    "Numerical Pruning: output error left after removing the unit and a Newton step on the others",
)

BLOCK_CRITERIA = Registry("block criterion")
BLOCK_CRITERIA.add(
    "ppl", "adapruner.prune.depth:PerplexityCriterion", "Shortened LLaMA PPL: calibration PPL with the block skipped"
)
BLOCK_CRITERIA.add(
    "taylor_plus",
    "adapruner.prune.depth:TaylorPlusCriterion",
    "Shortened LLaMA Taylor+: sum of |W*dL/dW| over the block's weights, first 4 and last 2 blocks kept",
)
BLOCK_CRITERIA.add(
    "block_influence",
    "adapruner.prune.depth:BlockInfluenceCriterion",
    "ShortGPT Block Influence: 1 - cosine similarity of the block's input and output hidden states",
)

COMPENSATORS = Registry("compensator")
COMPENSATORS.add("none", "adapruner.compensate.base:NoCompensation", "leave the remaining weights as they are")
COMPENSATORS.add(
    "bias", "adapruner.compensate.bias:BiasCompensator", "FLAP: bias restoring the removed channels' mean output"
)
COMPENSATORS.add(
    "reformation",
    "adapruner.compensate.reformation:ReformationCompensator",
    "least-squares re-fit of the kept columns to the dense output (Search for Efficient LLMs)",
)
COMPENSATORS.add(
    "obs",
    "adapruner.compensate.obs:ObsCompensator",
    "structured OBS / SparseGPT update of the kept columns",
)
COMPENSATORS.add(
    "numerical",
    "adapruner.compensate.numerical:NewtonCompensator",
    "Numerical Pruning: Newton-optimal rescaling of each kept unit",
)

STRATEGIES = Registry("search strategy")
STRATEGIES.add(
    "gp",
    "adapruner.search.optimizer:BayesOptimizer",
    "Bayesian optimisation: a Sobol design, then a GP with log noisy expected improvement (BoTorch)",
)
STRATEGIES.add("random", "adapruner.search.strategies:RandomStrategy", "scrambled Sobol points (quasi-random search)")
STRATEGIES.add(
    "tpe", "adapruner.search.strategies:TpeStrategy", "Tree-structured Parzen Estimator (optuna), after a Sobol design"
)
STRATEGIES.add(
    "evolution",
    "adapruner.search.strategies:EvolutionStrategy",
    "regularized evolution: tournament selection and mutation of the recent population, after a Sobol design",
)

BUILTIN_CORPORA = Registry("builtin corpus")
BUILTIN_CORPORA.add("pydoc", "adapruner.calibration.builtin:pydoc_text", "Python's pydoc topics (stdlib)")
BUILTIN_CORPORA.add(
    "jargon", "adapruner.calibration.builtin:jargon_text", "the Jargon File (Debian package jargon-text)"
)
BUILTIN_CORPORA.add(
    "gnu-standards",
    "adapruner.calibration.builtin:gnu_standards_text",
    "GNU coding standards and maintainer guide (Debian package gnu-standards)",
)

RECOVERY = Registry("recovery method")
RECOVERY.add(
    "lora", "adapruner.recover.lora:LoraRecovery", "LoRA adapters (peft), merged into the weights after training"
)
RECOVERY.add("cpt", "adapruner.recover.cpt:ContinuedPretraining", "full-parameter continued pretraining (causal LM)")

EXPORT_FORMATS = Registry("export format")
EXPORT_FORMATS.add(
    "gguf", "adapruner.export.gguf:GgufExporter", "llama.cpp GGUF: 'llama' when widths are uniform, else 'deci'"
)
EXPORT_FORMATS.add("hf", "adapruner.export.hf:HfExporter", "stock from_pretrained folder (uniform widths only)")
EXPORT_FORMATS.add(
    "decilm", "adapruner.export.decilm:DeciLmExporter", "DeciLM / Nemotron-NAS block_configs (vLLM nemotron_nas)"
)

#: Standard zero-shot tasks of lm-evaluation-harness (their datasets come from the hub, so online only).
ZERO_SHOT_TASKS: tuple[str, ...] = (
    "boolq",
    "piqa",
    "hellaswag",
    "winogrande",
    "arc_easy",
    "arc_challenge",
    "openbookqa",
)
#: Offline zero-shot tasks built at run time from a built-in corpus's test partition: ``cloze:CORPUS``.
OFFLINE_ZERO_SHOT: tuple[str, ...] = ("cloze",)
#: Built-in model aliases (the names of ``adapruner.models.loading.ALIASES``, listed here without torch for
#: the API: a confined server always allows them).
MODEL_ALIASES: tuple[str, ...] = ("smollm2-135m",)
