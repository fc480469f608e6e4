"""Network building blocks shared by every agent: MLPs, actors, and the scalers stored as buffers.

Scalers (observation standardization, action rescaling) are ``nn.Module`` buffers so their
statistics travel inside the saved weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

# Elements from which Mish uses the closed form on a CPU: below, torch's kernel is faster
# (measured from (5, 128) to (1024, 1024) in float32, one thread). Without gradients, from
# _MISH_KERNEL_NO_GRAD on torch's one-pass kernel is faster again: the closed form's four passes
# over memory cost more than its arithmetic saves (1.6x torch's time at (16000, 1024), 0.7x at
# (4000, 1024): batched predicts at the paper preset).
_MISH_FORMULA_WITH_GRAD = 1 << 14
_MISH_FORMULA_NO_GRAD = 1 << 12
_MISH_KERNEL_NO_GRAD = 1 << 23


class Mish(nn.Module):
    """``x tanh(softplus(x))``, as ``nn.Mish``, by a closed form on a CPU for larger inputs.

    With ``s = sigmoid(x)``, ``tanh(softplus(x)) = n / (2 - n)`` where ``n = s (2 - s)``: one
    sigmoid and three cheap operations, where torch's CPU kernels for mish, tanh and softplus
    each cost several times a sigmoid. The gradient, ``t + x (1 - t^2) s`` with ``t`` the
    tanh, is written out by hand (:class:`_MishFunction`). Forward and backward take 0.6x the
    time of ``F.mish`` at FISOR's ``cpu`` size ((256, 64)) and 0.35x at the paper's
    ((1024, 1024)). Small inputs (sampling one action, the timestep embedding), very large
    ones without gradients (batched predicts at the paper preset) and other devices use
    ``F.mish``. The two agree to float32 rounding (exactly in the tails: ``n`` has
    no cancellation for very negative ``x``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and x.device.type == "cpu":
            # The closed form as plain operations: the compiler fuses them and their derivative
            # (its own mish kernels compute exp, log1p and tanh: twice the time).
            sigmoid = torch.sigmoid(x)
            n = sigmoid * (2.0 - sigmoid)
            return x * (n / (2.0 - n))
        if x.device.type == "cpu":
            if torch.is_grad_enabled() and x.requires_grad:
                if x.numel() >= _MISH_FORMULA_WITH_GRAD:
                    output: torch.Tensor = _MishFunction.apply(x)
                    return output
            elif _MISH_FORMULA_NO_GRAD <= x.numel() < _MISH_KERNEL_NO_GRAD:
                return x * _tanh_softplus(x)[0]
        return F.mish(x)


def _tanh_softplus(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tanh(softplus(x))`` and ``sigmoid(x)``, from the sigmoid alone (see :class:`Mish`)."""
    sigmoid = torch.sigmoid(x)
    n = torch.rsub(sigmoid, 2.0).mul_(sigmoid)  # 1 - sigmoid(-x)^2
    return n.div_(torch.rsub(n, 2.0)), sigmoid


class _MishFunction(torch.autograd.Function):
    """Mish by :func:`_tanh_softplus` with its derivative written out: two autograd records
    fewer than composing the pieces, and no tanh or softplus kernel at all."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        tanh_softplus, sigmoid = _tanh_softplus(x)
        ctx.save_for_backward(x, tanh_softplus, sigmoid)
        return x * tanh_softplus

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        saved: tuple[torch.Tensor, ...] = ctx.saved_tensors
        x, tanh_softplus, sigmoid = saved
        # d/dx x tanh(softplus(x)) = t + x (1 - t^2) sigmoid(x), since softplus' = sigmoid
        slope = tanh_softplus.square().neg_().add_(1.0).mul_(sigmoid).mul_(x).add_(tanh_softplus)
        return grad * slope


class Dropout(nn.Dropout):
    """``nn.Dropout`` with its mask drawn as ``uniform >= p`` when training on a CPU.

    The same distribution and the same generator (torch's global one) as torch's dropout, whose
    CPU kernel draws a double-precision Bernoulli variable per element and takes twice as long:
    in FISOR's small noise network it was the most expensive elementwise operation.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Compiled too: the uniform draw stays torch's own kernel (the eager numbers, see
        # compiled.Program) and the comparison and scaling fuse, where Bernoulli's kernel is slow.
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        keep = torch.rand(x.shape, dtype=x.dtype) >= self.p
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "mish": Mish, "silu": nn.SiLU}


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int] = (256, 256),
    activation: str = "relu",
    layer_norm: bool = False,
    output_activation: str | None = None,
) -> nn.Sequential:
    """A multilayer perceptron ``in_dim -> hidden_sizes -> out_dim``.

    Args:
        activation: one of ``relu, tanh, gelu, mish, silu``.
        layer_norm: add LayerNorm after each hidden linear layer.
        output_activation: optional activation on the output.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_sizes:
        layers.append(nn.Linear(width, hidden))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(_ACTIVATIONS[activation]())
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    if output_activation is not None:
        layers.append(_ACTIVATIONS[output_activation]())
    return nn.Sequential(*layers)


def chain(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)``, calling each layer's ``forward`` directly.

    It skips ``nn.Module.__call__``'s hook machinery (forward hooks do not run), a few
    microseconds a layer that add up to a third of a diffusion policy's sampling time: one
    action takes T passes through some 30 layers of small matrices.
    """
    for layer in layers:
        if isinstance(layer, nn.Dropout) and not layer.training:
            continue  # the identity in evaluation
        x = layer.forward(x)
    return x


class ObservationScaler(nn.Module):
    """Standardizes observations with dataset statistics (identity until :meth:`fit`)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int, enabled: bool = True, eps: float = 1e-3) -> None:
        super().__init__()
        self.enabled = enabled
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, observations: NDArray[np.float32]) -> None:
        """Set mean and standard deviation from ``(N, dim)`` observations."""
        if not self.enabled:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            mean = observations.mean(axis=0)
            std = observations.std(axis=0) + self.eps
        # Huge but finite values overflow the float32 sums of squares: an error here, instead
        # of an infinite scale that turns every weight into NaN.
        bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
        if bad.size:
            largest = np.abs(observations[:, bad[0]]).max()
            raise ValueError(
                f"observation column {bad[0]} is too large to standardize (its mean or standard "
                f"deviation overflows float32: largest |value| {largest:.3g})"
            )
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std


