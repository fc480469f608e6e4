"""Every task id as a Gymnasium id: ``gymnasium.make("safe_agents/OfflineCarCircle-v0")``.

The ids live in the ``safe_agents`` namespace because ``import dsrl`` registers DSRL's own
environments under the bare ids (``OfflineCarCircle-v0``), built on the old simulator versions.
The entry point is :func:`envs.make`, so the environment is the same one (``info["cost"]`` on
every step, the task's episode length); Gymnasium adds its usual checker and order wrappers
around it. ``import envs`` registers the ids without importing any simulator.
"""

from __future__ import annotations

import gymnasium as gym

from envs.tasks import _static_task_ids

NAMESPACE = "safe_agents"


def gymnasium_id(task_id: str) -> str:
    """The Gymnasium id of a task: ``"safe_agents/<task_id>"``."""
    return f"{NAMESPACE}/{task_id}"


def register_tasks() -> list[str]:
    """Register every task with Gymnasium (idempotent); returns the Gymnasium ids."""
    ids = []
    for task_id in _static_task_ids():
        env_id = gymnasium_id(task_id)
        if env_id not in gym.registry:
            # No max_episode_steps here: envs.make already applies the task's episode length.
            gym.register(env_id, entry_point="envs.adapters:make", kwargs={"task_id": task_id})
        ids.append(env_id)
    return ids
