"""CDT: the Constrained Decision Transformer (Liu et al., "Constrained Decision Transformer for
Offline Safe Reinforcement Learning", ICML 2023), as in OSRL's ``osrl/algorithms/cdt.py``.

A causal (GPT-style) transformer reads the last ``K = seq_len`` steps of a trajectory as
interleaved tokens, in OSRL's order per timestep ``t``::

    (R_t, C_t, s_t, a_t),   R_t = sum_{t' >= t} r_t',   C_t = sum_{t' >= t} c_t'

(return-to-go and cost-to-go, both undiscounted and including step ``t``). Every token gets a
learned embedding of the timestep ``t`` added; there is no other positional embedding. The
output at the state token ``s_t`` predicts the action ``a_t``; the output at the action token
predicts whether step ``t`` costs (two classes) and the next state. The loss is

    L = L_act + w_c * NLL(1[c_t > 0] | h(a_t)) + w_s * ||s_hat_{t+1} - s_{t+1}||^2

with, for the stochastic head (OSRL's default), ``L_act = -(E[log pi(a_t | h(s_t))] + alpha H)``
and the temperature learned towards a target entropy as in SAC,
``L_alpha = alpha (H - H_target)`` with ``H`` held fixed; for the deterministic head
``L_act = ||a_hat_t - a_t||^2``. Conditioning values enter the network as ``R_t * reward_scale``
and ``50 - C_t * cost_scale`` (OSRL's ``cost_transform``, so that "more budget left" is a
larger number, like the return).

At deployment the agent is given a target return ``R_0`` and a target cost ``C_0`` (the cost
budget, by default the cost limit) and after each step both are decremented by the reward and
cost received: ``R_{t+1} = R_t - r_t``, ``C_{t+1} = C_t - c_t``. ``predict`` carries this context
in its ``state`` (a :class:`CDTContext`) and :meth:`CDT.record_outcome` does the decrement.

Data (OSRL's ``SequenceDataset``): a trajectory is drawn (with ``cost_reweight``, with
probability proportional to ``max(50 - C(tau), 0)``, OSRL's ``cost_sample``), then a start step
uniformly within it; segments running past the episode's end are padded at the end and masked.
**Return relabeling augmentation** (the paper's Sec. 4.3, OSRL's ``augmentation``): targets
``(kappa, rho)`` are drawn with ``kappa`` on a grid over the dataset's episode costs and ``rho``
above the reward-cost frontier ``f(kappa) = max{R(tau) : C(tau) <= kappa}``, i.e. infeasible
returns; each is paired with the trajectory that attains ``f(kappa)`` and that trajectory is
added again with its returns-to-go and costs-to-go shifted to start at ``rho`` and ``kappa``.
The model thus learns that when asked for more than the data can give under a budget, the best
it can do is the best trajectory within that budget, which keeps it safe under infeasible
targets.

Defaults (OSRL ``examples/configs/cdt_configs.py``): embedding 128, 3 layers, 8 heads, context 10,
dropouts 0.1, AdamW (lr 1e-4, weight decay 1e-4, betas (0.9, 0.999)), gradient clipping 0.25,
linear warmup over 500 steps, batch 2048, 100k steps, reward scale 0.1, cost scale 1,
stochastic head with initial temperature 0.1 and target entropy ``-act_dim``, cost loss weight
0.02, state loss weight 0, augmentation of 20% of the episode count with a minimum gap of 1.

**Deviations**:

- Observations are standardized with the dataset's statistics (``normalize_observations``;
  OSRL feeds raw observations) and actions are rescaled to ``[-1, 1]``.
- Augmentation is simplified: the frontier is the exact step function ``f(kappa)`` of the data
  instead of a degree-4 polynomial fitted to the Pareto points (no ``oapackage``), the target is
  paired with the frontier trajectory itself (the paper's rule) instead of OSRL's nearest data
  point with repeated picks spread over neighbours (``max_rew_decrease``, ``beta``), grid points
  where nothing lies above the frontier are skipped, and the upper return bound defaults to
  the dataset's best episode return instead of a per-task constant (OSRL's ``max_reward``).
  Its draws use a NumPy generator seeded by the agent's seed, so it is the same on every call
  of ``learn_offline`` (resuming included). OSRL's other sampling modes (``pf_sample``,
  ``pf_only``, ``random_aug``, ``start_sampling``) and model variants (``cost_prefix``,
  ``add/mul/cat_cost_feat``) are not implemented.
- The stochastic head's log-likelihood and entropy are summed over action dimensions (per step)
  so that they are on the scale of the target entropy ``-act_dim``; OSRL averages over
  dimensions. Its log standard deviation is clamped to ``[-5, 2]`` (OSRL declares these bounds
  but does not apply them). All losses are means over the unpadded steps (OSRL's MSE and cost
  losses divide by the padded size too); the next-state loss masks by the next step's validity.
- Cost labels of the cost head are ``1[c_t > 0]`` (OSRL casts the cost to an integer class,
  which assumes 0/1 costs).
- The timestep embedding is built before the data is seen, so ``episode_len=None`` allocates
  OSRL's model default of 1000 steps (and training checks that the data fits) instead of taking
  the dataset's episode length; deployment timesteps beyond the table reuse its last entry.
- The learning-rate warmup is computed from the step counter instead of a ``LambdaLR``
  scheduler (same values, and exact on resume).
- Checkpoints are never selected by evaluation (OSRL evaluates during training).

**Layout**: config, losses, the data (returns-to-go, relabeling, the segment sampler), the
network, the deployment context, the agent. What CDT shares with DSPO's SafetyTransformer (the
windows cut from episodes with their padding masks, the interleaved-token causal trunk, masked
means) lives in :mod:`safe_agents.common.sequence`. The module is still well over the house's
~600 lines because the rest is CDT's alone: the return relabeling of the paper's Sec. 4.3, a
network with three heads, and a ``predict`` that carries the countdown of the returns- and
costs-to-go across calls (:class:`CDTContext`, :meth:`CDT.record_outcome`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from torch import nn

from safe_agents.common.base import BaseAgent
from safe_agents.common.config import (
    AgentConfig,
    check_choice,
    check_in_range,
    check_positive,
)
from safe_agents.common.data import DEFAULT_COST_LIMIT, resolve_cost_limit, returns_to_go
from safe_agents.common.dataset import OfflineDataset
from safe_agents.common.device import optimizer_options
from safe_agents.common.logger import Metrics
from safe_agents.common.networks import ScalarBuffer, init_transformer_weights
from safe_agents.common.sequence import (
    EpisodeWindows,
    TokenTransformer,
    masked_mean,
    uniform_offsets,
)

#: OSRL's ``cost_transform`` ``C -> 50 - C`` and trajectory weights ``max(50 - C, 0)``.
COST_TRANSFORM_OFFSET = 50.0
#: Timesteps the embedding covers when ``episode_len`` is None (OSRL's ``CDT`` default).
DEFAULT_EPISODE_LEN = 1000
LOG_STD_BOUNDS = (-5.0, 2.0)


@dataclass(kw_only=True)
class CDTConfig(AgentConfig):
    """CDT hyperparameters (OSRL ``CDTTrainConfig`` defaults).

    Attributes:
        n_steps: gradient steps; OSRL ``update_steps`` 100k.
        batch_size: trajectory segments per step; OSRL 2048.
        embedding_dim: token width; OSRL 128.
        num_layers: transformer blocks; OSRL 3.
        num_heads: attention heads (must divide ``embedding_dim``); OSRL 8.
        seq_len: context length K in timesteps (4 K tokens); OSRL 10.
        episode_len: the longest episode the timestep embedding covers (it has
            ``episode_len + seq_len`` rows, OSRL's layout). None allocates 1000 (OSRL's model
            default) and training checks that the dataset's episodes fit.
        attention_dropout: dropout on attention weights; OSRL 0.1.
        residual_dropout: dropout on the residual branches; OSRL 0.1.
        embedding_dropout: dropout on the token embeddings; OSRL 0.1.
        action_head_layers: layers of the action head (``n - 1`` hidden GELU layers of width
            ``embedding_dim``, then the output); OSRL 1.
        stochastic: a diagonal Gaussian action head trained by likelihood with an entropy
            bonus (OSRL True), or a deterministic head trained by MSE (False).
        init_temperature: initial entropy temperature alpha; OSRL 0.1.
        target_entropy: entropy the temperature steers to; None is ``-act_dim`` (OSRL).
        temperature_learning_rate: Adam rate of ``log alpha``; OSRL 1e-4.
        learning_rate: AdamW learning rate; OSRL 1e-4.
        weight_decay: AdamW weight decay; OSRL 1e-4.
        betas: AdamW betas; OSRL (0.9, 0.999).
        clip_grad: gradient-norm clipping, None for none; OSRL 0.25.
        warmup_steps: linear learning-rate warmup ``min((step + 1) / warmup, 1)``; OSRL 500.
        reward_scale: returns-to-go enter the network times this; OSRL 0.1.
        cost_scale: costs-to-go enter the network times this; OSRL 1.
        cost_transform: feed ``50 - cost_scale * C_t`` instead of ``cost_scale * C_t``
            (OSRL True: a larger number means more budget left).
        loss_cost_weight: weight of the per-step cost classification loss; OSRL 0.02.
        loss_state_weight: weight of the next-state prediction loss; OSRL 0.
        cost_reweight: draw trajectories with probability ``max(50 - C(tau), 0)`` (OSRL's
            ``cost_sample`` True), favouring low-cost ones; False draws them uniformly.
        augment_fraction: relabeled trajectories added, as a fraction of the number of episodes
            (OSRL ``augment_percent`` 0.2); 0 turns the augmentation off.
        augment_min_gap: relabeled returns lie at least this far above the frontier (OSRL
            ``min_reward`` 1).
        augment_max_return: upper bound of relabeled returns; None is the dataset's best
            episode return (OSRL: a per-task ``max_reward``).
        target_return: the return asked for at deployment. None: the best return among the
            dataset's episodes whose cost is within ``target_cost`` (the best return of all
            episodes if none is). Settable later with :meth:`CDT.set_target`.
        target_cost: the cost budget asked for at deployment. None: ``cost_limit``, else the
            dataset's cost limit (its ``cost_limit`` metadata, else an error).
    """

    # cpu: a 2-layer, 64-wide transformer; at OSRL's learning rate 1e-4 it barely moves in a
    # CPU budget, so 1e-3 with a short warm-up.
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {
            "n_steps": 2_000,
            "batch_size": 64,
            "embedding_dim": 64,
            "num_layers": 2,
            "num_heads": 4,
            "learning_rate": 1e-3,
            "warmup_steps": 100,
        },
    }

    n_steps: int = 100_000
    batch_size: int = 2048
    embedding_dim: int = 128
    num_layers: int = 3
    num_heads: int = 8
    seq_len: int = 10
    episode_len: int | None = None
    attention_dropout: float = 0.1
    residual_dropout: float = 0.1
    embedding_dropout: float = 0.1
    action_head_layers: int = 1
    stochastic: bool = True
    init_temperature: float = 0.1
    target_entropy: float | None = None
    temperature_learning_rate: float = 1e-4
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = 0.25
    warmup_steps: int = 500
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    cost_transform: bool = True
    loss_cost_weight: float = 0.02
    loss_state_weight: float = 0.0
    cost_reweight: bool = True
    augment_fraction: float = 0.2
    augment_min_gap: float = 1.0
    augment_max_return: float | None = None
    target_return: float | None = None
    target_cost: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("embedding_dim", "num_layers", "num_heads", "seq_len", "action_head_layers"):
            check_positive(name, getattr(self, name))
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                f"embedding_dim ({self.embedding_dim}) must be a multiple of num_heads "
                f"({self.num_heads})"
            )
        if self.episode_len is not None:
            check_positive("episode_len", self.episode_len)
        for name in ("attention_dropout", "residual_dropout", "embedding_dropout"):
            check_in_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("init_temperature", "temperature_learning_rate", "learning_rate"):
            check_positive(name, getattr(self, name))
        for name in ("reward_scale", "cost_scale", "warmup_steps"):
            check_positive(name, getattr(self, name))
        for name in ("weight_decay", "loss_cost_weight", "loss_state_weight", "augment_min_gap"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.clip_grad is not None:
            check_positive("clip_grad", self.clip_grad)
        check_in_range("augment_fraction", self.augment_fraction, 0.0, 1.0)
        check_choice("stochastic", self.stochastic, (True, False))
        check_choice("cost_transform", self.cost_transform, (True, False))
        check_choice("cost_reweight", self.cost_reweight, (True, False))
        for name in ("target_entropy", "augment_max_return", "target_return", "target_cost"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number or None, got {value!r}")
        if self.target_cost is not None:
            check_positive("target_cost", self.target_cost, allow_zero=True)


# ----------------------------------------------------------------------------------- losses
def gaussian_action_loss(
    mean: torch.Tensor,
    log_std: torch.Tensor,
    actions: torch.Tensor,
    mask: torch.Tensor,
    temperature: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``-(E[log pi(a|h)] + alpha H)`` over unpadded steps, per-step sums over action dims.

    Returns:
        ``(loss, negative log-likelihood, entropy)``, the last two means per step.
    """
    distribution = torch.distributions.Normal(mean, log_std.exp())
    log_likelihood = masked_mean(distribution.log_prob(actions).sum(-1), mask)
    entropy = masked_mean(distribution.entropy().sum(-1), mask)
    return -(log_likelihood + temperature.detach() * entropy), -log_likelihood, entropy


