"""Compensation after pruning: update the remaining weights of each output projection so that its
output on the calibration data moves as little as possible (FLAP bias, least-squares reformation,
structured OBS, Newton rescaling)."""

from adapruner.compensate.base import Compensator, PrunedInput, build_compensator, output_error, pruned_inputs

__all__ = ["Compensator", "PrunedInput", "build_compensator", "output_error", "pruned_inputs"]
