"""SPI: safe policy improvement with a doubly guided diffusion policy.

"Safe Policy Improvement via Diffusion Model for Offline Reinforcement Learning" (Yang et
al.). A Diffusion-QL-style policy guided by two critics:

1. Cost remap (Eq. 4): ``c' = 1 - f(c)``, ``f`` the indicator of an unsafe step (default) or
   ``min(c / c_max, 1)``; a long run of safe steps then accumulates value instead of a rare cost
   vanishing under discounting.
2. Critics (Eq. 10-11): twin ``Q_r`` and ``Q_c'`` trained by TD with target networks; the next
   action comes from the current (EMA) diffusion policy, as in Diffusion-QL, or from the dataset.
3. Policy (Eq. 6, 9): ``eta * L_diffusion - mu * Q_r(s, a^s) - phi * Q_c'(s, a^s)`` with ``a^s``
   sampled with gradients through the whole reverse chain, ``eta + mu + phi = 1``.
4. Extraction (Eq. 12): sample ``n_candidates`` (50) actions per state and execute the argmax of
   ``Q_r``; or (option) the best ``Q_r`` among the candidates whose ``Q_c'`` is in the top
   ``safe_fraction``.

Episode ends: a time-out ends the return like a termination, as in FISOR's code, whose critics
SPI shares (:func:`~safe_agents.common.data.done_mask`).

**Deviations**: each Q term of the policy loss is divided by the batch mean of its absolute value
(detached), as Diffusion-QL does, so ``mu`` and ``phi`` weigh comparable quantities (the paper
does not say); the twin critics enter the policy loss and the targets through their minimum; the
noise network is the shared LN-ResNet (2 blocks of width 256, no dropout) rather than Diffusion-
QL's plain 3-layer MLP; observations are standardized with the dataset's statistics. The paper
gives no hyperparameter table: defaults are Diffusion-QL's (T = 5, lr 3e-4, batch 256,
gamma 0.99, tau 0.005) with ``eta, mu, phi = 0.5, 0.25, 0.25``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from safe_agents.common.candidates import select_candidates
from safe_agents.common.config import (
    DiffusionPolicyConfig,
    check_choice,
    check_in_range,
    check_positive,
)
from safe_agents.common.critics import (
    QEnsemble,
    candidate_values,
    make_target,
    td_target,
)
from safe_agents.common.data import TransitionBatch, done_mask
from safe_agents.common.device import optimizer_options
from safe_agents.common.logger import Metrics
from safe_agents.common.networks import NoisePredictionNet
from safe_agents.common.safety_critic_agent import SafetyCriticAgent

COST_REMAPS = ("indicator", "clip")
NEXT_ACTIONS = ("policy", "dataset")
SELECTIONS = ("reward", "safety_aware")


@dataclass(kw_only=True)
class SPIConfig(DiffusionPolicyConfig):
    """SPI hyperparameters (Diffusion-QL defaults where the paper is silent).

    Attributes:
        eta / mu / phi: weights of the diffusion loss, ``-Q_r`` and ``-Q_c'`` (sum to 1).
        cost_remap: ``"indicator"`` (``f(c) = 1[c > 0]``) or ``"clip"`` (``min(c / cost_max, 1)``).
        cost_max: the ``c_max`` of the clip remap.
        next_action: TD next action from the ``"policy"`` (EMA sampler, Diffusion-QL's
            choice and the default) or the ``"dataset"`` (SARSA, the paper's Eq. 10-11).
        learning_rate: Adam for actor and critics (3e-4).
        critic_hidden_sizes: twin critic MLPs ((256, 256, 256), Diffusion-QL).
        actor_blocks: residual blocks of the noise network (2; width 256). T = 5, the VP
            schedule, DDPM, gamma 0.99 and tau 0.005 come from ``DiffusionPolicyConfig``.
        ema_tau: EMA rate of the sampling copy (0.005, Diffusion-QL).
        n_candidates: actions sampled per state at execution (50, paper Sec. 4.3).
        selection: ``"reward"`` (argmax Q_r, the paper) or ``"safety_aware"``.
        safe_fraction: with ``"safety_aware"``, the top fraction of candidates by ``Q_c'``.
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {"n_steps": 4_000, "actor_width": 64, "critic_hidden_sizes": (64, 64)},
    }

    n_steps: int = 1_000_000
    batch_size: int = 256
    eta: float = 0.5
    mu: float = 0.25
    phi: float = 0.25
    cost_remap: str = "indicator"
    cost_max: float = 1.0
    next_action: str = "policy"
    learning_rate: float = 3e-4
    critic_hidden_sizes: tuple[int, ...] = (256, 256, 256)
    actor_blocks: int = 2
    ema_tau: float = 0.005
    n_candidates: int = 50
    selection: str = "reward"
    safe_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("eta", "mu", "phi"):
            check_in_range(name, getattr(self, name), 0.0, 1.0)
        if abs(self.eta + self.mu + self.phi - 1.0) > 1e-6:
            raise ValueError(
                f"eta + mu + phi must equal 1 (paper Eq. 6), got {self.eta} + {self.mu} + "
                f"{self.phi} = {self.eta + self.mu + self.phi}"
            )
        check_positive("cost_max", self.cost_max)
        check_positive("learning_rate", self.learning_rate)
        check_in_range("safe_fraction", self.safe_fraction, 1e-6, 1.0)
        check_choice("cost_remap", self.cost_remap, COST_REMAPS)
        check_choice("next_action", self.next_action, NEXT_ACTIONS)
        check_choice("selection", self.selection, SELECTIONS)


