"""BCQ-Lag: batch-constrained Q-learning with a PID-Lagrangian cost penalty (OSRL's ``BCQL``).

BCQ (Fujimoto et al., ICML 2019) keeps the policy near the data by construction: a conditional
VAE models the behaviour policy's actions, and the actor only perturbs a decoded action by at
most ``phi`` (in ``[-1, 1]`` units). The safe variant of the DSRL benchmark (Liu et al., 2023)
adds a cost critic and penalizes the actor with a PID-controlled Lagrange multiplier.

Per step (OSRL's ``BCQLTrainer.train_one_step``):

1. VAE: ``||D(s, z) - a||^2 + beta KL(q(z|s,a) || N(0, I))``.
2. Reward and cost critics, each a pair: the target at ``s'`` takes ``n`` decoded and perturbed
   actions from the target actor, softly clipped double Q
   ``lmbda min(Q1, Q2) + (1 - lmbda) max(Q1, Q2)``, maximized over the ``n`` actions;
   ``y = r + gamma (1 - d) max_j Q_soft(s', a_j)`` (the same form for the cost).
3. Actor: ``a = xi(s, D(s, z))``; loss ``-min Q_r(s, a) + lambda (min Q_c(s, a) - q_limit)``,
   with ``lambda`` from the PID controller fed the batch mean of ``min Q_c`` and ``q_limit`` the
   episode limit in discounted units (``cost_limit_in_q_units``).
4. Polyak updates of the target critics and actor.

Defaults: OSRL ``examples/configs/bcql_configs.py`` (the DSRL benchmark's settings).

Episode ends: a time-out ends the return like a termination (OSRL's ``done = terminals |
timeouts``, :func:`~safe_agents.common.data.done_mask`).

**Deviations**: observations are standardized (``normalize_observations``); the cost backup
stops at episode ends like the reward's (OSRL bootstraps the cost through them); the cost
limit and episode length default to the dataset's metadata and longest episode (OSRL sets them
per task); deterministic ``predict`` decodes the prior's mode ``z = 0`` (OSRL always samples
``z``, which ``deterministic=False`` does); no checkpoint is chosen by evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from safe_agents.common.base import BaseAgent
from safe_agents.common.config import (
    CPU_MLPS,
    CostCriticConfig,
    check_in_range,
    check_pid_gains,
    check_positive,
)
from safe_agents.common.critics import (
    QEnsemble,
    ensemble_td_loss,
    make_target,
    soft_update,
    td_target,
)
from safe_agents.common.data import TransitionBatch, done_mask, q_cost_limit
from safe_agents.common.dataset import OfflineDataset
from safe_agents.common.device import optimizer_options
from safe_agents.common.lagrangian import PIDLagrangian
from safe_agents.common.logger import Metrics
from safe_agents.common.networks import ConditionalVAE, ScalarBuffer, mlp, vae_loss


@dataclass(kw_only=True)
class BCQLagConfig(CostCriticConfig):
    """BCQ-Lag hyperparameters (OSRL's ``BCQLTrainConfig``).

    Attributes:
        n_steps: 100k update steps. batch_size: 512.
        gamma / tau: discount (0.99) and Polyak rate (0.005).
        actor_learning_rate / critic_learning_rate / vae_learning_rate: Adam (1e-3 each).
        actor_hidden_sizes / critic_hidden_sizes: MLP widths ((256, 256)).
        vae_hidden_sizes: the VAE's encoder and decoder widths ((400, 400)).
        perturbation_scale: phi, the largest perturbation of a decoded action (0.05).
        clipped_double_q_weight: lmbda of the soft clipped double Q target (0.75).
        vae_kl_weight: beta, the KL weight of the VAE loss (0.5).
        n_sampled_actions: decoded actions per next state in the critic targets (10).
        pid_gains: K_P, K_I, K_D of the Lagrange multiplier ((0.1, 0.003, 0.001)).
        cost_limit: the episode cost limit (None: the dataset's metadata, else an error).
        episode_length: L of the Q-unit threshold (None: the dataset's longest episode).
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {"n_steps": 6_000, **CPU_MLPS, "vae_hidden_sizes": (64, 64)},
    }

    n_steps: int = 100_000
    batch_size: int = 512
    tau: float = 0.005
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3
    vae_learning_rate: float = 1e-3
    actor_hidden_sizes: tuple[int, ...] = (256, 256)
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    vae_hidden_sizes: tuple[int, ...] = (400, 400)
    perturbation_scale: float = 0.05
    clipped_double_q_weight: float = 0.75
    vae_kl_weight: float = 0.5
    n_sampled_actions: int = 10
    pid_gains: tuple[float, float, float] = (0.1, 0.003, 0.001)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "vae_learning_rate",
            "vae_kl_weight",
            "n_sampled_actions",
        ):
            check_positive(name, getattr(self, name))
        check_in_range("tau", self.tau, 0.0, 1.0)
        check_in_range("perturbation_scale", self.perturbation_scale, 0.0, 2.0)
        check_in_range("clipped_double_q_weight", self.clipped_double_q_weight, 0.0, 1.0)
        check_pid_gains(self.pid_gains)


class PerturbationActor(nn.Module):
    """BCQ's actor: ``xi(s, a) = clip(a + phi tanh(MLP(s, a)), -1, 1)``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int], phi: float) -> None:
        super().__init__()
        self.phi = phi
        self.net = mlp(obs_dim + act_dim, act_dim, hidden_sizes, "tanh", output_activation="tanh")

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        perturbation: torch.Tensor = self.phi * self.net(torch.cat([obs, actions], dim=-1))
        return (actions + perturbation).clamp(-1.0, 1.0)


def soft_clipped_double_q(values: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight min_i Q_i + (1 - weight) max_i Q_i`` over a ``(2, B)`` pair (BCQ's target)."""
    # Mostly the min (against overestimation), softened so the target is not too pessimistic.
    return weight * values.min(dim=0).values + (1.0 - weight) * values.max(dim=0).values


def bcq_target(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    weight: float,
    n_sampled: int,
) -> torch.Tensor:
    """The critic target from ``(2, B * n)`` target values of ``n`` actions per next state.

    The soft clipped double Q is maximized over each state's ``n`` actions.
    """
    soft = soft_clipped_double_q(next_values, weight).reshape(-1, n_sampled)  # (B, n)
    # max over the n a': BCQ's greedy step, safe since every a' is near the data.
    return td_target(rewards, soft.max(dim=1).values, done, gamma)


class BCQLag(BaseAgent):
    """BCQ with reward and cost critics and a PID-Lagrangian penalty on the actor (DSRL's BCQ-L)."""

    name = "bcq_lag"
    config_class = BCQLagConfig
    config: BCQLagConfig

    def _build(self) -> None:
        c = self.config
        self.vae = ConditionalVAE(self.obs_dim, self.act_dim, 2 * self.act_dim, c.vae_hidden_sizes)
        self.actor = PerturbationActor(
            self.obs_dim, self.act_dim, c.actor_hidden_sizes, c.perturbation_scale
        )
        self.reward_q = QEnsemble(self.obs_dim, self.act_dim, 2, c.critic_hidden_sizes)
        self.cost_q = QEnsemble(self.obs_dim, self.act_dim, 2, c.critic_hidden_sizes)
        self.actor_target = make_target(self.actor)
        self.reward_q_target = make_target(self.reward_q)
        self.cost_q_target = make_target(self.cost_q)
        self.lagrangian = PIDLagrangian(*c.pid_gains)
        self.q_cost_limit = ScalarBuffer(0.0)  # set from the data by _setup_training, then saved
        self.optimizers = {
            "vae": torch.optim.Adam(
                self.vae.parameters(), lr=c.vae_learning_rate, **optimizer_options(self.device)
            ),
            "actor": torch.optim.Adam(
                self.actor.parameters(), lr=c.actor_learning_rate, **optimizer_options(self.device)
            ),
            "reward_critic": torch.optim.Adam(
                self.reward_q.parameters(),
                lr=c.critic_learning_rate,
                **optimizer_options(self.device),
            ),
            "cost_critic": torch.optim.Adam(
                self.cost_q.parameters(),
                lr=c.critic_learning_rate,
                **optimizer_options(self.device),
            ),
        }

    def _saved_modules(self) -> dict[str, nn.Module]:
        return {
            "vae": self.vae,
            "actor": self.actor,
            "reward_q": self.reward_q,
            "cost_q": self.cost_q,
            "actor_target": self.actor_target,
            "reward_q_target": self.reward_q_target,
            "cost_q_target": self.cost_q_target,
            "lagrangian": self.lagrangian,
            "q_cost_limit": self.q_cost_limit,
        }

    def _setup_training(self, dataset: OfflineDataset) -> None:
        if self.num_steps > 0:
            return  # resumed: keep the threshold the run started with
        c = self.config
        self.q_cost_limit.value.fill_(
            q_cost_limit(dataset, c.cost_limit, c.gamma, c.episode_length)
        )

    def _train_step(self, batch: TransitionBatch) -> Metrics:
        c = self.config
        obs = self.obs_scaler(batch.obs)
        next_obs = self.obs_scaler(batch.next_obs)
        actions = self.action_scaler.normalize(batch.actions)

        # VAE first (OSRL's order): this step's targets and actor decode from the updated model.
        reconstructed, mean, std = self.vae(obs, actions, self.train_generator)
        loss_vae, kl = vae_loss(reconstructed, actions, mean, std, c.vae_kl_weight)
        self.optimizers["vae"].zero_grad()
        loss_vae.backward()
        self.optimizers["vae"].step()

        done = done_mask(batch, through_timeouts=False)  # OSRL's done = terminals | timeouts
        with torch.no_grad():
            repeated = next_obs.repeat_interleave(c.n_sampled_actions, dim=0)  # (B*n, obs_dim)
            # (B*n, act_dim): n behaviour-like a' per s', perturbed by the target actor.
            decoded = self.vae.decode(repeated, generator=self.train_generator)
            next_actions = self.actor_target(repeated, decoded)
            reward_target = bcq_target(
                batch.rewards,
                self.reward_q_target(repeated, next_actions),
                done,
                c.gamma,
                c.clipped_double_q_weight,
                c.n_sampled_actions,
            )
            cost_target = bcq_target(
                batch.costs,
                self.cost_q_target(repeated, next_actions),
                done,
                c.gamma,
                c.clipped_double_q_weight,
                c.n_sampled_actions,
            )
        reward_loss = ensemble_td_loss(self.reward_q(obs, actions), reward_target)
        cost_loss = ensemble_td_loss(self.cost_q(obs, actions), cost_target)
        for name, loss in (("reward_critic", reward_loss), ("cost_critic", cost_loss)):
            self.optimizers[name].zero_grad()
            loss.backward()
            self.optimizers[name].step()

        # The actor only perturbs decoded actions; its loss must not train the VAE.
        with torch.no_grad():
            decoded = self.vae.decode(obs, generator=self.train_generator)
        policy_actions = self.actor(obs, decoded)
        reward_q = self.reward_q(obs, policy_actions).min(dim=0).values
        cost_q = self.cost_q(obs, policy_actions).min(dim=0).values
        q_limit = float(self.q_cost_limit.value)
        # A float: the PID multiplier is a constant of the actor loss, fed this batch's cost.
        multiplier = self.lagrangian.update(cost_q.mean().item(), q_limit)
        actor_loss = -reward_q.mean() + multiplier * (cost_q - q_limit).mean()
        self.optimizers["actor"].zero_grad()
        # This also fills the critics' .grad; their optimizers zero it before the next use.
        actor_loss.backward()
        self.optimizers["actor"].step()

        # Polyak after all updates; the target actor too, since it proposes the targets' a'.
        soft_update(self.reward_q_target, self.reward_q, c.tau)
        soft_update(self.cost_q_target, self.cost_q, c.tau)
        soft_update(self.actor_target, self.actor, c.tau)
        return {
            "vae_loss": loss_vae.detach(),
            "vae_kl": kl.detach(),
            "reward_critic_loss": reward_loss.detach(),
            "cost_critic_loss": cost_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "policy_cost_q": cost_q.mean().detach(),
            "q_cost_limit": q_limit,
            "lagrange_multiplier": multiplier,
        }

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:
            latent = torch.zeros(len(obs), self.vae.latent_dim, device=obs.device)
            actions: torch.Tensor = self.actor(obs, self.vae.decode(obs, latent))
        else:
            actions = self.actor(obs, self.vae.decode(obs, generator=self.act_generator))
        return actions
