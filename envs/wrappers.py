"""Wrappers: normalized episode metrics, cost stripping and the safety filter.

Both keep the Gymnasium API unchanged, so they stack with any other wrapper and pass
``gymnasium.utils.env_checker.check_env``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.adapters import find_task_spec
from envs.metrics import Normalizer
from envs.protocols import CandidateSampler, SafetyScore
from safe_agents.common.candidates import select_candidates


def find_wrapper(env: gym.Env, wrapper_type: type) -> Any | None:
    """The outermost wrapper of ``wrapper_type`` in ``env``'s chain, or None."""
    current: Any = env
    while current is not None:
        if isinstance(current, wrapper_type):
            return current
        current = current.env if isinstance(current, gym.Wrapper) else None
    return None


def step_cost(env: gym.Env, info: dict[str, Any]) -> float:
    """This step's cost: ``info["cost"]``, or what a :class:`StripCost` below kept aside.

    Raises:
        KeyError: the environment reports no cost at all.
    """
    if "cost" in info:
        return float(info["cost"])
    stripper = find_wrapper(env, StripCost)
    if stripper is None:
        raise KeyError("the environment's info has no 'cost' (is it a safe-RL environment?)")
    return stripper.last_cost


class StripCost(gym.Wrapper):
    """Hides every cost from the agent, for the cost-label-free setting.

    Removes ``info["cost"]`` and every other info key containing ``"cost"`` (MetaDrive reports
    several). The removed step cost stays available to metrics as :attr:`last_cost` and the
    running :attr:`episode_cost`; :func:`envs.evaluate` and :class:`NormalizedMetrics` read it
    from there.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.last_cost = 0.0
        self.episode_cost = 0.0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.last_cost = 0.0
        self.episode_cost = 0.0
        return obs, self._strip(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.last_cost = step_cost(self.env, info)
        self.episode_cost += self.last_cost
        return obs, reward, terminated, truncated, self._strip(info)

    @staticmethod
    def _strip(info: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in info.items() if "cost" not in key}


class NormalizedMetrics(gym.Wrapper):
    """Adds ``info["normalized_metrics"]`` at the end of each episode: return, cost, length,
    normalized return and normalized cost (formulas in :mod:`envs.metrics`).

    The figures live under their own key, not ``info["episode"]``, which belongs to
    Gymnasium's ``RecordEpisodeStatistics`` and stable-baselines3's ``Monitor``: the three stack
    in any order, and SB3's ``evaluate_policy`` works on top.

    Args:
        env: the environment (its cost may sit under a :class:`StripCost`).
        task_id: a registered task whose reference values to use; by default the task the
            environment was made for by :func:`envs.make`.
        reward_range: ``(R_min, R_max)`` for a custom environment (overrides the task's).
        cost_limit: the cost limit kappa (overrides the task's).

    Raises:
        ValueError: no reference returns or cost limit are known for this environment.
    """

    INFO_KEY = "normalized_metrics"

    def __init__(
        self,
        env: gym.Env,
        task_id: str | None = None,
        *,
        reward_range: tuple[float, float] | None = None,
        cost_limit: float | None = None,
    ) -> None:
        super().__init__(env)
        self.normalizer = resolve_normalizer(env, task_id, reward_range, cost_limit)
        if self.normalizer is None:
            raise ValueError(
                "NormalizedMetrics needs reference values: pass task_id, or reward_range and "
                "cost_limit for a custom environment"
            )
        self._return = 0.0
        self._cost = 0.0
        self._length = 0

    def reset(self, **kwargs):
        self._return, self._cost, self._length = 0.0, 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._cost += step_cost(self.env, info)
        self._length += 1
        if terminated or truncated:
            info = dict(info)
            info[self.INFO_KEY] = {
                "return": self._return,
                "cost": self._cost,
                "length": self._length,
                "normalized_return": float(self.normalizer.normalized_return(self._return)),
                "normalized_cost": float(self.normalizer.normalized_cost(self._cost)),
            }
        return obs, reward, terminated, truncated, info


def resolve_normalizer(
    env: gym.Env,
    task_id: str | None = None,
    reward_range: tuple[float, float] | None = None,
    cost_limit: float | None = None,
) -> Normalizer | None:
    """Reference values for ``env``: explicit ones, a named task's, a wrapper's, or env's task.

    Returns None when nothing is known (a custom environment without explicit values).
    """
    from envs.tasks import get_task

    spec = get_task(task_id) if task_id is not None else find_task_spec(env)
    inner = find_wrapper(env, NormalizedMetrics)
    base = inner.normalizer if inner is not None and task_id is None else None
    if reward_range is None:
        if spec is not None:
            reward_range = (spec.reward_min, spec.reward_max)
        elif base is not None:
            reward_range = (base.reward_min, base.reward_max)
    if cost_limit is None:
        if spec is not None:
            cost_limit = spec.cost_limit
        elif base is not None:
            cost_limit = base.cost_limit
    if reward_range is None or cost_limit is None:
        return None
    return Normalizer(float(reward_range[0]), float(reward_range[1]), float(cost_limit))


class SafetyFilter(gym.Wrapper):
    """Executes the safest of several candidate actions (a shield for any policy).

    On each step the policy's proposed action is scored together with ``n - 1`` alternatives:
    Gaussian perturbations of it (``noise_scale`` times the action range), or actions from a
    given sampler (e.g. FISOR's diffusion policy). If the proposed action's score is within
    ``threshold`` it is executed unchanged; otherwise the candidate with the lowest score is.
    ``info["safety_filter"]`` records ``replaced``, ``proposed_score`` and ``chosen_score``.

    Args:
        env: the environment.
        candidates: None (perturb the proposed action) or ``sampler(obs, n) -> (n, act_dim)``,
            e.g. ``agent.candidate_actions``.
        score: ``score(obs, actions (n, act_dim)) -> (n,)``, lower is safer, e.g.
            ``agent.action_cost`` (FISOR's ``Q_h``: feasible when ``<= 0``).
        n: candidates per step, the proposed action included.
        threshold: proposed actions scoring at most this are kept.
        noise_scale: standard deviation of the perturbations, as a fraction of the action range.
        seed: seeds the perturbations.
    """

    def __init__(
        self,
        env: gym.Env,
        candidates: CandidateSampler | None = None,
        score: SafetyScore | None = None,
        n: int = 16,
        threshold: float = 0.0,
        noise_scale: float = 0.3,
        seed: int | None = None,
    ) -> None:
        super().__init__(env)
        if score is None or not callable(score):
            raise ValueError(
                "SafetyFilter needs score(obs, actions) -> scores, e.g. agent.action_cost"
            )
        if candidates is not None and not callable(candidates):
            raise ValueError("candidates must be None or a callable sampler(obs, n)")
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be >= 2 (the proposed action and an alternative), got {n}")
        if not np.isfinite(threshold) or not np.isfinite(noise_scale) or noise_scale < 0:
            raise ValueError(
                f"threshold must be finite and noise_scale finite and >= 0, got {threshold!r} "
                f"and {noise_scale!r}"
            )
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ValueError("SafetyFilter needs a Box action space")
        self.box: gym.spaces.Box = env.action_space
        self.sampler = candidates
        self.score = score
        self.n = n
        self.threshold = threshold
        self.noise_scale = noise_scale
        self.rng = np.random.default_rng(seed)
        self.interventions = 0
        self._obs: Any = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs, info

    def _candidates(self, proposed: np.ndarray) -> np.ndarray:
        space = self.box
        if self.sampler is not None:
            others = np.asarray(self.sampler(self._obs, self.n - 1), dtype=np.float32)
            if others.size != (self.n - 1) * proposed.size:
                raise ValueError(
                    f"the candidate sampler returned shape {others.shape}; expected "
                    f"({self.n - 1}, {proposed.size}) for n={self.n}"
                )
        else:
            spread = self.noise_scale * (space.high - space.low)
            noise = self.rng.normal(size=(self.n - 1, *proposed.shape)) * spread
            others = (proposed + noise).astype(np.float32)
        others = others.reshape(self.n - 1, *proposed.shape)
        return np.clip(np.concatenate([proposed[None], others]), space.low, space.high)  # (n, A)

    def step(self, action):
        space = self.box
        action = np.asarray(action, dtype=np.float32)
        if action.size != int(np.prod(space.shape)) or not np.isfinite(action).all():
            raise ValueError(
                f"SafetyFilter got the action {action!r}: it needs a finite action of shape "
                f"{space.shape}"
            )
        proposed = np.clip(action.reshape(space.shape), space.low, space.high)
        candidates = self._candidates(proposed)
        scores = np.asarray(self.score(self._obs, candidates), dtype=np.float32)
        if scores.size != self.n:
            raise ValueError(
                f"score(obs, actions) returned shape {scores.shape} for {self.n} candidates; "
                f"it must return one score per candidate, shape ({self.n},)"
            )
        scores = scores.reshape(self.n)
        # A candidate of unknown safety (non-finite score or action) is never executed in place
        # of another: its score counts as +inf, and with no finite score at all it is an error.
        known = np.isfinite(scores) & np.isfinite(candidates.reshape(self.n, -1)).all(axis=1)
        if not known.any():
            raise ValueError(
                f"every candidate's safety score is non-finite ({scores.tolist()}); the score "
                "function or the candidates are broken"
            )
        scores = np.where(known, scores, np.inf).astype(np.float32)
        if known[0] and scores[0] <= self.threshold:
            index = 0
        else:
            _, chosen = select_candidates(
                torch.as_tensor(candidates[None]), torch.as_tensor(scores[None])
            )
            index = int(chosen[0])
        replaced = index != 0
        self.interventions += int(replaced)
        obs, reward, terminated, truncated, info = self.env.step(candidates[index])
        self._obs = obs
        info = dict(info)
        info["safety_filter"] = {
            "replaced": replaced,
            "proposed_score": float(scores[0]),
            "chosen_score": float(scores[index]),
        }
        return obs, reward, terminated, truncated, info
