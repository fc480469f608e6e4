"""Critic pieces shared by the algorithms: ensembles, expectile losses, HJ reachability, targets.

Pure functions (losses, targets) take tensors and return tensors; modules hold parameters only.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from safe_agents.common.networks import mlp

_TensorLists = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]


# Rows x units of an ensemble's layer from which its members are multiplied one by one.
_LARGE_LAYER = 1 << 19


class QEnsemble(nn.Module):
    """``n`` independent Q networks ``Q_i(s, a)`` (ReLU MLPs); ``forward`` returns ``(n, B)``.

    The members are evaluated as one batched network: their first layers as one matrix product
    (the input is shared), every later layer as one ``baddbmm`` over the members, so an
    ensemble costs a single network's operations whatever ``n`` (on a CPU, small critics spend
    more time dispatching operations than computing them). Large layers (``_LARGE_LAYER`` rows
    x units and more), where a plain matrix product beats a batched one, go member by member.
    Each member is initialised exactly as a separate ``mlp`` would be. Layer ``k``'s weights
    are ``weight_k`` ``(n, out, in)`` and ``bias_k`` ``(n, out)``; files saved with the former
    per-member layout (``members.<i>.<j>.weight``) are converted on load.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n: int = 2,
        hidden_sizes: Sequence[int] = (256, 256),
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"an ensemble needs n >= 1 members, got {n}")
        self.n = n
        # Built as n separate MLPs and stacked: the same initial values, drawn in the same order.
        members = [mlp(obs_dim + act_dim, 1, hidden_sizes) for _ in range(n)]
        linears = [[m for m in member if isinstance(m, nn.Linear)] for member in members]
        self.n_layers = len(linears[0])
        for k in range(self.n_layers):
            weight = torch.stack([layers[k].weight.detach() for layers in linears])
            bias = torch.stack([layers[k].bias.detach() for layers in linears])
            self.register_parameter(f"weight_{k}", nn.Parameter(weight))  # (n, out, in)
            self.register_parameter(f"bias_{k}", nn.Parameter(bias))  # (n, out)
        self._register_load_state_dict_pre_hook(self._convert_member_layout)

    def layer(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``k``'s ``(n, out, in)`` weights and ``(n, out)`` biases."""
        weight: torch.Tensor = getattr(self, f"weight_{k}")
        bias: torch.Tensor = getattr(self, f"bias_{k}")
        return weight, bias

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([obs, actions], dim=-1)  # (B, in)
        weight, bias = self.layer(0)
        n, width = weight.shape[:2]
        if len(inputs) * width >= _LARGE_LAYER:
            return self._member_by_member(inputs)
        # One product for every member's first layer: (B, in) @ (in, n * out).
        first = torch.addmm(bias.reshape(-1), inputs, weight.reshape(n * width, -1).t())
        x = first.reshape(len(inputs), n, width).transpose(0, 1)  # (n, B, out)
        for k in range(1, self.n_layers):
            weight, bias = self.layer(k)
            # (n, B, in) @ (n, in, out) + (n, 1, out)
            x = torch.baddbmm(bias.unsqueeze(1), torch.relu(x), weight.transpose(1, 2))
        return x.squeeze(-1)  # (n, B)

    def _member_by_member(self, inputs: torch.Tensor) -> torch.Tensor:
        """Each member on its own: for large layers plain matrix products are faster than a
        batched one and a shared wide one (BCQ-Lag's and CPQ's 2560 rows by 256 units: 3-5%)."""
        members = []
        for i in range(self.n):
            x = inputs
            for k in range(self.n_layers):
                weight, bias = self.layer(k)
                x = torch.addmm(bias[i], torch.relu(x) if k else x, weight[i].t())
            members.append(x.squeeze(-1))
        return torch.stack(members)  # (n, B)

    def _convert_member_layout(
        self, state_dict: dict[str, torch.Tensor], prefix: str, *args: object
    ) -> None:
        """Stack the weights of a file saved with one ``nn.Sequential`` per member."""
        old = sorted(key for key in state_dict if key.startswith(f"{prefix}members."))
        if not old:
            return
        # members.<i>.<index in the Sequential>.<weight|bias>, linear layers in index order.
        indices = sorted({int(key.split(".")[-2]) for key in old})
        for k, index in enumerate(indices):
            for kind in ("weight", "bias"):
                tensors = [
                    state_dict.pop(f"{prefix}members.{i}.{index}.{kind}")
                    for i in range(self.n)
                    if f"{prefix}members.{i}.{index}.{kind}" in state_dict
                ]
                if tensors:
                    state_dict[f"{prefix}{kind}_{k}"] = torch.stack(tensors)


def stack_member_optimizer_state(
    state: dict[str, Any], optimizer: torch.optim.Optimizer, ensembles: Sequence[QEnsemble]
) -> dict[str, Any]:
    """An optimizer's saved state, converted from the per-member layout of ``QEnsemble``.

    Before the ensembles were batched (safe-agents 0.1.0), an ensemble's parameters were listed
    member by member (member 0's weight and bias of every layer, then member 1's...); today
    each layer's weight and bias stack the members. An optimizer state saved then lists more
    parameters, and its per-parameter tensors (Adam's moments) have a member's shape; this
    stacks them as the weights are stacked (``QEnsemble``'s load hook), so such a file resumes
    training where it stopped. A state in today's layout, or one this cannot map, is returned
    as it is (``load_state_dict`` and the agent's checks then report what does not fit).
    """
    owners = {
        id(parameter): ensemble for ensemble in ensembles for parameter in ensemble.parameters()
    }
    groups, saved_state = state.get("param_groups"), state.get("state")
    if (
        not owners
        or not isinstance(groups, list)
        or not isinstance(saved_state, dict)
        or len(groups) != len(optimizer.param_groups)
    ):
        return state
    new_groups: list[dict[str, Any]] = []
    new_state: dict[int, Any] = {}
    offset = 0
    converted = False
    for group, saved in zip(optimizer.param_groups, groups, strict=True):
        params = group["params"]
        old = saved.get("params") if isinstance(saved, dict) else None
        if not isinstance(old, list):
            return state
        sources = _member_sources(params, old, owners)
        if sources is None:
            return state
        indices: list[int] = []
        for parameter, source in zip(params, sources, strict=True):
            states = [saved_state[i] for i in source if i in saved_state]
            index = offset + len(indices)  # renumbered in order, as state_dict() numbers them
            if states:
                if len(states) != len(source) or not all(isinstance(s, dict) for s in states):
                    return state
                new_state[index] = dict(states[0])
                for key, value in states[0].items():
                    # A member's moment (a one-member ensemble's too): stacked along members.
                    if (
                        id(parameter) in owners
                        and isinstance(value, torch.Tensor)
                        and value.dim() > 0
                        and value.shape != parameter.shape
                    ):
                        new_state[index][key] = torch.stack([s[key] for s in states])
                        converted = True
            indices.append(index)
        new_groups.append({**saved, "params": indices})
        offset += len(indices)
    if not converted:
        return state
    return {**state, "state": new_state, "param_groups": new_groups}


def _member_sources(
    params: list[torch.Tensor], old: list[Any], owners: dict[int, QEnsemble]
) -> list[list[Any]] | None:
    """For each of ``params``, the saved indices it stacks (one, or an ensemble's ``n``)."""
    if len(old) == len(params):  # today's layout (or one-member ensembles: shapes differ only)
        return [[index] for index in old]
    sources: list[list[Any]] = []
    position = 0
    j = 0
    while j < len(params):
        ensemble = owners.get(id(params[j]))
        if ensemble is None:
            if position >= len(old):
                return None
            sources.append([old[position]])
            j, position = j + 1, position + 1
            continue
        block = list(ensemble.parameters())  # weight_0, bias_0, weight_1, ...: a member's order
        if [id(p) for p in params[j : j + len(block)]] != [id(p) for p in block]:
            return None  # an ensemble split across the list: not a layout this knows
        if position + len(block) * ensemble.n > len(old):
            return None
        for k in range(len(block)):
            sources.append(
                [old[position + member * len(block) + k] for member in range(ensemble.n)]
            )
        j, position = j + len(block), position + len(block) * ensemble.n
    return sources if position == len(old) else None


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


# target -> (source, target's and source's parameters, target's and source's buffers): walking a
# module tree costs more than averaging a small network, and soft updates run at every step.
# The lists stay valid: .to(), load_state_dict and optimizers change tensors in place.
_AVERAGED: weakref.WeakKeyDictionary[nn.Module, tuple[nn.Module, _TensorLists]] = (
    weakref.WeakKeyDictionary()
)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: ``target <- (1 - tau) target + tau source`` (parameters and buffers)."""
    cached = _AVERAGED.get(target)
    if cached is None or cached[0] is not source:
        lists: _TensorLists = (
            [*target.parameters()],
            [*source.parameters()],
            [*target.buffers()],
            [*source.buffers()],
        )
        if len(lists[0]) != len(lists[1]) or len(lists[2]) != len(lists[3]):
            raise ValueError("target and source networks differ in structure")
        cached = (source, lists)
        _AVERAGED[target] = cached
    target_params, source_params, target_buffers, source_buffers = cached[1]
    torch._foreach_lerp_(target_params, source_params, tau)  # one fused call, not one per tensor
    if target_buffers:  # buffers are statistics, not weights: copied, not averaged
        torch._foreach_copy_(target_buffers, source_buffers)


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
