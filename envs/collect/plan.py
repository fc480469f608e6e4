"""The plan of a build: its settings, the behaviours, the checkpoint schedule, the stages in
their order, the random streams and the time budget.

Nothing here runs an environment or trains; the other modules of :mod:`envs.collect` read the
plan. A build's stages are named in its manifest as ``init/<b>`` (the untrained policy of
behaviour ``b``), ``train/<b>/<k>`` (training up to checkpoint ``k``) and ``rollout/<b>/<k>``
(the episodes of that checkpoint); the names are part of the work directory's format, so a build
started by an older version resumes with this one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

import numpy as np

_LOG = logging.getLogger(__name__)

BehaviourKind = Literal["unconstrained", "penalty", "limit"]

# Seed-sequence keys of the different random streams, so no two stages share a stream.
STREAM_INIT, STREAM_TRAIN, STREAM_NOISE, STREAM_EPISODES, STREAM_FILTER = range(5)


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


# ----------------------------------------------------------------------------- the schedule
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


class BuildPlan(TypedDict):
    """The training length of a build, decided once and kept in its manifest and metadata."""

    train_steps: int
    checkpoint_steps: list[int]
    # Only in a plan made from the time budget: the speeds it was made from.
    measured_train_steps_per_s: NotRequired[float]
    measured_rollout_steps_per_s: NotRequired[float]


def plan_training(
    config: BuildConfig,
    deadline: Deadline,
    episode_length: int,
    measure_speed: Callable[[], tuple[float, float]],
) -> BuildPlan:
    """Training steps per behaviour: the configured ones, or what fits the time budget.

    Args:
        config: the build settings.
        deadline: the budget's end; with ``config.train_steps=None`` the plan fills what
            remains of it.
        episode_length: the episode length of the rollouts (bounds their time).
        measure_speed: returns the PPO training and rollout steps per second; called only when
            the plan comes from the budget (it takes a PPO rollout's time).

    Raises:
        ValueError: neither ``train_steps`` nor a budget.
    """
    unit = config.n_checkpoints * config.ppo_n_steps
    if config.train_steps is not None:
        steps = max(unit, math.ceil(config.train_steps / config.ppo_n_steps) * config.ppo_n_steps)
        return {"train_steps": steps, "checkpoint_steps": _schedule(config, steps)}
    if deadline.end is None:
        raise ValueError("give train_steps or budget_minutes (the training length needs one)")
    train_fps, rollout_fps = measure_speed()
    all_rollout_steps = len(rollout_stages(config)) * rollout_steps(config, episode_length)
    rollout_seconds = all_rollout_steps / rollout_fps
    # Leave a sixth of the budget for environment creation, file writes and slow spells.
    train_seconds = deadline.remaining() * 5 / 6 - rollout_seconds
    steps = int(train_seconds * train_fps / len(config.behaviours))
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
        "checkpoint_steps": _schedule(config, steps),
        "measured_train_steps_per_s": round(train_fps, 1),
        "measured_rollout_steps_per_s": round(rollout_fps, 1),
    }


def _schedule(config: BuildConfig, train_steps: int) -> list[int]:
    return checkpoint_steps(
        train_steps, config.n_checkpoints, config.ppo_n_steps, config.checkpoint_spacing
    )


def segment_steps(plan: BuildPlan, checkpoint: int) -> int:
    """Training steps from checkpoint ``checkpoint - 1`` to ``checkpoint``."""
    steps = [0, *plan["checkpoint_steps"]]
    return int(steps[checkpoint] - steps[checkpoint - 1])


# ------------------------------------------------------------------------------- the stages
def checkpoint_stage(behaviour: int, checkpoint: int) -> str:
    """The stage that writes a checkpoint: ``init/<b>`` for 0, else ``train/<b>/<k>``."""
    return f"init/{behaviour}" if checkpoint == 0 else f"train/{behaviour}/{checkpoint}"


def rollout_stage(behaviour: int, checkpoint: int) -> str:
    """The stage that records a checkpoint's episodes."""
    return f"rollout/{behaviour}/{checkpoint}"


def rollout_stages(config: BuildConfig) -> list[tuple[int, int]]:
    """``(behaviour, checkpoint)`` pairs that are rolled out, in the canonical order."""
    stages = [(0, 0)] if config.rollout_initial_policy else []
    for checkpoint in range(1, config.n_checkpoints + 1):
        stages += [(behaviour, checkpoint) for behaviour in range(len(config.behaviours))]
    return stages


def all_stages(config: BuildConfig) -> list[str]:
    """Every stage of a complete build."""
    n_behaviours = len(config.behaviours)
    stages = [checkpoint_stage(index, 0) for index in range(n_behaviours)]
    for checkpoint in range(1, config.n_checkpoints + 1):
        stages += [checkpoint_stage(index, checkpoint) for index in range(n_behaviours)]
    stages += [rollout_stage(b, k) for b, k in rollout_stages(config)]
    return stages


def rollout_steps(config: BuildConfig, episode_length: int) -> int:
    """Upper bound of the environment steps of one rollout stage."""
    return len(config.noise_levels) * config.episodes_per_noise * episode_length


# ------------------------------------------------------------------------ seeds and budget
def stream_seed(*key: int) -> int:
    """A seed for one random stream, derived from the build seed and the stage."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0] % 2**31)


class Deadline:
    """The wall-clock end of the budget (None: no end)."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        """Whether the budget is spent."""
        return self.end is not None and time.monotonic() >= self.end

    def remaining(self) -> float:
        """Seconds left (infinite without a budget)."""
        return math.inf if self.end is None else max(0.0, self.end - time.monotonic())
