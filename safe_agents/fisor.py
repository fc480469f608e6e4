"""FISOR: feasibility-guided safe offline RL with a diffusion policy.

Zheng et al., "Safe Offline Reinforcement Learning with Feasibility-Guided Diffusion Model",
ICLR 2024 (arXiv 2401.10700); defaults from the authors' JAX code (``master``). Three decoupled
learners, then policy extraction:

1. Feasibility by offline Hamilton-Jacobi reachability. With ``h = cost_scale`` on steps that
   cost and ``-1`` otherwise, ``Q_h`` (ensemble, max = pessimistic) regresses on
   ``(1 - gamma) h + gamma max(h, V_h(s'))`` (``h`` at episode ends), and ``V_h`` on ``Q_h`` by
   *reversed* expectile regression, tracking the best in-data feasibility. ``V_h(s) <= 0``
   marks the feasible region.
2. Reward by IQL: ``V_r`` by expectile regression on ``min Q_r``; ``Q_r`` on ``r + gamma V_r(s')``,
   rewards scaled by ``episode_length / (R_max - R_min)``.
3. A diffusion policy (noise prediction) trained by weighted regression (exact energy
   guidance, Eq. 13): ``w = exp(cost_temperature (V_h(s) - Q_h(s, a)))`` clipped to [0, 150]
   in infeasible states; ``exp(reward_temperature (Q_r - V_r))`` clipped to [0, 100] for feasible
   actions in feasible states; 0 for infeasible actions in feasible states. Each training step
   takes ``actor_updates_per_step`` (2) actor updates on minibatches of ``actor_batch_size``
   (1024), each followed by an EMA update, with the cosine decay counted per actor update;
   then one update of every critic.
4. Execution: sample ``n_candidates`` actions per state from the EMA network (DDPM with noise
   ``sqrt(beta_t)``, clipped to the box after every step) and execute the safest by ``Q_h``
   (or the best ``Q_r`` among those with ``Q_h <= 0``).

Episode ends: a time-out ends the return like a termination (``done = terminals | timeouts``),
as in the authors' DSRL loader (:func:`~safe_agents.common.data.done_mask`).

**Deviations from the authors' code** (each configurable back, or harmless):

- ``predict(deterministic=True)`` samples the candidates with fixed noise (common random
  numbers seeded by the agent's seed), so it is a deterministic function of the observation and
  batched calls equal single calls; ``deterministic=False`` draws fresh noise (the authors').
- Observations are standardized with the dataset's statistics (``normalize_observations``;
  the authors feed raw observations). It lets one network size serve tasks whose observation
  scales differ by orders of magnitude (MetaDrive); ``normalize_observations=False`` reproduces
  the authors'.
- ``R_max - R_min`` of the reward scale is the spread of the training data's episode returns;
  the authors use DSRL's reference constants for the task, which this agent cannot know for a
  user's dataset (for DSRL's data the two are close: DSRL's constants come from its data).
- The critics' minibatch (256) is drawn on its own; the authors slice it from the first actor
  minibatch. Both are uniform draws from the data.
- Networks use torch's default initialisation (the authors: Xavier-uniform for the critics and
  the noise network's input and output layers); dataset actions are not clipped to
  ``1 - 1e-5``.
- Budget: the defaults are the authors' (1M steps, 2 x 1024 actor samples per step, a 4x-wide
  noise network: about 3 steps/s on a 2-core CPU); ``preset="cpu"`` shrinks networks and steps,
  and says so in :data:`FISORConfig.presets`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

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
    td_target,
)
from safe_agents.common.data import TransitionBatch, done_mask, episode_horizon
from safe_agents.common.dataset import OfflineDataset
from safe_agents.common.device import optimizer_options, torch_threads
from safe_agents.common.logger import Metrics
from safe_agents.common.networks import NoisePredictionNet, ScalarBuffer
from safe_agents.common.safety_critic_agent import SafetyCriticAgent

WEIGHTINGS = ("feasibility", "uniform")


@dataclass(kw_only=True)
class FISORConfig(DiffusionPolicyConfig):
    """FISOR hyperparameters (the authors' code defaults unless noted).

    ``gamma``, ``tau``, ``diffusion_steps``, ``beta_schedule``, ``sampler``, ``actor_width``,
    ``actor_blocks``, ``ema_tau`` and ``n_candidates`` are validated by ``DiffusionPolicyConfig``.

    Attributes:
        n_steps: training steps; the authors train 1M.
        batch_size: critic minibatch (256).
        actor_batch_size: minibatch of each actor update (1024).
        actor_updates_per_step: actor updates (each with its EMA update) per training step (2).
        gamma: discount of both critics (0.99).
        tau: Polyak rate of the target critics (0.005).
        critic_learning_rate / actor_learning_rate: Adam (3e-4); the actor's decays by cosine.
        actor_lr_decay_steps: length of the cosine decay in actor updates (3M; the authors make
            2M actor updates, so the rate ends at a quarter of its start). None: 1.5x the
            actor updates of the planned run (the same ratio for any ``n_steps``).
        critic_hidden_sizes: widths of every critic MLP ((256, 256)).
        n_critics: members of each Q ensemble (2).
        reward_expectile: IQL expectile of V_r (0.9).
        feasibility_expectile: reversed expectile of V_h (0.9).
        cost_scale: ``h`` on steps with cost (25); ``h = -1`` otherwise.
        episode_length: rewards are multiplied by ``episode_length / (R_max - R_min)``; None
            takes the dataset's ``max_episode_steps`` metadata, else its longest episode.
        cost_temperature / reward_temperature: weight temperatures (5 / 3).
        min_cost_weight / max_cost_weight: clip of the infeasible-state weight ([0, 150], Eq. 13;
            ``min_cost_weight=1`` keeps behaviour cloning there, as the authors' first commit).
        max_reward_weight: clip of the feasible-state weight (100).
        diffusion_steps: T (5); beta_schedule (``"vp"``); sampler (``"ddpm"``);
            variance_type (``"fixed_large"``: noise ``sqrt(beta_t)``, the authors' sampler).
        actor_width / actor_blocks / actor_dropout: noise network (256 / 3 / 0.1).
        actor_expansion: hidden width of each residual block over ``actor_width`` (4, IDQL's
            LN-ResNet; 1 is ~4x cheaper on a CPU).
        time_embedding_dim: Fourier features of the timestep (64), mapped by an MLP to twice
            that (the authors' 64 -> 128 -> 128, frequencies drawn with std 0.2).
        ema_tau: EMA rate of the sampling copy of the noise network, per actor update (0.001).
        n_candidates: actions sampled per state at execution (16).
        selection: ``"safest"`` (argmin Q_h, the paper's) or ``"reward_within_threshold"``.
        actor_weighting: ``"feasibility"`` (Eq. 13) or ``"uniform"`` (every weight 1: plain
            diffusion behaviour cloning, an ablation).
        cost_limit: accepted and recorded; FISOR's hard constraint does not use it (the authors
            use the limit only to normalize the evaluation cost).
    """

    # The cpu preset: ~12x smaller networks, 2 x 256 actor samples per step, 20k steps (from the
    # learning curves of benchmarks/fidelity.py, results/fidelity.md); the cosine decay spans
    # 1.5x the planned actor updates, the authors' ratio (3M over 2M), whatever n_steps is.
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {
            "n_steps": 20_000,
            "actor_batch_size": 256,
            "actor_width": 64,
            "actor_expansion": 1,
            "critic_hidden_sizes": (64, 64),
            "actor_lr_decay_steps": None,
        },
    }

    n_steps: int = 1_000_000
    batch_size: int = 256
    actor_batch_size: int = 1024
    actor_updates_per_step: int = 2
    critic_learning_rate: float = 3e-4
    actor_learning_rate: float = 3e-4
    actor_lr_decay_steps: int | None = 3_000_000
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    reward_expectile: float = 0.9
    feasibility_expectile: float = 0.9
    cost_scale: float = 25.0
    episode_length: int | None = None
    cost_temperature: float = 5.0
    reward_temperature: float = 3.0
    min_cost_weight: float = 0.0
    max_cost_weight: float = 150.0
    max_reward_weight: float = 100.0
    variance_type: str = "fixed_large"
    actor_dropout: float = 0.1
    actor_expansion: int = 4
    time_embedding_dim: int = 64
    ema_tau: float = 0.001
    n_candidates: int = 16
    selection: str = "safest"
    actor_weighting: str = "feasibility"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "actor_batch_size",
            "actor_updates_per_step",
            "critic_learning_rate",
            "actor_learning_rate",
            "n_critics",
            "cost_scale",
            "cost_temperature",
            "reward_temperature",
            "max_cost_weight",
            "max_reward_weight",
            "actor_expansion",
            "time_embedding_dim",
        ):
            check_positive(name, getattr(self, name))
        for name in ("episode_length", "actor_lr_decay_steps"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        if self.time_embedding_dim % 2:
            raise ValueError(f"time_embedding_dim must be even, got {self.time_embedding_dim}")
        check_in_range("min_cost_weight", self.min_cost_weight, 0.0, self.max_cost_weight)
        check_in_range("reward_expectile", self.reward_expectile, 0.5, 1.0)
        check_in_range("feasibility_expectile", self.feasibility_expectile, 0.5, 1.0)
        check_in_range("actor_dropout", self.actor_dropout, 0.0, 0.99)
        check_choice("selection", self.selection, MODES)
        check_choice("actor_weighting", self.actor_weighting, WEIGHTINGS)


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
    # Eq. 13 clips to [0, 150]: an action that leads further into violation than the best one
    # (Q_h > V_h) gets a weight below 1, down to 0, so recovery is not behaviour cloning.
    cost_weight = torch.exp(config.cost_temperature * (v_h - q_h)).clamp(
        min=config.min_cost_weight, max=config.max_cost_weight
    )
    reward_weight = torch.exp(config.reward_temperature * (q_r - v_r)).clamp(
        max=config.max_reward_weight
    )
    feasible_weight = torch.where(feasible_action, reward_weight, torch.zeros_like(reward_weight))
    return torch.where(infeasible_state, cost_weight, feasible_weight)


def reward_scale(dataset: OfflineDataset, episode_length: int | None = None) -> float:
    """The authors' reward normalization factor, ``episode_length / (R_max - R_min)``.

    ``R_max - R_min`` is the spread of the dataset's episode returns; ``episode_length`` defaults
    to the task's (the dataset's ``max_episode_steps`` metadata, else its longest episode), so a
    return's range maps to about one unit per step whatever the task.

    Raises:
        ValueError: a dataset with one episode, or episodes that all return the same.
    """
    returns = dataset.episode_returns()
    if len(returns) < 2:
        raise ValueError(
            "FISOR scales rewards by the spread of the dataset's episode returns, but the "
            f"dataset has {len(returns)} episode(s); it needs at least 2"
        )
    spread = float(returns.max() - returns.min())
    if not spread > 1e-8:
        raise ValueError(
            "FISOR scales rewards by the spread of the dataset's episode returns, but every "
            f"episode returns {float(returns[0]):g}"
        )
    length = episode_length if episode_length is not None else episode_horizon(dataset)
    return length / spread


def cosine_learning_rate(base: float, update: int, decay_steps: int) -> float:
    """``base`` decayed by a half cosine over ``decay_steps`` updates, then held at 0 (optax's
    ``cosine_decay_schedule`` with ``alpha = 0``)."""
    progress = min(update / decay_steps, 1.0)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


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
    supports_compile = True

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
            time_dim=c.time_embedding_dim,
            expansion=c.actor_expansion,
            time_out_dim=2 * c.time_embedding_dim,
            time_scale=0.2,
            num_timesteps=c.diffusion_steps,
        )
        self.actor_ema = make_target(self.actor)
        self.scheduler = c.make_scheduler()
        critic_params = [
            *self.feasibility_q.parameters(),
            *self.feasibility_v.parameters(),
            *self.reward_q.parameters(),
            *self.reward_v.parameters(),
        ]
        self.optimizers = {
            "critic": torch.optim.Adam(
                critic_params, lr=c.critic_learning_rate, **optimizer_options(self.device)
            ),
            "actor": torch.optim.Adam(
                self.actor.parameters(), lr=c.actor_learning_rate, **optimizer_options(self.device)
            ),
        }
        # The reward scale depends on the training data; it is a buffer so it is saved.
        self.reward_normalizer = ScalarBuffer(1.0)
        # The weights of every actor minibatch of a step, in one pass (no gradients).
        self.policy_weights = self._compiled_if_asked(
            "policy_weights",
            self._policy_weights,
            [self.feasibility_q_target, self.feasibility_v, self.reward_q_target, self.reward_v],
        )
        self.updates = {
            # Each actor update moves the EMA copy that sampling uses.
            "actor": self._make_update(
                self._actor_loss,
                self.optimizers["actor"],
                {"actor": self.actor},
                [(self.actor_ema, self.actor, lambda: self.config.ema_tau)],
            ),
            # Slow targets: they feed V's regression and the next step's actor weights.
            "critic": self._make_update(
                self._critic_loss,
                self.optimizers["critic"],
                {
                    "feasibility_q": self.feasibility_q,
                    "feasibility_v": self.feasibility_v,
                    "reward_q": self.reward_q,
                    "reward_v": self.reward_v,
                },
                [
                    (self.feasibility_q_target, self.feasibility_q, lambda: self.config.tau),
                    (self.reward_q_target, self.reward_q, lambda: self.config.tau),
                ],
            ),
        }

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

    def _setup_training(self, dataset: OfflineDataset) -> None:
        if self.num_steps == 0:
            self.reward_normalizer.value.fill_(reward_scale(dataset, self.config.episode_length))

    def _train_step(self, batch: TransitionBatch) -> Metrics:
        c = self.config
        # 1. Policy first, as the authors order it: the weights use the critics as they stand.
        # The critics do not change during the actor updates, so the weights of all their
        # minibatches are computed in one pass over one draw of K x actor_batch_size.
        k_updates = c.actor_updates_per_step
        actor_batch = self.sampler.sample(c.actor_batch_size * k_updates)
        actor_obs = self.obs_scaler(actor_batch.obs)
        actor_actions = self.action_scaler.normalize(actor_batch.actions)
        all_weights = self.policy_weights(actor_obs, actor_actions)
        actor_losses = []
        for k, (obs_k, actions_k, weights_k) in enumerate(
            zip(
                actor_obs.chunk(k_updates),
                actor_actions.chunk(k_updates),
                all_weights.chunk(k_updates),
                strict=True,
            )
        ):
            # The cosine decay counts actor updates: a function of the step counter (resumable).
            update = self.num_steps * k_updates + k
            actor_losses.append(self._update_actor(obs_k, actions_k, weights_k, update))
        weights = weights_k  # the last actor update's, for the log

        obs = self.obs_scaler(batch.obs)
        next_obs = self.obs_scaler(batch.next_obs)
        actions = self.action_scaler.normalize(batch.actions)
        done = done_mask(batch, through_timeouts=False)  # the authors' DSRL done: time-outs too
        # r L / (R_max - R_min): a return's range maps to about one unit per step on any task.
        rewards = batch.rewards * self.reward_normalizer.value
        h = constraint_signal(batch.costs, c.cost_scale)
        critic = self.updates["critic"](obs, next_obs, actions, rewards, h, done)
        return {
            "feasibility_q_loss": critic["feasibility_q_loss"],
            "feasibility_v_loss": critic["feasibility_v_loss"],
            "reward_q_loss": critic["reward_q_loss"],
            "reward_v_loss": critic["reward_v_loss"],
            "actor_loss": torch.stack(actor_losses).mean(),  # detached losses
            "feasible_fraction": critic["feasible_fraction"],
            "mean_weight": weights.mean().detach(),
            "actor_learning_rate": self.optimizers["actor"].param_groups[0]["lr"],
        }

    def _critic_loss(
        self,
        obs: torch.Tensor,
        next_obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        h: torch.Tensor,
        done: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The four critics' losses, summed: one optimizer suffices, since each loss reaches only
        its own network (targets are detached)."""
        c = self.config
        # 2. Feasibility: HJ reachability backup for Q_h, reversed expectile for V_h.
        # Regression targets are constants; Q_h bootstraps from V_h(s'), IQL-style (no target V).
        with torch.no_grad():
            q_h_target = reachability_target(h, self.feasibility_v(next_obs), done, c.gamma)
            # (B,): max over the ensemble, since h > 0 is violation: never underestimate it.
            q_h_pessimistic = self.feasibility_q_target(obs, actions).max(dim=0).values
        q_h_loss = ensemble_td_loss(self.feasibility_q(obs, actions), q_h_target)
        v_h = self.feasibility_v(obs)
        # Weight tau on Q_h < V_h: V_h tracks the lowest in-data Q_h, the best reachable safety.
        v_h_loss = reversed_expectile_loss(q_h_pessimistic - v_h, c.feasibility_expectile)

        # 3. Reward: IQL.
        with torch.no_grad():
            q_r_target = td_target(rewards, self.reward_v(next_obs), done, c.gamma)
            # (B,): min over the ensemble, IQL's guard against overestimated rewards.
            q_r_conservative = self.reward_q_target(obs, actions).min(dim=0).values
        q_r_loss = ensemble_td_loss(self.reward_q(obs, actions), q_r_target)
        # Upper expectile: V_r approaches the best in-data action without querying others.
        v_r_loss = expectile_loss(q_r_conservative - self.reward_v(obs), c.reward_expectile)
        return q_h_loss + v_h_loss + q_r_loss + v_r_loss, {
            "feasibility_q_loss": q_h_loss.detach(),
            "feasibility_v_loss": v_h_loss.detach(),
            "reward_q_loss": q_r_loss.detach(),
            "reward_v_loss": v_r_loss.detach(),
            "feasible_fraction": (v_h <= 0).float().mean().detach(),
        }

    @torch.no_grad()
    def _policy_weights(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Eq. 13's weights of standardized ``(obs, actions)``: constants of the regression, no
        gradient into the critics (the authors': target Q ensembles, online V networks)."""
        c = self.config
        if c.actor_weighting == "uniform":
            return torch.ones(len(obs), device=obs.device)
        return policy_weights(
            self.feasibility_q_target(obs, actions).max(dim=0).values,
            self.feasibility_v(obs),
            self.reward_q_target(obs, actions).min(dim=0).values,
            self.reward_v(obs),
            c,
        )

    def _update_actor(
        self, obs: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor, update: int
    ) -> torch.Tensor:
        """Actor update number ``update`` (from 0): weighted noise regression, then the EMA.

        Returns the loss, detached.
        """
        c = self.config
        noisy, t, noise = self.scheduler.training_targets(actions, self.train_generator)
        # None: 1.5x the planned actor updates, the authors' ratio (3M decay over 2M updates).
        decay = c.actor_lr_decay_steps or int(1.5 * self.total_steps * c.actor_updates_per_step)
        # Set before stepping: update k uses lr(k), as optax's schedule counts from 0.
        for group in self.optimizers["actor"].param_groups:
            group["lr"] = cosine_learning_rate(c.actor_learning_rate, update, decay)
        return self.updates["actor"](obs, noisy, t, noise, weights)["loss"]

    def _actor_loss(
        self,
        obs: torch.Tensor,
        noisy: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 14: weighted noise regression is exact energy guidance, no time-dependent
        classifier."""
        return weighted_noise_loss(self.actor(noisy, t, obs), noise, weights), {}

    # ------------------------------------------------------------------ execution
    def _safety_scores(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``max_i Q_h(s, a)``: feasible (never violating) when ``<= 0``."""
        return candidate_values(self.feasibility_q_target, obs, actions, "max")

    def _choose(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        candidates = self._candidates_from(obs, noise)
        q_h = candidate_values(self.feasibility_q_target, obs, candidates, "max")
        q_r = None  # "safest" needs no reward scores
        if self.config.selection != "safest":
            q_r = candidate_values(self.reward_q_target, obs, candidates, "min")
        actions, _ = select_candidates(candidates, q_h, q_r, 0.0, self.config.selection)
        return actions

    def feasibility_value(self, observation: NDArray[Any]) -> NDArray[np.float32]:
        """``V_h(s)`` for one observation (a float array of shape ()) or a batch (``(B,)``)."""
        obs, single = self._check_observation(observation)
        with torch_threads(self.torch_threads), torch.no_grad():
            tensor = self.obs_scaler(torch.as_tensor(obs, device=self.device))
            values: NDArray[np.float32] = self.feasibility_v(tensor).cpu().numpy()
        return values[0] if single else values
