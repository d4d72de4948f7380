"""Evaluation: perplexity, parameter counts, FLOPs, speed and memory."""

from adapruner.evaluate.perplexity import Perplexity, perplexity
from adapruner.evaluate.size import count_parameters, forward_flops, ideal_speedup
from adapruner.evaluate.speed import GenerationSpeed, Speed, measure_generation, measure_speed, weights_bytes

__all__ = [
    "GenerationSpeed",
    "Perplexity",
    "Speed",
    "count_parameters",
    "forward_flops",
    "ideal_speedup",
    "measure_generation",
    "measure_speed",
    "perplexity",
    "weights_bytes",
]
