"""Diffusion over actions: noise schedules and DDPM / DDIM samplers (method names as in diffusers).

``NoiseScheduler`` holds a discrete schedule ``beta_1..beta_T`` and the derived
``alphas_cumprod`` (written ``abar`` below):

- ``add_noise(x0, noise, t)``: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (forward);
- ``set_timesteps(n)``: the descending timesteps a sampler visits, ``n <= T`` for few-step sampling;
- ``step(eps, t, x_t)``: one reverse step with the predicted noise, DDPM (stochastic, Ho et al.
  2020) or DDIM (Song et al. 2021, ``eta`` = 0 deterministic, 1 DDPM-like);
- ``sample(...)``: the whole reverse chain from Gaussian noise, optionally clipping every step.

Timesteps are 0-based indices ``t = 0..T-1`` into the schedule arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SCHEDULES = ("vp", "linear", "cosine")
SAMPLERS = ("ddpm", "ddim")
# The noise of a stochastic DDPM step (diffusers' names): the posterior's std
# sqrt(beta_t (1 - abar_{t-1}) / (1 - abar_t)) ("fixed_small"), or sqrt(beta_t) ("fixed_large",
# the choice of Ho et al.'s other variant and of FISOR's sampler).
VARIANCE_TYPES = ("fixed_small", "fixed_large")


def vp_beta_schedule(
    num_timesteps: int, beta_min: float = 0.1, beta_max: float = 10.0
) -> torch.Tensor:
    """The variance-preserving SDE discretised to ``T`` steps (as in IDQL, FISOR, DRCORL).

    ``alpha_t = exp(-beta_min / T - (beta_max - beta_min) (2t - 1) / (2 T^2))``,
    ``beta_t = 1 - alpha_t``.
    """
    t = torch.arange(1, num_timesteps + 1, dtype=torch.float64)
    T = float(num_timesteps)
    alphas = torch.exp(-beta_min / T - 0.5 * (beta_max - beta_min) * (2 * t - 1) / T**2)
    return (1.0 - alphas).float()


def linear_beta_schedule(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 2e-2
) -> torch.Tensor:
    """Linearly spaced betas (Ho et al. 2020)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64).float()


