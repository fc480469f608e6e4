"""The density filter: episodes thinned on a reward-cost grid (DSRL's, Liu et al. 2023, Sec. 4).

Converged policies record many near-identical episodes; capping every grid cell keeps them from
drowning the rarer regions of the reward-cost plane that offline safe RL needs to see.
"""

from __future__ import annotations

import numpy as np


def density_filter(
    returns: np.ndarray,
    costs: np.ndarray,
    bins: int | tuple[int, int] = 20,
    cap: int = 8,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Episodes to keep so that they spread over the reward-cost plane (DSRL's grid filter).

    The ranges of episode cost and return are each cut into equal bins; a grid cell holding more
    than ``cap`` episodes keeps ``cap`` of them drawn at random, other cells keep all.

    Args:
        returns: ``(E,)`` episode returns.
        costs: ``(E,)`` episode costs.
        bins: bins per axis, or ``(cost_bins, return_bins)``.
        cap: the most episodes kept per cell.
        rng: a generator or seed for the draws (None: seed 0, so the result is repeatable).

    Returns:
        ``(K,)`` sorted int64 indices of the kept episodes.

    Raises:
        ValueError: unequal lengths, non-finite values, or ``bins``/``cap`` below 1.
    """
    returns = np.asarray(returns, dtype=np.float64).reshape(-1)
    costs = np.asarray(costs, dtype=np.float64).reshape(-1)
    if len(returns) != len(costs):
        raise ValueError(f"returns has {len(returns)} episodes but costs has {len(costs)}")
    for name, values in (("returns", returns), ("costs", costs)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"{name} has a non-finite value at index {bad[0]}")
    cost_bins, return_bins = (bins, bins) if isinstance(bins, int) else bins
    if min(cost_bins, return_bins) < 1 or cap < 1:
        raise ValueError(f"bins and cap must be >= 1, got bins={bins}, cap={cap}")
    if not len(returns):
        return np.zeros(0, dtype=np.int64)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng or 0)
    cell = _bin_index(costs, cost_bins) * return_bins + _bin_index(returns, return_bins)
    kept = []
    for value in np.unique(cell):  # sorted, so the draws happen in a fixed order
        members = np.flatnonzero(cell == value)
        if len(members) > cap:
            members = generator.choice(members, size=cap, replace=False)
        kept.append(members)
    return np.sort(np.concatenate(kept)).astype(np.int64)


def _bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Each value's bin among ``n_bins`` equal bins over the values' range."""
    low, high = float(values.min()), float(values.max())
    if not high > low:  # every value equal: one bin
        return np.zeros(len(values), dtype=np.int64)
    index = np.floor((values - low) / (high - low) * n_bins).astype(np.int64)
    return np.clip(index, 0, n_bins - 1)  # the maximum falls on the upper edge
