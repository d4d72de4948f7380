"""Typed configs (moving into a package split by concern)."""

from adapruner.config.stages import *  # noqa: F403
from adapruner.config.stages import JOB_SPECS, StrictModel  # noqa: F401
