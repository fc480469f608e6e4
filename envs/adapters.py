"""The three simulators (and the toy task) behind one Gymnasium API.

Every environment returned by :func:`make` steps with the Gymnasium 5-tuple
``(obs, reward, terminated, truncated, info)`` and puts the step's cost, a Python float, in
``info["cost"]``. The outermost wrapper is a :class:`CostAdapter`, which also carries the task's
registry record as ``task_spec`` (read by the metrics wrappers through :func:`find_task_spec`).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from envs import _compat
from envs.tasks import TaskSpec, get_task
from envs.toy import ToyReachAvoidEnv

#: km/h per m/s: MetaDrive 0.3+ reports the ego's speed in m/s, DSRL's cost counts km/h.
KMH_PER_MS = 3.6

# MetaDrive runs one engine per process, shared by every environment object: the environment
# whose reset started it owns it. Left alone, a second environment's reset drives the owner's
# engine (MetaDrive fails later with "Agents: 0 != Num_agents: 1") and its close() closes it.
# The engine keeps its owner alive anyway (it holds the owner's reset as an event handler), so
# an owner dropped without close() blocks MetaDrive until close_metadrive_engine().
_metadrive_owner: gym.Env | None = None
_ENGINE_TAKEN = (
    "MetaDrive allows one environment per process and another MetaDrive environment of this "
    "process is open: close it (env.close()) before {action} this one, or, when it is out of "
    "reach, call envs.adapters.close_metadrive_engine()"
)


def close_metadrive_engine() -> None:
    """Close this process's MetaDrive engine, whichever environment started it.

    The way out when the environment that reset last is out of reach (dropped without
    ``close()``, or lost with an exception): the next MetaDrive environment's ``reset`` starts
    a fresh engine. The dropped environment must not be used again.
    """
    global _metadrive_owner
    from metadrive.engine.engine_utils import close_engine, engine_initialized

    if engine_initialized():
        close_engine()
    _metadrive_owner = None


def _claim_metadrive_engine(env: gym.Env) -> None:
    """Make ``env`` the owner of the process's MetaDrive engine, or refuse clearly."""
    global _metadrive_owner
    from metadrive.engine.engine_utils import engine_initialized

    if _metadrive_owner is env:
        return
    if engine_initialized():
        raise RuntimeError(_ENGINE_TAKEN.format(action="resetting"))
    _metadrive_owner = env


def _release_metadrive_engine(env: gym.Env) -> bool:
    """Whether ``env`` owned the engine (and no longer does): only then may it close it."""
    global _metadrive_owner
    if _metadrive_owner is not env:
        return False
    _metadrive_owner = None
    return True


