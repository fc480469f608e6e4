"""DSPO: a safe policy from trajectories without cost labels and a few safe demonstrations.

"Diffusion-Guided Safe Policy Optimization from Cost-Label-Free Offline Dataset" (anonymous,
under review; CITATION.cff). The agent sees an
unlabeled dataset ``D^U`` of trajectories ``(s, a, r)`` and a handful of safe demonstrations
``D^S`` (10-15 in the paper); it never reads a cost. ``OfflineDataset.strip_costs`` makes this
setting from any cost-labelled dataset, and ``envs.StripCost`` keeps evaluation honest.

Training runs three stages one after the other within ``learn_offline``'s ``n_steps``:

1. **SafetyTransformer** (``discriminator_steps``; Sec. 3.1). A causal GPT reads a window of
   ``window_len`` steps as two tokens per step (state, action; each plus a position embedding).
   From each output ``x_t`` (read at the action token) linear maps give a key ``k_t``, a query
   ``q_t`` and a scalar value ``v_t``; ``z_t = sum_s softmax_s(q_t . k_s) v_s`` and the safety
   signal is ``z_tau = sigmoid(mean_t z_t)``. Windows of the demos are positives, windows of
   ``D^U`` negatives (Eq. 1), plus ``vclub_weight`` times the return-agnostic term (Eq. 4),
   ``I_vCLUB = E_joint log q(r|z) - E_p(z) E_p(r) log q(r|z)``, with the trajectory return
   discretized into ``n_return_bins`` uniform bins and ``q(r | z; theta)`` a classifier. Each
   step alternates (a) ``theta`` by maximum likelihood on the batch's (z, r) pairs (z detached)
   and (b) the transformer on ``BCE + lambda I_vCLUB``. A trajectory's signal is the sigmoid of
   the length-weighted mean of ``mean_t z_t`` over consecutive windows covering it.
2. **Conditional trajectory diffusion** (``diffusion_train_steps``; Sec. 3.2, Eq. 6). Segments
   ``x^0 = [(s_t, a_t)]`` of ``segment_len`` steps (standardized states and ``[-1, 1]`` actions,
   each feature min-max scaled to ``[-1, 1]``) are noised and a temporal 1-D convolution network
   predicts the noise, conditioned on the trajectory's normalized return and safety signal; the
   condition is dropped with probability ``condition_dropout`` (classifier-free guidance).
3. **Generation and behaviour cloning** (the remaining steps). At the first step of the stage,
   ``n_generated_segments`` segments are sampled with guidance ``eps_u + w (eps_c - eps_u)``,
   conditioned on returns drawn uniformly within the demos' range and on the smallest signal
   of a demo (Appendix D.1); an MLP policy is then trained by BC on the generated pairs and the
   demos, ``E ||pi(s) - a||^2`` over ``D^S u D^G``.

The generated pairs are buffers of the agent, so checkpoints resume exactly after generation,
and :meth:`DSPO.safety_signals` gives the discriminator's view of any dataset (the benchmark
scores it against the hidden labels with ``envs.metrics.discriminator_report``, the paper's
Table 2).

**Our reading and deviations** (the paper gives no hyperparameter table):

- Budgets and sizes are ours: windows of 64 steps, a 3-layer, 4-head, 128-wide transformer,
  segments of 32 steps, 20 cosine-schedule diffusion steps, a 4-block, 64-wide denoiser,
  guidance 1.2 and condition dropout 0.25 (Decision Diffuser's), 512 generated segments.
- The marginal term of ``I_vCLUB`` averages ``log q(r_j | z_i)`` over every pair of the batch
  (the exact product-of-marginals expectation on the batch) instead of one shuffled pairing.
- The return of a window is its trajectory's return: the safety signal is a trajectory-level
  quantity, and the windows are how a long trajectory fits the transformer.
- The denoiser is a Diffuser-style dilated residual convolution stack without down/up-sampling
  and without an EMA copy; it predicts the noise (Eq. 6), not the clean segment.
- Observations are standardized with the statistics of ``D^U u D^S`` (``normalize_observations``).

**Layout**: config, losses, the stages' pieces, the agent. The windows cut from episodes and
the transformer trunk are shared with CDT (:mod:`safe_agents.common.sequence`). The module is
somewhat over the house's ~600 lines because one agent trains three models in three stages plus
the generation between them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from safe_agents.common.base import BaseAgent
from safe_agents.common.config import AgentConfig, check_choice, check_in_range, check_positive
from safe_agents.common.data import DatasetLike, coerce_dataset
from safe_agents.common.dataset import OfflineDataset
from safe_agents.common.device import optimizer_options
from safe_agents.common.diffusion import SCHEDULES, NoiseScheduler
from safe_agents.common.logger import Metrics
from safe_agents.common.networks import (
    ActionScaler,
    DeterministicActor,
    TemporalConvDenoiser,
    init_transformer_weights,
    mlp,
)
from safe_agents.common.sequence import EpisodeWindows, TokenTransformer, WindowBatch, masked_mean


@dataclass(kw_only=True)
class DSPOConfig(AgentConfig):
    """DSPO hyperparameters (the paper gives none; these are ours, see the module docstring).

    Attributes:
        n_steps: all three stages together; the policy trains for
            ``n_steps - discriminator_steps - diffusion_train_steps`` steps.
        batch_size: BC minibatch (pairs).
        discriminator_steps: stage 1 length.
        window_len: steps per SafetyTransformer window.
        embedding_dim / num_layers / num_heads / dropout: the causal transformer.
        pooling_dim: width of the pooling layer's keys and queries.
        discriminator_batch_size: windows per step, half demos, half unlabeled.
        discriminator_learning_rate: AdamW learning rate of the transformer.
        vclub_weight: lambda of the return-agnostic term (0 turns it off: the ablation).
        n_return_bins: classes of ``q(r | z)`` (the paper's 10).
        classifier_hidden_sizes / classifier_learning_rate: ``q(r | z)``.
        diffusion_train_steps: stage 2 length.
        segment_len: steps per generated segment (H).
        diffusion_timesteps / beta_schedule: the diffusion chain.
        denoiser_width / denoiser_blocks: the temporal convolution network.
        diffusion_batch_size / diffusion_learning_rate: stage 2 optimisation.
        condition_dropout: probability of training a sample unconditionally.
        guidance_scale: w of classifier-free guidance at generation (1 = conditional only).
        n_generated_segments: segments generated for BC.
        hidden_sizes / learning_rate: the BC policy (OSRL's BC: (256, 256), 1e-3).
    """

    # cpu: 1k discriminator steps (a 2-layer, 64-wide transformer over 32-step windows), 2.5k
    # diffusion steps, 1.5k BC steps on 256 generated segments and the demos.
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {
            "n_steps": 5_000,
            "discriminator_steps": 1_000,
            "diffusion_train_steps": 2_500,
            "window_len": 32,
            "embedding_dim": 64,
            "num_layers": 2,
            "pooling_dim": 32,
            "discriminator_batch_size": 32,
            "discriminator_learning_rate": 3e-4,
            "n_generated_segments": 256,
        },
    }

    n_steps: int = 150_000
    batch_size: int = 256
    discriminator_steps: int = 20_000
    window_len: int = 64
    embedding_dim: int = 128
    num_layers: int = 3
    num_heads: int = 4
    dropout: float = 0.1
    pooling_dim: int = 64
    discriminator_batch_size: int = 64
    discriminator_learning_rate: float = 1e-4
    vclub_weight: float = 1.0
    n_return_bins: int = 10
    classifier_hidden_sizes: tuple[int, ...] = (64, 64)
    classifier_learning_rate: float = 1e-3
    diffusion_train_steps: int = 100_000
    segment_len: int = 32
    diffusion_timesteps: int = 20
    beta_schedule: str = "cosine"
    denoiser_width: int = 64
    denoiser_blocks: int = 4
    diffusion_batch_size: int = 64
    diffusion_learning_rate: float = 2e-4
    condition_dropout: float = 0.25
    guidance_scale: float = 1.2
    n_generated_segments: int = 512
    hidden_sizes: tuple[int, ...] = (256, 256)
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "discriminator_steps",
            "window_len",
            "embedding_dim",
            "num_layers",
            "num_heads",
            "pooling_dim",
            "discriminator_batch_size",
            "discriminator_learning_rate",
            "classifier_learning_rate",
            "diffusion_train_steps",
            "segment_len",
            "diffusion_timesteps",
            "denoiser_width",
            "denoiser_blocks",
            "diffusion_batch_size",
            "diffusion_learning_rate",
            "n_generated_segments",
            "learning_rate",
        ):
            check_positive(name, getattr(self, name))
        if self.n_return_bins < 2:
            raise ValueError(f"n_return_bins must be >= 2, got {self.n_return_bins}")
        if self.discriminator_batch_size < 2:
            raise ValueError("discriminator_batch_size must be >= 2 (half demos, half unlabeled)")
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                f"embedding_dim ({self.embedding_dim}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        check_positive("vclub_weight", self.vclub_weight, allow_zero=True)
        check_in_range("dropout", self.dropout, 0.0, 1.0)
        check_in_range("condition_dropout", self.condition_dropout, 0.0, 1.0)
        check_positive("guidance_scale", self.guidance_scale, allow_zero=True)
        check_choice("beta_schedule", self.beta_schedule, SCHEDULES)
        for name in ("hidden_sizes", "classifier_hidden_sizes"):
            sizes = getattr(self, name)
            if not sizes or any(size < 1 for size in sizes):
                raise ValueError(f"{name} must be positive widths, got {sizes}")

    @property
    def policy_start(self) -> int:
        """The step at which generation happens and behaviour cloning starts."""
        return self.discriminator_steps + self.diffusion_train_steps


# --------------------------------------------------------------------------------- losses
def vclub_estimate(log_q: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """``I_vCLUB = E_joint log q(r|z) - E_p(z) E_p(r) log q(r|z)`` on a batch (Eq. 4).

    Args:
        log_q: ``(B, n_bins)`` log-probabilities ``log q(. | z_i)``.
        bins: ``(B,)`` the return bin of each sample's own trajectory.

    The joint term pairs each ``z_i`` with its own return; the marginal term averages over every
    pair ``(z_i, r_j)`` of the batch. About 0 when ``q`` cannot tell returns from ``z``,
    positive when ``z`` predicts the return.
    """
    joint = log_q.gather(1, bins[:, None]).mean()
    marginal = log_q[:, bins].mean()  # (B, B): log q(r_j | z_i)
    return joint - marginal


def return_bins(returns: torch.Tensor, low: float, high: float, n_bins: int) -> torch.Tensor:
    """Uniform bins of ``[low, high]`` (the data's episode returns), ``0..n_bins-1``."""
    scaled = (returns - low) / max(high - low, 1e-8)
    return (scaled * n_bins).long().clamp(0, n_bins - 1)


# ------------------------------------------------------------------------- stage 1 pieces
class SafetyTransformer(TokenTransformer):
    """DSPO's discriminator: a causal GPT over (state, action) tokens and attention pooling.

    Inputs are scaled (standardized states, ``[-1, 1]`` actions). :meth:`forward` returns the
    pooled pre-sigmoid signal ``mean_t z_t`` of each window; ``sigmoid`` of it is ``z_tau``.
    """

    tokens_per_step = 2

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        window_len: int,
        embedding_dim: int,
        num_layers: int,
        num_heads: int,
        dropout: float,
        pooling_dim: int,
    ) -> None:
        super().__init__()
        self.state_embedding = nn.Linear(obs_dim, embedding_dim)
        self.action_embedding = nn.Linear(act_dim, embedding_dim)
        self.position_embedding = nn.Embedding(window_len, embedding_dim)
        self._add_causal_trunk(embedding_dim, num_layers, num_heads, dropout, dropout, dropout)
        self.key = nn.Linear(embedding_dim, pooling_dim)
        self.query = nn.Linear(embedding_dim, pooling_dim)
        self.value = nn.Linear(embedding_dim, 1)
        self.apply(init_transformer_weights)

    def features(
        self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """``x_t``, ``(B, K, D)``: the causal output at each step's action token.

        Args:
            obs: ``(B, K, obs_dim)``; actions: ``(B, K, act_dim)``; mask: ``(B, K)``, 1 on real
                steps and 0 on padding (padding sits at the end of a window).
        """
        position = self.position_embedding(torch.arange(obs.shape[1], device=obs.device))  # (K, D)
        step_embeddings = [self.state_embedding(obs), self.action_embedding(actions)]
        out = self.encode_steps(step_embeddings, position, mask < 0.5)  # (B, K, 2, D)
        return out[:, :, 1]

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B,)`` pooled signals ``mean_t z_t`` (pre-sigmoid) over each window's real steps."""
        x = self.features(obs, actions, mask)
        keys, queries, values = self.key(x), self.query(x), self.value(x)  # (B,K,d),(B,K,d),(B,K,1)
        scores = queries @ keys.transpose(1, 2)  # (B, K_t, K_s)
        scores = scores.masked_fill(mask[:, None, :] < 0.5, float("-inf"))
        pooled = torch.softmax(scores, dim=-1) @ values  # (B, K, 1): z_t
        return masked_mean(pooled.squeeze(-1), mask, dim=1)


# ------------------------------------------------------------------------- stage 3 pieces
class GeneratedPairs(nn.Module):
    """The (state, action) pairs generated for BC, kept as buffers so checkpoints hold them.

    ``ready`` is 1 once generation has run.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    ready: torch.Tensor

    def __init__(self, n_pairs: int, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.register_buffer("obs", torch.zeros(n_pairs, obs_dim))
        self.register_buffer("actions", torch.zeros(n_pairs, act_dim))
        self.register_buffer("ready", torch.tensor(0.0))


# ------------------------------------------------------------------------------ the agent
class DSPO(BaseAgent):
    """Diffusion-guided safe policy optimization without cost labels (see the module docstring).

    ``cost_limit`` is accepted and recorded but unused: DSPO never sees costs; the demos carry
    the notion of safety.

    ``DSPO(env).learn_offline(unlabeled, demos=demos, n_steps=...)``; costs in either dataset
    are dropped unread. ``predict`` is one MLP forward pass.
    """

    name = "dspo"
    config_class = DSPOConfig
    config: DSPOConfig
    needs_demos = True
    needs_costs = False
    supports_compile = True

    def _build(self) -> None:
        c = self.config
        # Wall-clock seconds of each stage trained in this process (not saved).
        self.stage_seconds: dict[str, float] = {}
        self.transformer = SafetyTransformer(
            self.obs_dim,
            self.act_dim,
            c.window_len,
            c.embedding_dim,
            c.num_layers,
            c.num_heads,
            c.dropout,
            c.pooling_dim,
        )
        self.return_classifier = mlp(1, c.n_return_bins, c.classifier_hidden_sizes)
        feature_dim = self.obs_dim + self.act_dim
        self.denoiser = TemporalConvDenoiser(
            feature_dim, 2, width=c.denoiser_width, n_blocks=c.denoiser_blocks
        )
        # Min-max bounds of the segment features (fitted on the data): x in [-1, 1].
        self.segment_scaler = ActionScaler(-np.ones(feature_dim), np.ones(feature_dim))
        self.scheduler = NoiseScheduler(c.diffusion_timesteps, c.beta_schedule, "ddpm")
        self.generated = GeneratedPairs(
            c.n_generated_segments * c.segment_len, self.obs_dim, self.act_dim
        )
        self.actor = DeterministicActor(self.obs_dim, self.act_dim, c.hidden_sizes)
        self.optimizers = {
            "transformer": torch.optim.AdamW(
                self.transformer.parameters(),
                lr=c.discriminator_learning_rate,
                weight_decay=1e-4,
                **optimizer_options(self.device),
            ),
            "classifier": torch.optim.Adam(
                self.return_classifier.parameters(),
                lr=c.classifier_learning_rate,
                **optimizer_options(self.device),
            ),
            "denoiser": torch.optim.Adam(
                self.denoiser.parameters(),
                lr=c.diffusion_learning_rate,
                **optimizer_options(self.device),
            ),
            "actor": torch.optim.Adam(
                self.actor.parameters(), lr=c.learning_rate, **optimizer_options(self.device)
            ),
        }
        # The denoiser's and the policy's updates compile with compile=True; the
        # discriminator's two alternating updates (AdamW, the classifier read in between) stay
        # eager.
        self.updates = {
            "denoiser": self._make_update(
                self._diffusion_loss, self.optimizers["denoiser"], {"denoiser": self.denoiser}
            ),
            "actor": self._make_update(
                self._policy_loss, self.optimizers["actor"], {"actor": self.actor}
            ),
        }

    def _saved_modules(self) -> dict[str, nn.Module]:
        return {
            "transformer": self.transformer,
            "return_classifier": self.return_classifier,
            "denoiser": self.denoiser,
            "segment_scaler": self.segment_scaler,
            "generated": self.generated,
            "actor": self.actor,
        }

    # ------------------------------------------------------------------ data
    def _check_total_steps(self, total: int) -> None:
        if total <= self.config.policy_start:
            raise ValueError(
                f"n_steps ({total}) must exceed discriminator_steps + diffusion_train_steps "
                f"({self.config.policy_start}) so that the policy trains"
            )

    def _prepare_dataset(self, dataset: OfflineDataset) -> OfflineDataset:
        # DSPO never reads a cost, of the unlabeled data or of the demos.
        assert self.demos is not None  # needs_demos: learn_offline refused a call without them
        self._demos = self.demos.without_costs()
        self._unlabeled = dataset.without_costs()
        return type(dataset).concatenate([self._unlabeled, self._demos])

    def _setup_training(self, dataset: OfflineDataset) -> None:
        c = self.config
        device = self.device
        self._demo_windows = EpisodeWindows(self._demos, c.window_len, device)
        self._unlabeled_windows = EpisodeWindows(self._unlabeled, c.window_len, device)
        self._all_windows = EpisodeWindows(dataset, c.window_len, device)
        self._segments = EpisodeWindows(dataset, c.segment_len, device, full=True)
        returns = dataset.episode_returns()
        self._return_range = (float(returns.min()), float(returns.max()))
        self._episode_returns = torch.as_tensor(returns, dtype=torch.float32, device=device)
        # The training data is the unlabeled episodes followed by the demos.
        n_unlabeled = self._unlabeled.n_episodes
        self._unlabeled_returns = self._episode_returns[:n_unlabeled]
        self._demo_returns = self._episode_returns[n_unlabeled:]
        with torch.no_grad():
            self._demo_pairs = (
                self.obs_scaler(torch.as_tensor(self._demos.observations, device=device)),
                self.action_scaler.normalize(torch.as_tensor(self._demos.actions, device=device)),
            )
            if self.num_steps == 0:
                features = self._scaled_segments(
                    torch.as_tensor(dataset.observations, device=device)[:, None],
                    torch.as_tensor(dataset.actions, device=device)[:, None],
                )[:, 0]
                low, high = features.min(dim=0).values, features.max(dim=0).values
                self.segment_scaler.low.copy_(low)
                self.segment_scaler.high.copy_(torch.maximum(high, low + 1e-6))
        self._condition_cache: torch.Tensor | None = None  # per-episode (return, signal)

    def _scaled_segments(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``(B, K, obs_dim + act_dim)`` standardized states and ``[-1, 1]`` actions."""
        return torch.cat([self.obs_scaler(obs), self.action_scaler.normalize(actions)], dim=-1)

    def _stage(self) -> str:
        if self.num_steps < self.config.discriminator_steps:
            return "discriminator"
        if self.num_steps < self.config.policy_start:
            return "diffusion"
        return "policy"

    def _before_step(self) -> None:
        # The generation stage: once, between the diffusion model's last step and the policy's
        # first (again after a resume from a checkpoint saved before it).
        if self._stage() == "policy" and self.generated.ready.item() == 0:
            self._generate()

    def _sample_batch(self) -> Any:
        c = self.config
        stage = self._stage()
        if stage == "discriminator":
            half = c.discriminator_batch_size // 2
            demos = self._demo_windows.sample(half, self.train_generator)
            unlabeled = self._unlabeled_windows.sample(
                c.discriminator_batch_size - half, self.train_generator
            )
            return demos, unlabeled
        if stage == "diffusion":
            return self._segments.sample(c.diffusion_batch_size, self.train_generator)
        n_generated, n_demo = len(self.generated.obs), len(self._demo_pairs[0])
        generator = self.train_generator
        index = torch.randint(
            n_generated + n_demo, (c.batch_size,), generator=generator, device=generator.device
        ).to(self.device)
        obs = torch.cat([self.generated.obs, self._demo_pairs[0]])[index]
        actions = torch.cat([self.generated.actions, self._demo_pairs[1]])[index]
        return obs, actions

    # ------------------------------------------------------------------ training
    def _train_step(self, batch: Any) -> Metrics:
        stage = self._stage()
        start = time.perf_counter()
        if stage == "discriminator":
            metrics = self._discriminator_step(*batch)
        elif stage == "diffusion":
            metrics = self._diffusion_step(batch)
        else:
            metrics = self._policy_step(*batch)
        self._add_seconds(stage, time.perf_counter() - start)
        return metrics

    def _add_seconds(self, stage: str, seconds: float) -> None:
        """Wall-clock seconds per stage of this process's training (``stage_seconds``)."""
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def _discriminator_step(self, demos: WindowBatch, unlabeled: WindowBatch) -> Metrics:
        c = self.config
        obs = self.obs_scaler(torch.cat([demos.obs, unlabeled.obs]))
        actions = self.action_scaler.normalize(torch.cat([demos.actions, unlabeled.actions]))
        mask = torch.cat([demos.mask, unlabeled.mask])
        # Eq. 1 is PU learning: demos are labelled safe (1), the unlabeled mix 0.
        labels = torch.cat([torch.ones(len(demos.mask)), torch.zeros(len(unlabeled.mask))])
        labels = labels.to(self.device)
        returns = torch.cat(
            [self._demo_returns[demos.episodes], self._unlabeled_returns[unlabeled.episodes]]
        )
        # The episode returns, binned: vCLUB's r, which the signal should not predict.
        bins = return_bins(returns, *self._return_range, c.n_return_bins)
        logits = self.transformer(obs, actions, mask)
        signal = torch.sigmoid(logits)[:, None]  # (B, 1): z, the safety signal

        # (a) q(r | z; theta) by maximum likelihood on the batch's pairs, z held fixed.
        classifier_loss = F.cross_entropy(self.return_classifier(signal.detach()), bins)
        self.optimizers["classifier"].zero_grad()
        classifier_loss.backward()
        self.optimizers["classifier"].step()

        # (b) the transformer: Eq. 1 plus lambda times the vCLUB bound of I(z; r) (Eq. 4); the
        # classifier just stepped is only read here (its own step ignores this loss).
        discriminator_loss = F.binary_cross_entropy_with_logits(logits, labels)
        vclub = vclub_estimate(F.log_softmax(self.return_classifier(signal), dim=-1), bins)
        loss = discriminator_loss + c.vclub_weight * vclub
        self.optimizers["transformer"].zero_grad()
        loss.backward()
        self.optimizers["transformer"].step()
        with torch.no_grad():
            accuracy = ((logits > 0).float() == labels).float().mean()
        return {
            "discriminator_loss": discriminator_loss.detach(),
            "vclub": vclub.detach(),
            "classifier_loss": classifier_loss.detach(),
            "discriminator_accuracy": accuracy.detach(),
        }

    def _episode_conditions(self) -> torch.Tensor:
        """``(E, 2)`` normalized return and safety signal of every training episode.

        Computed once per ``learn_offline`` after stage 1 (the transformer no longer changes
        then); the transformer in eval mode draws no randomness, so a resumed run gets the
        same values.
        """
        if self._condition_cache is None:
            low, high = self._return_range
            normalized = (self._episode_returns - low) / max(high - low, 1e-8)
            signals = self._signals_of(self._all_windows)
            self._condition_cache = torch.stack([normalized, signals], dim=1)
        return self._condition_cache

    def _signals_of(self, windows: EpisodeWindows) -> torch.Tensor:
        """``(E,)`` trajectory signals: sigmoid of the length-weighted mean window signal."""
        batch = windows.covering()
        was_training = self.transformer.training
        self.transformer.eval()
        pooled = []
        with torch.no_grad():
            for chunk in torch.arange(len(batch.mask)).split(256):
                obs = self.obs_scaler(batch.obs[chunk])
                actions = self.action_scaler.normalize(batch.actions[chunk])
                mask = batch.mask[chunk]
                pooled.append(self.transformer(obs, actions, mask))
        self.transformer.train(was_training)
        weights = batch.mask.sum(dim=1)
        n_episodes = len(windows.lengths)
        total = torch.zeros(n_episodes, device=self.device).index_add_(
            0, batch.episodes, torch.cat(pooled) * weights
        )
        count = torch.zeros(n_episodes, device=self.device).index_add_(0, batch.episodes, weights)
        return torch.sigmoid(total / count)

    def _diffusion_step(self, batch: WindowBatch) -> Metrics:
        c = self.config
        # Each segment is conditioned on its episode's (return, safety signal).
        conditions = self._episode_conditions()[batch.episodes]  # (B, 2)
        x0 = self.segment_scaler.normalize(self._scaled_segments(batch.obs, batch.actions))
        noisy, t, noise = self.scheduler.training_targets(x0, self.train_generator)
        generator = self.train_generator
        # Classifier-free guidance: drop the condition at random so one network learns both
        # the conditional and the unconditional noise, mixed at generation.
        keep = torch.rand(len(x0), generator=generator, device=generator.device).to(self.device)
        keep = (keep >= c.condition_dropout).float()  # (B,)
        return {
            "diffusion_loss": self.updates["denoiser"](noisy, t, noise, conditions, keep)["loss"]
        }

    def _diffusion_loss(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        conditions: torch.Tensor,
        keep: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return F.mse_loss(self.denoiser(noisy, t, conditions, keep), noise), {}  # Eq. 6

    def _generate(self) -> None:
        """Sample the BC segments: returns within the demos' range, the smallest demo signal."""
        c = self.config
        low, high = self._return_range
        demo_returns = (self._demo_returns - low) / max(high - low, 1e-8)
        demo_signal = self._signals_of(self._demo_windows).min()
        generator = self.train_generator
        uniform = torch.rand(c.n_generated_segments, generator=generator, device=generator.device)
        target_return = demo_returns.min() + uniform.to(self.device) * (
            demo_returns.max() - demo_returns.min()
        )
        condition = torch.stack([target_return, demo_signal.expand_as(target_return)], dim=1)
        ones = torch.ones(len(condition), device=self.device)

        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            conditional: torch.Tensor = self.denoiser(x, t, condition, ones)
            unconditional: torch.Tensor = self.denoiser(x, t, condition, torch.zeros_like(ones))
            return unconditional + c.guidance_scale * (conditional - unconditional)

        start = time.perf_counter()
        self.denoiser.eval()
        with torch.no_grad():
            shape = (c.n_generated_segments, c.segment_len, self.obs_dim + self.act_dim)
            segments = self.scheduler.sample(guided, shape, generator, self.device)
            # (n_segments * segment_len, obs_dim + act_dim): the segments cut into pairs.
            pairs = self.segment_scaler.denormalize(segments).reshape(-1, shape[-1])
            self.generated.obs.copy_(pairs[:, : self.obs_dim])
            self.generated.actions.copy_(pairs[:, self.obs_dim :].clamp(-1.0, 1.0))
            self.generated.ready.fill_(1.0)
        self.denoiser.train()
        self._add_seconds("generation", time.perf_counter() - start)
        self.logger.record("generation/target_signal", float(demo_signal))

    def _policy_step(self, obs: torch.Tensor, actions: torch.Tensor) -> Metrics:
        return {"actor_loss": self.updates["actor"](obs, actions)["loss"]}

    def _policy_loss(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Behaviour cloning on generated and demo pairs alike (the batch mixes both).
        return F.mse_loss(self.actor(obs), actions), {}

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        actions: torch.Tensor = self.actor(obs)
        return actions

    # ------------------------------------------------------------------ inspection
    def safety_signals(self, dataset: DatasetLike) -> NDArray[np.float32]:
        """The SafetyTransformer's signal ``z_tau`` in ``(0, 1)`` for every episode of a dataset.

        Higher means "looks like the safe demonstrations". Costs, if any, are not read.
        """
        data = coerce_dataset(dataset)
        data.check_spaces(self.observation_space, self.action_space)
        windows = EpisodeWindows(data, self.config.window_len, self.device)
        return self._signals_of(windows).cpu().numpy()

    def generated_segments(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The generated ``(observations, actions)`` in environment units, ``(N, H, dim)``.

        Raises:
            RuntimeError: before the generation step (the start of the policy stage).
        """
        if self.generated.ready.item() == 0:
            raise RuntimeError("no segments yet: generation runs at the start of the BC stage")
        c = self.config
        with torch.no_grad():
            obs = self.generated.obs * self.obs_scaler.std + self.obs_scaler.mean
            actions = self.action_scaler.denormalize(self.generated.actions)
        shape = (c.n_generated_segments, c.segment_len)
        return (
            obs.reshape(*shape, self.obs_dim).cpu().numpy(),
            actions.reshape(*shape, self.act_dim).cpu().numpy(),
        )
