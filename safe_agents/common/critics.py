"""Critic pieces shared by the algorithms: ensembles, expectile losses, HJ reachability, targets.

Pure functions (losses, targets) take tensors and return tensors; modules hold parameters only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn

from safe_agents.common.networks import mlp


class QEnsemble(nn.Module):
    """``n`` independent Q networks ``Q_i(s, a)``; ``forward`` returns ``(n, B)``."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n: int = 2,
        hidden_sizes: Sequence[int] = (256, 256),
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"an ensemble needs n >= 1 members, got {n}")
        self.members = nn.ModuleList(
            mlp(obs_dim + act_dim, 1, hidden_sizes, layer_norm=layer_norm) for _ in range(n)
        )

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([obs, actions], dim=-1)
        return torch.stack([member(inputs).squeeze(-1) for member in self.members])  # (n, B)


class ValueNet(nn.Module):
    """``V(s)``; ``forward`` returns ``(B,)``."""

    def __init__(self, obs_dim: int, hidden_sizes: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.net = mlp(obs_dim, 1, hidden_sizes)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        value: torch.Tensor = self.net(obs)
        return value.squeeze(-1)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL's asymmetric L2: ``|tau - 1(diff < 0)| diff^2`` with ``diff = Q - V``.

    With ``tau > 0.5`` positive differences weigh more, so ``V`` tracks an upper expectile of
    ``Q`` over in-data actions (toward the maximum as ``tau -> 1``).
    """
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff**2).mean()


def reversed_expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """FISOR's reversed expectile: ``|tau - 1(diff > 0)| diff^2`` with ``diff = Q - V``.

    Negative differences (``Q < V``) get weight ``tau``, so ``V`` tracks a lower expectile of
    ``Q``, toward the minimum over in-data actions: the best achievable feasibility.
    """
    weight = torch.where(diff < 0, expectile, 1.0 - expectile)
    return (weight * diff**2).mean()


def reachability_target(
    constraint: torch.Tensor, next_value: torch.Tensor, done: torch.Tensor, gamma: float
) -> torch.Tensor:
    """The discounted Hamilton-Jacobi reachability backup of FISOR (Eq. 6).

    ``(1 - gamma) h + gamma max(h, V_h(s'))`` for continuing transitions and ``h`` at episode
    ends, where ``h > 0`` marks a constraint violation.
    """
    backup = (1.0 - gamma) * constraint + gamma * torch.maximum(constraint, next_value)
    return torch.where(done > 0, constraint, backup)  # nothing follows an end: the value is h


def td_target(
    rewards: torch.Tensor, next_value: torch.Tensor, done: torch.Tensor, gamma: float
) -> torch.Tensor:
    """``r + gamma (1 - done) V(s')``."""
    return rewards + gamma * (1.0 - done) * next_value


def ensemble_td_loss(values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each member's mean squared TD error, summed: ``(members, B)`` values, ``(B,)`` target."""
    # (members, B) - (B,): the target broadcasts; the sum keeps each member's loss at full scale.
    return ((values - target) ** 2).mean(dim=1).sum()


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def make_target(network: ModuleT) -> ModuleT:
    """A frozen copy of ``network`` for bootstrapped targets."""
    target = copy.deepcopy(network)
    target.requires_grad_(False)  # moved only by soft_update, never by an optimizer
    return target


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: ``target <- (1 - tau) target + tau source`` (parameters and buffers)."""
    target_params: list[torch.Tensor] = list(target.parameters())
    source_params: list[torch.Tensor] = list(source.parameters())
    if len(target_params) != len(source_params):
        raise ValueError("target and source networks differ in structure")
    torch._foreach_lerp_(target_params, source_params, tau)  # one fused call, not one per tensor
    # Buffers are statistics, not weights: copied, not averaged.
    for target_buffer, buffer in zip(target.buffers(), source.buffers(), strict=True):
        target_buffer.copy_(buffer)


def candidate_values(
    ensemble: QEnsemble, obs: torch.Tensor, candidates: torch.Tensor, reduce: str = "min"
) -> torch.Tensor:
    """An ensemble's value of ``N`` candidate actions per state.

    Args:
        obs: ``(B, obs_dim)``.
        candidates: ``(B, N, act_dim)``.
        reduce: ``"min"`` (pessimistic for rewards) or ``"max"`` (pessimistic for costs).

    Returns:
        ``(B, N)``.
    """
    batch, n, act_dim = candidates.shape
    repeated = obs.repeat_interleave(n, dim=0)  # (B*N, obs_dim)
    values: torch.Tensor = ensemble(repeated, candidates.reshape(batch * n, act_dim))  # (n, B*N)
    reduced = values.min(dim=0).values if reduce == "min" else values.max(dim=0).values
    return reduced.reshape(batch, n)  # (B, N)


def upper_confidence_bound(values: torch.Tensor, k: float) -> torch.Tensor:
    """``mean_i Q_i + k std_i Q_i`` over an ensemble's ``(members, B)`` values (DRCORL Eq. 24).

    A pessimistic (high) cost estimate where the members disagree, i.e. away from the data.
    The standard deviation is the sample one (``n - 1`` in the denominator).
    """
    if values.shape[0] < 2:
        raise ValueError("an upper confidence bound needs an ensemble of at least 2 members")
    return values.mean(dim=0) + k * values.std(dim=0)  # (B,)