def remap_costs(
    costs: torch.Tensor, mode: str = "indicator", cost_max: float = 1.0
) -> torch.Tensor:
    """The safety signal ``c' = 1 - f(c)`` (Eq. 4): 1 on safe steps, down to 0 on unsafe ones."""
    if mode == "indicator":
        unsafe = (costs > 0).to(costs.dtype)
    elif mode == "clip":
        unsafe = (costs / cost_max).clamp(0.0, 1.0)
    else:
        raise ValueError(f"cost remap must be one of {COST_REMAPS}, got {mode!r}")
    return 1.0 - unsafe


def guided_policy_loss(
    diffusion_loss: torch.Tensor,
    reward_q: torch.Tensor,
    safety_q: torch.Tensor,
    eta: float,
    mu: float,
    phi: float,
) -> torch.Tensor:
    """``eta L_diff - mu Q_r / mean|Q_r| - phi Q_c' / mean|Q_c'|`` (scales detached)."""
    # Detached scales (Diffusion-QL): order-1 terms, so mu and phi weigh comparable quantities.
    reward_term = reward_q.mean() / reward_q.abs().mean().detach().clamp(min=1e-6)
    safety_term = safety_q.mean() / safety_q.abs().mean().detach().clamp(min=1e-6)
    return eta * diffusion_loss - mu * reward_term - phi * safety_term


