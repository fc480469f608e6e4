"""CPQ: constraints penalized Q-learning (Xu, Zhan and Zhu, AAAI 2022; OSRL's ``CPQ``).

CPQ makes out-of-distribution actions look unsafe and learns rewards only where it is safe:

1. A conditional VAE models the data's actions; a policy action whose latent KL
   ``KL(q(z|s,a) || N(0, I))`` is in the top quarter of a minibatch's sampled actions is treated
   as out of distribution (OOD).
2. Cost critics (a pair, ``min`` taken) by TD on the policy's next actions, plus a term that
   raises ``Q_c`` on OOD policy actions: ``L_c = TD - alpha (E_OOD[Q_c] - q_ood_limit)``.
   ``alpha`` is a dual variable: ``alpha <- clip(alpha + lr (q_ood_limit - E_OOD[Q_c]), 0,
   alpha_max)``, so the push stops once OOD actions look costlier than ``q_ood_limit =
   qc_scalar * q_limit``.
3. Reward critics by the constraint-penalized Bellman operator: the future reward counts only
   where the next action is safe, ``y = r + gamma (1 - d) 1[Q_c(s', a') <= q_limit] Q_r(s', a')``.
4. The actor (Gaussian, reparameterized) maximizes ``1[Q_c(s, a) <= q_limit] Q_r(s, a)``.

``q_limit`` is the episode limit in discounted units (``cost_limit_in_q_units``).
Defaults: OSRL ``examples/configs/cpq_configs.py`` (the DSRL benchmark's settings).

Episode ends: a time-out ends the return like a termination (OSRL's ``done = terminals |
timeouts``, :func:`~safe_agents.common.data.done_mask`).

**Deviations**:

- OSRL computes ``E_OOD[Q_c]`` with the target cost critic under ``no_grad``, so its OOD term
  changes nothing in the gradient; we apply it to the trained cost critics, as the paper's
  Eq. (7) does, and average over the OOD actions only (OSRL averages the masked values over
  every sample, a quarter of the OOD mean).
- The actor is our Gaussian actor (tanh-bounded mean, clamped samples) rather than OSRL's
  squashed Gaussian; like OSRL's actor loss it has no entropy term.
- Observations are standardized; cost backups stop at episode ends like the reward's; the cost
  limit and episode length default to the dataset's metadata and longest episode; no checkpoint
  is chosen by evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from safe_agents.common.base import BaseAgent
from safe_agents.common.config import (
    CPU_MLPS,
    CostCriticConfig,
    check_in_range,
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
from safe_agents.common.logger import Metrics
from safe_agents.common.networks import ConditionalVAE, GaussianActor, ScalarBuffer, vae_loss


@dataclass(kw_only=True)
class CPQConfig(CostCriticConfig):
    """CPQ hyperparameters (OSRL's ``CPQTrainConfig``).

    Attributes:
        n_steps: 100k update steps. batch_size: 512.
        gamma / tau: discount (0.99) and Polyak rate (0.005).
        actor_learning_rate: Adam (1e-4). critic_learning_rate / vae_learning_rate: 1e-3.
        alpha_learning_rate: step of the OOD penalty's dual variable (1e-3).
        actor_hidden_sizes: (300, 300). critic_hidden_sizes: (400, 400).
        vae_hidden_sizes: the VAE's widths ((400, 400)).
        vae_kl_weight: beta of the VAE loss (0.5).
        alpha_max: the cap on the OOD penalty's weight (1.0).
        n_sampled_actions: policy actions per state checked for being OOD (10).
        ood_quantile: actions with latent KL at or above this quantile of the batch are OOD
            (0.75, OSRL's).
        ood_cost_scale: qc_scalar; OOD actions are pushed up to ``ood_cost_scale * q_limit``
            (1.5).
        n_reward_critics / n_cost_critics: ensemble sizes, ``min`` taken (2 and 2).
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
    actor_learning_rate: float = 1e-4
    critic_learning_rate: float = 1e-3
    alpha_learning_rate: float = 1e-3
    vae_learning_rate: float = 1e-3
    actor_hidden_sizes: tuple[int, ...] = (300, 300)
    critic_hidden_sizes: tuple[int, ...] = (400, 400)
    vae_hidden_sizes: tuple[int, ...] = (400, 400)
    vae_kl_weight: float = 0.5
    alpha_max: float = 1.0
    n_sampled_actions: int = 10
    ood_quantile: float = 0.75
    ood_cost_scale: float = 1.5
    n_reward_critics: int = 2
    n_cost_critics: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "alpha_learning_rate",
            "vae_learning_rate",
            "vae_kl_weight",
            "alpha_max",
            "n_sampled_actions",
            "ood_cost_scale",
            "n_reward_critics",
            "n_cost_critics",
        ):
            check_positive(name, getattr(self, name))
        check_in_range("tau", self.tau, 0.0, 1.0)
        check_in_range("ood_quantile", self.ood_quantile, 0.0, 1.0)


def latent_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, std^2) || N(0, I))`` per row, averaged over latent dimensions (OSRL's)."""
    return (-torch.log(std) + 0.5 * (std**2 + mean**2) - 0.5).mean(dim=-1)


def ood_mask(kl: torch.Tensor, quantile: float) -> torch.Tensor:
    """1 where an action's latent KL is at or above the batch's ``quantile`` (CPQ's OOD set)."""
    return (kl >= torch.quantile(kl, quantile)).float()


def safe_indicator(cost_q: torch.Tensor, q_limit: float) -> torch.Tensor:
    """1 where the cost value is within the limit: the gate of CPQ's penalized Bellman operator."""
    return (cost_q <= q_limit).float()


def alpha_step(alpha: float, ood_cost_q: float, target: float, lr: float, cap: float) -> float:
    """Dual ascent on the OOD penalty: grows while OOD actions look cheaper than ``target``."""
    return min(max(alpha + lr * (target - ood_cost_q), 0.0), cap)


class CPQ(BaseAgent):
    """Constraints penalized Q-learning: OOD actions look unsafe, rewards count where it is safe."""

    name = "cpq"
    config_class = CPQConfig
    config: CPQConfig

    def _build(self) -> None:
        c = self.config
        self.vae = ConditionalVAE(self.obs_dim, self.act_dim, 2 * self.act_dim, c.vae_hidden_sizes)
        self.actor = GaussianActor(self.obs_dim, self.act_dim, c.actor_hidden_sizes)
        self.reward_q = QEnsemble(
            self.obs_dim, self.act_dim, c.n_reward_critics, c.critic_hidden_sizes
        )
        self.cost_q = QEnsemble(self.obs_dim, self.act_dim, c.n_cost_critics, c.critic_hidden_sizes)
        self.reward_q_target = make_target(self.reward_q)
        self.cost_q_target = make_target(self.cost_q)
        # Training state outside the optimizers, saved with the weights.
        self.alpha = ScalarBuffer(0.0)
        self.q_cost_limit = ScalarBuffer(0.0)
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
            "reward_q_target": self.reward_q_target,
            "cost_q_target": self.cost_q_target,
            "alpha": self.alpha,
            "q_cost_limit": self.q_cost_limit,
        }

    def _setup_training(self, dataset: OfflineDataset) -> None:
        if self.num_steps > 0:
            return  # resumed: keep the threshold the run started with
        c = self.config
        self.q_cost_limit.value.fill_(
            q_cost_limit(dataset, c.cost_limit, c.gamma, c.episode_length)
        )

    def _sample_policy(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Reparameterized actions ``m + sigma z``, clamped to ``[-1, 1]``."""
        return self.actor.sample(obs, generator).clamp(-1.0, 1.0)

    def _train_step(self, batch: TransitionBatch) -> Metrics:
        c = self.config
        obs = self.obs_scaler(batch.obs)
        next_obs = self.obs_scaler(batch.next_obs)
        actions = self.action_scaler.normalize(batch.actions)
        q_limit = float(self.q_cost_limit.value)

        # VAE first: this step's OOD test uses the updated model.
        reconstructed, mean, std = self.vae(obs, actions, self.train_generator)
        loss_vae, _ = vae_loss(reconstructed, actions, mean, std, c.vae_kl_weight)
        self.optimizers["vae"].zero_grad()
        loss_vae.backward()
        self.optimizers["vae"].step()

        with torch.no_grad():
            next_actions = self._sample_policy(next_obs, self.train_generator)
            next_reward_q = self.reward_q_target(next_obs, next_actions).min(dim=0).values
            next_cost_q = self.cost_q_target(next_obs, next_actions).min(dim=0).values
            # Penalized Bellman operator: future reward counts only where a' looks safe.
            gated = safe_indicator(next_cost_q, q_limit) * next_reward_q
            done = done_mask(batch, through_timeouts=False)  # OSRL's done = terminals | timeouts
            reward_target = td_target(batch.rewards, gated, done, c.gamma)
            cost_target = td_target(batch.costs, next_cost_q, done, c.gamma)
            # Policy actions, n per state, and which of them the VAE finds unfamiliar.
            repeated = obs.repeat_interleave(c.n_sampled_actions, dim=0)  # (B*n, obs_dim)
            sampled = self._sample_policy(repeated, self.train_generator)
            # (B*n,): 1 where the VAE finds the action unfamiliar (top quantile of latent KL).
            mask = ood_mask(latent_kl(*self.vae.encode(repeated, sampled)), c.ood_quantile)

        reward_loss = ensemble_td_loss(self.reward_q(obs, actions), reward_target)
        self.optimizers["reward_critic"].zero_grad()
        reward_loss.backward()
        self.optimizers["reward_critic"].step()

        sampled_cost_q = self.cost_q(repeated, sampled).min(dim=0).values  # (B*n,)
        # The mean over OOD actions only (Deviations); the clamp guards an empty mask.
        ood_cost_q = (mask * sampled_cost_q).sum() / mask.sum().clamp(min=1.0)
        ood_target = c.ood_cost_scale * q_limit
        alpha = float(self.alpha.value)
        cost_td = ensemble_td_loss(self.cost_q(obs, actions), cost_target)
        # Eq. 7: raise Q_c on OOD actions, through the trained critics (OSRL's term has no grad).
        cost_loss = cost_td - alpha * (ood_cost_q - ood_target)
        self.optimizers["cost_critic"].zero_grad()
        cost_loss.backward()
        self.optimizers["cost_critic"].step()
        # Dual ascent after the critic step, on the OOD estimate the step used.
        self.alpha.value.fill_(
            alpha_step(alpha, ood_cost_q.item(), ood_target, c.alpha_learning_rate, c.alpha_max)
        )

        policy_actions = self._sample_policy(obs, self.train_generator)
        policy_reward_q = self.reward_q(obs, policy_actions).min(dim=0).values
        policy_cost_q = self.cost_q(obs, policy_actions).min(dim=0).values
        # A 0/1 gate without gradient: maximize Q_r only where the action looks safe.
        safe = safe_indicator(policy_cost_q.detach(), q_limit)
        actor_loss = -(safe * policy_reward_q).mean()
        self.optimizers["actor"].zero_grad()
        # This also fills the reward critics' .grad; their optimizer zeroes it before next use.
        actor_loss.backward()
        self.optimizers["actor"].step()

        soft_update(self.reward_q_target, self.reward_q, c.tau)
        soft_update(self.cost_q_target, self.cost_q, c.tau)
        return {
            "vae_loss": loss_vae.detach(),
            "reward_critic_loss": reward_loss.detach(),
            "cost_td_loss": cost_td.detach(),
            "ood_cost_q": ood_cost_q.detach(),
            "alpha": alpha,
            "actor_loss": actor_loss.detach(),
            "policy_cost_q": policy_cost_q.mean().detach(),
            "safe_fraction": safe.mean().detach(),
            "q_cost_limit": q_limit,
        }

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:
            actions: torch.Tensor = self.actor(obs)
            return actions
        return self._sample_policy(obs, self.act_generator)
