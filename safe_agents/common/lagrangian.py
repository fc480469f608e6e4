"""The PID Lagrange multiplier of Stooke et al. (2020), shared by the Lagrangian agents.

A plain gradient-ascent multiplier oscillates around the cost limit; adding a proportional and a
derivative term damps it. With ``error = cost - limit``:

- integral: ``I <- max(0, I + error)``;
- ``lambda = max(0, K_P max(0, error) + K_I I + K_D max(0, cost - previous cost))``, capped.

The state lives in buffers, so it is saved and restored with the agent's weights and a resumed
run continues exactly.
"""

from __future__ import annotations

import torch
from torch import nn


class PIDLagrangian(nn.Module):
    """A non-negative multiplier that grows while ``cost > limit`` and decays when under it.

    Args:
        kp / ki / kd: the PID gains (OSRL and DRCORL: 0.1, 0.003, 0.001).
        max_multiplier: the cap on ``lambda``.
    """

    integral: torch.Tensor
    previous_cost: torch.Tensor
    multiplier: torch.Tensor

    def __init__(
        self, kp: float = 0.1, ki: float = 0.003, kd: float = 0.001, max_multiplier: float = 100.0
    ) -> None:
        super().__init__()
        if min(kp, ki, kd) < 0 or max_multiplier <= 0:
            raise ValueError(
                f"PID gains must be >= 0 and max_multiplier > 0, got {kp}, {ki}, {kd}, "
                f"{max_multiplier}"
            )
        self.kp, self.ki, self.kd, self.max_multiplier = kp, ki, kd, max_multiplier
        self.register_buffer("integral", torch.zeros(()))
        self.register_buffer("previous_cost", torch.zeros(()))
        self.register_buffer("multiplier", torch.zeros(()))

    @torch.no_grad()
    def update(self, cost: float, limit: float) -> float:
        """Feed the latest cost estimate; returns the new multiplier."""
        error = cost - limit
        self.integral.copy_(torch.clamp(self.integral + error, min=0.0))
        rise = max(cost - float(self.previous_cost), 0.0)
        value = self.kp * max(error, 0.0) + self.ki * float(self.integral) + self.kd * rise
        self.multiplier.fill_(min(max(value, 0.0), self.max_multiplier))
        self.previous_cost.fill_(cost)
        return float(self.multiplier)
