"""Rollouts: a checkpoint's policy recorded with Gaussian action noise at several levels.

The action is the policy's mean plus ``noise * half_range * N(0, 1)``, clipped to the action
space; the noise levels spread one checkpoint's episodes from its best behaviour toward random
play, from low to high return and cost. Each noise level draws its noise and its episode starts
from its own random streams, ``(seed, stream, behaviour, checkpoint, level)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from envs.collect.plan import STREAM_EPISODES, STREAM_NOISE, Deadline, stream_seed
from envs.datasets import OfflineDataset
from envs.evaluation import collect_episodes

if TYPE_CHECKING:
    from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

    from envs.collect.workdir import PolicyWeights


def checkpoint_policy(
    env: gym.Env, weights: PolicyWeights, net_arch: Sequence[int]
) -> ActorCriticPolicy:
    """The checkpoint's policy network for ``env``'s spaces, in evaluation mode."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    policy = ActorCriticPolicy(
        env.observation_space,
        env.action_space,
        lambda _: 0.0,
        net_arch=list(net_arch),
    )
    policy.load_state_dict(weights["policy"])
    policy.set_training_mode(False)
    return policy


def record_noise_levels(
    env: gym.Env,
    policy: BasePolicy,
    noise_levels: Sequence[float],
    episodes_per_noise: int,
    deadline: Deadline,
    stream_key: tuple[int, int, int],
) -> list[OfflineDataset] | None:
    """Record ``episodes_per_noise`` episodes of ``policy`` at every noise level.

    Args:
        env: the environment (episode ``i`` of a level is reset with its seed plus ``i``).
        policy: the checkpoint's policy (:func:`checkpoint_policy`).
        noise_levels: noise standard deviations, as fractions of the action half-range.
        episodes_per_noise: episodes per level.
        deadline: checked before each level.
        stream_key: ``(seed, behaviour, checkpoint)``, which with the level picks the streams.

    Returns:
        One dataset per level, or None when the deadline passed before the last level.
    """
    seed, behaviour, checkpoint = stream_key
    parts = []
    for index, noise in enumerate(noise_levels):
        if deadline.passed():
            return None
        rng = np.random.default_rng(stream_seed(seed, STREAM_NOISE, behaviour, checkpoint, index))
        act = noisy_policy(policy, env.action_space, noise, rng)
        episodes_seed = stream_seed(seed, STREAM_EPISODES, behaviour, checkpoint, index)
        parts.append(collect_episodes(env, act, episodes_per_noise, seed=episodes_seed))
    return parts


def noisy_policy(
    policy: BasePolicy, space: gym.Space, noise: float, rng: np.random.Generator
) -> Callable[[np.ndarray], np.ndarray]:
    """The policy's mean action plus Gaussian noise of ``noise`` half-ranges, clipped.

    Args:
        policy: a stable-baselines3 policy (its deterministic action is the mean).
        space: the action space (a Box; other spaces count as ``[-1, 1]``).
        noise: the noise standard deviation, as a fraction of the half-range.
        rng: draws the noise.

    Returns:
        ``obs -> action`` (float32).
    """
    low = np.asarray(getattr(space, "low", -1.0), dtype=np.float64)
    high = np.asarray(getattr(space, "high", 1.0), dtype=np.float64)
    half_range = np.where(np.isfinite(high - low), (high - low) / 2.0, 1.0)

    def act(obs: np.ndarray) -> np.ndarray:
        action, _ = policy.predict(obs, deterministic=True)
        action = np.asarray(action, dtype=np.float64)
        if noise > 0:
            action = action + noise * half_range * rng.standard_normal(action.shape)
        return np.clip(action, low, high).astype(np.float32)

    return act
