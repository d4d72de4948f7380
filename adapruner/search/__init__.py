"""Search over calibration data x metric mix x allocation (AdaPruner), as an ask/tell library API."""

from adapruner.search.optimizer import BayesOptimizer, Dim, Trial
from adapruner.search.run import SearchOutcome, run_search

__all__ = ["BayesOptimizer", "Dim", "SearchOutcome", "Trial", "run_search"]
