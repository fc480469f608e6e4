"""The base of the diffusion agents that act by sampling candidate actions and scoring their safety.

FISOR and SPI draw several actions per state from a diffusion policy and execute the one their
critics score best; the same two steps, offered as :meth:`SafetyCriticAgent.candidate_actions`
and :meth:`SafetyCriticAgent.action_cost`, let ``envs.SafetyFilter`` shield any other policy.
Kept apart from :mod:`safe_agents.common.base` so that the contract module needs no diffusion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from safe_agents.common.base import BaseAgent
from safe_agents.common.config import DiffusionPolicyConfig
from safe_agents.common.device import torch_threads
from safe_agents.common.diffusion import NoiseScheduler
from safe_agents.common.seeding import make_generator


class SafetyCriticAgent(BaseAgent):
    """A diffusion-policy agent that samples candidate actions and scores their safety.

    FISOR and SPI. Subclasses build ``self.scheduler`` (a ``NoiseScheduler``) and
    ``self.actor_ema`` (the noise network used for sampling) and implement
    ``_safety_scores(obs, actions) -> (B, n)`` (lower is safer, actions in ``[-1, 1]``); this
    gives ``envs.SafetyFilter`` its two callables, :meth:`candidate_actions` and
    :meth:`action_cost`.
    """

    scheduler: NoiseScheduler
    actor_ema: nn.Module
    config: DiffusionPolicyConfig
    # (steps, n) -> (steps, 1, n, act_dim): the deterministic path's noise, a function of the
    # seed only, drawn once.
    _common_noise_cache: dict[tuple[int, int], torch.Tensor]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._common_noise_cache = {}
        super().__init__(*args, **kwargs)
        # A single observation's choice (an episode's every step): one program with compile=True.
        self._choose_one = self._compiled_if_asked("act", self._choose, [self.actor_ema])

    def _sample_actions(
        self, network: nn.Module, obs: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """``(B, act_dim)`` actions in ``[-1, 1]``, one per standardized observation, drawn
        with ``generator`` (SPI's next actions).

        Gradients flow through the chain when enabled.
        """
        return self.scheduler.sample(
            lambda x, t: network(x, t, obs), (len(obs), self.act_dim), generator, self.device
        )

    def _candidates(self, obs: torch.Tensor, n: int, deterministic: bool) -> torch.Tensor:
        """``(B, n, act_dim)`` candidates from the EMA network, drawn with the act generator."""
        return self._candidates_from(obs, self._candidate_noise(len(obs), n, deterministic))

    def _candidate_noise(self, batch: int, n: int, deterministic: bool) -> torch.Tensor:
        """The ``(steps + 1, batch * n, act_dim)`` noise of sampling ``n`` candidates per state:
        the seed's common noise (deterministic) or fresh draws from the act generator."""
        steps = len(self.scheduler.timesteps) + 1
        if deterministic:
            return self._common_noise(batch, n, steps)
        shape = (batch * n, self.act_dim)
        return self.scheduler.sampling_noise(shape, self.act_generator, self.device)

    def _candidates_from(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``(B, n, act_dim)`` candidates sampled by the EMA network with ``noise``
        (:meth:`_candidate_noise`)."""
        if self.actor_ema.training:  # eval() walks every submodule: not on each call
            self.actor_ema.eval()
        n = noise.shape[1] // len(obs)
        repeated = obs.repeat_interleave(n, dim=0) if n > 1 else obs  # (B*n, obs_dim)
        sampled = self.scheduler.sample(
            lambda x, t: self.actor_ema(x, t, repeated),
            (len(repeated), self.act_dim),
            device=obs.device,
            noise=noise,
        )
        return sampled.reshape(len(obs), n, self.act_dim)

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """The candidates' noise, then :meth:`_choose`; with ``compile=True`` a single
        observation's choice (an episode's every step) is one compiled program."""
        noise = self._candidate_noise(len(obs), self.config.n_candidates, deterministic)
        if len(obs) == 1 and self.compile:
            if self.actor_ema.training:  # set here: the program then never changes the mode
                self.actor_ema.eval()
            return self._choose_one(obs, noise)  # type: ignore[no-any-return]
        return self._choose(obs, noise)

    def _choose(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``(B, act_dim)`` actions: the candidates sampled with ``noise``, the best executed."""
        raise NotImplementedError

    def _safety_scores(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def candidate_actions(self, observation: NDArray[Any], n: int = 16) -> NDArray[np.float32]:
        """``n`` actions sampled from the policy per observation (environment units).

        Returns ``(n, act_dim)`` for one observation, ``(B, n, act_dim)`` for a batch.
        """
        obs, single = self._check_observation(observation)
        with torch_threads(self.torch_threads), torch.no_grad():
            tensor = self.obs_scaler(torch.as_tensor(obs, device=self.device))
            candidates = self.action_scaler.denormalize(self._candidates(tensor, n, False))
        result = candidates.cpu().numpy().astype(np.float32)
        return result[0] if single else result

    def action_cost(self, observation: NDArray[Any], actions: NDArray[Any]) -> NDArray[np.float32]:
        """The safety score of actions (lower is safer; each agent documents its scale).

        ``observation`` ``(obs_dim,)`` with ``actions`` ``(n, act_dim)`` gives ``(n,)``; a batch
        ``(B, obs_dim)`` with ``(B, n, act_dim)`` gives ``(B, n)``.
        """
        obs, single = self._check_observation(observation)
        actions = np.asarray(actions, dtype=np.float32)
        if single and actions.ndim == 2 and actions.shape[1] == self.act_dim:
            actions = actions[None]  # (1, n, act_dim)
        if actions.ndim != 3 or actions.shape[0] != len(obs) or actions.shape[2] != self.act_dim:
            raise ValueError(
                f"actions must be (n, {self.act_dim}) for one observation or (B, n, "
                f"{self.act_dim}) for a batch of B; got {actions.shape}"
            )
        with torch_threads(self.torch_threads), torch.no_grad():
            tensor = self.obs_scaler(torch.as_tensor(obs, device=self.device))
            scaled = self.action_scaler.normalize(torch.as_tensor(actions, device=self.device))
            scores = self._safety_scores(tensor, scaled.clamp(-1.0, 1.0)).cpu().numpy()
        return scores[0] if single else scores

    def _common_noise(self, batch: int, n: int, steps: int) -> torch.Tensor:
        """``(steps, B * n, act_dim)`` noise where every state sees the same ``n`` draws.

        Seeded by the agent's seed: sampling with it makes ``predict(deterministic=True)`` a
        fixed function of the observation, equal for single and batched calls.
        """
        key = (steps, n)
        if key not in self._common_noise_cache:
            # Drawn on the CPU: the same noise, so the same actions, on every device.
            generator = make_generator(self.seed, torch.device("cpu"))
            base = torch.randn((steps, 1, n, self.act_dim), generator=generator)
            self._common_noise_cache[key] = base.to(self.device)
        base = self._common_noise_cache[key]
        return base.expand(steps, batch, n, self.act_dim).reshape(steps, batch * n, self.act_dim)
