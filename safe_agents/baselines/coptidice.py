"""COptiDICE: offline constrained RL by stationary distribution correction estimation.

Lee, Paduraru, Mankowitz, Heess, Precup, Kim and Guez, "COptiDICE: Offline Constrained
Reinforcement Learning via Stationary Distribution Correction Estimation" (ICLR 2022), as
implemented in OSRL (``osrl/algorithms/coptidice.py``, the DSRL benchmark's baseline) and in the
authors' code (``google-deepmind/constrained_optidice``).

Instead of a Q-function, COptiDICE estimates the ratio ``w(s, a) = d^pi(s, a) / d^D(s, a)``
between the discounted stationary distribution of the optimal constrained policy and the data's.
With ``nu(s)`` the Lagrange multiplier of the Bellman flow constraint and ``lambda >= 0`` the
one of the cost constraint:

- advantage: ``e(s, a, s') = r - lambda c + gamma (1 - done) nu(s') - nu(s)``;
- closed-form ratio: ``w = max(0, (f')^{-1}(e / alpha))`` for the f-divergence ``f``
  (``softchi``: ``f(x) = x log x - x + 1`` below 1, ``(x - 1)^2 / 2`` above;
  ``(f')^{-1}(y) = exp(y)`` for ``y < 0``, ``y + 1`` otherwise);
- nu loss: ``(1 - gamma) E_{s0}[nu(s0)] + E_D[w e - alpha f(w)]`` (minimised; ``s0`` drawn from
  the dataset's episode starts);
- cost upper bound (``cost_ub_epsilon > 0``): with
  ``ell = (1 - gamma) chi(s0) + w (c + gamma (1 - done) chi(s') - chi(s))``, the worst case of
  the cost over reweightings of the data within KL ``epsilon`` of it is
  ``min_{tau, chi} tau log E_D[exp(ell / tau)] + tau epsilon``; its tilted weights
  ``w~ = softmax(ell / tau) B`` give the bound ``C_ub = E_D[w~ w c]``;
- multiplier: ``lambda`` minimises ``lambda (c_hat - C_ub)``, so it grows while the bound is
  above the threshold ``c_hat``; ``tau`` minimises ``tau (epsilon - KL(w~))``;
- policy extraction: weighted behaviour cloning, ``-E_D[w log pi(a | s)]``.

Defaults follow OSRL's ``COptiDICETrainConfig`` (``examples/configs/coptidice_configs.py``).

**Deviations**:

- Units of the cost threshold. ``E_D[w c]`` is a cost under the normalized stationary
  distribution, ``(1 - gamma) E[sum_t gamma^t c_t]``, while OSRL compares it with the threshold
  in Q units ``kappa (1 - gamma^L) / ((1 - gamma) L)`` (``qc_thres``), a factor ``1 / (1 -
  gamma)`` looser: at gamma = 0.99 and DSRL's limits and lengths it is >= 1, the rate of an
  agent that pays cost 1 at every step. The threshold here is the shared
  :func:`~safe_agents.common.lagrangian.cost_limit_in_q_units` times ``(1 - gamma)``, the
  paper's normalized units: an episode of length ``L`` spending ``kappa / L`` per step meets it
  exactly, because episodes end at ``terminals | timeouts`` (OSRL's ``done``), so the flow of
  an ``L``-step episode holds mass ``1 - gamma^L``, as the conversion assumes.
- Initial states: a separate minibatch of episode-start observations (the authors' code; OSRL
  masks the main batch by ``is_init`` and divides by the initial-state proportion).
- The chi step follows the exact gradient of the paper's ``tau log E_D[exp(ell / tau)]``
  (tilted weights held fixed); both reference codes minimise ``E_D[w~ ell]`` with the gradient
  flowing through ``w~`` as well.
- One ``nu`` and one ``chi`` network (OSRL's class default and the paper; OSRL's config takes
  the minimum of two), no gradient penalty (the authors' code has one; OSRL has none).
- Policy: a Gaussian with a tanh-bounded mean and a clamped state-dependent log std on actions
  rescaled to ``[-1, 1]`` (the shared ``GaussianActor``); OSRL fits the pre-tanh Normal of a
  squashed Gaussian to the raw actions and acts with its tanh. The BC weights are normalized to
  average 1 over the minibatch (``w / mean(w)``), which changes the loss scale but not its
  minimiser, so the actor's learning rate does not depend on the flow's total mass. OSRL's input
  noise (0.1 of the data's std on observations and actions) is kept (``augmentation_noise``).
- The actor uses this step's ``w`` (computed before the critics' update, as the authors' code);
  OSRL recomputes it after the ``nu`` step.
- ``lambda`` and ``tau`` are ``softplus`` of free parameters initialised at 1 (OSRL), learned by
  Adam with ``scalar_learning_rate``. The cost limit defaults to the dataset's metadata,
  the episode length to the dataset's longest episode; observations are standardized by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from safe_agents.common.base import BaseAgent
from safe_agents.common.config import (
    CPU_MLPS,
    CostCriticConfig,
    check_choice,
    check_positive,
)
from safe_agents.common.critics import ValueNet
from safe_agents.common.data import TransitionBatch, done_mask, q_cost_limit
from safe_agents.common.dataset import OfflineDataset
from safe_agents.common.device import optimizer_options
from safe_agents.common.imitation import weighted_bc_loss
from safe_agents.common.logger import Metrics
from safe_agents.common.networks import GaussianActor, ScalarBuffer

F_DIVERGENCES = ("softchi", "chi2", "kl")


@dataclass(kw_only=True)
class COptiDICEConfig(CostCriticConfig):
    """COptiDICE hyperparameters (OSRL's ``COptiDICETrainConfig`` unless noted).

    Attributes:
        n_steps: gradient steps; OSRL ``update_steps`` 300k.
        batch_size: transitions (and initial states) per step; OSRL 512.
        gamma: discount of the stationary distribution; OSRL 0.99.
        alpha: weight of the f-divergence regulariser ``alpha D_f(d || d^D)``; OSRL 0.5.
            Larger keeps the policy closer to the data.
        f_divergence: ``"softchi"`` (OSRL and the paper's choice), ``"chi2"`` or ``"kl"``.
        cost_ub_epsilon: KL radius ``epsilon`` of the cost upper bound; OSRL 0.01. 0 uses the
            plain estimate ``E_D[w c]`` (no chi network training).
        cost_limit: the episode cost limit ``kappa`` (None: the dataset's ``cost_limit``
            metadata, else an error; OSRL sets it per task).
        episode_length: ``L`` of the threshold conversion (None: the dataset's longest episode;
            OSRL sets it per task, e.g. 300 for CarCircle).
        reward_scale: rewards are multiplied by this before the advantage; OSRL 0.1.
        actor_hidden_sizes: policy MLP widths; OSRL ``a_hidden_sizes`` (256, 256).
        critic_hidden_sizes: nu and chi MLP widths; OSRL ``c_hidden_sizes`` (256, 256).
        actor_learning_rate: Adam rate of the policy; OSRL 1e-4.
        critic_learning_rate: Adam rate of nu and chi; OSRL 1e-4.
        scalar_learning_rate: Adam rate of ``lambda`` and ``tau``; OSRL 1e-4.
        augmentation_noise: std of the Gaussian noise added to the policy's inputs and target
            actions, relative to the data's per-dimension std; OSRL 0.1 (0 disables).
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {"n_steps": 10_000, **CPU_MLPS},
    }

    n_steps: int = 300_000
    batch_size: int = 512
    alpha: float = 0.5
    f_divergence: str = "softchi"
    cost_ub_epsilon: float = 0.01
    reward_scale: float = 0.1
    actor_hidden_sizes: tuple[int, ...] = (256, 256)
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    actor_learning_rate: float = 1e-4
    critic_learning_rate: float = 1e-4
    scalar_learning_rate: float = 1e-4
    augmentation_noise: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("f_divergence", self.f_divergence, F_DIVERGENCES)
        for name in (
            "alpha",
            "reward_scale",
            "scalar_learning_rate",
        ):
            check_positive(name, getattr(self, name))
        check_positive("cost_ub_epsilon", self.cost_ub_epsilon, allow_zero=True)
        check_positive("augmentation_noise", self.augmentation_noise, allow_zero=True)


# ---------------------------------------------------------------------- f-divergences
def f_divergence(x: torch.Tensor, f_type: str) -> torch.Tensor:
    """The generator ``f(x)`` of the f-divergence ``D_f(d || d^D) = E_D[f(w)]``, elementwise.

    Raises:
        ValueError: ``f_type`` not one of ``F_DIVERGENCES``.
    """
    if f_type == "softchi":
        # KL-like below 1 (keeps w > 0 without a hard floor), chi-square above.
        return torch.where(x < 1, x * (torch.log(x + 1e-10) - 1) + 1, 0.5 * (x - 1) ** 2)
    if f_type == "chi2":
        return 0.5 * (x - 1) ** 2
    if f_type == "kl":
        return x * torch.log(x + 1e-10)
    raise ValueError(f"f_type must be one of {F_DIVERGENCES}, got {f_type!r}")


def f_prime_inverse(y: torch.Tensor, f_type: str) -> torch.Tensor:
    """``(f')^{-1}(y)``, elementwise: the ratio that makes ``f'(w) = y``.

    Raises:
        ValueError: ``f_type`` not one of ``F_DIVERGENCES``.
    """
    if f_type == "softchi":
        # The clamp keeps the unused branch of torch.where finite (and its gradient).
        return torch.where(y < 0, torch.exp(y.clamp(max=0.0)), y + 1)
    if f_type == "chi2":
        return y + 1
    if f_type == "kl":
        return torch.exp(y - 1)
    raise ValueError(f"f_type must be one of {F_DIVERGENCES}, got {f_type!r}")


# ---------------------------------------------------------------------- losses (pure)
def dice_advantage(
    rewards: torch.Tensor,
    costs: torch.Tensor,
    nu: torch.Tensor,
    next_nu: torch.Tensor,
    done: torch.Tensor,
    lmbda: torch.Tensor | float,
    gamma: float,
) -> torch.Tensor:
    """``e = r - lambda c + gamma (1 - done) nu(s') - nu(s)``, all ``(B,)``."""
    return rewards - lmbda * costs + gamma * (1.0 - done) * next_nu - nu


def weights_from_advantage(advantage: torch.Tensor, alpha: float, f_type: str) -> torch.Tensor:
    """The closed-form ratio ``w = max(0, (f')^{-1}(e / alpha))``: non-negative, ``(B,)``."""
    return F.relu(f_prime_inverse(advantage / alpha, f_type))


def normalize_weights(weights: torch.Tensor) -> torch.Tensor:
    """``w / mean(w)``: averages 1 over the batch; uniform when every weight is 0."""
    mean = weights.mean()
    return torch.where(mean > 0, weights / mean.clamp(min=1e-12), torch.ones_like(weights))


def nu_loss(
    nu_init: torch.Tensor,
    advantage: torch.Tensor,
    weights: torch.Tensor,
    alpha: float,
    gamma: float,
    f_type: str,
) -> torch.Tensor:
    """``(1 - gamma) E[nu(s0)] + E_D[w e - alpha f(w)]`` (minimised over nu).

    ``weights`` must be ``weights_from_advantage(advantage, ...)`` with its graph: at the closed
    form the derivative through ``w`` vanishes, so the gradient is ``E_D[w grad e]``.
    """
    return (1.0 - gamma) * nu_init.mean() + (
        weights * advantage - alpha * f_divergence(weights, f_type)
    ).mean()


class CostBound(NamedTuple):
    """The cost upper bound step's outputs (see :func:`cost_upper_bound`)."""

    chi_loss: torch.Tensor  # minimised over chi: tau log E_D[exp(ell / tau)]
    tau_loss: torch.Tensor  # minimised over tau: tau (epsilon - KL)
    cost_ub: torch.Tensor  # E_D[w~ w c], no gradient
    kl: torch.Tensor  # KL(w~ d^D || d^D) of the tilted weights, no gradient
    tilt: torch.Tensor  # w~, (B,), average 1, no gradient


def cost_upper_bound(
    chi_init: torch.Tensor,
    chi: torch.Tensor,
    next_chi: torch.Tensor,
    costs: torch.Tensor,
    done: torch.Tensor,
    weights: torch.Tensor,
    tau: torch.Tensor,
    gamma: float,
    epsilon: float,
) -> CostBound:
    """The KL-robust upper bound on the policy's normalized cost ``E_{d^pi}[c]``.

    ``ell = (1 - gamma) chi(s0) + w (c + gamma (1 - done) chi(s') - chi(s))`` per sample; the
    tilted weights ``w~ = B softmax(ell / tau)`` are the worst reweighting of the data within
    KL ``epsilon``. With ``epsilon = 0`` the bound is the plain estimate ``E_D[w c]`` and the
    losses are zero.

    Args:
        chi_init: ``(B,)`` chi at initial states; chi, next_chi: ``(B,)`` at ``s`` and ``s'``.
        costs, done: ``(B,)``.
        weights: ``(B,)`` ratios ``w`` (used without gradient).
        tau: the positive temperature (a 0-d tensor with gradient for ``tau_loss``).
    """
    weights = weights.detach()  # chi and tau must not move w: only nu's loss does
    if epsilon == 0:
        zero = torch.zeros((), device=costs.device)
        ones = torch.ones_like(costs)
        return CostBound(zero, zero, (weights * costs).mean(), zero, ones)
    batch = costs.shape[0]
    ell = (1.0 - gamma) * chi_init + weights * (costs + gamma * (1.0 - done) * next_chi - chi)
    logits = ell / tau.detach()  # tau is fixed here; tau_loss alone trains it
    log_tilt = torch.log_softmax(logits, dim=0) + math.log(batch)  # log(B softmax): mean 1
    tilt = log_tilt.exp().detach()
    kl = (tilt * log_tilt.detach() - tilt + 1.0).mean()  # f(x) = x log x - x + 1, a constant
    # tau log mean exp(ell / tau): its gradient in chi is E_D[w~ grad ell].
    chi_loss = tau.detach() * (torch.logsumexp(logits, dim=0) - math.log(batch))
    tau_loss = tau * (epsilon - kl)  # kl is detached: the gradient reaches tau only
    return CostBound(chi_loss, tau_loss, (tilt * weights * costs).mean(), kl, tilt)


def lambda_loss(
    lmbda: torch.Tensor, cost_ub: torch.Tensor | float, threshold: float
) -> torch.Tensor:
    """``lambda (c_hat - C_ub)``: descending it raises ``lambda`` while ``C_ub > c_hat``."""
    return lmbda * (threshold - torch.as_tensor(cost_ub).detach())


# ---------------------------------------------------------------------- the agent
class DualVariables(nn.Module):
    """``lambda`` and ``tau`` as ``softplus`` of free parameters (OSRL: initialised at 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.lambda_raw = nn.Parameter(torch.ones(()))
        self.tau_raw = nn.Parameter(torch.ones(()))

    @property
    def lmbda(self) -> torch.Tensor:
        return F.softplus(self.lambda_raw)

    @property
    def tau(self) -> torch.Tensor:
        return F.softplus(self.tau_raw)


class COptiDICE(BaseAgent):
    """COptiDICE (Lee et al., ICLR 2022) as in OSRL; see the module docstring for deviations."""

    name = "coptidice"
    config_class = COptiDICEConfig
    config: COptiDICEConfig

    def _build(self) -> None:
        c = self.config
        self.actor = GaussianActor(self.obs_dim, self.act_dim, c.actor_hidden_sizes)
        self.nu = ValueNet(self.obs_dim, c.critic_hidden_sizes)
        self.chi = ValueNet(self.obs_dim, c.critic_hidden_sizes)
        self.duals = DualVariables()
        # Set from the training data (then saved): c_hat in normalized-cost units.
        self.cost_threshold = ScalarBuffer(0.0)
        # Training-only, derived from the dataset in _setup_training.
        self.initial_obs = torch.zeros((0, self.obs_dim))
        self.obs_noise_std = torch.zeros(self.obs_dim)
        self.action_noise_std = torch.zeros(self.act_dim)
        self.optimizers = {
            "actor": torch.optim.Adam(
                self.actor.parameters(), lr=c.actor_learning_rate, **optimizer_options(self.device)
            ),
            "critic": torch.optim.Adam(
                [*self.nu.parameters(), *self.chi.parameters()],
                lr=c.critic_learning_rate,
                **optimizer_options(self.device),
            ),
            # Adam is elementwise, so one optimizer over both scalars equals OSRL's two.
            "duals": torch.optim.Adam(
                self.duals.parameters(), lr=c.scalar_learning_rate, **optimizer_options(self.device)
            ),
        }

    def _saved_modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.actor,
            "nu": self.nu,
            "chi": self.chi,
            "duals": self.duals,
            "cost_threshold": self.cost_threshold,
        }

    def _setup_training(self, dataset: OfflineDataset) -> None:
        bounds = dataset.episode_bounds()
        starts = torch.as_tensor([start for start, _ in bounds], device=self.device)
        self.initial_obs = self.sampler.obs[starts]  # (n_episodes, obs_dim), raw units
        with torch.no_grad():
            noise = self.config.augmentation_noise
            scaled_actions = self.action_scaler.normalize(self.sampler.actions)
            self.obs_noise_std = noise * self.obs_scaler(self.sampler.obs).std(dim=0)
            self.action_noise_std = noise * scaled_actions.std(dim=0)
        if self.num_steps > 0:
            return  # resumed: keep the threshold the run started with
        c = self.config
        # E_D[w c] is a normalized (per-step) cost: the Q-unit limit times (1 - gamma).
        in_q_units = q_cost_limit(dataset, c.cost_limit, c.gamma, c.episode_length)
        self.cost_threshold.value.fill_((1.0 - c.gamma) * in_q_units)

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:
            actions: torch.Tensor = self.actor(obs)
            return actions
        return self.actor.sample(obs, self.act_generator)

    def _weights(
        self, batch: TransitionBatch, obs: torch.Tensor, next_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``nu(s)``, the advantage ``e`` and the ratio ``w``, with gradients into nu."""
        c = self.config
        done = done_mask(batch, through_timeouts=False)  # OSRL's done
        nu = self.nu(obs)
        advantage = dice_advantage(
            c.reward_scale * batch.rewards,
            batch.costs,
            nu,
            self.nu(next_obs),
            done,
            self.duals.lmbda.detach(),
            c.gamma,
        )
        return nu, advantage, weights_from_advantage(advantage, c.alpha, c.f_divergence)

    def stationary_weights(self, batch: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The ratios ``w`` of a minibatch and their normalized version (average 1), ``(B,)``."""
        with torch.no_grad():
            obs, next_obs = self.obs_scaler(batch.obs), self.obs_scaler(batch.next_obs)
            weights = self._weights(batch, obs, next_obs)[2]
        return weights, normalize_weights(weights)

    def _train_step(self, batch: TransitionBatch) -> Metrics:
        c = self.config
        obs = self.obs_scaler(batch.obs)
        next_obs = self.obs_scaler(batch.next_obs)
        actions = self.action_scaler.normalize(batch.actions)
        generator = self.train_generator
        # s0: a minibatch of episode starts of its own (the authors' code), for (1 - gamma) nu(s0).
        index = torch.randint(
            len(self.initial_obs), (len(obs),), generator=generator, device=generator.device
        ).to(self.initial_obs.device)
        init_obs = self.obs_scaler(self.initial_obs[index])
        done = done_mask(batch, through_timeouts=False)

        # 1. The stationary distribution correction: nu, chi, lambda, tau.
        # w keeps its graph: nu_loss's gradient is E_D[w grad e] through it.
        _, advantage, weights = self._weights(batch, obs, next_obs)
        loss_nu = nu_loss(self.nu(init_obs), advantage, weights, c.alpha, c.gamma, c.f_divergence)
        tau = self.duals.tau
        bound = cost_upper_bound(
            self.chi(init_obs),
            self.chi(obs),
            self.chi(next_obs),
            batch.costs,
            done,
            weights,
            tau,
            c.gamma,
            c.cost_ub_epsilon,
        )
        lmbda = self.duals.lmbda
        threshold = float(self.cost_threshold.value)
        loss_lambda = lambda_loss(lmbda, bound.cost_ub, threshold)
        # The four losses share no parameters (w is detached in chi's and the duals' terms), so
        # one backward pass gives each its own gradient.
        for name in ("critic", "duals"):
            self.optimizers[name].zero_grad()
        (loss_nu + bound.chi_loss + bound.tau_loss + loss_lambda).backward()
        for name in ("critic", "duals"):
            self.optimizers[name].step()

        # 2. Policy extraction: weighted BC on noise-augmented inputs (OSRL).
        # This step's w, from nu before its update (the authors' code); average 1.
        bc_weights = normalize_weights(weights.detach())
        obs_noise = torch.randn(obs.shape, generator=generator, device=generator.device)
        action_noise = torch.randn(actions.shape, generator=generator, device=generator.device)
        # OSRL's input noise: a smoothing regularizer of the weighted BC fit.
        noisy_obs = obs + self.obs_noise_std * obs_noise.to(obs.device)
        noisy_actions = actions + self.action_noise_std * action_noise.to(obs.device)
        actor_loss = weighted_bc_loss(self.actor.distribution(noisy_obs), noisy_actions, bc_weights)
        self.optimizers["actor"].zero_grad()
        actor_loss.backward()
        self.optimizers["actor"].step()

        with torch.no_grad():
            divergence = f_divergence(weights, c.f_divergence).mean()
        return {
            "nu_loss": loss_nu.detach(),
            "chi_loss": bound.chi_loss.detach(),
            "td_error": advantage.detach().pow(2).mean().detach(),
            "f_divergence": divergence.detach(),
            "kl_divergence": bound.kl.detach(),
            "cost_upper_bound": bound.cost_ub.detach(),
            "cost_threshold": threshold,
            "lambda": lmbda.detach(),
            "tau": tau.detach(),
            "actor_loss": actor_loss.detach(),
            "weight_mean": weights.detach().mean().detach(),
            "weight_max": weights.detach().max().detach(),
        }
