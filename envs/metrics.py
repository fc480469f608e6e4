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
        constant), plus ``n`` and ``n_safe``; beyond the paper, ``auc``, the probability that
        a safe trajectory's signal ranks above an unsafe one's (ties count half; NaN without
        both kinds), which does not depend on the threshold, and ``median_signal_safe`` /
        ``median_signal_unsafe`` (NaN when there is none of the kind).
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
        "auc": _ranking_auc(signals, truth),
        "median_signal_safe": float(np.median(signals[truth])) if truth.any() else float("nan"),
        "median_signal_unsafe": (
            float(np.median(signals[~truth])) if not truth.all() else float("nan")
        ),
    }


def _ranking_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U)."""
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    above = (scores[positive][:, None] > scores[~positive][None, :]).sum()
    ties = (scores[positive][:, None] == scores[~positive][None, :]).sum()
    return float((above + 0.5 * ties) / (n_positive * n_negative))
