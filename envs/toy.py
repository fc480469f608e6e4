"""``OfflineToyReachAvoid-v0``: a tiny numpy point-mass reach-avoid task.

The agent is a point in the square ``[-1, 1]^2`` that moves by at most :data:`MAX_STEP` per step
toward the action direction (single-integrator dynamics, actions in ``[-1, 1]^2``). It starts near
the lower-left corner; the goal disc sits in the upper-right corner and a hazard disc sits on the
straight line between them. Each step pays ``1 - distance_to_goal / DIAGONAL`` (so reaching the goal
early and staying there earns the most) and costs 1 while inside the hazard. Going straight through
the hazard is the fastest route and costs about 16; going around costs nothing and a few steps of
reward, so the unconstrained optimum is unsafe, as in the benchmark tasks.

The observation is the position itself, which makes a learned feasibility value over the plane
directly drawable (FISOR's feasible-region picture). Episodes last :data:`EPISODE_LENGTH` steps and
are truncated, never terminated.

The shipped dataset is recorded by :mod:`envs.toy_dataset` (``python -m envs.toy_dataset``).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

EPISODE_LENGTH = 100
MAX_STEP = 0.05
GOAL = np.array([0.75, 0.75])
GOAL_RADIUS = 0.1
HAZARD = np.array([0.0, 0.0])
HAZARD_RADIUS = 0.4
START = np.array([-0.75, -0.75])
START_SPREAD = 0.15
DIAGONAL = 2.0 * np.sqrt(2.0)


class ToyReachAvoidEnv(gym.Env):
    """Point-mass reach-avoid task; ``info["cost"]`` is 1.0 inside the hazard disc, else 0.0."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.render_mode = render_mode
        self._position = START.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        offset = self.np_random.uniform(-START_SPREAD, START_SPREAD, size=2)
        self._position = START + offset
        return self._position.astype(np.float32), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self._position = np.clip(self._position + MAX_STEP * action, -1.0, 1.0)
        distance = float(np.linalg.norm(self._position - GOAL))
        reward = 1.0 - distance / DIAGONAL
        cost = float(in_hazard(self._position))
        info = {"cost": cost, "at_goal": distance <= GOAL_RADIUS}
        return self._position.astype(np.float32), reward, False, False, info

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """A 128x128 RGB picture: hazard red, goal green, agent black."""
        if self.render_mode != "rgb_array":
            return None
        size = 128
        axis = np.linspace(-1.0, 1.0, size)
        xs, ys = np.meshgrid(axis, axis[::-1])
        points = np.stack([xs, ys], axis=-1)  # (size, size, 2)
        image = np.full((size, size, 3), 255, dtype=np.uint8)
        image[np.linalg.norm(points - HAZARD, axis=-1) <= HAZARD_RADIUS] = (230, 80, 80)
        image[np.linalg.norm(points - GOAL, axis=-1) <= GOAL_RADIUS] = (80, 190, 80)
        image[np.linalg.norm(points - self._position, axis=-1) <= 0.04] = (0, 0, 0)
        return image


def in_hazard(position: np.ndarray) -> np.ndarray:
    """Whether each position (``(..., 2)``) lies inside the hazard disc."""
    return np.linalg.norm(np.asarray(position) - HAZARD, axis=-1) <= HAZARD_RADIUS


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 1e-8 else np.zeros_like(vector)


def scripted_policy(
    margin: float, noise: float = 0.0, rng: np.random.Generator | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A scripted controller that heads for the goal and skirts the hazard by ``margin``.

    ``margin`` is the clearance kept from the hazard's edge: positive values go around it
    (cautious), ``-HAZARD_RADIUS`` or less goes straight through (reckless), values in between cut
    through part of it. ``noise`` adds Gaussian action noise of that standard deviation.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    avoid_radius = HAZARD_RADIUS + margin

    def policy(obs: np.ndarray) -> np.ndarray:
        position = np.asarray(obs, dtype=np.float64).reshape(2)
        to_goal = GOAL - position
        away = position - HAZARD
        distance = np.linalg.norm(away)
        heading = _unit(to_goal)
        # Circle around the hazard while the straight line to the goal would enter the
        # avoidance disc and the goal lies beyond it (the tangent direction never stalls).
        closest = _closest_point_on_segment(HAZARD, position, GOAL)
        if avoid_radius > 0 and np.linalg.norm(closest - HAZARD) < avoid_radius:
            tangent = np.array([-away[1], away[0]])
            if np.dot(tangent, to_goal) < 0:
                tangent = -tangent
            push = max(0.0, avoid_radius - float(distance)) / max(avoid_radius, 1e-8)
            heading = _unit(_unit(tangent) + 2.0 * push * _unit(away) + 0.3 * heading)
        action = heading + noise * rng.standard_normal(2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return policy


def random_policy(rng: np.random.Generator | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Uniform random actions."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return lambda obs: rng.uniform(-1.0, 1.0, size=2).astype(np.float32)


def _closest_point_on_segment(point: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    segment = end - start
    length_sq = float(np.dot(segment, segment))
    if length_sq < 1e-12:
        return start
    fraction = np.clip(np.dot(point - start, segment) / length_sq, 0.0, 1.0)
    return start + fraction * segment