class ActionScaler(nn.Module):
    """Maps actions between the environment's Box bounds and ``[-1, 1]``."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, low: NDArray[Any], high: NDArray[Any]) -> None:
        super().__init__()
        low = np.asarray(low, dtype=np.float32).reshape(-1)
        high = np.asarray(high, dtype=np.float32).reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError("the action space must have finite bounds")
        self.register_buffer("low", torch.as_tensor(low))
        self.register_buffer("high", torch.as_tensor(high))

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Environment units -> ``[-1, 1]``."""
        return 2.0 * (actions - self.low) / (self.high - self.low) - 1.0

    def denormalize(self, actions: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` -> environment units."""
        return self.low + (actions + 1.0) * 0.5 * (self.high - self.low)


class DeterministicActor(nn.Module):
    """``a = tanh(MLP(s))`` in ``[-1, 1]`` (OSRL's BC actor)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden_sizes, output_activation="tanh")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return chain(self.net, obs)


class GaussianActor(nn.Module):
    """A diagonal Gaussian over ``[-1, 1]``-scaled actions with a tanh-bounded mean.

    The log standard deviation is state dependent and clamped to ``[log_std_min, log_std_max]``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden_sizes)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def mean_and_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian's ``(B, act_dim)`` mean and standard deviation."""
        mean, log_std = chain(self.net, obs).chunk(2, dim=-1)
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        return torch.tanh(mean), log_std.exp()

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        # Unvalidated: the std is an exp, so positive; validation costs a sync per call on CUDA.
        return torch.distributions.Normal(*self.mean_and_std(obs), validate_args=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_and_std(obs)[0]

    def sample(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Reparameterized actions ``m(s) + sigma(s) z`` (gradients flow; not clamped)."""
        distribution = self.distribution(obs)
        noise = torch.randn(distribution.mean.shape, generator=generator, device=obs.device)
        return distribution.mean + distribution.stddev * noise


class ConditionalVAE(nn.Module):
    """A state-conditioned VAE of the behaviour policy's actions (BCQ; used by BCQ-Lag and CPQ).

    Encoder ``(s, a) -> N(mu, sigma)`` over a latent of ``latent_dim`` (BCQ: ``2 act_dim``),
    decoder ``(s, z) -> tanh(.)`` in ``[-1, 1]``. Sampling from the prior clips ``z`` to
    ``[-latent_clip, latent_clip]`` (BCQ's 0.5), which keeps decoded actions near the data's mode.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        latent_dim: int,
        hidden_sizes: Sequence[int] = (750, 750),
        latent_clip: float = 0.5,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.latent_clip = latent_clip
        self.encoder = mlp(obs_dim + act_dim, 2 * latent_dim, hidden_sizes)
        self.decoder = mlp(obs_dim + latent_dim, act_dim, hidden_sizes, output_activation="tanh")

    def encode(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of ``q(z | s, a)``."""
        mean, log_std = self.encoder(torch.cat([obs, actions], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(-4.0, 15.0).exp()

    def decode(
        self,
        obs: torch.Tensor,
        latent: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Actions for ``obs`` from ``latent``, or from a clipped prior sample when None."""
        if latent is None:
            shape = (len(obs), self.latent_dim)
            latent = torch.randn(shape, generator=generator, device=obs.device)
            latent = latent.clamp(-self.latent_clip, self.latent_clip)
        actions: torch.Tensor = self.decoder(torch.cat([obs, latent], dim=-1))
        return actions

    def forward(
        self, obs: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstructed actions, and the posterior's mean and std."""
        mean, std = self.encode(obs, actions)
        noise = torch.randn(mean.shape, generator=generator, device=obs.device)
        return self.decode(obs, mean + std * noise), mean, std


def vae_loss(
    reconstructed: torch.Tensor,
    actions: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    kl_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCQ's VAE loss: reconstruction MSE plus ``kl_weight`` times ``KL(q(z|s,a) || N(0, I))``.

    Returns:
        ``(loss, kl)``, the KL averaged over the batch and summed over latent dimensions.
    """
    reconstruction = F.mse_loss(reconstructed, actions)
    kl = (-torch.log(std) + 0.5 * (std**2 + mean**2) - 0.5).sum(dim=-1).mean()
    return reconstruction + kl_weight * kl, kl


class FourierTimeFeatures(nn.Module):
    """Learnable Fourier features of the diffusion timestep (IDQL / FISOR's time embedding)."""

    def __init__(self, dim: int = 16, scale: float = 1.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"time feature dim must be even, got {dim}")
        self.weight = nn.Parameter(torch.randn(1, dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        projected = 2 * np.pi * t.float().reshape(-1, 1) @ self.weight  # (B, dim / 2)
        return torch.cat([projected.cos(), projected.sin()], dim=-1)


def time_embedding(dim: int, out_dim: int | None = None, scale: float = 1.0) -> nn.Sequential:
    """The diffusion timestep's embedding: ``dim`` Fourier features (frequencies drawn with std
    ``scale``), then a ``dim -> 2 dim -> out_dim`` Mish MLP (IDQL's; ``out_dim`` defaults to
    ``dim``). FISOR's authors use ``dim = 64``, ``out_dim = 128``, ``scale = 0.2``."""
    return nn.Sequential(
        FourierTimeFeatures(dim, scale),
        nn.Linear(dim, 2 * dim),
        Mish(),
        nn.Linear(2 * dim, out_dim or dim),
    )


class ResidualBlock(nn.Module):
    """``x + MLP(LayerNorm(dropout(x)))``, hidden layer ``expansion`` times wider (IDQL: 4)."""

    def __init__(self, width: int, dropout: float = 0.1, expansion: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            Dropout(dropout),
            nn.LayerNorm(width),
            nn.Linear(width, expansion * width),
            Mish(),
            nn.Linear(expansion * width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + chain(self.net, x)


class NoisePredictionNet(nn.Module):
    """Predicts the noise in a noised action, given the observation and the timestep.

    ``eps(a_t, t | s)``: the timestep goes through learnable Fourier features and a small MLP,
    is concatenated with ``s`` and ``a_t``, then residual blocks with layer norm and dropout
    (FISOR: 3 blocks of width 256 with 4x hidden layers, dropout 0.1).

    Args:
        time_dim / time_out_dim / time_scale: the timestep embedding (:func:`time_embedding`).
        num_timesteps: T, when the timesteps are the integers ``0..T-1``: the embedding is
            computed once per timestep and gathered, instead of once per row (the same values;
            a batch of 256 rows has only T = 5 distinct timesteps).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        width: int = 256,
        n_blocks: int = 3,
        dropout: float = 0.1,
        time_dim: int = 16,
        expansion: int = 4,
        time_out_dim: int | None = None,
        time_scale: float = 1.0,
        num_timesteps: int | None = None,
    ) -> None:
        super().__init__()
        self.time_embedding = time_embedding(time_dim, time_out_dim, time_scale)
        self.num_timesteps = num_timesteps
        self._time_cache: dict[tuple[int, tuple[tuple[int, int], ...]], torch.Tensor] = {}
        # The same Parameter objects through .to(), load_state_dict and deepcopy's memo.
        self._time_parameters = tuple(self.time_embedding.parameters())
        embedded = time_out_dim or time_dim
        self.input = nn.Linear(obs_dim + act_dim + embedded, width)
        self.blocks = nn.Sequential(
            *[ResidualBlock(width, dropout, expansion) for _ in range(n_blocks)]
        )
        self.output = nn.Sequential(Mish(), nn.Linear(width, act_dim))

    def forward(
        self, noisy_actions: torch.Tensor, t: torch.Tensor, obs: torch.Tensor
    ) -> torch.Tensor:
        """Predicted noise ``(B, act_dim)``; ``t`` is ``(B,)``, or ``(1,)`` for all rows."""
        if len(t) == 1:  # one timestep for the batch (sampling): embedded once
            embedded = self._embed_one(t).expand(len(obs), -1)
        elif self.num_timesteps is not None and len(t) > self.num_timesteps:
            steps = torch.arange(self.num_timesteps, device=t.device)
            embedded = chain(self.time_embedding, steps)[t]  # (T, D) table, gathered to (B, D)
        else:
            embedded = chain(self.time_embedding, t)  # (B, D)
        features = torch.cat([obs, noisy_actions, embedded], dim=-1)
        hidden = self.input.forward(features)
        for block in self.blocks:
            hidden = block.forward(hidden)
        return chain(self.output, hidden)

    def _embed_one(self, t: torch.Tensor) -> torch.Tensor:
        """The ``(1, D)`` embedding of one timestep; without gradients on a CPU it is kept until
        the embedding's weights change (sampling one action embeds each timestep again)."""
        if torch.is_grad_enabled() or t.device.type != "cpu" or torch.compiler.is_compiling():
            return chain(self.time_embedding, t)  # compiled: computed inside the program
        # In-place updates (optimizer, EMA, load_state_dict) bump a tensor's version counter.
        weights = tuple((p.data_ptr(), p._version) for p in self._time_parameters)
        key = (int(t), weights)
        if key not in self._time_cache:
            self._time_cache = {k: v for k, v in self._time_cache.items() if k[1] == weights}
            self._time_cache[key] = chain(self.time_embedding, t)
        return self._time_cache[key]


class ScalarBuffer(nn.Module):
    """One float kept as a buffer, so a dataset-dependent constant is saved with the weights."""

    value: torch.Tensor

    def __init__(self, value: float) -> None:
        super().__init__()
        self.register_buffer("value", torch.tensor(float(value)))


# ------------------------------------------------------------------ sequence models
class CausalTransformerBlock(nn.Module):
    """Pre-norm attention + MLP block with a causal mask (OSRL's / CORL's ``TransformerBlock``).

    Used by CDT's decision transformer and DSPO's SafetyTransformer.
    """

    def __init__(
        self, embedding_dim: int, num_heads: int, attention_dropout: float, residual_dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.drop = nn.Dropout(residual_dropout)
        self.attention = nn.MultiheadAttention(
            embedding_dim, num_heads, attention_dropout, batch_first=True
        )
        self.mlp = nn.Sequential(
            nn.Linear(embedding_dim, 4 * embedding_dim),
            nn.GELU(),
            nn.Linear(4 * embedding_dim, embedding_dim),
            nn.Dropout(residual_dropout),
        )

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[1]
        # True above the diagonal: a token never attends to a later one.
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), diagonal=1)
        normed = self.norm1(x)
        attended = self.attention(
            normed,
            normed,
            normed,
            attn_mask=causal,
            key_padding_mask=padding_mask,
            need_weights=False,
        )[0]
        x = x + self.drop(attended)
        residual: torch.Tensor = self.mlp(self.norm2(x))
        return x + residual


def init_transformer_weights(module: nn.Module) -> None:
    """GPT-2's initialisation (OSRL's): normal(0, 0.02) linear and embedding weights, zero
    biases, unit LayerNorm. Apply with ``network.apply(init_transformer_weights)``."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.zeros_(module.bias)
        nn.init.ones_(module.weight)


class TemporalResidualBlock(nn.Module):
    """Two dilated 1-D convolutions over time with GroupNorm and Mish, FiLM-conditioned on an
    embedding (scale and shift after the first), plus a residual connection (Diffuser's block,
    without its down/up-sampling)."""

    def __init__(self, width: int, embedding_dim: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        groups = 8 if width % 8 == 0 else 1
        self.first = nn.Sequential(
            nn.Conv1d(width, width, kernel_size, padding=padding, dilation=dilation),
            nn.GroupNorm(groups, width),
            Mish(),
        )
        self.second = nn.Sequential(
            nn.Conv1d(width, width, kernel_size, padding=padding, dilation=dilation),
            nn.GroupNorm(groups, width),
            Mish(),
        )
        self.film = nn.Sequential(Mish(), nn.Linear(embedding_dim, 2 * width))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(embedding).unsqueeze(-1).chunk(2, dim=1)  # (B, width, 1) each
        residual: torch.Tensor = self.second(self.first(x) * (1.0 + scale) + shift)
        return x + residual


class TemporalConvDenoiser(nn.Module):
    """Predicts the noise in a noised trajectory segment, given the timestep and a condition.

    ``eps(x_t, t | c)`` for segments ``x`` of shape ``(B, H, feature_dim)``: a 1-D convolution
    network over the ``H`` steps (dilations 1, 2, 4, ... so the receptive field spans the
    segment), every block FiLM-conditioned on the sum of the timestep's Fourier features and
    the condition's embedding. ``condition_mask`` (``(B,)``, 1 keep, 0 drop) replaces the
    condition by a learned null embedding: the unconditional model of classifier-free guidance.
    """

    def __init__(
        self,
        feature_dim: int,
        condition_dim: int,
        width: int = 64,
        n_blocks: int = 4,
        kernel_size: int = 5,
        time_dim: int = 32,
    ) -> None:
        super().__init__()
        self.time_embedding = time_embedding(time_dim)
        self.condition_embedding = mlp(condition_dim, time_dim, (2 * time_dim,), "mish")
        self.null_condition = nn.Parameter(torch.zeros(time_dim))
        self.input = nn.Conv1d(feature_dim, width, 1)
        self.blocks = nn.ModuleList(
            TemporalResidualBlock(width, time_dim, kernel_size, dilation=2 ** (k % 4))
            for k in range(n_blocks)
        )
        self.output = nn.Conv1d(width, feature_dim, 1)

    def forward(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor,
        condition_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embedded = self.condition_embedding(condition)  # (B, time_dim)
        if condition_mask is not None:
            keep = condition_mask.reshape(-1, 1).to(embedded.dtype)
            embedded = keep * embedded + (1.0 - keep) * self.null_condition
        embedding = self.time_embedding(t) + embedded
        x = self.input(noisy.transpose(1, 2))  # (B, width, H)
        for block in self.blocks:
            x = block(x, embedding)
        noise: torch.Tensor = self.output(x)
        return noise.transpose(1, 2)  # (B, H, feature_dim)