class CostAdapter(gym.Wrapper):
    """Gymnasium 5-tuple with ``info["cost"]`` as a float, whatever the simulator returns.

    Args:
        env: the simulator's environment.
        task_spec: the task's registry record (kept for metrics and evaluation).
        six_tuple: the simulator steps with Safety-Gymnasium's
            ``(obs, reward, cost, terminated, truncated, info)``; otherwise the cost is read from
            ``info["cost"]`` of a Gymnasium 5-tuple.
    """

    def __init__(
        self,
        env: gym.Env,
        task_spec: TaskSpec | None = None,
        six_tuple: bool = False,
        seed_generators: bool = False,
    ):
        super().__init__(env)
        self.task_spec = task_spec
        self._six_tuple = six_tuple
        self._seed_generators = seed_generators

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset; with ``seed``, the episode (and the env's ``np_random``) is reproducible.

        With ``seed_generators`` (simulators that do not implement Gymnasium's seeding), a
        seeded reset also seeds the global ``random`` and ``numpy.random`` generators, which
        Bullet-Safety-Gym draws its start states from, and the unwrapped environment's
        ``np_random``, as ``gymnasium.Env.reset(seed=...)`` does.
        """
        if seed is not None and self._seed_generators:
            random.seed(seed)
            np.random.seed(seed)
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None and self._seed_generators:
            gym.Env.reset(self.env.unwrapped, seed=seed)
        return obs, info

    def step(self, action):
        if self._six_tuple:
            obs, reward, cost, terminated, truncated, info = self.env.step(action)
        else:
            obs, reward, terminated, truncated, info = self.env.step(action)
            if "cost" not in info:
                raise RuntimeError(
                    f"{type(self.env.unwrapped).__name__} returned no info['cost']; CostAdapter "
                    "needs a safe-RL environment"
                )
            cost = info["cost"]
        info = dict(info)
        info["cost"] = float(cost)
        return obs, float(reward), bool(terminated), bool(truncated), info


def find_task_spec(env: gym.Env) -> TaskSpec | None:
    """The registry record carried by ``env``'s wrapper chain, or None for a custom environment."""
    current: Any = env
    while current is not None:
        spec = vars(current).get("task_spec")
        if isinstance(spec, TaskSpec):
            return spec
        current = getattr(current, "env", None) if isinstance(current, gym.Wrapper) else None
    return None


def make(task_id: str, **overrides: Any) -> gym.Env:
    """Create the environment of a registered task.

    Args:
        task_id: a DSRL task id (see :func:`envs.list_tasks`), e.g. ``"OfflineCarCircle-v0"``.
        **overrides: ``max_episode_steps`` to change the episode length; any other keyword is
            passed to the simulator (Safety-Gymnasium / Bullet keyword arguments of
            ``make``, MetaDrive configuration keys, or the toy task's constructor).

    Returns:
        A ``gymnasium.Env`` whose ``step`` returns the 5-tuple with ``info["cost"]``.

    Raises:
        UnknownTaskError: for an unknown ``task_id`` (the message lists close matches).
        SimulatorNotInstalledError: (an ``ImportError``) when the task's simulator is not
            installed; the message names the extra to install.
    """
    spec = get_task(task_id)
    max_episode_steps = overrides.pop("max_episode_steps", spec.max_episode_steps)
    if (
        isinstance(max_episode_steps, bool)
        or not isinstance(max_episode_steps, int | np.integer)
        or max_episode_steps < 1
    ):
        raise ValueError(f"max_episode_steps must be an integer >= 1, got {max_episode_steps!r}")
    max_episode_steps = int(max_episode_steps)
    kwargs = {**spec.env_kwargs, **overrides}
    try:
        return _make_task_env(spec, max_episode_steps, kwargs)
    except ModuleNotFoundError as error:
        if spec.simulator == "toy":
            raise
        missing = error.name
        raise _compat.SimulatorNotInstalledError(spec.task_id, spec.simulator, missing) from error


def _make_task_env(spec: TaskSpec, max_episode_steps: int, kwargs: dict[str, Any]) -> gym.Env:
    if spec.simulator == "toy":
        env: gym.Env = ToyReachAvoidEnv(**kwargs)
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
        return CostAdapter(env, spec)
    if spec.simulator == "bullet":
        _compat.import_bullet_safety_gym()  # registers the Safety*-v0 ids with gymnasium

        env = gym.make(spec.env_name, max_episode_steps=max_episode_steps, **kwargs)
        return CostAdapter(env, spec, seed_generators=True)
    if spec.simulator == "safety_gymnasium":
        safety_gymnasium = _compat.import_safety_gymnasium()
        env = safety_gymnasium.make(spec.env_name, max_episode_steps=max_episode_steps, **kwargs)
        return CostAdapter(env, spec, six_tuple=True, seed_generators=True)
    if spec.simulator == "metadrive":
        env = make_metadrive(max_episode_steps=max_episode_steps, **kwargs)
        return CostAdapter(env, spec, seed_generators=True)
    raise AssertionError(f"unhandled simulator {spec.simulator!r}")


def make_metadrive(**config: Any) -> gym.Env:
    """DSRL's SafeMetaDrive task on MetaDrive 0.4.3, headless, with state observations.

    Recreates ``dsrl.offline_metadrive.gym_envs.SafeMetaDriveEnv_FSRL`` (written for an older
    MetaDrive API): one fixed map from a block sequence, randomized hybrid traffic, no accidents,
    and DSRL's cost shaping on top of MetaDrive's crash / out-of-road cost:
    ``+ max(0, 0.01 * (speed_kmh - 10))`` and ``+ 0.01 * max(0, 0.1 - min(lidar))^2``. DSRL's
    MetaDrive (0.2.6) reported ``info["velocity"]`` in km/h; 0.3 and later report m/s, so the
    speed is converted (safe-agents 0.1.0 did not: its cost charged speed above 36 km/h, at a
    3.6x smaller slope). Likewise the two entries of the state observation that 0.2.6 filled
    with the previous step's action (steering and throttle of ``a_{t-1}``) hold the action just
    taken since MetaDrive 0.4; they are set back to the previous action, so an observation
    means what it means in DSRL's data.
    Episodes end (terminated) on arrival, crash or leaving the road, and are truncated at the
    horizon. ``reset(seed=s)`` always loads the task's one map and seeds the traffic with ``s``.
    MetaDrive allows one environment per process: several may be made while none has reset,
    but once one has reset, until it is closed, making or resetting another raises
    ``RuntimeError`` (closing one that never reset leaves the open one alone;
    :func:`close_metadrive_engine` frees the engine of one that is out of reach).

    Args:
        **config: MetaDrive configuration keys; ``max_episode_steps`` sets the horizon. The
            observation is set (``agent_observation``): a config with ``agent_observation``
            replaces it, without the previous-action entries; ``image_observation`` is refused.

    Raises:
        ValueError: ``image_observation=True`` (the tasks observe states, as DSRL's).
        RuntimeError: another MetaDrive environment of this process has reset and is open.
    """
    if config.get("image_observation"):
        raise ValueError(
            "the MetaDrive tasks observe states, as DSRL's do: image_observation is not supported"
        )
    _compat.ensure_metadrive_offline_assets()
    from metadrive.base_class.randomizable import Randomizable
    from metadrive.engine.engine_utils import engine_initialized

    if engine_initialized():  # MetaDrive's own check says only "after engine initialization"
        raise RuntimeError(_ENGINE_TAKEN.format(action="making"))
    from metadrive.envs import SafeMetaDriveEnv
    from metadrive.manager.traffic_manager import TrafficMode
    from metadrive.obs.state_obs import LidarStateObservation, StateObservation

    class PreviousActionState(StateObservation):  # type: ignore[misc]
        """The ego state of MetaDrive 0.2.6: its action entries hold the previous action."""

        def vehicle_state(self, vehicle: Any) -> list[float]:
            # 0.4 reads the action just taken from last_current_action[1] where 0.2.6 read the
            # previous one from [0]: present [previous, previous] while the state is read, so
            # every configuration's layout (detectors, agent model) is MetaDrive's own.
            actions = vehicle.last_current_action
            vehicle.last_current_action = deque([actions[0], actions[0]], maxlen=actions.maxlen)
            try:
                state: list[float] = super().vehicle_state(vehicle)
            finally:
                vehicle.last_current_action = actions
            return state

    class DSRLObservation(LidarStateObservation):  # type: ignore[misc]
        """MetaDrive's lidar-and-state observation with 0.2.6's ego state."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.state_obs = PreviousActionState(config)

    class DSRLSafeMetaDriveEnv(SafeMetaDriveEnv):
        def step(self, actions):
            obs, reward, terminated, truncated, info = super().step(actions)
            # DSRL's threshold and slope are per km/h; info["velocity"] is m/s since MetaDrive 0.3.
            info["velocity_cost"] = max(0.0, 1e-2 * (KMH_PER_MS * info["velocity"] - 10.0))
            # The last 240 entries of the state observation are the lidar distances.
            info["proximity_cost"] = 1e-2 * max(0.0, 0.1 - float(np.min(obs[-240:]))) ** 2
            info["cost"] = info["cost"] + info["velocity_cost"] + info["proximity_cost"]
            truncated = bool(info["max_step"])
            terminated = bool(info["arrive_dest"] or info["crash"] or info["out_of_road"])
            return obs, reward, terminated, truncated and not terminated, info

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            _claim_metadrive_engine(self)
            self._traffic_seed = seed
            return super().reset(seed=None)

        def close(self):
            # Closing an environment that never reset must not close another one's engine.
            if _release_metadrive_engine(self):
                super().close()

        def render(self, *args, **kwargs):
            if not _compat.metadrive_has_real_assets():
                raise RuntimeError(
                    "MetaDrive rendering needs its real assets, which are not installed (this "
                    "machine runs MetaDrive headless with state observations only); install them "
                    "with `python -m metadrive.pull_asset` where the network allows"
                )
            return super().render(*args, **kwargs)

        def _reset_global_seed(self, force_seed=None):
            # One map per task (scenario index = start_seed); the episode seed drives traffic.
            super()._reset_global_seed(self.start_index)
            if getattr(self, "_traffic_seed", None) is not None:
                Randomizable.seed(self.engine.traffic_manager, int(self._traffic_seed))

    horizon = config.pop("max_episode_steps", 1000)
    defaults = {
        "start_seed": 0,
        "num_scenarios": 1,
        "map": "SCS",
        "traffic_density": 0.1,
        "accident_prob": 0.0,
        "horizon": horizon,
        "random_traffic": True,
        "traffic_mode": TrafficMode.Hybrid,
        "crash_vehicle_penalty": 0.0,
        "agent_observation": DSRLObservation,
        "log_level": logging.WARNING,
    }
    env = DSRLSafeMetaDriveEnv({**defaults, **config})
    return env