def mse_action_loss(
    predicted: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Squared error of the deterministic head, averaged over unpadded steps and dims."""
    return masked_mean((predicted - actions).pow(2).mean(-1), mask)


def cost_classification_loss(
    log_probs: torch.Tensor, costs: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL of ``1[c_t > 0]`` under the cost head, and its accuracy, over unpadded steps."""
    labels = (costs > 0).long()  # (B, K)
    nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    accuracy = masked_mean((log_probs.argmax(-1) == labels).float(), mask)
    return masked_mean(nll, mask), accuracy


def state_prediction_loss(
    predicted_next: torch.Tensor, obs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Squared error of ``s_hat_{t+1}`` (read at ``a_t``) where step ``t + 1`` is real."""
    error = (predicted_next[:, :-1] - obs[:, 1:]).pow(2).mean(-1)  # (B, K - 1)
    return masked_mean(error, mask[:, 1:])


def temperature_loss(
    log_temperature: torch.Tensor, entropy: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """``alpha (H - H_target)`` with ``H`` fixed: alpha grows while the entropy is too low."""
    return log_temperature.exp() * (entropy.detach() - target_entropy)


# ----------------------------------------------------------------------------------- the data
class SequenceBatch(NamedTuple):
    """Trajectory segments: tensors with leading ``(batch, seq_len)`` dimensions.

    Padded steps (past an episode's end) hold zeros and ``mask`` 0.
    """

    obs: torch.Tensor  # (B, K, obs_dim)
    actions: torch.Tensor  # (B, K, act_dim)
    returns_to_go: torch.Tensor  # (B, K), undiscounted, including the step's own reward
    costs_to_go: torch.Tensor  # (B, K)
    costs: torch.Tensor  # (B, K), the step's own cost
    timesteps: torch.Tensor  # (B, K), int64 step index within the episode
    mask: torch.Tensor  # (B, K), 1.0 on real steps


def relabel_infeasible_targets(
    episode_returns: ArrayLike,
    episode_costs: ArrayLike,
    n_samples: int,
    min_gap: float,
    max_return: float,
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """CDT's return relabeling: infeasible ``(cost, return)`` targets paired with trajectories.

    Costs ``kappa`` are a grid of ``n_samples`` points over ``[min C, max C]``; for each the
    frontier ``f(kappa) = max{R_i : C_i <= kappa}`` is the best return the data reaches within
    that budget and the target return ``rho ~ U(f(kappa) + min_gap, max_return)`` lies above it.
    The target is paired with the trajectory attaining ``f(kappa)`` (the lowest-cost one on
    ties); grid points with ``f(kappa) + min_gap >= max_return`` are skipped.

    Args:
        episode_returns: ``(E,)`` episode returns.
        episode_costs: ``(E,)`` episode costs.
        n_samples: grid points (at most that many targets come back).
        min_gap: how far above the frontier the targets start.
        max_return: upper bound of the target returns.
        rng: draws the target returns.

    Returns:
        ``(episode_index, target_return, target_cost)``, three aligned ``(M,)`` arrays.
    """
    returns = np.asarray(episode_returns, dtype=np.float64)
    costs = np.asarray(episode_costs, dtype=np.float64)
    empty = np.zeros(0, dtype=np.float64)
    if n_samples < 1 or not len(returns):
        return np.zeros(0, dtype=np.int64), empty, empty
    grid = np.linspace(costs.min(), costs.max(), n_samples)
    # Sorted by cost (then by -return), a running argmax gives the frontier trajectory at each
    # budget: the best return among the episodes that cost no more.
    order = np.lexsort((-returns, costs))
    best = np.maximum.accumulate(returns[order])
    holder = order[_running_argmax(returns[order])]
    position = np.searchsorted(costs[order], grid, side="right") - 1  # last episode within kappa
    frontier = best[position]
    keep = frontier + min_gap < max_return
    low = frontier[keep] + min_gap
    target_returns = rng.uniform(low, max_return)
    return holder[position[keep]].astype(np.int64), target_returns, grid[keep]


def _running_argmax(values: NDArray[np.float64]) -> NDArray[np.int64]:
    """Index of the first maximum of ``values[: i + 1]`` for every ``i``."""
    best_index = np.zeros(len(values), dtype=np.int64)
    for i in range(1, len(values)):
        previous = best_index[i - 1]
        best_index[i] = i if values[i] > values[previous] else previous
    return best_index


class SegmentSampler:
    """Trajectory segments of ``seq_len`` steps (OSRL's ``SequenceDataset``), seeded.

    Entries are the dataset's episodes plus relabeled copies (same rows, shifted returns-to-go
    and costs-to-go). An entry is drawn by weight, a start step uniformly within it.

    Args:
        dataset: an ``envs.OfflineDataset`` with costs.
        seq_len: steps per segment.
        entry_episodes: ``(E,)`` the episode each entry reads its rows from.
        return_shifts / cost_shifts: ``(E,)`` added to that episode's returns/costs-to-go.
        weights: ``(E,)`` non-negative sampling weights (uniform if all zero).
        device: where the tensors live.
        generator: the agent's training generator.
    """

    def __init__(
        self,
        dataset: OfflineDataset,
        seq_len: int,
        entry_episodes: NDArray[np.int64],
        return_shifts: NDArray[np.float64],
        cost_shifts: NDArray[np.float64],
        weights: NDArray[np.float64],
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        def tensor(values: ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)

        # CDT needs_costs: learn_offline refused a dataset without them.
        assert dataset.costs is not None
        bounds = dataset.episode_bounds()
        self.seq_len = seq_len
        self.generator = generator
        self.windows = EpisodeWindows(dataset, seq_len, device)  # observations, actions, episodes
        self.costs = tensor(dataset.costs)
        self.returns_to_go = tensor(returns_to_go(dataset.rewards, bounds))
        self.costs_to_go = tensor(returns_to_go(dataset.costs, bounds))
        self.entry_episodes = tensor(entry_episodes, torch.int64)
        self.entry_starts = self.windows.starts[self.entry_episodes]  # first row of each entry
        self.return_shifts = tensor(return_shifts)
        self.cost_shifts = tensor(cost_shifts)
        weights = np.asarray(weights, dtype=np.float64)
        if not weights.sum() > 0:
            weights = np.ones_like(weights)
        self.weights = torch.as_tensor(weights / weights.sum(), device=generator.device)

    def sample(self, batch_size: int) -> SequenceBatch:
        draw_device = self.generator.device
        entry = torch.multinomial(
            self.weights, batch_size, replacement=True, generator=self.generator
        )
        uniform = torch.rand(batch_size, generator=self.generator, device=draw_device)
        device = self.windows.device
        entry = entry.to(device)
        episodes = self.entry_episodes[entry]  # (B,)
        # The start is anywhere in the episode (OSRL's), not only where the segment fits.
        offsets = uniform_offsets(uniform.to(device), self.windows.lengths[episodes])
        index = self.windows.index(episodes, offsets)
        return SequenceBatch(
            obs=index.gather(self.windows.obs),
            actions=index.gather(self.windows.actions),
            returns_to_go=index.gather(self.returns_to_go, shift=self.return_shifts[entry]),
            costs_to_go=index.gather(self.costs_to_go, shift=self.cost_shifts[entry]),
            costs=index.gather(self.costs),
            timesteps=index.steps,
            mask=index.mask,
        )


# ----------------------------------------------------------------------------------- the network
class CDTOutput(NamedTuple):
    """Per-timestep predictions of :class:`DecisionTransformer`."""

    action_mean: torch.Tensor  # (B, K, act_dim), unbounded
    action_log_std: torch.Tensor | None  # (B, K, act_dim) for the stochastic head
    cost_log_probs: torch.Tensor  # (B, K, 2), log P(step costs nothing / something)
    next_obs: torch.Tensor  # (B, K, obs_dim)


class DecisionTransformer(TokenTransformer):
    """CDT's network: tokens ``(R_t, C_t, s_t, a_t)`` per timestep through causal blocks.

    Inputs are already scaled (standardized observations, actions in ``[-1, 1]``, conditioning
    values as the agent feeds them). Weights are initialised as in OSRL (normal with std 0.02
    for linear and embedding layers).
    """

    tokens_per_step = 4

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_timesteps: int,
        embedding_dim: int,
        num_layers: int,
        num_heads: int,
        attention_dropout: float,
        residual_dropout: float,
        embedding_dropout: float,
        action_head_layers: int,
        stochastic: bool,
    ) -> None:
        super().__init__()
        self.stochastic = stochastic
        self.timestep_embedding = nn.Embedding(n_timesteps, embedding_dim)
        self.return_embedding = nn.Linear(1, embedding_dim)
        self.cost_embedding = nn.Linear(1, embedding_dim)
        self.state_embedding = nn.Linear(obs_dim, embedding_dim)
        self.action_embedding = nn.Linear(act_dim, embedding_dim)
        self._add_causal_trunk(
            embedding_dim,
            num_layers,
            num_heads,
            attention_dropout,
            residual_dropout,
            embedding_dropout,
        )
        hidden: list[nn.Module] = []
        for _ in range(action_head_layers - 1):
            hidden += [nn.Linear(embedding_dim, embedding_dim), nn.GELU()]
        self.action_trunk = nn.Sequential(*hidden)
        self.action_head = nn.Linear(embedding_dim, (2 if stochastic else 1) * act_dim)
        self.cost_head = nn.Linear(embedding_dim, 2)
        self.state_head = nn.Linear(embedding_dim, obs_dim)
        self.apply(init_transformer_weights)

    def forward(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        costs_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> CDTOutput:
        """Predictions at every timestep.

        Args:
            obs: ``(B, K, obs_dim)``.
            actions: ``(B, K, act_dim)``.
            returns_to_go / costs_to_go: ``(B, K)`` conditioning values.
            timesteps: ``(B, K)`` int64 indices into the timestep embedding.
            padding_mask: ``(B, K)``, True on padded steps (their tokens are not attended to).
        """
        step_embeddings = [
            self.return_embedding(returns_to_go.unsqueeze(-1)),  # (B, K, 1) -> (B, K, D)
            self.cost_embedding(costs_to_go.unsqueeze(-1)),
            self.state_embedding(obs),
            self.action_embedding(actions),
        ]
        time = self.timestep_embedding(timesteps)  # (B, K, D)
        out = self.encode_steps(step_embeddings, time, padding_mask)  # (B, K, 4, D)
        state_features, action_features = out[:, :, 2], out[:, :, 3]  # (B, K, D) each
        head = self.action_head(self.action_trunk(state_features))
        if self.stochastic:
            mean, log_std = head.chunk(2, dim=-1)
            log_std = log_std.clamp(*LOG_STD_BOUNDS)
        else:
            mean, log_std = head, None
        return CDTOutput(
            action_mean=mean,
            action_log_std=log_std,
            cost_log_probs=F.log_softmax(self.cost_head(action_features), dim=-1),
            next_obs=self.state_head(action_features),
        )


class LogTemperature(nn.Module):
    """``log alpha``, the learned entropy temperature of the stochastic head."""

    def __init__(self, initial_temperature: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(math.log(initial_temperature)))


# ----------------------------------------------------------------------------------- deployment
@dataclass(frozen=True)
class CDTContext:
    """What CDT remembers across ``predict`` calls, per batch entry (the ``state``).

    The window holds the last ``seq_len`` steps right-aligned: ``valid`` marks the real ones (a
    suffix of each row). Observations are standardized and actions in ``[-1, 1]``; returns and
    costs are in environment units.

    Attributes:
        obs: ``(B, K, obs_dim)`` observations of the window.
        actions: ``(B, K, act_dim)`` actions taken at those steps.
        returns_to_go: ``(B, K)`` the return-to-go each step was conditioned on.
        costs_to_go: ``(B, K)`` the cost-to-go each step was conditioned on.
        timesteps: ``(B, K)`` int64 step indices.
        valid: ``(B, K)`` bool, True on real steps.
        return_to_go: ``(B,)`` the return-to-go of the next step: the target return minus the
            rewards recorded with :meth:`CDT.record_outcome` since the episode started.
        cost_to_go: ``(B,)`` the same for the cost budget.
        timestep: ``(B,)`` int64 index of the next step.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    returns_to_go: torch.Tensor
    costs_to_go: torch.Tensor
    timesteps: torch.Tensor
    valid: torch.Tensor
    return_to_go: torch.Tensor
    cost_to_go: torch.Tensor
    timestep: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.return_to_go.shape[0])


def _shift_in(window: torch.Tensor, newest: torch.Tensor) -> torch.Tensor:
    """Drop the oldest step of ``(B, K, ...)`` and append ``newest`` ``(B, ...)`` at the end."""
    return torch.cat([window[:, 1:], newest.unsqueeze(1)], dim=1)


# ----------------------------------------------------------------------------------- the agent
class CDT(BaseAgent):
    """Constrained Decision Transformer (Liu et al., ICML 2023; OSRL's CDT).

    Deployment: ``agent.set_target(target_return=..., target_cost=...)`` chooses what new
    episodes are conditioned on (defaults: :class:`CDTConfig`'s ``target_return`` and
    ``target_cost``, resolved from the dataset at the first ``learn_offline``).

    ``predict`` keeps a context across steps when asked to: pass ``episode_start`` (True at an
    episode's first step, per batch entry) or the ``state`` a previous call returned, and it
    returns a :class:`CDTContext`; after each environment step, pass the reward and cost to
    :meth:`record_outcome` so that the returns-to-go and costs-to-go count down as in the paper.
    ``envs.evaluate`` does all of this. A call without ``state`` and ``episode_start`` is the
    first step of a fresh episode and returns ``state`` None (a pure function of the
    observation, like a Markov agent). If outcomes are never recorded, every step is
    conditioned on the full targets (as if nothing had been earned or spent), which the model
    never saw in training for later steps.
    """

    name = "cdt"
    config_class = CDTConfig
    config: CDTConfig
    segment_sampler: SegmentSampler

    def _build(self) -> None:
        config = self.config
        self.timestep_limit = (config.episode_len or DEFAULT_EPISODE_LEN) + config.seq_len
        self.model = DecisionTransformer(
            self.obs_dim,
            self.act_dim,
            self.timestep_limit,
            config.embedding_dim,
            config.num_layers,
            config.num_heads,
            config.attention_dropout,
            config.residual_dropout,
            config.embedding_dropout,
            config.action_head_layers,
            config.stochastic,
        )
        # Dropout is on only while learn_offline runs: predict right after construction is
        # deterministic too.
        self.model.eval()
        self.target_return_buffer = ScalarBuffer(config.target_return or 0.0)
        initial_cost = next(
            (value for value in (config.target_cost, config.cost_limit) if value is not None),
            DEFAULT_COST_LIMIT,  # until learn_offline reads the dataset's limit
        )
        self.target_cost_buffer = ScalarBuffer(initial_cost)
        self.optimizers = {
            "model": torch.optim.AdamW(
                self.model.parameters(),
                lr=config.learning_rate,
                weight_decay=config.weight_decay,
                betas=config.betas,
                **optimizer_options(self.device),
            )
        }
        self.target_entropy = (
            config.target_entropy if config.target_entropy is not None else -float(self.act_dim)
        )
        self.log_temperature: LogTemperature | None = None
        if config.stochastic:
            self.log_temperature = LogTemperature(config.init_temperature)
            self.optimizers["temperature"] = torch.optim.Adam(
                self.log_temperature.parameters(),
                lr=config.temperature_learning_rate,
                **optimizer_options(self.device),
            )

    def _saved_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {
            "model": self.model,
            "target_return": self.target_return_buffer,
            "target_cost": self.target_cost_buffer,
        }
        if self.log_temperature is not None:
            modules["log_temperature"] = self.log_temperature
        return modules

    # ------------------------------------------------------------------ targets
    @property
    def target_return(self) -> float:
        """The return new episodes are conditioned on (environment units)."""
        return float(self.target_return_buffer.value)

    @property
    def target_cost(self) -> float:
        """The cost budget new episodes are conditioned on (environment units)."""
        return float(self.target_cost_buffer.value)

    def set_target(
        self, target_return: float | None = None, target_cost: float | None = None
    ) -> None:
        """Set the deployment targets (saved with the agent); None keeps the current value.

        They apply to episodes started afterwards (contexts already running keep theirs).

        Raises:
            ValueError: a non-finite value, or a negative cost.
        """
        if target_return is not None:
            if not math.isfinite(target_return):
                raise ValueError(f"target_return must be finite, got {target_return!r}")
            self.target_return_buffer.value.fill_(float(target_return))
        if target_cost is not None:
            if not math.isfinite(target_cost) or target_cost < 0:
                raise ValueError(f"target_cost must be finite and >= 0, got {target_cost!r}")
            self.target_cost_buffer.value.fill_(float(target_cost))

    # ------------------------------------------------------------------ training
    def _prepare_dataset(self, dataset: OfflineDataset) -> OfflineDataset:
        longest = int(dataset.episode_lengths().max())
        if longest > self.timestep_limit - self.config.seq_len:
            raise ValueError(
                f"the dataset has an episode of {longest} steps but the timestep embedding "
                f"covers {self.timestep_limit - self.config.seq_len}; set episode_len >= "
                f"{longest}"
            )
        return dataset

    def _setup_training(self, dataset: OfflineDataset) -> None:
        config = self.config
        episode_returns = dataset.episode_returns()
        episode_costs = dataset.episode_costs()
        if self.num_steps == 0:
            # First call: the targets come from the config or the data (a resumed run keeps
            # the saved ones, like the observation statistics).
            cost = resolve_cost_limit(
                dataset, config.target_cost if config.target_cost is not None else config.cost_limit
            )
            if config.target_return is not None:
                target = config.target_return
            else:
                safe = episode_costs <= cost
                target = float(episode_returns[safe].max() if safe.any() else episode_returns.max())
            self.set_target(target_return=target, target_cost=cost)
        n_episodes = len(episode_returns)
        max_return = (
            config.augment_max_return
            if config.augment_max_return is not None
            else float(episode_returns.max())
        )
        # Seeded by the agent's seed alone, so every learn_offline call (a resumed one too)
        # sees the same relabeled trajectories and the training generator is not touched.
        indices, aug_returns, aug_costs = relabel_infeasible_targets(
            episode_returns,
            episode_costs,
            int(config.augment_fraction * n_episodes),
            config.augment_min_gap,
            max_return,
            np.random.default_rng(self.seed),
        )
        entry_episodes = np.concatenate([np.arange(n_episodes), indices])
        return_shifts = np.concatenate(
            [np.zeros(n_episodes), aug_returns - episode_returns[indices]]
        )
        cost_shifts = np.concatenate([np.zeros(n_episodes), aug_costs - episode_costs[indices]])
        entry_costs = episode_costs[entry_episodes] + cost_shifts
        weights = (
            np.maximum(COST_TRANSFORM_OFFSET - entry_costs, 0.0)
            if config.cost_reweight
            else np.ones(len(entry_episodes))
        )
        self.n_augmented = len(indices)
        self.segment_sampler = SegmentSampler(
            dataset,
            config.seq_len,
            entry_episodes,
            return_shifts,
            cost_shifts,
            weights,
            self.device,
            self.train_generator,
        )

    def _sample_batch(self) -> SequenceBatch:
        return self.segment_sampler.sample(self.config.batch_size)

    def _conditioning(
        self, returns: torch.Tensor, costs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns- and costs-to-go as the network reads them (scaled, cost transformed)."""
        costs = costs * self.config.cost_scale
        if self.config.cost_transform:
            costs = COST_TRANSFORM_OFFSET - costs
        return returns * self.config.reward_scale, costs

    def _train_step(self, batch: SequenceBatch) -> Metrics:
        config = self.config
        # Scaling moves the padding's zeros; the mask puts them back. (B, K, obs_dim)
        obs = self.obs_scaler(batch.obs) * batch.mask.unsqueeze(-1)
        actions = self.action_scaler.normalize(batch.actions) * batch.mask.unsqueeze(-1)
        # The targets the network is conditioned on, as at deployment (possibly relabeled).
        returns, costs = self._conditioning(batch.returns_to_go, batch.costs_to_go)
        # mask == 0 marks padding: attention never reads it, and every loss skips it.
        output = self.model(obs, actions, returns, costs, batch.timesteps, batch.mask == 0)
        metrics: Metrics = {}
        if self.log_temperature is not None:
            assert output.action_log_std is not None
            temperature = self.log_temperature.value.exp()
            action_loss, nll, entropy = gaussian_action_loss(
                output.action_mean, output.action_log_std, actions, batch.mask, temperature
            )
            metrics.update(
                nll=nll.detach(), entropy=entropy.detach(), temperature=temperature.detach()
            )
        else:
            entropy = None
            action_loss = mse_action_loss(output.action_mean, actions, batch.mask)
        cost_loss, cost_accuracy = cost_classification_loss(
            output.cost_log_probs, batch.costs, batch.mask
        )
        state_loss = state_prediction_loss(output.next_obs, obs, batch.mask)
        # OSRL's total: the action loss plus the auxiliary cost classifier (and, when weighted,
        # the next-state prediction); only the action head acts at deployment.
        loss = action_loss + config.loss_cost_weight * cost_loss
        if config.loss_state_weight > 0:
            loss = loss + config.loss_state_weight * state_loss

        optimizer = self.optimizers["model"]
        # Linear warmup from the step counter (OSRL's LambdaLR values; exact on resume).
        learning_rate = config.learning_rate * min((self.num_steps + 1) / config.warmup_steps, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        optimizer.zero_grad()
        loss.backward()
        if config.clip_grad is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_grad)
        optimizer.step()
        # After the model's step, as SAC-style tuning: alpha follows the entropy just measured.
        if self.log_temperature is not None and entropy is not None:
            alpha_loss = temperature_loss(self.log_temperature.value, entropy, self.target_entropy)
            self.optimizers["temperature"].zero_grad()
            alpha_loss.backward()
            self.optimizers["temperature"].step()
            metrics["temperature_loss"] = alpha_loss.detach()
        metrics.update(
            loss=loss.detach(),
            action_loss=action_loss.detach(),
            cost_loss=cost_loss.detach(),
            cost_accuracy=cost_accuracy.detach(),
            state_loss=state_loss.detach(),
            learning_rate=learning_rate,
        )
        return metrics

    # ------------------------------------------------------------------ acting
    def new_context(self, batch_size: int) -> CDTContext:
        """An empty context for ``batch_size`` episodes that start now, at the current targets."""
        device = self.device
        window = self.config.seq_len
        return CDTContext(
            obs=torch.zeros(batch_size, window, self.obs_dim, device=device),
            actions=torch.zeros(batch_size, window, self.act_dim, device=device),
            returns_to_go=torch.zeros(batch_size, window, device=device),
            costs_to_go=torch.zeros(batch_size, window, device=device),
            timesteps=torch.zeros(batch_size, window, dtype=torch.int64, device=device),
            valid=torch.zeros(batch_size, window, dtype=torch.bool, device=device),
            return_to_go=torch.full((batch_size,), self.target_return, device=device),
            cost_to_go=torch.full((batch_size,), self.target_cost, device=device),
            timestep=torch.zeros(batch_size, dtype=torch.int64, device=device),
        )

    def record_outcome(self, state: CDTContext, reward: Any, cost: Any) -> CDTContext:
        """Count the last step's reward and cost off the returns-to-go and costs-to-go.

        Call it after each environment step with the ``state`` ``predict`` returned, and pass
        the result to the next ``predict``.

        Args:
            state: the context from :meth:`predict`.
            reward: the reward of the step, a number or one per batch entry.
            cost: the cost of the step, likewise.

        Returns:
            The updated context (the given one is not modified).

        Raises:
            ValueError: no context, or a reward/cost whose size is not the batch size.
        """
        if not isinstance(state, CDTContext):
            raise ValueError(
                "record_outcome needs the CDTContext that predict returns when given "
                f"episode_start or a state; got {type(state).__name__}"
            )
        size = state.batch_size
        values = []
        for name, value in (("reward", reward), ("cost", cost)):
            array = np.asarray(value, dtype=np.float32).reshape(-1)
            if array.size == 1:
                array = np.repeat(array, size)
            if array.size != size or not np.isfinite(array).all():
                raise ValueError(
                    f"{name} must be {size} finite value(s) (one per batch entry), got {value!r}"
                )
            values.append(torch.as_tensor(array, device=state.return_to_go.device))
        return replace(
            state,
            return_to_go=state.return_to_go - values[0],
            cost_to_go=state.cost_to_go - values[1],
        )

    def _reset(self, context: CDTContext, starts: torch.Tensor) -> CDTContext:
        """Entries flagged in ``starts`` ``(B,)`` begin a new episode at the current targets."""
        fresh = self.new_context(context.batch_size)
        return CDTContext(
            **{
                name: torch.where(
                    starts.reshape(-1, *([1] * (getattr(context, name).dim() - 1))),
                    getattr(fresh, name),
                    getattr(context, name),
                )
                for name in CDTContext.__dataclass_fields__
            }
        )

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        actions, _ = self._step(self.new_context(len(obs)), obs, deterministic)
        return actions

    def _act_in_context(
        self,
        obs: torch.Tensor,
        state: Any,
        episode_start: NDArray[np.bool_] | None,
        deterministic: bool,
    ) -> tuple[torch.Tensor, Any]:
        if state is None and episode_start is None:
            return self._act(obs, deterministic), None
        batch = len(obs)
        if state is None:
            context = self.new_context(batch)
        elif not isinstance(state, CDTContext):
            raise ValueError(f"state must be a CDTContext from CDT.predict, got {type(state)}")
        elif state.batch_size != batch:
            raise ValueError(
                f"state holds {state.batch_size} episode(s) but {batch} observation(s) came"
            )
        else:
            context = state
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            if starts.size != batch:
                raise ValueError(
                    f"episode_start must have one flag per observation ({batch}), "
                    f"got shape {np.shape(episode_start)}"
                )
            context = self._reset(context, torch.as_tensor(starts, device=self.device))
        return self._step(context, obs, deterministic)

    def _step(
        self, context: CDTContext, obs: torch.Tensor, deterministic: bool
    ) -> tuple[torch.Tensor, CDTContext]:
        """Append the current step to the window, act, and record the action taken."""
        batch, window = len(obs), self.config.seq_len
        timestep = context.timestep.clamp(max=self.timestep_limit - 1)
        obs_w = _shift_in(context.obs, obs)
        actions_w = _shift_in(context.actions, torch.zeros_like(context.actions[:, 0]))
        returns_w = _shift_in(context.returns_to_go, context.return_to_go)
        costs_w = _shift_in(context.costs_to_go, context.cost_to_go)
        timesteps_w = _shift_in(context.timesteps, timestep)
        valid_w = _shift_in(context.valid, torch.ones_like(context.valid[:, 0]))
        # The model was trained on segments that start with real steps and are padded at the
        # end; move each row's n real steps (a suffix) to the front. What follows them is
        # never attended to by a real step (causal mask), so no padding mask is needed, and
        # the window is cut after the longest row's real steps: the model reads as many steps
        # as the episode has had, up to K (OSRL's rollout feeds the growing history), and an
        # episode's first step costs one step's tokens, not K steps'.
        length = valid_w.sum(dim=1)  # (B,)
        steps = int(length.max())
        source = torch.arange(steps, device=obs.device) + (window - length)[:, None]  # (B, n)
        source = source.clamp(max=window - 1)

        def front(values: torch.Tensor) -> torch.Tensor:
            index = source.reshape(batch, steps, *([1] * (values.dim() - 2)))
            return values.gather(1, index.expand(batch, steps, *values.shape[2:]))

        returns, costs = self._conditioning(front(returns_w), front(costs_w))
        # Acting never uses dropout, also when a callback calls predict during training.
        was_training = self.model.training
        if was_training:
            self.model.eval()
        output = self.model(front(obs_w), front(actions_w), returns, costs, front(timesteps_w))
        if was_training:
            self.model.train()
        last = (length - 1)[:, None, None].expand(batch, 1, self.act_dim)
        mean = output.action_mean.gather(1, last).squeeze(1)  # (B, act_dim)
        actions = mean
        if not deterministic and output.action_log_std is not None:
            std = output.action_log_std.gather(1, last).squeeze(1).exp()
            noise = torch.randn(mean.shape, generator=self.act_generator, device=mean.device)
            actions = mean + std * noise
        actions = actions.clamp(-1.0, 1.0)
        taken = torch.cat([actions_w[:, :-1], actions.unsqueeze(1)], dim=1)
        return actions, replace(
            context,
            obs=obs_w,
            actions=taken,
            returns_to_go=returns_w,
            costs_to_go=costs_w,
            timesteps=timesteps_w,
            valid=valid_w,
            timestep=context.timestep + 1,
        )
