"""``select_candidates``: sample many actions, execute the best one by a safety score.

Used by FISOR and SPI at ``predict`` and by ``envs.SafetyFilter``.
"""

from __future__ import annotations

import torch

MODES = ("safest", "reward_within_threshold")


def select_candidates(
    candidates: torch.Tensor,
    cost_scores: torch.Tensor,
    reward_scores: torch.Tensor | None = None,
    threshold: float | torch.Tensor = 0.0,
    mode: str = "safest",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one action per state among ``N`` candidates.

    Args:
        candidates: ``(B, N, act_dim)`` candidate actions.
        cost_scores: ``(B, N)``, lower is safer (e.g. ``Q_h``, a cost Q value).
        reward_scores: ``(B, N)``, higher is better; needed by ``"reward_within_threshold"``.
        threshold: candidates with ``cost_score <= threshold`` count as safe; a float, or a
            ``(B,)`` tensor with one threshold per state.
        mode: ``"safest"``: the lowest cost score; ``"reward_within_threshold"``: the highest
            reward score among safe candidates, or the safest candidate when none is safe.

    Returns:
        ``(actions, index)``: ``(B, act_dim)`` chosen actions and their ``(B,)`` indices.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if candidates.dim() != 3 or cost_scores.shape != candidates.shape[:2]:
        raise ValueError(
            f"candidates must be (B, N, act_dim) and cost_scores (B, N); got "
            f"{tuple(candidates.shape)} and {tuple(cost_scores.shape)}"
        )
    safest = cost_scores.argmin(dim=1)  # (B,)
    if mode == "safest":
        index = safest
    else:
        if reward_scores is None or reward_scores.shape != cost_scores.shape:
            raise ValueError("mode 'reward_within_threshold' needs reward_scores shaped (B, N)")
        if isinstance(threshold, torch.Tensor) and threshold.dim() == 1:
            threshold = threshold.unsqueeze(1)  # (B, 1), broadcast over the N candidates
        safe = cost_scores <= threshold
        masked = reward_scores.masked_fill(~safe, float("-inf"))  # unsafe ones never win
        # A state with no safe candidate falls back to its safest one.
        index = torch.where(safe.any(dim=1), masked.argmax(dim=1), safest)
    # (B, act_dim): row b takes its candidate index[b].
    actions = candidates[torch.arange(len(candidates), device=candidates.device), index]
    return actions, index
