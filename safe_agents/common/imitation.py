"""Behaviour-cloning losses, shared by BC-All/BC-Safe, DRCORL's policy extraction and COptiDICE.

Actions are the dataset's, rescaled to ``[-1, 1]`` (:class:`~safe_agents.common.networks.
ActionScaler`); a Gaussian policy's log-likelihood is summed over action dimensions, as OSRL's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse_bc_loss(predicted_actions: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and dataset actions (both in ``[-1, 1]``)."""
    return F.mse_loss(predicted_actions, actions)


def gaussian_bc_loss(
    distribution: torch.distributions.Normal, actions: torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood of the dataset actions, summed over action dimensions."""
    log_prob: torch.Tensor = distribution.log_prob(actions)
    return -log_prob.sum(dim=-1).mean()


def weighted_bc_loss(
    distribution: torch.distributions.Normal, actions: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``-E_D[w log pi(a | s)]``, the log-likelihood summed over action dimensions; the weights
    are constants (no gradient reaches whatever computed them)."""
    log_prob: torch.Tensor = distribution.log_prob(actions)
    return -(weights.detach() * log_prob.sum(dim=-1)).mean()
