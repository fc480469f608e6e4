"""DRCORL: a fast Gaussian policy, regularized by a diffusion behaviour model, with safe adaptation.

"Reward-Safety Balance in Offline Safe RL via Diffusion Regularization" (Guo et al.; the method
is Diffusion-Regularized Constrained Offline RL). Diffusion is used only in training;
``predict`` is one MLP forward pass.

1. Pretraining (``pretrain_steps``; Algorithm 1 lines 2-6): a diffusion behaviour model
   ``eps_psi(a_t, t | s)`` (Eq. 5); the reward critic by IQL (twin ``Q_r``, ``V_r``, Eq. 17-18);
   an ensemble of ``E = 4`` cost critics by TD with next actions from the policy and a
   pessimism term ``alpha`` that pushes ``Q_c`` up on the policy's actions (Eq. 19); the policy
   warm-started by behaviour cloning *against the diffusion model* (Algorithm 1 line 3): it
   minimizes ``KL(pi || mu_psi)`` alone, the extraction's regularizer without a critic term, as
   the authors' code does (mode-seeking: the policy settles on a mode of the behaviour, where
   Gaussian NLL on the dataset's actions would average the modes).
2. Extraction (the remaining steps; lines 7-12): critics and diffusion model keep training; the
   policy ``N(m(s), Sigma(s))``, ``a = m + Sigma^1/2 z``, follows the reward objective
   ``Q_r - KL(pi || mu_psi) / beta`` (Eq. 20) or the cost objective ``-(Q_c - l) - KL / beta``
   (Eq. 21). The KL's gradient goes through the diffusion model's score (Eq. 6-9, 23).
3. Safe adaptation (Algorithms 2-3): the cost of the current policy is estimated offline as the
   upper confidence bound of the cost ensemble (Eq. 24) on the minibatch's dataset states, turned
   into an episode cost ``Q (1 - gamma) L`` and divided by the limit ``l``. Gradient manipulation
   (default): reward gradient at ``<= 1 - h-``, cost gradient at ``>= 1 + h+``, in between the two
   combined by Eq. 12; or CRPO switching at ``1 + h+``; or a PID-Lagrangian objective (Eq. 22).
   The slacks shrink linearly to 0 over extraction (Appendix D.2).

**Our reading and deviations** (the paper leaves these open; see the spec):

- The KL gradient uses the score-distillation form: ``t`` uniform over the diffusion steps,
  weight ``w(t) = sigma_t^2``, and the sampled noise subtracted as a control variate, i.e. the
  surrogate ``<w(t) sqrt(abar_t) (eps_psi(a_t, t|s) - eps) / sigma_t, a>`` with the coefficient
  detached (SRPO's estimator, which the authors' code uses), minus the entropy of the Gaussian
  noised to the same level, weighted the same way (the un-noised entropy inflated the std). The
  behaviour model uses ``T = 50`` VP steps: it is never sampled, so many steps cost nothing at
  inference and give it small noise levels.
- Eq. 19's pessimism ``- alpha E_pi Q_c`` is nothing but a constant push upward on the policy's
  actions, which nothing anchors away from the data; with Table 2's ``alpha = 0.2`` the cost
  critic diverged on the toy task (TD loss 0.26 -> 106, episode-cost estimate 9 -> 139 in 4k
  steps). ``cost_pessimism`` defaults to 0 and the UCB (``k = 2``) carries the pessimism.
- Each cost critic bootstraps from its own target network, which keeps the ensemble's spread a
  measure of uncertainty for the UCB. Episode ends by time limit are bootstrapped through
  (they are not terminal), so ``Q_c ~ c / (1 - gamma)`` for a per-step cost rate ``c`` and the
  episode estimate ``Q (1 - gamma) L`` of Appendix B.1 holds on average over the data's states,
  up to edge effects of relative size ``1 / ((1 - gamma) L)``: fine for DSRL's 1000-step tasks at
  ``gamma = 0.99``, but a 100-step task needs a shorter horizon (the toy benchmark uses 0.95;
  at 0.99 the estimate there was 2.4x too low).
- The reward term is divided by the batch mean of ``|Q_r|`` (TD3+BC / SRPO) and the cost term by
  the limit in Q units ``l / ((1 - gamma) L)``, so ``beta`` weighs comparable quantities on every
  task; the cost gradient uses the UCB of the ensemble, the estimate that decides the branch.
- The policy mean is tanh-bounded to the action box.
- The temperature: the paper's best schedule is ``beta = 0.01 sqrt(e)`` on raw ``Q_r``; since
  the reward term here is divided by ``mean |Q_r|`` (order 1), ``beta_0 = 1`` is the default
  (``temperature``), with the paper's ``sqrt`` growth.
- The diffusion model, critics and warm start train together from the first step (the
  authors pretrain the diffusion model first, then warm the policy up against the frozen model):
  one loop, one budget. The warm start therefore chases a model still being fitted.
  ``warm_start="nll"`` (Gaussian NLL on the dataset's actions) is kept as an option.
- Budget: the paper trains 2050 extraction steps after a pretraining it does not size; the
  defaults are 100k pretraining + 10k extraction steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from safe_agents.common.base import BaseAgent
from safe_agents.common.config import (
    CPU_MLPS,
    CostCriticConfig,
    check_choice,
    check_in_range,
    check_pid_gains,
    check_positive,
)
from safe_agents.common.critics import (
    QEnsemble,
    ValueNet,
    ensemble_td_loss,
    expectile_loss,
    make_target,
    td_target,
    upper_confidence_bound,
)
from safe_agents.common.data import TransitionBatch, done_mask, resolve_cost_limit
from safe_agents.common.dataset import OfflineDataset
from safe_agents.common.device import optimizer_options, torch_threads
from safe_agents.common.diffusion import SCHEDULES, NoiseScheduler
from safe_agents.common.imitation import gaussian_bc_loss, mse_bc_loss
from safe_agents.common.lagrangian import PIDLagrangian
from safe_agents.common.logger import Metrics
from safe_agents.common.networks import (
    DeterministicActor,
    GaussianActor,
    NoisePredictionNet,
    ScalarBuffer,
)

POLICIES = ("gaussian", "constant_variance", "dirac")
WARM_STARTS = ("diffusion", "nll")
ADAPTATIONS = ("gradient", "crpo", "lagrangian")
TEMPERATURE_SCHEDULES = ("constant", "sqrt", "linear")
# What the safe adaptation did at a step; logged as train/branch (mean = the mix over the interval).
REWARD, MANIPULATED, COST = "reward", "manipulated", "cost"
BRANCH_CODES = {REWARD: 0.0, MANIPULATED: 1.0, COST: 2.0}


@dataclass(kw_only=True)
class DRCORLConfig(CostCriticConfig):
    """DRCORL hyperparameters (paper Table 2 unless noted).

    Attributes:
        n_steps: pretraining plus extraction steps (110k: 100k + 10k).
        pretrain_steps: steps of pretraining (diffusion model, critics, warm start); ``n_steps``
            must exceed it, or no policy would be extracted.
        warm_start: ``"diffusion"`` (minimize ``KL(pi || mu_psi)``, the spec's and the
            authors') or ``"nll"`` (Gaussian NLL / MSE on the dataset's actions).
        batch_size: 256.
        gamma / tau: discount (0.99) and target Polyak rate (0.005).
        actor_learning_rate / critic_learning_rate: Adam (6e-4).
        behaviour_learning_rate: Adam of the diffusion model (3e-4; not in the paper).
        actor_hidden_sizes / critic_hidden_sizes: MLPs ((256, 256)).
        policy: ``"gaussian"`` (state-dependent diagonal std, the default),
            ``"constant_variance"`` (fixed ``policy_std``) or ``"dirac"`` (deterministic).
        policy_std: the std of ``"constant_variance"`` (on ``[-1, 1]`` actions).
        reward_expectile: IQL expectile of ``V_r`` (0.7, IQL's; the paper does not give it).
        n_cost_critics: E, members of the cost ensemble (4).
        ucb_k: k of the upper confidence bound (2.0).
        cost_pessimism: alpha of Eq. 19 (0; the paper's 0.2 diverges, see above).
        cost_limit: the episode cost limit ``l`` (None: the dataset's metadata, else an error).
        episode_length: L of the episode-cost estimate (None: the dataset's mean episode length).
        adaptation: ``"gradient"`` (Algorithm 3), ``"crpo"`` (Algorithm 2) or ``"lagrangian"``
            (Eq. 22 with a PID multiplier).
        slack_minus / slack_plus: h- and h+ in normalized-cost units at the start of extraction
            (0.2); they shrink linearly to 0 by the end (CRPO uses ``slack_plus``).
        temperature_schedule: ``"sqrt"`` (``beta_e = beta_0 sqrt(e)``, the paper's best),
            ``"constant"`` (``beta_0``) or ``"linear"`` (``beta_0 e``), ``e`` the extraction epoch
            counted from 1.
        temperature: beta_0; larger trusts the critics more, smaller stays closer to the data.
        temperature_epoch_steps: steps per epoch of the temperature schedule.
        pid_gains: K_P, K_I, K_D of the Lagrangian mode ((0.1, 0.003, 0.001)).
        diffusion_steps / beta_schedule: the behaviour model's schedule (50, ``"vp"``).
        behaviour_width / behaviour_blocks: its LN-ResNet noise network (256, 3).
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {
            "n_steps": 6_000,
            "pretrain_steps": 4_000,
            **CPU_MLPS,
            "behaviour_width": 64,
            "behaviour_blocks": 2,
        },
    }

    n_steps: int = 110_000
    pretrain_steps: int = 100_000
    batch_size: int = 256
    tau: float = 0.005
    actor_learning_rate: float = 6e-4
    critic_learning_rate: float = 6e-4
    behaviour_learning_rate: float = 3e-4
    actor_hidden_sizes: tuple[int, ...] = (256, 256)
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    warm_start: str = "diffusion"
    policy: str = "gaussian"
    policy_std: float = 0.1
    reward_expectile: float = 0.7
    n_cost_critics: int = 4
    ucb_k: float = 2.0
    cost_pessimism: float = 0.0
    adaptation: str = "gradient"
    slack_minus: float = 0.2
    slack_plus: float = 0.2
    temperature_schedule: str = "sqrt"
    temperature: float = 1.0
    temperature_epoch_steps: int = 1000
    pid_gains: tuple[float, float, float] = (0.1, 0.003, 0.001)
    diffusion_steps: int = 50
    beta_schedule: str = "vp"
    behaviour_width: int = 256
    behaviour_blocks: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "behaviour_learning_rate",
            "policy_std",
            "temperature",
            "temperature_epoch_steps",
            "diffusion_steps",
            "behaviour_width",
            "behaviour_blocks",
        ):
            check_positive(name, getattr(self, name))
        for name in ("pretrain_steps", "ucb_k", "cost_pessimism", "slack_minus", "slack_plus"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.n_cost_critics < 2:
            raise ValueError(
                f"n_cost_critics must be >= 2 (the UCB needs a spread), got {self.n_cost_critics}"
            )
        check_pid_gains(self.pid_gains)
        check_in_range("tau", self.tau, 0.0, 1.0)
        check_in_range("reward_expectile", self.reward_expectile, 0.5, 1.0)
        check_choice("policy", self.policy, POLICIES)
        check_choice("warm_start", self.warm_start, WARM_STARTS)
        check_choice("adaptation", self.adaptation, ADAPTATIONS)
        check_choice("temperature_schedule", self.temperature_schedule, TEMPERATURE_SCHEDULES)
        check_choice("beta_schedule", self.beta_schedule, SCHEDULES)


_CPU_PRETRAIN = DRCORLConfig.presets["cpu"]["pretrain_steps"]


# ---------------------------------------------------------------------- the safe adaptation rules
def adaptation_branch(
    normalized_cost: float, slack_minus: float, slack_plus: float, adaptation: str = "gradient"
) -> str:
    """Which objective a step follows, given the estimated episode cost over the limit.

    Gradient manipulation (Algorithm 3): ``reward`` at ``<= 1 - h-``, ``cost`` above
    ``1 + h+``, ``manipulated`` in between. CRPO (Algorithm 2): ``reward`` up to ``1 + h+``,
    else ``cost``.
    """
    if adaptation == "crpo":
        return REWARD if normalized_cost <= 1.0 + slack_plus else COST
    if adaptation != "gradient":
        raise ValueError(f"adaptation must be 'gradient' or 'crpo' here, got {adaptation!r}")
    if normalized_cost <= 1.0 - slack_minus:
        return REWARD
    if normalized_cost <= 1.0 + slack_plus:
        return MANIPULATED
    return COST


def combine_gradients(
    reward_grad: torch.Tensor, cost_grad: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Eq. 12: the update direction from a reward and a cost gradient, and their angle.

    Below 90 degrees the two agree and are averaged. From 90 degrees on they conflict: each is
    projected onto the normal plane of the other (``g_r+ = g_r - (g_r.g_c / |g_c|^2) g_c`` and
    symmetrically) and the projections are averaged, so the step hurts neither objective to
    first order.

    Returns:
        ``(g, angle_in_degrees)``.
    """
    dot = torch.dot(reward_grad, cost_grad)
    reward_sq, cost_sq = reward_grad.dot(reward_grad), cost_grad.dot(cost_grad)
    cosine = dot / (reward_sq.sqrt() * cost_sq.sqrt()).clamp(min=1e-12)
    angle = math.degrees(math.acos(float(cosine.clamp(-1.0, 1.0))))
    if dot > 0:
        return 0.5 * (reward_grad + cost_grad), angle
    reward_projected = reward_grad - dot / cost_sq.clamp(min=1e-12) * cost_grad
    cost_projected = cost_grad - dot / reward_sq.clamp(min=1e-12) * reward_grad
    return 0.5 * (reward_projected + cost_projected), angle


def temperature_at(schedule: str, beta_0: float, epoch: int) -> float:
    """beta at extraction epoch ``epoch`` (from 1): constant, ``beta_0 sqrt(e)`` or ``beta_0 e``."""
    if schedule == "constant":
        return beta_0
    if schedule == "sqrt":
        return beta_0 * math.sqrt(epoch)
    if schedule == "linear":
        return beta_0 * epoch
    raise ValueError(f"temperature_schedule must be one of {TEMPERATURE_SCHEDULES}")


def episode_cost_estimate(q_cost: float, gamma: float, episode_length: float) -> float:
    """An episode's cost from a discounted cost value: ``Q (1 - gamma) L`` (Appendix B.1)."""
    return q_cost * (1.0 - gamma) * episode_length


def _flat_grad(loss: torch.Tensor, params: list[nn.Parameter], retain: bool) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


def _assign_grad(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for param in params:
        size = param.numel()
        param.grad = flat[offset : offset + size].view_as(param).clone()
        offset += size


class DRCORL(BaseAgent):
    """DRCORL: diffusion-regularized Gaussian policy with offline safe adaptation.

    Besides the contract: :meth:`policy_distribution` (mean and std of the policy) and
    :meth:`cost_estimate` (the UCB episode-cost estimate of the current policy on given states).
    """

    name = "drcorl"
    config_class = DRCORLConfig
    config: DRCORLConfig
    supports_compile = True
    actor: GaussianActor | DeterministicActor

    def _build(self) -> None:
        c = self.config
        self.behaviour = NoisePredictionNet(
            self.obs_dim,
            self.act_dim,
            c.behaviour_width,
            c.behaviour_blocks,
            dropout=0.0,
            expansion=1,
            num_timesteps=c.diffusion_steps,
        )
        self.scheduler = NoiseScheduler(c.diffusion_steps, c.beta_schedule)
        self.reward_q = QEnsemble(self.obs_dim, self.act_dim, 2, c.critic_hidden_sizes)
        self.reward_v = ValueNet(self.obs_dim, c.critic_hidden_sizes)
        self.cost_q = QEnsemble(self.obs_dim, self.act_dim, c.n_cost_critics, c.critic_hidden_sizes)
        self.reward_q_target = make_target(self.reward_q)
        self.cost_q_target = make_target(self.cost_q)
        if c.policy == "gaussian":
            self.actor = GaussianActor(self.obs_dim, self.act_dim, c.actor_hidden_sizes)
        else:
            self.actor = DeterministicActor(self.obs_dim, self.act_dim, c.actor_hidden_sizes)
        kp, ki, kd = c.pid_gains
        self.lagrangian = PIDLagrangian(kp, ki, kd)
        # Set from the training data (then saved): the limit l and the episode length L.
        self.cost_limit = ScalarBuffer(0.0)
        self.episode_length = ScalarBuffer(0.0)
        critic_params = [
            *self.reward_q.parameters(),
            *self.reward_v.parameters(),
            *self.cost_q.parameters(),
        ]
        self.optimizers = {
            "behaviour": torch.optim.Adam(
                self.behaviour.parameters(),
                lr=c.behaviour_learning_rate,
                **optimizer_options(self.device),
            ),
            "critic": torch.optim.Adam(
                critic_params, lr=c.critic_learning_rate, **optimizer_options(self.device)
            ),
            "actor": torch.optim.Adam(
                self.actor.parameters(), lr=c.actor_learning_rate, **optimizer_options(self.device)
            ),
        }
        # The behaviour model and the critics as compilable updates; the policy's own update
        # (gradient manipulation between two gradients) stays eager.
        self.updates = {
            "behaviour": self._make_update(
                self._behaviour_loss,
                self.optimizers["behaviour"],
                {"behaviour": self.behaviour},
            ),
            "critic": self._make_update(
                self._critic_loss,
                self.optimizers["critic"],
                {"reward_q": self.reward_q, "reward_v": self.reward_v, "cost_q": self.cost_q},
                [
                    (self.reward_q_target, self.reward_q, lambda: self.config.tau),
                    (self.cost_q_target, self.cost_q, lambda: self.config.tau),
                ],
            ),
        }

    def _saved_modules(self) -> dict[str, nn.Module]:
        return {
            "behaviour": self.behaviour,
            "reward_q": self.reward_q,
            "reward_v": self.reward_v,
            "cost_q": self.cost_q,
            "reward_q_target": self.reward_q_target,
            "cost_q_target": self.cost_q_target,
            "actor": self.actor,
            "lagrangian": self.lagrangian,
            "cost_limit": self.cost_limit,
            "episode_length": self.episode_length,
        }

    def _setup_training(self, dataset: OfflineDataset) -> None:
        if self.num_steps == 0:  # a resumed run keeps the constants it started with
            limit = resolve_cost_limit(dataset, self.config.cost_limit)
            if limit <= 0:
                raise ValueError(
                    "DRCORL compares the estimated episode cost with the limit as a ratio, so "
                    f"the cost limit must be > 0 (got {limit}); pass cost_limit=..."
                )
            lengths = [stop - start for start, stop in dataset.episode_bounds()]
            length = self.config.episode_length or sum(lengths) / len(lengths)
            self.cost_limit.value.fill_(limit)
            self.episode_length.value.fill_(length)
        if self.total_steps <= self.config.pretrain_steps:
            # To keep a checkpoint at the end of pretraining, plan the whole run and stop early:
            # learn_offline(data, n_steps=total, callback=StopAfterSteps(pretrain_steps)).
            raise ValueError(
                f"DRCORL trains {self.config.pretrain_steps} pretraining steps before it extracts "
                f"a policy, so n_steps={self.total_steps} would return the warm-started policy "
                "with no extraction and no safety adaptation: pass n_steps > pretrain_steps, "
                f"or a smaller pretrain_steps (preset='cpu' pretrains {_CPU_PRETRAIN} steps)"
            )

    # ------------------------------------------------------------------ the policy
    def _policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean and (``None`` for Dirac) std of the policy on ``[-1, 1]`` actions."""
        if isinstance(self.actor, GaussianActor):
            return self.actor.mean_and_std(obs)
        mean = self.actor(obs)
        if self.config.policy == "dirac":
            return mean, None
        return mean, torch.full_like(mean, self.config.policy_std)

    def _sample_policy(
        self, obs: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``a = m + sigma z`` (reparameterized) and the std."""
        mean, std = self._policy(obs)
        if std is None:
            return mean, None
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        return mean + std * noise, std

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:
            return self._policy(obs)[0]
        return self._sample_policy(obs, self.act_generator)[0]

    # ------------------------------------------------------------------ training
    def _train_step(self, batch: TransitionBatch) -> Metrics:
        obs = self.obs_scaler(batch.obs)
        next_obs = self.obs_scaler(batch.next_obs)
        actions = self.action_scaler.normalize(batch.actions)
        # Behaviour model and critics train in both phases (Algorithm 1 line 9): one loop.
        metrics = self._update_behaviour(obs, actions)
        metrics.update(self._update_critics(batch, obs, next_obs, actions))
        if self.num_steps < self.config.pretrain_steps:
            metrics.update(self._warm_start(obs, actions))
        else:
            metrics.update(self._extract_policy(obs))
        return metrics

    def _update_behaviour(self, obs: torch.Tensor, actions: torch.Tensor) -> Metrics:
        noisy, t, noise = self.scheduler.training_targets(actions, self.train_generator)
        return {"diffusion_loss": self.updates["behaviour"](obs, noisy, t, noise)["loss"]}

    def _behaviour_loss(
        self, obs: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return F.mse_loss(self.behaviour(noisy, t, obs), noise), {}  # Eq. 5

    def _update_critics(
        self,
        batch: TransitionBatch,
        obs: torch.Tensor,
        next_obs: torch.Tensor,
        actions: torch.Tensor,
    ) -> Metrics:
        # Time-limit ends are bootstrapped through: only true terminations stop the return.
        terminal = done_mask(batch, through_timeouts=True)
        with torch.no_grad():
            # The policy's a', not the data's: Q_c must price the policy being extracted.
            next_actions, _ = self._sample_policy(next_obs, self.train_generator)
            policy_actions, _ = self._sample_policy(obs, self.train_generator)  # for Eq. 19
        critic = self.updates["critic"](
            obs,
            actions,
            next_obs,
            next_actions,
            policy_actions,
            batch.rewards,
            batch.costs,
            terminal,
        )
        return {key: value for key, value in critic.items() if key != "loss"}  # the parts

    def _critic_loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        next_obs: torch.Tensor,
        next_actions: torch.Tensor,
        policy_actions: torch.Tensor,
        rewards: torch.Tensor,
        costs: torch.Tensor,
        terminal: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reward critics' IQL losses and the cost ensemble's, summed: one optimizer, since
        each loss reaches only its own network (the targets are detached)."""
        c = self.config
        # Reward: IQL (Eq. 17-18); targets are constants.
        with torch.no_grad():
            reward_target = td_target(rewards, self.reward_v(next_obs), terminal, c.gamma)
            reward_q_min = self.reward_q_target(obs, actions).min(dim=0).values  # (B,), Eq. 17
        reward_q_loss = ensemble_td_loss(self.reward_q(obs, actions), reward_target)
        reward_v_loss = expectile_loss(reward_q_min - self.reward_v(obs), c.reward_expectile)
        # Cost: TD with the policy's next actions, each member on its own target (Eq. 19).
        with torch.no_grad():
            # (E, B): costs (B,) broadcast over the members' own target values.
            cost_target = td_target(
                costs, self.cost_q_target(next_obs, next_actions), terminal, c.gamma
            )
        cost_td_loss = ensemble_td_loss(self.cost_q(obs, actions), cost_target)
        cost_q_loss = cost_td_loss
        if c.cost_pessimism > 0:  # Eq. 19's term: lift Q_c on the policy's actions
            # (E, B) -> per-member mean, summed as ensemble_td_loss sums the members' TD errors.
            policy_cost_q = self.cost_q(obs, policy_actions).mean(dim=1).sum()
            cost_q_loss = cost_q_loss - c.cost_pessimism * policy_cost_q
        return reward_q_loss + reward_v_loss + cost_q_loss, {
            "reward_q_loss": reward_q_loss.detach(),
            "reward_v_loss": reward_v_loss.detach(),
            "cost_td_loss": cost_td_loss.detach(),
        }

    def _warm_start(self, obs: torch.Tensor, actions: torch.Tensor) -> Metrics:
        """The warm start (Algorithm 1 line 3): toward the diffusion model, or the data."""
        if self.config.warm_start == "diffusion":
            # KL(pi || mu_psi) alone: mode-seeking, so the policy settles on one behaviour mode.
            policy_actions, std = self._sample_policy(obs, self.train_generator)
            loss = self._kl_surrogate(obs, policy_actions, std)
        elif isinstance(self.actor, GaussianActor):
            loss = gaussian_bc_loss(self.actor.distribution(obs), actions)
        else:
            loss = mse_bc_loss(self.actor(obs), actions)
        self.optimizers["actor"].zero_grad()
        loss.backward()
        self.optimizers["actor"].step()
        return {"actor_warm_start_loss": loss.detach()}

    def _kl_surrogate(
        self, obs: torch.Tensor, actions: torch.Tensor, std: torch.Tensor | None
    ) -> torch.Tensor:
        """A loss whose gradient is the (noise-smoothed) ``grad KL(pi || mu_psi)`` (Eq. 8-9).

        Cross entropy: ``-grad_a log mu_t(a_t) = sqrt(abar_t) eps_psi(a_t, t | s) / sigma_t`` by
        the chain rule through ``a_t = sqrt(abar_t) a + sigma_t eps``; weighted by
        ``w(t) = sigma_t^2``, with ``eps`` subtracted (zero mean, lowers the variance) and the
        coefficient detached. Entropy: closed form (Eq. 6) for the policy noised to level ``t``,
        ``0.5 sum log(abar_t std^2 + sigma_t^2)``, weighted alike, so both terms describe the
        same smoothed KL.
        """
        # t uniform over all T steps (score distillation, SRPO's estimator).
        t = torch.randint(
            self.scheduler.num_train_timesteps,
            (len(obs),),
            generator=self.train_generator,
            device=obs.device,
        )
        noise = torch.randn(actions.shape, generator=self.train_generator, device=obs.device)
        abar = self.scheduler.alphas_cumprod.to(obs.device)[t].unsqueeze(-1)  # (B, 1)
        sigma = (1.0 - abar).sqrt()
        # a detached: the gradient reaches a only through the inner product below.
        noisy = abar.sqrt() * actions.detach() + sigma * noise
        # A constant coefficient: no backpropagation through eps_psi; eps is a control variate.
        with torch.no_grad():
            predicted: torch.Tensor = self.behaviour(noisy, t, obs)
            coefficient = sigma * abar.sqrt() * (predicted - noise)  # w(t) * score term
        cross_entropy = (coefficient * actions).sum(dim=-1)  # (B,); its d/da is the coefficient
        if std is None or self.config.policy == "constant_variance":
            return cross_entropy.mean()  # no entropy to trade (fixed or zero variance)
        # The entropy of the policy smoothed to the same noise level,
        # N(sqrt(abar) m, abar S + sigma^2): log(std) alone would outweigh the smoothed cross
        # entropy and inflate the std.
        entropy = 0.5 * torch.log(abar * std**2 + sigma**2).sum(dim=-1)
        # sigma (B, 1) -> (B,): w(t) = sigma_t^2 weights the entropy as the cross entropy.
        return (cross_entropy - sigma.squeeze(-1) ** 2 * entropy).mean()

    def _extract_policy(self, obs: torch.Tensor) -> Metrics:
        c = self.config
        step = self.num_steps - c.pretrain_steps
        span = max(self.total_steps - c.pretrain_steps, 1)
        shrink = max(1.0 - step / span, 0.0)  # slacks shrink linearly to 0 (Appendix D.2)
        slack_minus, slack_plus = c.slack_minus * shrink, c.slack_plus * shrink
        beta = temperature_at(
            c.temperature_schedule, c.temperature, 1 + step // c.temperature_epoch_steps
        )
        limit = float(self.cost_limit.value)
        length = float(self.episode_length.value)
        q_limit = limit / ((1.0 - c.gamma) * length)  # the limit in Q units

        # a = m + sigma z, reparameterized: the critics' gradients reach m and sigma (Eq. 23).
        actions, std = self._sample_policy(obs, self.train_generator)
        reward_q = self.reward_q(obs, actions).min(dim=0).values
        # (B,): Eq. 24's UCB both decides the branch and drives the cost gradient.
        cost_ucb = upper_confidence_bound(self.cost_q(obs, actions), c.ucb_k)
        kl = self._kl_surrogate(obs, actions, std)
        # Both terms in units of order 1 (detached mean |Q_r|; the Q-unit limit): one beta fits all.
        reward_loss = -(reward_q / reward_q.abs().mean().detach().clamp(min=1e-6)).mean()
        cost_loss = (cost_ucb / q_limit).mean()
        # Appendix B.1: Q (1 - gamma) L, from the mean UCB over the batch's dataset states.
        episode_cost = episode_cost_estimate(cost_ucb.mean().item(), c.gamma, length)
        normalized_cost = episode_cost / limit

        params = list(self.actor.parameters())
        metrics = {
            "ucb_episode_cost": episode_cost,
            "normalized_cost": normalized_cost,
            "beta": beta,
            "slack": slack_plus,
            "kl_surrogate": kl.detach(),
            "policy_q_reward": reward_q.mean().detach(),
        }
        if c.adaptation == "lagrangian":  # Eq. 22, the multiplier fed by the UCB estimate
            multiplier = self.lagrangian.update(episode_cost, limit)
            loss = reward_loss + multiplier * cost_loss + kl / beta
            direction = _flat_grad(loss, params, retain=False)
            metrics["lagrange_multiplier"] = multiplier
        else:
            branch = adaptation_branch(normalized_cost, slack_minus, slack_plus, c.adaptation)
            if branch == REWARD:
                direction = _flat_grad(reward_loss + kl / beta, params, retain=False)
            elif branch == COST:
                direction = _flat_grad(cost_loss + kl / beta, params, retain=False)
            else:
                # retain: the cost gradient below reuses the graph of actions and KL.
                reward_grad = _flat_grad(reward_loss + kl / beta, params, retain=True)
                cost_grad = _flat_grad(cost_loss + kl / beta, params, retain=False)
                direction, metrics["gradient_angle"] = combine_gradients(reward_grad, cost_grad)
            metrics["branch"] = BRANCH_CODES[branch]
            for name in BRANCH_CODES:
                metrics[f"branch_{name}"] = float(branch == name)
        # Overwrites .grad (no zero_grad needed), so Adam steps along the chosen direction.
        _assign_grad(params, direction)
        self.optimizers["actor"].step()
        return metrics

    # ------------------------------------------------------------------ inspection
    def policy_distribution(
        self, observation: NDArray[Any]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``(mean, std)`` of the policy in environment units (std 0 for a Dirac policy).

        One observation gives ``(act_dim,)`` arrays, a batch ``(B, act_dim)``.
        """
        obs, single = self._check_observation(observation)
        with torch_threads(self.torch_threads), torch.no_grad():
            mean, std = self._policy(self.obs_scaler(torch.as_tensor(obs, device=self.device)))
            half_range = 0.5 * (self.action_scaler.high - self.action_scaler.low)
            env_mean = self.action_scaler.denormalize(mean).cpu().numpy()
            env_std = (std * half_range).cpu().numpy() if std is not None else 0.0 * env_mean
        return (env_mean[0], env_std[0]) if single else (env_mean, env_std)

    def cost_estimate(self, observations: NDArray[Any]) -> float:
        """The UCB episode-cost estimate of the deterministic policy on these states."""
        obs, _ = self._check_observation(observations)
        with torch_threads(self.torch_threads), torch.no_grad():
            tensor = self.obs_scaler(torch.as_tensor(obs, device=self.device))
            q = upper_confidence_bound(
                self.cost_q(tensor, self._policy(tensor)[0]), self.config.ucb_k
            )
        return episode_cost_estimate(
            q.mean().item(), self.config.gamma, float(self.episode_length.value)
        )