def cosine_beta_schedule(num_timesteps: int, s: float = 0.008) -> torch.Tensor:
    """The cosine schedule of Nichol & Dhariwal (2021), betas clipped to 0.999."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alphas_cumprod = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=0.999).float()


class NoiseScheduler:
    """A discrete diffusion schedule with DDPM and DDIM reverse steps.

    Args:
        num_train_timesteps: T, the number of diffusion steps of training.
        beta_schedule: ``"vp"`` (default, the papers'), ``"linear"`` or ``"cosine"``.
        sampler: ``"ddpm"`` or ``"ddim"``.
        eta: DDIM stochasticity (0 deterministic, 1 DDPM-like); ignored by DDPM.
        variance_type: the noise of a DDPM step, ``"fixed_small"`` (the posterior's, default)
            or ``"fixed_large"`` (``sqrt(beta_t)``); ignored by DDIM.
    """

    def __init__(
        self,
        num_train_timesteps: int = 5,
        beta_schedule: str = "vp",
        sampler: str = "ddpm",
        eta: float = 0.0,
        variance_type: str = "fixed_small",
    ) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        if beta_schedule not in SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {SCHEDULES}, got {beta_schedule!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(
                f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}"
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        self.variance_type = variance_type
        self.num_train_timesteps = num_train_timesteps
        self.sampler = sampler
        self.eta = eta
        if beta_schedule == "vp":
            self.betas = vp_beta_schedule(num_train_timesteps)
        elif beta_schedule == "linear":
            self.betas = linear_beta_schedule(num_train_timesteps)
        else:
            self.betas = cosine_beta_schedule(num_train_timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.set_timesteps(num_train_timesteps)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Choose the descending timesteps the sampler visits (evenly spaced, always ending at 0).

        With fewer steps than ``T``, DDPM steps between visited timesteps use the combined
        ``abar`` ratio (the same skip rule as DDIM), so few-step sampling works for both.
        """
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {self.num_train_timesteps}], "
                f"got {num_inference_steps}"
            )
        steps = torch.linspace(0, self.num_train_timesteps - 1, num_inference_steps)
        self.timesteps = steps.round().long().flip(0)
        visited = self.timesteps.tolist()
        self._visited: list[int] = visited  # Python numbers: a compiled sampler reads no tensor
        # Each visited timestep's successor and abar, as Python numbers: a reverse step then
        # reads no tensor (sampling is called at every action of an episode).
        self._previous: dict[int, int] = dict(zip(visited, [*visited[1:], -1], strict=True))
        self._abar = [float(value) for value in self.alphas_cumprod.tolist()]
        return self.timesteps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` for per-sample timesteps ``t``."""
        # (B, 1, ..., 1): one abar per sample, broadcast over x0's other dimensions.
        abar = self.alphas_cumprod.to(x0.device)[t].reshape(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def previous_timestep(self, t: int) -> int:
        """The timestep visited after ``t`` (-1 after the last).

        Raises:
            ValueError: ``t`` is not a visited timestep.
        """
        if t not in self._previous:
            raise ValueError(f"{t} is not a visited timestep ({self.timesteps.tolist()})")
        return self._previous[t]

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One reverse step from ``x_t`` to the next visited timestep, given predicted noise.

        ``noise`` replaces the Gaussian draw of a stochastic step (common random numbers).
        """
        prev = self.previous_timestep(t)
        sample_coefficient, noise_coefficient, sigma = self._step_coefficients(t, prev)
        # The step's mean is linear in x_t and the predicted noise: two operations, not five.
        mean = torch.add(sample_coefficient * sample, model_output, alpha=-noise_coefficient)
        if prev < 0 or sigma == 0.0:  # the last step, or a deterministic one: no noise added
            return mean
        if noise is None:
            noise = torch.randn(
                sample.shape, generator=generator, device=sample.device, dtype=sample.dtype
            )
        return torch.add(mean, noise, alpha=sigma)

    def _step_coefficients(self, t: int, prev: int) -> tuple[float, float, float]:
        """``(a, b, sigma)`` of the reverse step ``t -> prev``: mean ``a x_t - b eps``, noise
        ``sigma``.

        The predicted clean sample is ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``
        (add_noise solved for x0). DDPM's mean is the posterior's, ``q(x_prev | x_t, x0)`` (Ho et
        al. 2020), with the step's ``alpha = abar_t / abar_prev`` (a product over skipped
        steps); DDIM's is ``sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps``. Both are
        expanded in ``x_t`` and ``eps``.
        """
        abar_t = self._abar[t]
        abar_prev = self._abar[prev] if prev >= 0 else 1.0
        x0_from_sample = 1.0 / math.sqrt(abar_t)
        x0_from_noise = math.sqrt(1.0 - abar_t) / math.sqrt(abar_t)
        if self.sampler == "ddim":
            sigma = self.eta * math.sqrt(
                (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)
            )
            direction = math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0))
            scale = math.sqrt(abar_prev)
            return scale * x0_from_sample, scale * x0_from_noise - direction, sigma
        alpha_step = abar_t / abar_prev
        beta_step = 1.0 - alpha_step
        x0_weight = math.sqrt(abar_prev) * beta_step / (1.0 - abar_t)
        sample_weight = math.sqrt(alpha_step) * (1.0 - abar_prev) / (1.0 - abar_t)
        if self.variance_type == "fixed_large":
            sigma = math.sqrt(beta_step)
        else:
            sigma = math.sqrt(beta_step * (1.0 - abar_prev) / (1.0 - abar_t))
        return x0_weight * x0_from_sample + sample_weight, x0_weight * x0_from_noise, sigma

    def sample(
        self,
        model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        clip: float | None = 1.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the reverse chain from ``N(0, I)`` noise of ``shape``.

        Args:
            model: ``model(x_t, t) -> predicted noise``, ``t`` a ``(1,)`` long tensor: one
                timestep for the whole batch, which the model broadcasts (its embedding is
                computed once, not once per row).
            generator: drives the initial noise and every stochastic step.
            clip: clamp to ``[-clip, clip]`` after every step (actions live in ``[-1, 1]``).
            noise: ``(len(timesteps) + 1, *shape)`` pre-drawn noise (initial sample, then one
                per step) instead of drawing from ``generator``: fixed noise makes sampling a
                deterministic function of the model's inputs.
        """
        expected = (len(self.timesteps) + 1, *shape)
        if noise is not None and tuple(noise.shape) != expected:
            raise ValueError(f"noise must have shape {expected}, got {tuple(noise.shape)}")
        x = (
            noise[0]
            if noise is not None
            else torch.randn(shape, generator=generator, device=device)
        )
        for k, t in enumerate(self._visited):
            t_tensor = torch.full((1,), t, dtype=torch.long, device=device)  # (1,), broadcast
            step_noise = noise[k + 1] if noise is not None else None
            x = self.step(model(x, t_tensor), t, x, generator, noise=step_noise)
            if clip is not None:  # every step, as FISOR's sampler: x stays in the action box
                x = x.clamp(-clip, clip)
        return x

    def sampling_noise(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """The ``(len(timesteps) + 1, *shape)`` noise that :meth:`sample` would draw from
        ``generator``, drawn in its order: the initial sample, then each stochastic step's
        (zeros for the steps that add none). ``sample(noise=...)`` with it equals
        ``sample(generator=...)``; a compiled update, which cannot take a generator, samples so.
        """
        draws = [torch.randn(shape, generator=generator, device=device)]
        for t in self._visited:
            prev = self.previous_timestep(t)
            if prev < 0 or self._step_coefficients(t, prev)[2] == 0.0:
                draws.append(torch.zeros(shape, device=device))
            else:
                draws.append(torch.randn(shape, generator=generator, device=device))
        return torch.stack(draws)

    def training_targets(
        self, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random timesteps, noise and the noised samples for the noise-prediction loss.

        Returns:
            ``(x_t, t, noise)`` with ``t`` uniform in ``[0, T)``.
        """
        # t uniform: DDPM's simple (unweighted) noise-prediction loss.
        t = torch.randint(
            self.num_train_timesteps, (x0.shape[0],), generator=generator, device=x0.device
        )
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self.add_noise(x0, noise, t), t, noise