class SPI(SafetyCriticAgent):
    """SPI: diffusion policy guided by a reward critic and a remapped safety critic.

    ``cost_limit`` is accepted and recorded but unused: SPI's safety critic learns from the
    remapped per-step costs, with no episode budget.
    """

    name = "spi"
    config_class = SPIConfig
    config: SPIConfig
    supports_compile = True

    def _build(self) -> None:
        c = self.config
        self.reward_q = QEnsemble(self.obs_dim, self.act_dim, 2, c.critic_hidden_sizes)
        self.safety_q = QEnsemble(self.obs_dim, self.act_dim, 2, c.critic_hidden_sizes)
        self.reward_q_target = make_target(self.reward_q)
        self.safety_q_target = make_target(self.safety_q)
        self.actor = NoisePredictionNet(
            self.obs_dim,
            self.act_dim,
            c.actor_width,
            c.actor_blocks,
            dropout=0.0,
            expansion=1,
            num_timesteps=c.diffusion_steps,
        )
        self.actor_ema = make_target(self.actor)
        self.scheduler = c.make_scheduler()
        critic_params = [*self.reward_q.parameters(), *self.safety_q.parameters()]
        self.optimizers = {
            "critic": torch.optim.Adam(
                critic_params, lr=c.learning_rate, **optimizer_options(self.device)
            ),
            "actor": torch.optim.Adam(
                self.actor.parameters(), lr=c.learning_rate, **optimizer_options(self.device)
            ),
        }
        self.updates = {
            # The slow targets are read only by the next step's critic targets: averaged here,
            # as Diffusion-QL does after both updates.
            "critic": self._make_update(
                self._critic_loss,
                self.optimizers["critic"],
                {"reward_q": self.reward_q, "safety_q": self.safety_q},
                [
                    (self.reward_q_target, self.reward_q, lambda: self.config.tau),
                    (self.safety_q_target, self.safety_q, lambda: self.config.tau),
                ],
            ),
            "actor": self._make_update(
                self._actor_loss,
                self.optimizers["actor"],
                {"actor": self.actor},
                [(self.actor_ema, self.actor, lambda: self.config.ema_tau)],
            ),
        }

    def _saved_modules(self) -> dict[str, nn.Module]:
        return {
            "reward_q": self.reward_q,
            "safety_q": self.safety_q,
            "reward_q_target": self.reward_q_target,
            "safety_q_target": self.safety_q_target,
            "actor": self.actor,
            "actor_ema": self.actor_ema,
        }

    def _train_step(self, batch: TransitionBatch) -> Metrics:
        c = self.config
        obs = self.obs_scaler(batch.obs)
        next_obs = self.obs_scaler(batch.next_obs)
        actions = self.action_scaler.normalize(batch.actions)
        done = done_mask(batch, through_timeouts=False)  # FISOR's rule: a time-out ends it
        # Eq. 4: c' = 1 on safe steps, so a long safe run accumulates value like a reward.
        safety_signal = remap_costs(batch.costs, c.cost_remap, c.cost_max)

        # Critics: TD on both signals, next action from the EMA policy (or the dataset).
        with torch.no_grad():
            if c.next_action == "policy":
                # (B, act_dim): the EMA copy plays the policy's target network (Diffusion-QL).
                next_actions = self._sample_actions(self.actor_ema, next_obs, self.train_generator)
            else:
                next_actions = self.action_scaler.normalize(batch.next_actions)
        critic = self.updates["critic"](
            obs, actions, next_obs, next_actions, batch.rewards, safety_signal, done
        )

        # Policy: diffusion (BC) loss plus both critics on actions sampled through the chain.
        noisy, t, noise = self.scheduler.training_targets(actions, self.train_generator)
        chain_noise = torch.empty(0)  # no guidance: no chain to sample
        if c.mu > 0 or c.phi > 0:
            shape = (len(obs), self.act_dim)
            chain_noise = self.scheduler.sampling_noise(shape, self.train_generator, self.device)
        actor = self.updates["actor"](obs, noisy, t, noise, chain_noise)
        return {
            "reward_q_loss": critic["reward_q_loss"],
            "safety_q_loss": critic["safety_q_loss"],
            "diffusion_loss": actor["diffusion_loss"],
            "actor_loss": actor["loss"],
        }

    def _critic_loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        next_obs: torch.Tensor,
        next_actions: torch.Tensor,
        rewards: torch.Tensor,
        safety_signal: torch.Tensor,
        done: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Both critics' TD losses, summed: one optimizer, since they share no parameters."""
        c = self.config
        with torch.no_grad():
            # (B,): twin minimum, pessimistic for both since a higher c' value is also better.
            next_reward_q = self.reward_q_target(next_obs, next_actions).min(dim=0).values
            next_safety_q = self.safety_q_target(next_obs, next_actions).min(dim=0).values
            reward_target = td_target(rewards, next_reward_q, done, c.gamma)
            safety_target = td_target(safety_signal, next_safety_q, done, c.gamma)
        # Targets (B,) -> (2, B): both twins regress on the same target.
        reward_q_loss = F.mse_loss(self.reward_q(obs, actions), reward_target.expand(2, -1))
        safety_q_loss = F.mse_loss(self.safety_q(obs, actions), safety_target.expand(2, -1))
        return reward_q_loss + safety_q_loss, {
            "reward_q_loss": reward_q_loss.detach(),
            "safety_q_loss": safety_q_loss.detach(),
        }

    def _actor_loss(
        self,
        obs: torch.Tensor,
        noisy: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        chain_noise: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 6 and 9: the diffusion loss, plus both critics (as just updated) on actions
        sampled through the reverse chain with ``chain_noise``, differentiable through it.

        Only the actor's parameters are trained: the critics score the actions as constants.
        """
        c = self.config
        diffusion_loss = F.mse_loss(self.actor(noisy, t, obs), noise)  # L_diffusion of Eq. 6
        if not (c.mu > 0 or c.phi > 0):
            # No guidance: no chain to sample (the costly part of the update).
            return c.eta * diffusion_loss, {"diffusion_loss": diffusion_loss.detach()}
        sampled = self.scheduler.sample(
            lambda x, step: self.actor(x, step, obs),
            (len(obs), self.act_dim),
            device=obs.device,
            noise=chain_noise,
        )
        reward_q = self.reward_q(obs, sampled).min(dim=0).values
        safety_q = self.safety_q(obs, sampled).min(dim=0).values
        actor_loss = guided_policy_loss(diffusion_loss, reward_q, safety_q, c.eta, c.mu, c.phi)
        return actor_loss, {"diffusion_loss": diffusion_loss.detach()}

    # ------------------------------------------------------------------ execution
    def _scores(
        self, obs: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        reward_q = candidate_values(self.reward_q_target, obs, candidates, "min")
        safety_q = candidate_values(self.safety_q_target, obs, candidates, "min")
        return reward_q, safety_q

    def _safety_scores(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``-Q_c'(s, a)``: lower is safer (more discounted safe steps ahead).

        For an ``envs.SafetyFilter``, a threshold of ``-k`` keeps the actions expected to stay
        safe for about ``k`` discounted steps.
        """
        return -candidate_values(self.safety_q_target, obs, actions, "min")

    def _choose(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        candidates = self._candidates_from(obs, noise)
        reward_q, safety_q = self._scores(obs, candidates)
        if self.config.selection == "reward":
            # argmax Q_r == argmin -Q_r
            actions, _ = select_candidates(candidates, -reward_q)
            return actions
        # Safety-aware: best Q_r among the candidates whose Q_c' is in the top fraction.
        threshold = torch.quantile(-safety_q, self.config.safe_fraction, dim=1)  # (B,)
        actions, _ = select_candidates(
            candidates, -safety_q, reward_q, threshold, "reward_within_threshold"
        )
        return actions
