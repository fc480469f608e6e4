"""The PID Lagrange multiplier of Stooke et al. (2020), shared by the Lagrangian agents, and the
conversion of an episode cost limit into the units of a discounted cost critic.

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
        # Floored at 0: time spent under the limit is not banked against later violations.
        self.integral.copy_(torch.clamp(self.integral + error, min=0.0))
        # Rises only: a falling cost does not pull lambda down early.
        rise = max(cost - float(self.previous_cost), 0.0)
        value = self.kp * max(error, 0.0) + self.ki * float(self.integral) + self.kd * rise
        # lambda >= 0 as a dual variable; the cap bounds the penalty's weight in the loss.
        self.multiplier.fill_(min(max(value, 0.0), self.max_multiplier))
        self.previous_cost.fill_(cost)
        return float(self.multiplier)


def cost_limit_in_q_units(cost_limit: float, gamma: float, episode_length: float) -> float:
    """The threshold on a discounted cost value ``Q_c`` that matches an episode cost limit.

    ``kappa (1 - gamma^L) / ((1 - gamma) L)``: an episode of length ``L`` spending its budget
    ``kappa`` evenly, ``kappa / L`` per step, has this discounted value at its start (OSRL's
    ``qc_thres``; the design's shared conversion for Lagrangian and Q-cost methods).

    Raises:
        ValueError: a negative limit, ``gamma`` outside ``[0, 1)`` or a length below 1.
    """
    if cost_limit < 0:
        raise ValueError(f"cost_limit must be >= 0, got {cost_limit}")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if episode_length < 1:
        raise ValueError(f"episode_length must be >= 1, got {episode_length}")
    discount: float = gamma**episode_length  # float ** float is Any to mypy (could be complex)
    return cost_limit * (1.0 - discount) / ((1.0 - gamma) * episode_length)
