"""FISOR: feasibility-guided safe offline RL with a diffusion policy.

Zheng et al., "Safe Offline Reinforcement Learning with Feasibility-Guided Diffusion Model",
ICLR 2024 (arXiv 2401.10700). Three decoupled learners, then policy extraction:

1. Feasibility by offline Hamilton-Jacobi reachability. With ``h = cost_scale`` on steps that
   cost and ``-1`` otherwise, ``Q_h`` (ensemble, max = pessimistic) regresses on
   ``(1 - gamma) h + gamma max(h, V_h(s'))`` (``h`` at episode ends), and ``V_h`` on ``Q_h`` by
   *reversed* expectile regression, tracking the best in-data feasibility. ``V_h(s) <= 0``
   marks the feasible region.
2. Reward by IQL: ``V_r`` by expectile regression on ``min Q_r``; ``Q_r`` on ``r + gamma V_r(s')``.
3. A diffusion policy (noise prediction) trained by weighted regression (exact energy
   guidance): ``w = exp(cost_temperature (V_h(s) - Q_h(s, a)))`` clipped to [1, 150] in
   infeasible states; ``exp(reward_temperature (Q_r - V_r))`` (clipped at 100) for feasible
   actions in feasible states; 0 for infeasible actions in feasible states.
4. Execution: sample ``n_candidates`` actions per state from the EMA network and execute the
   safest by ``Q_h`` (or the best ``Q_r`` among those with ``Q_h <= 0``).

**Deviations** (all configurable back to the paper's values):

- ``predict(deterministic=True)`` samples the candidates with fixed noise (common random
  numbers seeded by the agent's seed), so it is a deterministic function of the observation and
  batched calls equal single calls; ``deterministic=False`` draws fresh noise (the paper's).
- Observations are standardized with the dataset's statistics (``normalize_observations``).
- The reward scale ``reward_scale / (R_max - R_min)`` uses the training dataset's episode
  returns (the authors' code: 1000 / (R_max - R_min)).
- Budget: the defaults are the paper's (1M steps, actor batch 2048); on a 2-core CPU the
  benchmark configs use fewer steps and a smaller actor batch, and say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from safe_agents.common.base import SafetyCriticAgent
from safe_agents.common.candidates import MODES, select_candidates
from safe_agents.common.config import (
    DiffusionPolicyConfig,
    check_choice,
    check_in_range,
    check_positive,
)
from safe_agents.common.critics import (
    QEnsemble,
    ValueNet,
    candidate_values,
    ensemble_td_loss,
    expectile_loss,
    make_target,
    reachability_target,
    reversed_expectile_loss,
    soft_update,
    td_target,
)
from safe_agents.common.data import TransitionBatch, require_costs
from safe_agents.common.diffusion import NoiseScheduler
from safe_agents.common.networks import NoisePredictionNet, ScalarBuffer


@dataclass(kw_only=True)
class FISORConfig(DiffusionPolicyConfig):
    """FISOR hyperparameters (paper / authors' code defaults unless noted).

    Attributes:
        n_steps: gradient steps; the authors train 1M.
        batch_size: critic minibatch (256).
        actor_batch_size: diffusion-policy minibatch (the authors: 2 x 1024).
        gamma: discount of both critics (0.99).
        tau: Polyak rate of the target critics (0.005).
        critic_learning_rate / actor_learning_rate: Adam (3e-4); the actor's decays by cosine.
        actor_lr_decay_steps: length of the cosine decay (the authors' 3M, over 1M steps).
        critic_hidden_sizes: widths of every critic MLP ((256, 256)).
        n_critics: members of each Q ensemble (2).
        reward_expectile: IQL expectile of V_r (0.9).
        feasibility_expectile: reversed expectile of V_h (0.9).
        cost_scale: ``h`` on steps with cost (25); ``h = -1`` otherwise.
        reward_scale: rewards are multiplied by ``reward_scale / (R_max - R_min)`` (1000).
        cost_temperature / reward_temperature: weight temperatures (5 / 3).
        max_cost_weight / max_reward_weight: weight clips (150 / 100).
        diffusion_steps: T (5); beta_schedule (``"vp"``); sampler (``"ddpm"``).
        actor_width / actor_blocks / actor_dropout: noise network (256 / 3 / 0.1).
        actor_expansion: hidden width of each residual block over ``actor_width`` (4, IDQL's
            LN-ResNet; 1 is ~4x cheaper on a CPU).
        ema_tau: EMA rate of the sampling copy of the noise network (0.001).
        n_candidates: actions sampled per state at execution (16).
        (gamma, tau, diffusion_steps, beta_schedule, sampler, actor_width, actor_blocks,
        ema_tau and n_candidates are validated by ``DiffusionPolicyConfig``.)
        selection: ``"safest"`` (argmin Q_h, the paper's) or ``"reward_within_threshold"``.
    """

    n_steps: int = 1_000_000
    batch_size: int = 256
    actor_batch_size: int = 2048
    critic_learning_rate: float = 3e-4
    actor_learning_rate: float = 3e-4
    actor_lr_decay_steps: int = 3_000_000
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    reward_expectile: float = 0.9
    feasibility_expectile: float = 0.9
    cost_scale: float = 25.0
    reward_scale: float = 1000.0
    cost_temperature: float = 5.0
    reward_temperature: float = 3.0
    max_cost_weight: float = 150.0
    max_reward_weight: float = 100.0
    actor_dropout: float = 0.1
    actor_expansion: int = 4
    ema_tau: float = 0.001
    n_candidates: int = 16
    selection: str = "safest"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "actor_batch_size",
            "critic_learning_rate",
            "actor_learning_rate",
            "n_critics",
            "cost_scale",
            "reward_scale",
            "cost_temperature",
            "reward_temperature",
            "max_cost_weight",
            "max_reward_weight",
            "actor_expansion",
            "actor_lr_decay_steps",
        ):
            check_positive(name, getattr(self, name))
        check_in_range("reward_expectile", self.reward_expectile, 0.5, 1.0)
        check_in_range("feasibility_expectile", self.feasibility_expectile, 0.5, 1.0)
        check_in_range("actor_dropout", self.actor_dropout, 0.0, 0.99)
        check_choice("selection", self.selection, MODES)


def constraint_signal(costs: torch.Tensor, cost_scale: float) -> torch.Tensor:
    """HJ constraint ``h``: ``+cost_scale`` where the step costs, ``-1`` elsewhere."""
    return torch.where(costs > 0, torch.full_like(costs, cost_scale), -torch.ones_like(costs))


def policy_weights(
    q_h: torch.Tensor,
    v_h: torch.Tensor,
    q_r: torch.Tensor,
    v_r: torch.Tensor,
    config: FISORConfig,
) -> torch.Tensor:
    """FISOR's per-sample weights of the diffusion regression (Eq. 13).

    Infeasible state (``V_h > 0``): prefer actions that reduce violation most; feasible state and
    action (``V_h <= 0``, ``Q_h <= 0``): prefer reward advantage; feasible state, infeasible
    action: weight 0.
    """
    infeasible_state = v_h > 0
    feasible_action = q_h <= 0
    # The authors' code clips the infeasible-state weight to [1, cost_ub]: every sample there
    # keeps at least behaviour-cloning weight.
    cost_weight = torch.exp(config.cost_temperature * (v_h - q_h)).clamp(
        min=1.0, max=config.max_cost_weight
    )
    reward_weight = torch.exp(config.reward_temperature * (q_r - v_r)).clamp(
        max=config.max_reward_weight
    )
    feasible_weight = torch.where(feasible_action, reward_weight, torch.zeros_like(reward_weight))
    return torch.where(infeasible_state, cost_weight, feasible_weight)


def weighted_noise_loss(
    predicted_noise: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``mean_i w_i ||eps_theta - eps||^2`` (squared error summed over action dimensions)."""
    return (weights * ((predicted_noise - noise) ** 2).sum(dim=-1)).mean()


class FISOR(SafetyCriticAgent):
    """FISOR (Zheng et al., ICLR 2024): feasibility-guided diffusion policy for hard constraints.

    Besides the contract, exposes the safety critic for :class:`envs.SafetyFilter`:
    :meth:`candidate_actions`, :meth:`action_cost` (``max Q_h``, feasible when ``<= 0``) and
    :meth:`feasibility_value` (``V_h``).
    """

    name = "fisor"
    config_class = FISORConfig
    config: FISORConfig

    def _build(self) -> None:
        c = self.config
        self.feasibility_q = QEnsemble(
            self.obs_dim, self.act_dim, c.n_critics, c.critic_hidden_sizes
        )
        self.feasibility_v = ValueNet(self.obs_dim, c.critic_hidden_sizes)
        self.reward_q = QEnsemble(self.obs_dim, self.act_dim, c.n_critics, c.critic_hidden_sizes)
        self.reward_v = ValueNet(self.obs_dim, c.critic_hidden_sizes)
        self.feasibility_q_target = make_target(self.feasibility_q)
        self.reward_q_target = make_target(self.reward_q)
        self.actor = NoisePredictionNet(
            self.obs_dim,
            self.act_dim,
            c.actor_width,
            c.actor_blocks,
            c.actor_dropout,
            expansion=c.actor_expansion,
        )
        self.actor_ema = make_target(self.actor)
        self.scheduler = NoiseScheduler(c.diffusion_steps, c.beta_schedule, c.sampler)
        critic_params = [
            *self.feasibility_q.parameters(),
            *self.feasibility_v.parameters(),
            *self.reward_q.parameters(),
            *self.reward_v.parameters(),
        ]
        self.optimizers = {
            "critic": torch.optim.Adam(critic_params, lr=c.critic_learning_rate, foreach=True),
            "actor": torch.optim.Adam(
                self.actor.parameters(), lr=c.actor_learning_rate, foreach=True
            ),
        }
        # The reward scale depends on the training data; it is a buffer so it is saved.
        self.reward_normalizer = ScalarBuffer(1.0)

    def _saved_modules(self) -> dict[str, nn.Module]:
        return {
            "feasibility_q": self.feasibility_q,
            "feasibility_v": self.feasibility_v,
            "reward_q": self.reward_q,
            "reward_v": self.reward_v,
            "feasibility_q_target": self.feasibility_q_target,
            "reward_q_target": self.reward_q_target,
            "actor": self.actor,
            "actor_ema": self.actor_ema,
            "reward_normalizer": self.reward_normalizer,
        }

    def _setup_training(self, dataset: Any) -> None:
        require_costs(dataset, "FISOR")
        if self.num_steps == 0:
            returns = dataset.episode_returns()
            spread = float(returns.max() - returns.min())
            self.reward_normalizer.value.fill_(self.config.reward_scale / max(spread, 1e-6))

    def _train_step(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        obs = self.obs_scaler(batch.obs)
        next_obs = self.obs_scaler(batch.next_obs)
        actions = self.action_scaler.normalize(batch.actions)
        done = torch.clamp(batch.terminals + batch.timeouts, max=1.0)
        rewards = batch.rewards * self.reward_normalizer.value

        # 1. Feasibility: HJ reachability backup for Q_h, reversed expectile for V_h.
        h = constraint_signal(batch.costs, c.cost_scale)
        with torch.no_grad():
            q_h_target = reachability_target(h, self.feasibility_v(next_obs), done, c.gamma)
            q_h_pessimistic = self.feasibility_q_target(obs, actions).max(dim=0).values
        q_h_loss = ensemble_td_loss(self.feasibility_q(obs, actions), q_h_target)
        v_h = self.feasibility_v(obs)
        v_h_loss = reversed_expectile_loss(q_h_pessimistic - v_h, c.feasibility_expectile)

        # 2. Reward: IQL.
        with torch.no_grad():
            q_r_target = td_target(rewards, self.reward_v(next_obs), done, c.gamma)
            q_r_conservative = self.reward_q_target(obs, actions).min(dim=0).values
        q_r_loss = ensemble_td_loss(self.reward_q(obs, actions), q_r_target)
        v_r_loss = expectile_loss(q_r_conservative - self.reward_v(obs), c.reward_expectile)

        critic_loss = q_h_loss + v_h_loss + q_r_loss + v_r_loss
        self.optimizers["critic"].zero_grad()
        critic_loss.backward()
        self.optimizers["critic"].step()
        soft_update(self.feasibility_q_target, self.feasibility_q, c.tau)
        soft_update(self.reward_q_target, self.reward_q, c.tau)

        # 3. Policy: weighted noise regression on its own (larger) minibatch.
        actor_batch = self.sampler.sample(c.actor_batch_size)
        actor_obs = self.obs_scaler(actor_batch.obs)
        actor_actions = self.action_scaler.normalize(actor_batch.actions)
        with torch.no_grad():
            weights = policy_weights(
                self.feasibility_q_target(actor_obs, actor_actions).max(dim=0).values,
                self.feasibility_v(actor_obs),
                self.reward_q_target(actor_obs, actor_actions).min(dim=0).values,
                self.reward_v(actor_obs),
                c,
            )
        noisy, t, noise = self.scheduler.training_targets(actor_actions, self.train_generator)
        actor_loss = weighted_noise_loss(self.actor(noisy, t, actor_obs), noise, weights)
        for group in self.optimizers["actor"].param_groups:
            group["lr"] = self._cosine_learning_rate()
        self.optimizers["actor"].zero_grad()
        actor_loss.backward()
        self.optimizers["actor"].step()
        soft_update(self.actor_ema, self.actor, c.ema_tau)

        return {
            "feasibility_q_loss": q_h_loss.item(),
            "feasibility_v_loss": v_h_loss.item(),
            "reward_q_loss": q_r_loss.item(),
            "reward_v_loss": v_r_loss.item(),
            "actor_loss": actor_loss.item(),
            "feasible_fraction": (v_h <= 0).float().mean().item(),
            "mean_weight": weights.mean().item(),
        }

    def _cosine_learning_rate(self) -> float:
        progress = min(self.num_steps / self.config.actor_lr_decay_steps, 1.0)
        return self.config.actor_learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ execution
    def _scores(
        self, obs: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q_h = candidate_values(self.feasibility_q_target, obs, candidates, "max")
        q_r = candidate_values(self.reward_q_target, obs, candidates, "min")
        return q_h, q_r

    def _safety_scores(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``max_i Q_h(s, a)``: feasible (never violating) when ``<= 0``."""
        return candidate_values(self.feasibility_q_target, obs, actions, "max")

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        candidates = self._candidates(obs, self.config.n_candidates, deterministic)
        q_h, q_r = self._scores(obs, candidates)
        actions, _ = select_candidates(candidates, q_h, q_r, 0.0, self.config.selection)
        return actions

    def feasibility_value(self, observation: np.ndarray) -> np.ndarray:
        """``V_h(s)`` for one observation (a float array of shape ()) or a batch (``(B,)``)."""
        obs, single = self._check_observation(observation)
        with torch.no_grad():
            tensor = self.obs_scaler(torch.as_tensor(obs, device=self.device))
            values = self.feasibility_v(tensor).cpu().numpy()
        return values[0] if single else values
