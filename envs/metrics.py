"""Normalized metrics of the evaluation protocol (DSRL / FISOR), defined once.

- normalized return = (R - R_min) / (R_max - R_min), with the task's reference returns;
- normalized cost = (C + eps) / (kappa + eps), kappa the cost limit, eps = 1 if kappa == 0 else 0.
  An episode is safe when its normalized cost is <= 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalizer:
    """Reference values that turn raw episode returns and costs into normalized ones."""

    reward_min: float
    reward_max: float
    cost_limit: float

    def __post_init__(self) -> None:
        if not self.reward_max > self.reward_min:
            raise ValueError(
                f"reward_max ({self.reward_max}) must be greater than reward_min "
                f"({self.reward_min})"
            )
        if self.cost_limit < 0:
            raise ValueError(f"cost_limit must be >= 0, got {self.cost_limit}")

    def normalized_return(self, episode_return: float | np.ndarray) -> float | np.ndarray:
        """(R - R_min) / (R_max - R_min)."""
        return (episode_return - self.reward_min) / (self.reward_max - self.reward_min)

    def normalized_cost(self, episode_cost: float | np.ndarray) -> float | np.ndarray:
        """(C + eps) / (kappa + eps), eps = 1 when kappa = 0 so a zero limit stays defined."""
        eps = 1.0 if self.cost_limit == 0 else 0.0
        return (episode_cost + eps) / (self.cost_limit + eps)
