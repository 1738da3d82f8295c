"""Hard-concrete gates: one learned, stochastic scalar per attention head.

A gate is a stretched and clipped binary concrete variable (Louizos et al. 2018), as Voita et
al. (2019) put on the heads of a Transformer: in training each forward draws a gate in [0, 1]
per head, exactly 0 or 1 with nonzero probability, and the expected number of open gates
(E[L0]) is differentiable in ``log_alpha``; a penalty on it closes heads. In evaluation the
gate is deterministic, and a head whose gate is 0 can be pruned.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BETA = 2.0 / 3.0  # temperature of the concrete distribution (Louizos et al. 2018)
GAMMA, ZETA = -0.1, 1.1  # the stretch interval (gamma, zeta), clipped back to [0, 1]
# log_alpha at which the evaluation gate sigmoid(a) * (zeta - gamma) + gamma first reaches 1:
# a new gate starts just above it, so adding gates to a trained model leaves its evaluation
# outputs unchanged until the gates learn.
OPEN = math.log((1 - GAMMA) / (ZETA - 1))
INIT_LOG_ALPHA = OPEN + 0.1


class HardConcreteGate(nn.Module):
    """``num_gates`` hard-concrete gates; ``forward()`` returns their values (num_gates,).

    Args:
        num_gates: one per head.
    """

    def __init__(self, num_gates: int) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((num_gates,), INIT_LOG_ALPHA))

    def forward(self) -> Tensor:
        """A draw per gate in training, the deterministic gate in evaluation; (num_gates,)."""
        if not self.training:
            return self.deterministic()
        u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def deterministic(self) -> Tensor:
        """The evaluation-time gates (num_gates,): the stretched sigmoid of log_alpha, clipped."""
        return (torch.sigmoid(self.log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def open_probability(self) -> Tensor:
        """P(gate != 0) per gate (num_gates,); its sum is the expected L0 norm."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))
