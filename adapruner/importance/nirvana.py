"""NIRVANA saliency (Ai et al., 2025, arXiv 2509.14230): NTK-informed structured pruning.

Under Adam the NTK stays close to its initial value when the network output moves little, so NIRVANA
scores each weight by the first-order change of the network *output* (not the loss) when the weight is
removed, ``S(W_ij) = |dF/dW_ij * W_ij|``, with F the logits maximised over positions and averaged over
the vocabulary (the reference code's output functional). A unit's saliency is the L1 sum over every
weight of its coupled slices (q/k/v rows and o_proj columns of a KV group, so grouped-query attention is
pruned by whole KV heads; gate/up rows and the down_proj column of an MLP channel). The adaptive
allocation across layers and between attention and MLP is ``PruneConfig.allocation='nirvana'``
(:func:`adapruner.prune.plan.plan_widths`).
"""

from __future__ import annotations

import torch

from adapruner.adapters.base import CoupledSlice
from adapruner.importance.base import Importance
from adapruner.stats import Statistics


class NirvanaImportance(Importance):
    """Element-wise ``|W * dF/dW|`` summed over each unit's weights."""

    needs = frozenset({"out_grad"})
    pooled_from = "nirvana_abs"  # per-sample saliencies added: sum_s |W f_s| >= |W sum_s f_s|

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor:
        return (weight.float() * stats.out_grad[slice_.module]).abs()
