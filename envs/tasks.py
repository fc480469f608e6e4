"""The task registry: DSRL task id -> simulator, config, episode length, cost limit, references.

Reference episode returns and costs are DSRL's published values, read from the ``dsrl`` package
(``dsrl.infos``) the first time a task is looked up; the toy task's come from its shipped dataset.
Without ``dsrl`` (a core install) only the toy task is registered, and looking up a DSRL task
raises an ``ImportError`` that says how to install it.
They are what the normalized metrics divide by (see :mod:`envs.metrics`).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from envs import _compat

Simulator = Literal["toy", "bullet", "safety_gymnasium", "metadrive"]

#: FISOR's evaluation protocol uses a cost limit of 10 on every DSRL task.
DEFAULT_COST_LIMIT = 10.0


@dataclass(frozen=True)
class TaskSpec:
    """Everything the package knows about one task.

    Attributes:
        task_id: the DSRL id, e.g. ``"OfflineCarCircle-v0"``.
        simulator: which simulator runs it.
        env_name: the simulator's own id (Bullet/Safety-Gymnasium) or configuration name
            (MetaDrive, e.g. ``"easysparse"``).
        max_episode_steps: the episode length L (truncation).
        cost_limit: the default episode cost limit kappa.
        reward_min / reward_max: reference episode returns for normalization.
        cost_min / cost_max: reference episode costs (as DSRL reports them).
        env_kwargs: default keyword arguments for the simulator (overridable in :func:`envs.make`).
        dsrl_name: the task's key in DSRL's tables (``dsrl.infos``, e.g. ``"CarCircle"``), which
            names its dataset file; None for the package's own toy task.
    """

    task_id: str
    simulator: Simulator
    env_name: str
    max_episode_steps: int
    cost_limit: float
    reward_min: float
    reward_max: float
    cost_min: float
    cost_max: float
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    dsrl_name: str | None = None


# DSRL's MetaDrive configurations (dsrl/offline_metadrive/gym_envs.py), in MetaDrive 0.4.3 keys:
# road -> (start_seed, block sequence); traffic -> density.
METADRIVE_ROADS = {"easy": (0, "SCS"), "medium": (100, "XST"), "hard": (200, "TRO")}
METADRIVE_TRAFFIC = {"sparse": 0.1, "mean": 0.15, "dense": 0.2}

BULLET_TASKS = [
    f"{agent}{task}" for agent in ("Ball", "Car", "Drone", "Ant") for task in ("Run", "Circle")
]
SAFETY_GYMNASIUM_NAVIGATION = [
    f"{agent}{task}{level}"
    for agent in ("Point", "Car")
    for task in ("Goal", "Button", "Push", "Circle")
    for level in (1, 2)
]
SAFETY_GYMNASIUM_VELOCITY = [
    f"{agent}Velocity" for agent in ("Ant", "HalfCheetah", "Hopper", "Swimmer", "Walker2d")
]

TOY_TASK_ID = "OfflineToyReachAvoid-v0"
# Reference values of the toy task: the lowest and highest episode return and the highest episode
# cost in its shipped dataset (envs/data/OfflineToyReachAvoid-v0.hdf5, built by
# `python -m envs.toy_dataset`), exactly as DSRL derives its references from its datasets.
TOY_REFERENCE = {
    "reward_min": 14.843152433633804,
    "reward_max": 86.44994395971298,
    "cost_min": 0.0,
    "cost_max": 39.0,
}
TOY_COST_LIMIT = 5.0


def _dsrl_reference(infos: Any, name: str) -> dict[str, float]:
    return {
        "reward_min": float(infos.MIN_EPISODE_REWARD[name]),
        "reward_max": float(infos.MAX_EPISODE_REWARD[name]),
        "cost_min": float(infos.MIN_EPISODE_COST[name]),
        "cost_max": float(infos.MAX_EPISODE_COST[name]),
    }


def _static_task_ids() -> list[str]:
    """Every task id, known without importing dsrl (for the Gymnasium registration at import)."""
    ids = [f"Offline{name}-v0" for name in BULLET_TASKS]
    ids += [f"Offline{name}Gymnasium-v0" for name in SAFETY_GYMNASIUM_NAVIGATION]
    ids += [f"Offline{name}Gymnasium-v1" for name in SAFETY_GYMNASIUM_VELOCITY]
    ids += [
        f"OfflineMetadrive-{road}{traffic}-v0"
        for road in METADRIVE_ROADS
        for traffic in METADRIVE_TRAFFIC
    ]
    return sorted([*ids, TOY_TASK_ID])


@functools.cache
def _registry() -> dict[str, TaskSpec]:
    tasks: dict[str, TaskSpec] = {}
    tasks[TOY_TASK_ID] = TaskSpec(
        task_id=TOY_TASK_ID,
        simulator="toy",
        env_name="ToyReachAvoid",
        max_episode_steps=100,
        cost_limit=TOY_COST_LIMIT,
        reward_min=TOY_REFERENCE["reward_min"],
        reward_max=TOY_REFERENCE["reward_max"],
        cost_min=TOY_REFERENCE["cost_min"],
        cost_max=TOY_REFERENCE["cost_max"],
    )
    infos = _compat.import_dsrl_infos()
    if infos is None:
        # A core install: the toy task only. get_task names what the DSRL tasks need.
        return tasks

    def add(task_id: str, simulator: Simulator, env_name: str, dsrl_name: str, **kwargs: Any):
        tasks[task_id] = TaskSpec(
            task_id=task_id,
            simulator=simulator,
            env_name=env_name,
            max_episode_steps=int(infos.DEFAULT_MAX_EPISODE_STEPS[dsrl_name]),
            cost_limit=DEFAULT_COST_LIMIT,
            env_kwargs=kwargs,
            dsrl_name=dsrl_name,
            **_dsrl_reference(infos, dsrl_name),
        )

    for name in BULLET_TASKS:
        add(f"Offline{name}-v0", "bullet", f"Safety{name}-v0", name)
    for name in SAFETY_GYMNASIUM_NAVIGATION:
        add(f"Offline{name}Gymnasium-v0", "safety_gymnasium", f"Safety{name}-v0", name)
    for name in SAFETY_GYMNASIUM_VELOCITY:
        add(f"Offline{name}Gymnasium-v1", "safety_gymnasium", f"Safety{name}-v1", name)
    for road, (start_seed, blocks) in METADRIVE_ROADS.items():
        for traffic, density in METADRIVE_TRAFFIC.items():
            name = road + traffic
            add(
                f"OfflineMetadrive-{name}-v0",
                "metadrive",
                name,
                name,
                start_seed=start_seed,
                map=blocks,
                traffic_density=density,
            )
    return tasks


#: How to install what the DSRL tasks' registry entries come from.
DSRL_INSTALL_HINT = (
    "pip install --no-deps dsrl==0.1.0 (without its dependencies: it pins safety-gymnasium "
    "0.4.0; scripts/install.sh installs it)"
)


class UnknownTaskError(KeyError):
    """An unknown task id; the message lists the closest registered ids."""

    def __str__(self) -> str:
        return str(self.args[0])


def list_tasks(simulator: Simulator | None = None) -> list[str]:
    """All registered task ids, optionally only those of one simulator."""
    return sorted(
        task_id
        for task_id, spec in _registry().items()
        if simulator is None or spec.simulator == simulator
    )


def get_task(task_id: str) -> TaskSpec:
    """The registry record of ``task_id``.

    Raises:
        UnknownTaskError: (a ``KeyError``) for an unknown id, listing the closest registered ids.
        MissingDependencyError: (an ``ImportError``) for a DSRL task when the ``dsrl`` package
            is not installed.
    """
    registry = _registry()
    if task_id in registry:
        return registry[task_id]
    if task_id in _static_task_ids():
        raise _compat.MissingDependencyError(
            f"{task_id} is a DSRL task: its episode length and reference returns come from DSRL's "
            f"tables in the dsrl package, which is not installed here. {DSRL_INSTALL_HINT}"
        )
    needle = task_id.lower()
    close = [known for known in registry if needle in known.lower()][:5]
    close = close or difflib.get_close_matches(task_id, registry, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownTaskError(
        f"Unknown task id {task_id!r}.{hint} `safe-agents info` or envs.list_tasks() lists all "
        f"{len(registry)} tasks."
    )
