"""Normalized metrics of the evaluation protocol (DSRL / FISOR), defined once.

- normalized return = (R - R_min) / (R_max - R_min), with the task's reference returns;
- normalized cost = (C + eps) / (kappa + eps), kappa the cost limit, eps = 1 if kappa == 0 else 0.
  An episode is safe when its normalized cost is <= 1.

Also :func:`discriminator_report`, DSPO's Table 2: how well per-trajectory safety signals learned
without cost labels agree with the hidden labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


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


def discriminator_report(
    signals: ArrayLike, is_safe: ArrayLike, threshold: float = 0.5
) -> dict[str, float]:
    """The paper's Table 2 metrics of safety signals against the hidden true labels.

    Args:
        signals: ``(N,)`` per-trajectory signals in ``(0, 1)`` (``DSPO.safety_signals``).
        is_safe: ``(N,)`` whether each trajectory is within the cost limit.
        threshold: a signal ``>= threshold`` counts as "safe".

    Returns:
        ``recall`` (safe trajectories called safe), ``precision``, ``accuracy``, ``f1`` and
        ``pearson`` (correlation of the signal with the safe indicator; NaN when either is
        constant), plus ``n`` and ``n_safe``.
    """
    signals = np.asarray(signals, dtype=np.float64).reshape(-1)
    truth = np.asarray(is_safe, dtype=bool).reshape(-1)
    if signals.shape != truth.shape:
        raise ValueError(f"signals {signals.shape} and labels {truth.shape} differ in length")
    called = signals >= threshold
    true_positive = float(np.sum(called & truth))
    recall = true_positive / max(truth.sum(), 1)
    precision = true_positive / max(called.sum(), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    constant = signals.std() == 0 or truth.all() or not truth.any()
    pearson = float("nan") if constant else float(np.corrcoef(signals, truth)[0, 1])
    return {
        "recall": float(recall),
        "precision": float(precision),
        "accuracy": float(np.mean(called == truth)),
        "f1": float(f1),
        "pearson": pearson,
        "n": int(len(truth)),
        "n_safe": int(truth.sum()),
    }
