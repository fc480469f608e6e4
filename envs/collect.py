"""Building offline datasets: behaviour agents, noisy rollouts and a reward-cost density filter.

The DSRL download host is unreachable from many machines, so datasets are built locally the way
DSRL built them (Liu et al., 2023, "Datasets and Benchmarks for Offline Safe Reinforcement
Learning", Sec. 4):

1. **Behaviour agents.** stable-baselines3 PPO (one environment, one torch thread: it suits two
   cores) is trained once per *behaviour*: unconstrained, with a fixed cost penalty
   (``reward - lambda * cost``), or Lagrangian with a cost limit, where ``lambda`` follows the
   dual ascent rule ``lambda <- clip(lambda + lr * (C - kappa) / max(kappa, 1), 0, lambda_max)``
   after every PPO rollout (``C`` the mean cost of the episodes finished since the last update,
   ``kappa`` the behaviour's limit). The cost is scaled by the task's reference return per step
   (``reward_max / episode_length``), so ``lambda = 1`` makes a step of cost as bad as a typical
   step of reward is good, on every task. The policy is checkpointed ``n_checkpoints`` times
   along training, by default at 1/16, 1/8, 1/4, 1/2 and all of it (a geometric schedule: early
   checkpoints cover the middle returns that a fast learner passes quickly).
2. **Rollouts.** Every checkpoint (and the untrained initial policy of the first behaviour) is
   rolled out with Gaussian action noise at several levels (the mean action plus
   ``noise * half_range * N(0, 1)``, clipped), which spreads episodes from low to high return and
   cost.
3. **Density filter.** The episodes are binned on a grid over episode cost and return and each
   cell keeps at most ``bin_cap`` episodes drawn at random (:func:`density_filter`), so dense
   regions (converged policies) do not drown the rest of the reward-cost plane.
4. **Output.** A DSRL-format HDF5 file (:func:`envs.save_dataset`, atomic) whose metadata holds
   the task, its cost limit, the dataset's own min/max episode return and cost (the reference
   values, as DSRL defines them), the build settings, the seed and the package version; and a
   scatter picture of episode cost vs return next to it (``<out>.png``).

**Resuming.** Every finished stage (a training segment, a rollout of one checkpoint) is written
atomically into a work directory next to the output (``<out>.build/``) and recorded in its
``manifest.json``. A killed or budget-cut build rerun with the same settings continues from the
last finished stage. Each stage starts from files only (policy and optimizer weights, the cost
penalty's state) and reseeds everything from ``(seed, stage)``, so a resumed build writes exactly
the arrays of an uninterrupted one. The work directory is removed after a complete build unless
``keep_work_dir=True``.

**Time budget.** With ``train_steps=None`` the training length is planned from a short speed
measurement so that the build fits ``budget_minutes``; the plan is stored in the manifest (a
resumed build reuses it) and in the dataset's metadata. Pass ``train_steps`` for a build that
is identical on every machine (with the same library versions and ``torch_threads``). The
budget is also a hard deadline, checked at every training step and between the noise levels of a
rollout: when it passes, the unfinished stage is dropped, a dataset is written from the stages
finished so far (metadata ``complete: false``) and the work directory is kept; rerunning
continues the build (each call gets its own budget).

Checkpoints in the work directory hold only tensors (``torch.load(weights_only=True)``), never
pickled objects.

**Deviations from DSRL.** DSRL trained several online safe-RL algorithms (PPO-Lagrangian, CVPO,
DDPG-Lagrangian...) with many more steps and hand-tuned cost limits per task; here one PPO with
a reward penalty stands in for all of them, and the default budget is minutes, not GPU-days. The
reference values in the metadata are this dataset's extremes, not DSRL's published numbers (the
task registry keeps those).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from envs.datasets import OfflineDataset, cache_dir, read_hdf5, save_dataset
from envs.tasks import get_task

_LOG = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_MANIFEST_VERSION = 1
# Seed-sequence keys of the different random streams, so no two stages share a stream.
_STREAM_INIT, _STREAM_TRAIN, _STREAM_NOISE, _STREAM_EPISODES, _STREAM_FILTER = range(5)

BehaviourKind = Literal["unconstrained", "penalty", "limit"]


# ------------------------------------------------------------------------------------ behaviours
@dataclass(frozen=True)
class Behaviour:
    """How one behaviour agent trades reward against cost.

    Written as text in :class:`BuildConfig`: ``"unconstrained"``, ``"penalty:X"`` (reward minus
    ``X`` times the cost, fixed) or ``"limit:M"`` (Lagrangian with the cost limit ``M`` times the
    task's limit).

    Attributes:
        kind: ``"unconstrained"``, ``"penalty"`` or ``"limit"``.
        value: the fixed penalty (``penalty``), the multiple of the task's cost limit
            (``limit``), or 0 (``unconstrained``).
    """

    kind: BehaviourKind
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Behaviour:
        """Read ``"unconstrained"``, ``"penalty:X"`` or ``"limit:M"``.

        Raises:
            ValueError: any other text, or a negative number; the message shows the forms.
        """
        forms = "'unconstrained', 'penalty:X' (X >= 0) or 'limit:M' (M >= 0, times the task limit)"
        name, _, number = str(text).strip().partition(":")
        if name == "unconstrained" and not number:
            return cls("unconstrained")
        if name in ("penalty", "limit") and number:
            try:
                value = float(number)
            except ValueError:
                value = math.nan
            if math.isfinite(value) and value >= 0:
                return cls(name, value)  # type: ignore[arg-type]
        raise ValueError(f"bad behaviour {text!r}: expected {forms}")

    @property
    def name(self) -> str:
        """The text form (what :meth:`parse` reads)."""
        return self.kind if self.kind == "unconstrained" else f"{self.kind}:{self.value:g}"

    def cost_limit(self, task_cost_limit: float) -> float | None:
        """The episode cost limit the dual rule aims at, or None (no dual updates)."""
        return self.value * task_cost_limit if self.kind == "limit" else None

    def initial_penalty(self) -> float:
        """``lambda`` at the start of training."""
        return self.value if self.kind == "penalty" else 0.0


# ---------------------------------------------------------------------------------------- config
@dataclass(kw_only=True)
class BuildConfig:
    """Settings of a dataset build (everything but the task, seed, budget and paths).

    Every field is part of a build's identity: a build resumes only with the same values. The
    PPO defaults are stable-baselines3's.

    Attributes:
        behaviours: the behaviour agents, as :meth:`Behaviour.parse` text. Default: unconstrained
            and Lagrangian with 0.5x, 1x, 2x and 3x the task's cost limit.
        train_steps: PPO environment steps per behaviour, rounded up to a multiple of
            ``ppo_n_steps`` (at least ``n_checkpoints * ppo_n_steps``); None plans them from the
            time budget.
        n_checkpoints: checkpoints per behaviour (the last at the end of training).
        checkpoint_spacing: ``"geometric"`` (checkpoint ``k`` of ``K`` after a fraction
            ``2^(k-K)`` of training) or ``"linear"`` (equal segments); see
            :func:`checkpoint_steps`.
        noise_levels: action-noise standard deviations, as fractions of the action half-range.
        episodes_per_noise: episodes per checkpoint and noise level.
        rollout_initial_policy: also roll out the untrained policy of the first behaviour (the
            low-return corner of the plane).
        n_bins: grid cells per axis (episode cost, episode return) of the density filter.
        bin_cap: episodes kept per grid cell at most.
        lagrangian_lr: step size of the dual rule (per PPO rollout, on the violation relative to
            the limit).
        max_penalty: upper clip of ``lambda`` (in units of the task's reward per step).
        max_episode_steps: overrides the task's episode length (short episodes for tests);
            None keeps the task's.
        ppo_n_steps: PPO rollout length (SB3 ``n_steps``).
        ppo_batch_size: PPO minibatch size.
        ppo_n_epochs: PPO epochs per rollout.
        ppo_learning_rate: Adam learning rate (constant).
        ppo_gamma: discount factor.
        ppo_net_arch: hidden layer sizes of the policy and value networks.
        torch_threads: torch CPU threads while building (results are exact for a fixed count).
    """

    behaviours: tuple[str, ...] = ("unconstrained", "limit:0.5", "limit:1", "limit:2", "limit:3")
    train_steps: int | None = None
    n_checkpoints: int = 5
    checkpoint_spacing: str = "geometric"
    noise_levels: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    episodes_per_noise: int = 6
    rollout_initial_policy: bool = True
    n_bins: int = 20
    bin_cap: int = 8
    lagrangian_lr: float = 0.05
    max_penalty: float = 10.0
    max_episode_steps: int | None = None
    ppo_n_steps: int = 2048
    ppo_batch_size: int = 64
    ppo_n_epochs: int = 10
    ppo_learning_rate: float = 3e-4
    ppo_gamma: float = 0.99
    ppo_net_arch: tuple[int, ...] = (64, 64)
    torch_threads: int = 1

    def __post_init__(self) -> None:
        # JSON (the manifest, `--set`) gives lists; the config keeps tuples.
        self.behaviours = tuple(str(text) for text in self.behaviours)
        self.noise_levels = tuple(float(level) for level in self.noise_levels)
        self.ppo_net_arch = tuple(int(width) for width in self.ppo_net_arch)
        if not self.behaviours:
            raise ValueError("behaviours must name at least one behaviour agent")
        for text in self.behaviours:
            Behaviour.parse(text)
        if not self.noise_levels or any(
            not (math.isfinite(level) and level >= 0) for level in self.noise_levels
        ):
            raise ValueError(
                f"noise_levels must be a non-empty list of numbers >= 0, got {self.noise_levels}"
            )
        positive = {
            "n_checkpoints": self.n_checkpoints,
            "episodes_per_noise": self.episodes_per_noise,
            "n_bins": self.n_bins,
            "bin_cap": self.bin_cap,
            "ppo_n_steps": self.ppo_n_steps,
            "ppo_batch_size": self.ppo_batch_size,
            "ppo_n_epochs": self.ppo_n_epochs,
            "torch_threads": self.torch_threads,
        }
        if self.train_steps is not None:
            positive["train_steps"] = self.train_steps
        if self.max_episode_steps is not None:
            positive["max_episode_steps"] = self.max_episode_steps
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lagrangian_lr", "max_penalty", "ppo_learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.checkpoint_spacing not in ("geometric", "linear"):
            raise ValueError(
                "checkpoint_spacing must be 'geometric' or 'linear', got "
                f"{self.checkpoint_spacing!r}"
            )
        if not 0.0 < self.ppo_gamma <= 1.0:
            raise ValueError(f"ppo_gamma must lie in (0, 1], got {self.ppo_gamma}")
        if not self.ppo_net_arch or min(self.ppo_net_arch) < 1:
            raise ValueError(f"ppo_net_arch must list positive widths, got {self.ppo_net_arch}")

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> BuildConfig:
        """The defaults with ``overrides`` applied.

        Raises:
            ValueError: an unknown field (the message lists the valid ones) or a bad value.
        """
        valid = [item.name for item in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(f"unknown build setting(s) {unknown}; valid settings: {valid}")
        return cls(**dict(overrides))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def parsed_behaviours(self) -> list[Behaviour]:
        """:attr:`behaviours` parsed."""
        return [Behaviour.parse(text) for text in self.behaviours]


# ---------------------------------------------------------------------------- the cost penalty
class CostPenalty(gym.Wrapper):
    """Trains on ``reward - penalty * cost_scale * cost``; with a cost limit, a dual variable.

    The step's unpenalized reward stays in ``info["reward"]`` and the cost in ``info["cost"]``.
    Episode costs are counted as the episodes end; :meth:`update_penalty` (called once per PPO
    rollout) moves the penalty by the dual ascent rule
    ``clip(penalty + lr * (mean_cost - limit) / max(limit, 1), 0, max_penalty)`` and forgets
    the counted episodes. Without a limit the penalty stays fixed.

    Args:
        env: an environment whose ``info`` has ``"cost"`` (e.g. from :func:`envs.make`).
        penalty: the initial (or fixed) penalty ``lambda``.
        cost_limit: the episode cost limit of the dual rule; None keeps ``penalty`` fixed.
        lr: dual step size.
        max_penalty: upper clip of the penalty.
        cost_scale: reward units per unit of cost at ``penalty = 1`` (the builder uses the
            task's reference return per step, so penalties mean the same on every task).
    """

    def __init__(
        self,
        env: gym.Env,
        penalty: float = 0.0,
        cost_limit: float | None = None,
        lr: float = 0.05,
        max_penalty: float = 10.0,
        cost_scale: float = 1.0,
    ) -> None:
        super().__init__(env)
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        self.penalty = float(penalty)
        self.cost_limit = cost_limit
        self.lr = lr
        self.max_penalty = max_penalty
        self.cost_scale = cost_scale
        self.finished_costs: list[float] = []
        self._episode_cost = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._episode_cost = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        cost = float(info["cost"])
        self._episode_cost += cost
        if terminated or truncated:
            self.finished_costs.append(self._episode_cost)
            self._episode_cost = 0.0
        info = {**info, "reward": float(reward)}
        shaped = float(reward) - self.penalty * self.cost_scale * cost
        return obs, shaped, terminated, truncated, info

    def update_penalty(self) -> float:
        """Apply the dual rule to the episodes finished since the last update; returns lambda.

        Nothing changes without a cost limit or before an episode has finished (episodes longer
        than a rollout are counted at the next update).
        """
        if self.cost_limit is None or not self.finished_costs:
            return self.penalty
        violation = (float(np.mean(self.finished_costs)) - self.cost_limit) / max(
            self.cost_limit, 1.0
        )
        self.penalty = float(np.clip(self.penalty + self.lr * violation, 0.0, self.max_penalty))
        self.finished_costs = []
        return self.penalty

    def state_dict(self) -> dict[str, Any]:
        """What a resumed training needs (JSON-ready)."""
        return {"penalty": self.penalty, "finished_costs": list(self.finished_costs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values."""
        self.penalty = float(state["penalty"])
        self.finished_costs = [float(cost) for cost in state["finished_costs"]]


# -------------------------------------------------------------------------------- density filter
def _bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if not high > low:  # every value equal: one bin
        return np.zeros(len(values), dtype=np.int64)
    index = np.floor((values - low) / (high - low) * n_bins).astype(np.int64)
    return np.clip(index, 0, n_bins - 1)  # the maximum falls on the upper edge


def density_filter(
    returns: np.ndarray,
    costs: np.ndarray,
    bins: int | tuple[int, int] = 20,
    cap: int = 8,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Episodes to keep so that they spread over the reward-cost plane (DSRL's grid filter).

    The ranges of episode cost and return are each cut into equal bins; a grid cell holding more
    than ``cap`` episodes keeps ``cap`` of them drawn at random, other cells keep all.

    Args:
        returns: ``(E,)`` episode returns.
        costs: ``(E,)`` episode costs.
        bins: bins per axis, or ``(cost_bins, return_bins)``.
        cap: the most episodes kept per cell.
        rng: a generator or seed for the draws (None: seed 0, so the result is repeatable).

    Returns:
        ``(K,)`` sorted int64 indices of the kept episodes.

    Raises:
        ValueError: unequal lengths, non-finite values, or ``bins``/``cap`` below 1.
    """
    returns = np.asarray(returns, dtype=np.float64).reshape(-1)
    costs = np.asarray(costs, dtype=np.float64).reshape(-1)
    if len(returns) != len(costs):
        raise ValueError(f"returns has {len(returns)} episodes but costs has {len(costs)}")
    for name, values in (("returns", returns), ("costs", costs)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"{name} has a non-finite value at index {bad[0]}")
    cost_bins, return_bins = (bins, bins) if isinstance(bins, int) else bins
    if min(cost_bins, return_bins) < 1 or cap < 1:
        raise ValueError(f"bins and cap must be >= 1, got bins={bins}, cap={cap}")
    if not len(returns):
        return np.zeros(0, dtype=np.int64)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng or 0)
    cell = _bin_index(costs, cost_bins) * return_bins + _bin_index(returns, return_bins)
    kept = []
    for value in np.unique(cell):  # sorted, so the draws happen in a fixed order
        members = np.flatnonzero(cell == value)
        if len(members) > cap:
            members = generator.choice(members, size=cap, replace=False)
        kept.append(members)
    return np.sort(np.concatenate(kept)).astype(np.int64)


def checkpoint_steps(
    train_steps: int, n_checkpoints: int, rollout_steps: int, spacing: str = "geometric"
) -> list[int]:
    """Cumulative training steps at which the checkpoints are taken.

    Checkpoint ``k`` of ``K`` comes after a fraction ``2^(k-K)`` of ``train_steps``
    (``"geometric"``) or ``k/K`` (``"linear"``), rounded up to whole PPO rollouts of
    ``rollout_steps`` and at least one rollout after the previous checkpoint.

    Raises:
        ValueError: ``train_steps`` is not a multiple of ``rollout_steps`` or is shorter than
            one rollout per checkpoint, or ``spacing`` is unknown.
    """
    if train_steps % rollout_steps or train_steps < n_checkpoints * rollout_steps:
        raise ValueError(
            f"train_steps ({train_steps}) must be a multiple of the rollout length "
            f"({rollout_steps}) and at least {n_checkpoints} rollouts long"
        )
    if spacing not in ("geometric", "linear"):
        raise ValueError(f"spacing must be 'geometric' or 'linear', got {spacing!r}")
    rollouts = train_steps // rollout_steps
    steps, previous = [], 0
    for k in range(1, n_checkpoints + 1):
        fraction = 2.0 ** (k - n_checkpoints) if spacing == "geometric" else k / n_checkpoints
        # Leave room for one rollout per later checkpoint; the last one ends training exactly.
        current = max(math.ceil(fraction * rollouts), previous + 1)
        current = min(current, rollouts - (n_checkpoints - k))
        steps.append(current * rollout_steps)
        previous = current
    return steps


# ------------------------------------------------------------------------------------ the build
def _stream_seed(*key: int) -> int:
    """A seed for one random stream, derived from the build seed and the stage."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0] % 2**31)


def _atomic_write_text(path: Path, text: str) -> None:
    from safe_agents.common.fileio import atomic_write

    atomic_write(path, text)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("safe-agents")
    except PackageNotFoundError:
        return "unknown"


class _Deadline:
    """The wall-clock end of the budget (None: no end)."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def remaining(self) -> float:
        return math.inf if self.end is None else max(0.0, self.end - time.monotonic())


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    # PPO's small networks gain nothing from more threads, and a fixed count keeps results exact.
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Build:
    """One build's state: paths, plan, manifest; each stage is a method."""

    def __init__(
        self,
        task_id: str,
        out: Path,
        work: Path,
        config: BuildConfig,
        seed: int,
        deadline: _Deadline,
    ) -> None:
        self.task_id = task_id
        self.spec = get_task(task_id)
        self.out = out
        self.work = work
        self.config = config
        self.seed = seed
        self.deadline = deadline
        self.behaviours = config.parsed_behaviours()
        self.episode_length = config.max_episode_steps or self.spec.max_episode_steps
        # The task's reference return per step (DSRL's maximum over its full-length episodes).
        self.cost_scale = max(abs(self.spec.reward_max) / self.spec.max_episode_steps, 1e-3)
        self.manifest: dict[str, Any] = {}

    # -------------------------------------------------------------------------- environments
    def make_env(self) -> gym.Env:
        from envs.adapters import make

        if self.config.max_episode_steps is None:
            return make(self.task_id)
        return make(self.task_id, max_episode_steps=self.config.max_episode_steps)

    def new_ppo(self, env: gym.Env, seed: int) -> Any:
        from stable_baselines3 import PPO
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv

        config = self.config
        vec_env = DummyVecEnv([lambda: Monitor(env)])
        return PPO(
            "MlpPolicy",
            vec_env,
            n_steps=config.ppo_n_steps,
            batch_size=config.ppo_batch_size,
            n_epochs=config.ppo_n_epochs,
            learning_rate=config.ppo_learning_rate,
            gamma=config.ppo_gamma,
            policy_kwargs={"net_arch": list(config.ppo_net_arch)},
            seed=seed,
            device="cpu",
            verbose=0,
        )

    def new_penalty(self, env: gym.Env, behaviour: Behaviour) -> CostPenalty:
        return CostPenalty(
            env,
            penalty=behaviour.initial_penalty(),
            cost_limit=behaviour.cost_limit(self.spec.cost_limit),
            lr=self.config.lagrangian_lr,
            max_penalty=self.config.max_penalty,
            cost_scale=self.cost_scale,
        )

    # ------------------------------------------------------------------------------ manifest
    @property
    def identity(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "seed": self.seed, "config": self.config.to_dict()}

    def open_manifest(self) -> bool:
        """Load the manifest of an earlier run (True), or start a new one (False).

        Raises:
            ValueError: the work directory holds a build with other settings.
        """
        path = self.work / MANIFEST_NAME
        if not path.is_file():
            return False
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); delete {self.work} to start over"
            ) from error
        earlier = manifest.get("identity", {})
        if earlier != self.identity:
            now = {"task_id": self.task_id, "seed": self.seed, **self.identity["config"]}
            then = {
                "task_id": earlier.get("task_id"),
                "seed": earlier.get("seed"),
                **earlier.get("config", {}),
            }
            changed = sorted(key for key in set(now) | set(then) if now.get(key) != then.get(key))
            details = ", ".join(f"{key}: {then.get(key)!r} -> {now.get(key)!r}" for key in changed)
            raise ValueError(
                f"{self.work} holds an unfinished build with other settings ({details}); rerun "
                f"with the same settings to resume it, or delete {self.work} to start over"
            )
        self.manifest = manifest
        return True

    def start_manifest(self, plan: dict[str, Any]) -> None:
        self.manifest = {
            "version": _MANIFEST_VERSION,
            "identity": self.identity,
            "plan": plan,
            "done": [],
        }
        self.save_manifest()

    def save_manifest(self) -> None:
        _atomic_write_text(self.work / MANIFEST_NAME, json.dumps(self.manifest, indent=1))

    def is_done(self, stage: str) -> bool:
        return stage in self.manifest["done"]

    def mark_done(self, stage: str) -> None:
        self.manifest["done"].append(stage)
        self.save_manifest()

    def segment_steps(self, checkpoint: int) -> int:
        """Training steps from checkpoint ``checkpoint - 1`` to ``checkpoint``."""
        steps = [0, *self.manifest["plan"]["checkpoint_steps"]]
        return int(steps[checkpoint] - steps[checkpoint - 1])

    # ---------------------------------------------------------------------------------- plan
    def rollout_stages(self) -> list[tuple[int, int]]:
        """``(behaviour, checkpoint)`` pairs that are rolled out, in the canonical order."""
        stages = [(0, 0)] if self.config.rollout_initial_policy else []
        for checkpoint in range(1, self.config.n_checkpoints + 1):
            stages += [(behaviour, checkpoint) for behaviour in range(len(self.behaviours))]
        return stages

    def rollout_steps(self) -> int:
        """Upper bound of the environment steps of one rollout stage."""
        return len(self.config.noise_levels) * self.config.episodes_per_noise * self.episode_length

    def plan(self) -> dict[str, Any]:
        """Training steps per behaviour: the configured ones, or what fits the time budget."""
        config = self.config
        unit = config.n_checkpoints * config.ppo_n_steps
        if config.train_steps is not None:
            steps = max(
                unit, math.ceil(config.train_steps / config.ppo_n_steps) * config.ppo_n_steps
            )
            return {"train_steps": steps, "checkpoint_steps": self.checkpoints(steps)}
        if self.deadline.end is None:
            raise ValueError("give train_steps or budget_minutes (the training length needs one)")
        train_fps, rollout_fps = self.measure_speed()
        rollout_seconds = len(self.rollout_stages()) * self.rollout_steps() / rollout_fps
        # Leave a sixth of the budget for environment creation, file writes and slow spells.
        train_seconds = self.deadline.remaining() * 5 / 6 - rollout_seconds
        steps = int(train_seconds * train_fps / len(self.behaviours))
        steps = steps // config.ppo_n_steps * config.ppo_n_steps
        if steps < unit:
            _LOG.warning(
                "the time budget leaves %.0f s for training; training the minimum of %d steps per "
                "behaviour (the deadline may cut the build; rerun to continue it)",
                train_seconds,
                unit,
            )
            steps = unit
        return {
            "train_steps": steps,
            "checkpoint_steps": self.checkpoints(steps),
            "measured_train_steps_per_s": round(train_fps, 1),
            "measured_rollout_steps_per_s": round(rollout_fps, 1),
        }

    def checkpoints(self, train_steps: int) -> list[int]:
        config = self.config
        return checkpoint_steps(
            train_steps, config.n_checkpoints, config.ppo_n_steps, config.checkpoint_spacing
        )

    def measure_speed(self) -> tuple[float, float]:
        """PPO training and policy-rollout environment steps per second, measured briefly."""
        env = self.make_env()
        try:
            model = self.new_ppo(CostPenalty(env), seed=self.seed)
            start = time.perf_counter()
            model.learn(self.config.ppo_n_steps)
            train_fps = self.config.ppo_n_steps / (time.perf_counter() - start)
            act = _noisy_policy(model.policy, env.action_space, 0.0, np.random.default_rng(0))
            obs, _ = env.reset(seed=self.seed)
            start = time.perf_counter()
            steps, done = 0, False
            while not done:
                obs, _, terminated, truncated, _ = env.step(act(obs))
                steps += 1
                done = terminated or truncated
            rollout_fps = steps / (time.perf_counter() - start)
        finally:
            env.close()
        return train_fps, rollout_fps

    # -------------------------------------------------------------------------- checkpoints
    def checkpoint_path(self, behaviour: int, checkpoint: int) -> Path:
        return self.work / "checkpoints" / f"b{behaviour}_c{checkpoint}.pt"

    def save_checkpoint(
        self, model: Any, penalty: CostPenalty, behaviour: int, checkpoint: int
    ) -> None:
        """Policy and optimizer weights (loaded without pickle) plus the penalty's state."""
        from safe_agents.common.fileio import atomic_path

        path = self.checkpoint_path(behaviour, checkpoint)
        with atomic_path(path) as temporary:
            torch.save(
                {
                    "policy": model.policy.state_dict(),
                    "optimizer": model.policy.optimizer.state_dict(),
                },
                temporary,
            )
        _atomic_write_text(path.with_suffix(".json"), json.dumps(penalty.state_dict()))

    def load_checkpoint(self, behaviour: int, checkpoint: int) -> tuple[dict, dict[str, Any]]:
        path = self.checkpoint_path(behaviour, checkpoint)
        weights = torch.load(path, map_location="cpu", weights_only=True)
        return weights, json.loads(path.with_suffix(".json").read_text())

    # -------------------------------------------------------------------------------- stages
    def initial_checkpoint(self, behaviour: int) -> None:
        """Checkpoint 0: the untrained policy, seeded per behaviour."""
        env = self.make_env()
        try:
            penalty = self.new_penalty(env, self.behaviours[behaviour])
            model = self.new_ppo(penalty, _stream_seed(self.seed, _STREAM_INIT, behaviour))
            self.save_checkpoint(model, penalty, behaviour, 0)
        finally:
            env.close()

    def train_segment(self, behaviour: int, checkpoint: int, progress: Any) -> bool:
        """Train from checkpoint ``checkpoint - 1`` to ``checkpoint``; False if cut by the deadline.

        The segment starts from files alone and reseeds Python, NumPy, torch and the environment
        from ``(seed, behaviour, checkpoint)``: the same code runs whether the previous segment
        ran in this process or in a killed one, which is what makes a resumed build exact.
        """
        from stable_baselines3.common.callbacks import BaseCallback

        weights, penalty_state = self.load_checkpoint(behaviour, checkpoint - 1)
        env = self.make_env()
        try:
            penalty = self.new_penalty(env, self.behaviours[behaviour])
            penalty.load_state_dict(penalty_state)
            model = self.new_ppo(
                penalty, _stream_seed(self.seed, _STREAM_TRAIN, behaviour, checkpoint)
            )
            model.policy.load_state_dict(weights["policy"])
            model.policy.optimizer.load_state_dict(weights["optimizer"])
            deadline = self.deadline
            n_steps = self.config.ppo_n_steps

            class SegmentCallback(BaseCallback):
                """Dual update after each rollout; stops at the deadline."""

                cut = False

                def _on_step(self) -> bool:
                    self.cut = deadline.passed()
                    return not self.cut

                def _on_rollout_end(self) -> None:
                    penalty.update_penalty()
                    progress.update(n_steps)

            callback = SegmentCallback()
            # reset_num_timesteps=True: every segment starts from a freshly seeded env reset.
            model.learn(self.segment_steps(checkpoint), callback=callback, reset_num_timesteps=True)
            if callback.cut:
                return False
            self.save_checkpoint(model, penalty, behaviour, checkpoint)
        finally:
            env.close()
        return True

    def rollout_path(self, behaviour: int, checkpoint: int) -> Path:
        return self.work / "rollouts" / f"b{behaviour}_c{checkpoint}.hdf5"

    def rollout(self, behaviour: int, checkpoint: int) -> bool:
        """Record the checkpoint's episodes at every noise level; False if cut by the deadline."""
        from stable_baselines3.common.policies import ActorCriticPolicy

        from envs.evaluation import collect_episodes

        weights, penalty_state = self.load_checkpoint(behaviour, checkpoint)
        env = self.make_env()
        try:
            policy = ActorCriticPolicy(
                env.observation_space,
                env.action_space,
                lambda _: 0.0,
                net_arch=list(self.config.ppo_net_arch),
            )
            policy.load_state_dict(weights["policy"])
            policy.set_training_mode(False)
            parts = []
            for index, noise in enumerate(self.config.noise_levels):
                if self.deadline.passed():
                    return False
                key = (self.seed, behaviour, checkpoint, index)
                rng = np.random.default_rng(_stream_seed(key[0], _STREAM_NOISE, *key[1:]))
                act = _noisy_policy(policy, env.action_space, noise, rng)
                parts.append(
                    collect_episodes(
                        env,
                        act,
                        self.config.episodes_per_noise,
                        seed=_stream_seed(key[0], _STREAM_EPISODES, *key[1:]),
                    )
                )
        finally:
            env.close()
        part = OfflineDataset.concatenate(
            parts,
            metadata={
                "behaviour": self.behaviours[behaviour].name,
                "checkpoint": checkpoint,
                "penalty": penalty_state["penalty"],
            },
        )
        path = self.rollout_path(behaviour, checkpoint)
        save_dataset(part, path, compression=None)
        return True

    # -------------------------------------------------------------------------------- output
    def assemble(self) -> tuple[OfflineDataset, dict[str, Any]]:
        """Filter the finished rollouts into the dataset; also returns per-behaviour counts.

        Raises:
            TimeoutError: no rollout finished (the budget ran out first).
        """
        parts, labels = [], []
        for behaviour, checkpoint in self.rollout_stages():
            if self.is_done(f"rollout/{behaviour}/{checkpoint}"):
                part = read_hdf5(self.rollout_path(behaviour, checkpoint))
                parts.append(part)
                labels += [self.behaviours[behaviour].name] * part.n_episodes
        if not parts:
            raise TimeoutError(
                f"the time budget ran out before any episode of {self.task_id} was recorded; "
                "rerun the same command with a larger --budget-minutes to continue the build "
                f"(its checkpoints are in {self.work})"
            )
        everything = OfflineDataset.concatenate(parts, metadata={})
        returns, costs = everything.episode_returns(), everything.episode_costs()
        rng = np.random.default_rng(_stream_seed(self.seed, _STREAM_FILTER))
        keep = density_filter(returns, costs, self.config.n_bins, self.config.bin_cap, rng)
        kept = everything.select_episodes(keep)
        counts: dict[str, int] = {}
        for index in keep:
            counts[labels[index]] = counts.get(labels[index], 0) + 1
        return kept, {"episodes_recorded": everything.n_episodes, "episodes_by_behaviour": counts}

    def metadata(self, dataset: OfflineDataset, counts: dict[str, Any]) -> dict[str, Any]:
        returns, costs = dataset.episode_returns(), dataset.episode_costs()
        stages = self.all_stages()
        missing = [stage for stage in stages if not self.is_done(stage)]
        final_penalties = {}
        for index, behaviour in enumerate(self.behaviours):
            last = max(
                (k for k in range(self.config.n_checkpoints + 1) if self.has_checkpoint(index, k)),
                default=None,
            )
            if last is not None:
                final_penalties[behaviour.name] = self.load_checkpoint(index, last)[1]["penalty"]
        plan = self.manifest["plan"]
        return {
            "task_id": self.task_id,
            "cost_limit": float(self.spec.cost_limit),
            "reward_min": float(returns.min()),
            "reward_max": float(returns.max()),
            "cost_min": float(costs.min()),
            "cost_max": float(costs.max()),
            "max_episode_steps": int(self.episode_length),
            "behaviour": (
                f"stable-baselines3 PPO behaviour agents ({', '.join(self.config.behaviours)}), "
                f"{plan['train_steps']} steps each, {self.config.n_checkpoints} checkpoints, "
                f"action noise {list(self.config.noise_levels)}, density-filtered "
                f"({self.config.n_bins}x{self.config.n_bins} bins, cap {self.config.bin_cap})"
            ),
            "origin": "local",
            "builder": "envs.collect.build_dataset",
            "build_config": self.config.to_dict(),
            "build_plan": plan,
            "final_penalties": final_penalties,
            **counts,
            "seed": int(self.seed),
            "package_version": _package_version(),
            "complete": not missing,
            "missing_stages": len(missing),
        }

    def has_checkpoint(self, behaviour: int, checkpoint: int) -> bool:
        stage = f"init/{behaviour}" if checkpoint == 0 else f"train/{behaviour}/{checkpoint}"
        return self.is_done(stage)

    def all_stages(self) -> list[str]:
        stages = [f"init/{index}" for index in range(len(self.behaviours))]
        for checkpoint in range(1, self.config.n_checkpoints + 1):
            stages += [f"train/{index}/{checkpoint}" for index in range(len(self.behaviours))]
        stages += [f"rollout/{b}/{k}" for b, k in self.rollout_stages()]
        return stages


def _noisy_policy(
    policy: Any, space: gym.Space, noise: float, rng: np.random.Generator
) -> Callable[[np.ndarray], np.ndarray]:
    """The policy's mean action plus Gaussian noise of ``noise`` half-ranges, clipped."""
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


def default_output(task_id: str) -> Path:
    """Where :func:`build_dataset` writes by default: the user cache (found by ``load_dataset``)."""
    return cache_dir() / f"{task_id}.hdf5"


def work_dir(out: str | os.PathLike) -> Path:
    """The work directory of a build writing ``out``: ``<out>.build``."""
    out = Path(out)
    return out.with_name(out.name + ".build")


def build_dataset(
    task_id: str,
    out: str | os.PathLike | None = None,
    *,
    budget_minutes: float | None = 60.0,
    seed: int = 0,
    config: BuildConfig | None = None,
    progress_bar: bool = False,
    overwrite: bool = False,
    keep_work_dir: bool = False,
    plot: bool = True,
    **overrides: Any,
) -> Path:
    """Build an offline dataset for ``task_id``: train behaviour agents, roll out, filter, write.

    See the module docstring for the stages. Rerunning an interrupted build with the same
    settings resumes it from its work directory (``<out>.build``) and gives the same file as an
    uninterrupted build.

    Args:
        task_id: a registered task id (:func:`envs.list_tasks`).
        out: the HDF5 file to write; default the user cache (``envs.cache_dir()/<task_id>.hdf5``),
            where :func:`envs.load_dataset` finds it.
        budget_minutes: wall-clock budget of this call, also a hard deadline (None: no limit,
            which needs ``train_steps``). With ``train_steps=None`` the training length is
            planned to fit it.
        seed: seeds every stage (training, noise, episode starts, the filter).
        config: the build settings (default :class:`BuildConfig`'s).
        progress_bar: show a tqdm bar over environment steps.
        overwrite: replace an existing output file (otherwise that is an error, unless an
            unfinished build of it is being resumed).
        keep_work_dir: keep checkpoints and rollouts after a complete build.
        plot: also write the cost-vs-return scatter as ``<out>.png``.
        **overrides: :class:`BuildConfig` fields overriding ``config``'s, e.g.
            ``train_steps=50_000``.

    Returns:
        The path of the written HDF5 file. Its metadata says ``complete: false`` when the
        deadline cut the build; rerun to finish it.

    Raises:
        UnknownTaskError: an unknown task id.
        ValueError: a bad setting, or a work directory holding a build with other settings.
        FileExistsError: ``out`` exists (finished earlier) and ``overwrite`` is False.
        TimeoutError: the budget ran out before any episode was recorded.
    """
    spec = get_task(task_id)
    if config is None:
        config = BuildConfig.from_overrides(overrides)
    elif overrides:
        config = BuildConfig.from_overrides({**config.to_dict(), **overrides})
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if budget_minutes is not None and not budget_minutes > 0:
        raise ValueError(f"budget_minutes must be > 0 or None, got {budget_minutes}")
    out = Path(out) if out is not None else default_output(spec.task_id)
    if out.suffix not in (".hdf5", ".h5"):
        raise ValueError(f"out must name an .hdf5 (or .h5) file, got {out}")
    work = work_dir(out)
    deadline = _Deadline(None if budget_minutes is None else budget_minutes * 60.0)
    build = _Build(spec.task_id, out, work, config, int(seed), deadline)
    resuming = build.open_manifest()
    if out.exists() and not resuming and not overwrite:
        raise FileExistsError(
            f"{out} already exists; pass overwrite=True (--overwrite) to rebuild it"
        )
    with _torch_threads(config.torch_threads):
        if not resuming:
            work.mkdir(parents=True, exist_ok=True)
            build.start_manifest(build.plan())
        else:
            _LOG.info("resuming the build in %s", work)
        _run_stages(build, progress_bar)
        dataset, counts = build.assemble()
        dataset = OfflineDataset.concatenate([dataset], metadata=build.metadata(dataset, counts))
        save_dataset(dataset, out)
    if plot:
        from envs.plots import plot_dataset

        plot_dataset(dataset, out.with_suffix(".png"))
    if dataset.metadata["complete"]:
        if not keep_work_dir:
            shutil.rmtree(work)
    else:
        _LOG.warning(
            "the time budget cut the build of %s (%d stages left): wrote %s from what was "
            "finished; rerun with the same settings to continue",
            task_id,
            dataset.metadata["missing_stages"],
            out,
        )
    return out


def _run_stages(build: _Build, progress_bar: bool) -> None:
    """Run the unfinished stages in order: checkpoint by checkpoint across behaviours."""
    from tqdm.auto import tqdm

    n_behaviours = len(build.behaviours)
    plan_steps = int(build.manifest["plan"]["train_steps"])
    rollout_steps = build.rollout_steps()
    total = n_behaviours * plan_steps + len(build.rollout_stages()) * rollout_steps
    done_steps = sum(
        build.segment_steps(int(stage.split("/")[2]))
        if stage.startswith("train/")
        else rollout_steps
        for stage in build.manifest["done"]
        if stage.startswith(("train/", "rollout/"))
    )
    blocked: set[int] = set()  # behaviours whose training the deadline cut
    with tqdm(
        total=total,
        initial=done_steps,
        unit="step",
        desc=build.task_id,
        disable=not progress_bar,
    ) as progress:
        for behaviour in range(n_behaviours):
            if not build.is_done(f"init/{behaviour}"):
                build.initial_checkpoint(behaviour)
                build.mark_done(f"init/{behaviour}")
        for behaviour, checkpoint in build.rollout_stages():
            if build.deadline.passed():
                return
            if behaviour in blocked:
                continue
            train = f"train/{behaviour}/{checkpoint}"
            if checkpoint > 0 and not build.is_done(train):
                if not build.train_segment(behaviour, checkpoint, progress):
                    blocked.add(behaviour)
                    continue
                build.mark_done(train)
            stage = f"rollout/{behaviour}/{checkpoint}"
            if not build.is_done(stage):
                if not build.rollout(behaviour, checkpoint):
                    return
                build.mark_done(stage)
                progress.update(rollout_steps)
