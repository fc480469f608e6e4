"""What ``envs`` accepts as a policy, a candidate sampler and a safety score.

Structural types: any object with the right methods or call signature fits, with no base class
to inherit, so a stable-baselines3 model, an agent of :mod:`safe_agents`, a scripted controller
or a user's own function all work with :func:`envs.evaluate` and :class:`envs.SafetyFilter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@runtime_checkable
class Predictor(Protocol):
    """A policy with stable-baselines3's ``predict``: ``(actions, state)`` for observations.

    ``state`` is the policy's context across steps (None for Markov policies; CDT's history),
    ``episode_start`` marks the first step of an episode.
    """

    def predict(
        self,
        observation: NDArray[Any],
        state: Any = None,
        episode_start: NDArray[Any] | None = None,
        deterministic: bool = False,
    ) -> tuple[NDArray[Any], Any]: ...


#: A plain controller: observation ``(obs_dim,)`` -> action ``(act_dim,)``.
ActionFunction: TypeAlias = Callable[[NDArray[Any]], NDArray[Any]]
#: What :func:`envs.evaluate` and :func:`envs.collect_episodes` run.
Policy: TypeAlias = Predictor | ActionFunction


class CandidateSampler(Protocol):
    """``sampler(observation, n) -> (n, act_dim)`` alternative actions for one observation,
    e.g. ``agent.candidate_actions`` of FISOR or SPI."""

    def __call__(self, observation: NDArray[Any], n: int, /) -> NDArray[np.floating[Any]]: ...


class SafetyScore(Protocol):
    """``score(observation, actions (n, act_dim)) -> (n,)``, lower is safer, e.g.
    ``agent.action_cost`` (FISOR's ``Q_h``: feasible when ``<= 0``)."""

    def __call__(
        self, observation: NDArray[Any], actions: NDArray[np.floating[Any]], /
    ) -> NDArray[np.floating[Any]]: ...
