"""Hyperparameter dataclasses: the base every algorithm's config extends, and validation helpers.

Each algorithm declares ``@dataclass(kw_only=True) class XConfig(AgentConfig)`` with the paper's
defaults (source noted per field) and validates in ``__post_init__``. Configs round-trip through
JSON: no callables, tuples stored as lists and restored.

**Presets** are the one place where an agent's sizes and budgets are named: ``XConfig.presets``
maps a preset name to the fields it changes. ``"paper"`` is the defaults (the authors' networks
and step counts); ``"cpu"`` shrinks networks and budgets so the agent trains in minutes on a
2-core CPU. ``FISOR(env, preset="cpu")``, ``safe-agents train fisor --preset cpu`` and the quick
benchmark profile all read them; keywords given beside a preset override its values.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from safe_agents.common.diffusion import SAMPLERS, SCHEDULES, VARIANCE_TYPES, NoiseScheduler

PAPER = "paper"  # the defaults: the authors' networks and step counts
CPU = "cpu"  # reduced networks and steps that train in minutes on 2 CPU cores
# The cpu presets' minibatch and actor and critic MLPs (the papers': 256-512, (256, 256)).
CPU_MLPS: dict[str, Any] = {
    "batch_size": 256,
    "actor_hidden_sizes": (64, 64),
    "critic_hidden_sizes": (64, 64),
}


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if allow_zero and value < 0 or not allow_zero and value <= 0:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def check_in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass(kw_only=True)
class AgentConfig:
    """Fields shared by every agent.

    Attributes:
        n_steps: default number of gradient steps of ``learn_offline``.
        batch_size: transitions per gradient step.
        normalize_observations: standardize observations with the dataset's mean and std
            (stored with the weights). Not in every paper; off reproduces them exactly.
        cost_limit: the episode cost limit. None: the dataset's ``cost_limit`` metadata (every
            dataset of ``envs`` has its task's), else a clear error for the agents that use it.
            Agents that do not use it (FISOR's hard constraint, BC-All) accept and record it.
        presets: (class attribute) named sizes and budgets, ``{"paper": {}, "cpu": {...}}``.
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {PAPER: {}}

    n_steps: int = 100_000
    batch_size: int = 256
    normalize_observations: bool = True
    cost_limit: float | None = None

    def __post_init__(self) -> None:
        # Every field is checked against its declared type first (the Python API, the CLI's
        # --set and a loaded config.json all end here), so the checks below see real numbers.
        hints = _field_types(type(self))
        for field in dataclasses.fields(self):
            if field.name in hints:
                value = _coerce(field.name, getattr(self, field.name), hints[field.name])
                setattr(self, field.name, value)
        check_positive("n_steps", self.n_steps)
        check_positive("batch_size", self.batch_size)
        if self.cost_limit is not None:
            check_positive("cost_limit", self.cost_limit, allow_zero=True)

    @classmethod
    def from_kwargs(cls, preset: str = PAPER, **hyperparameters: Any) -> AgentConfig:
        """Build from a preset and keyword arguments (which override the preset's values),
        naming the valid ones when a preset or a keyword is unknown."""
        if preset not in cls.presets:
            raise ValueError(
                f"unknown preset {preset!r} for {cls.__name__}; available: {sorted(cls.presets)}"
            )
        valid = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(hyperparameters) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for {cls.__name__}; valid ones are "
                f"{sorted(valid)}"
            )
        return cls(**{**cls.presets[preset], **hyperparameters})

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable field values."""
        return {
            field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)
        }


@dataclass(kw_only=True)
class CostCriticConfig(AgentConfig):
    """Fields shared by the agents that learn a cost critic and keep its value under the cost
    limit in Q units (BCQ-Lag, CPQ, COptiDICE, DRCORL); each redeclares the defaults its
    authors used where they differ from these.

    Attributes:
        gamma: discount of the reward and cost values (0.99 in all four).
        episode_length: ``L`` of the conversion of the episode cost limit into Q units (None:
            from the dataset; each agent's docstring says how).
        actor_hidden_sizes / critic_hidden_sizes: MLP widths.
        actor_learning_rate / critic_learning_rate: Adam learning rates.
    """

    gamma: float = 0.99
    episode_length: int | None = None
    actor_hidden_sizes: tuple[int, ...] = (256, 256)
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_in_range("gamma", self.gamma, 0.0, 0.999999)
        if self.episode_length is not None:
            check_positive("episode_length", self.episode_length)
        check_positive("actor_learning_rate", self.actor_learning_rate)
        check_positive("critic_learning_rate", self.critic_learning_rate)
        for name in ("actor_hidden_sizes", "critic_hidden_sizes"):
            sizes = getattr(self, name)
            if not sizes or any(size < 1 for size in sizes):
                raise ValueError(f"{name} must be positive widths, got {sizes}")


def check_pid_gains(gains: tuple[float, float, float]) -> None:
    """``K_P, K_I, K_D`` of a PID Lagrangian: three values >= 0."""
    if len(gains) != 3 or min(gains) < 0:
        raise ValueError(f"pid_gains must be three values >= 0, got {gains}")


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of a config class (annotations are strings here)."""
    if cls not in _FIELD_TYPES:
        _FIELD_TYPES[cls] = typing.get_type_hints(cls)
    return _FIELD_TYPES[cls]


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the declared type ``hint``, or a ValueError naming the field.

    Integral floats become ints (``--set n_steps=1e5``), ints become floats, JSON lists become
    tuples; floats must be finite. Types this does not know are left to the config's own checks.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]  # X | None
        return _coerce(name, value, inner)
    if hint is bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
            number = float(value)
            if number.is_integer():  # inf and nan are not
                value = int(number)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
            return operator.index(value)
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ValueError(f"{name} must be finite, got {value!r}")
            return number
        raise ValueError(f"{name} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{name} must be a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{name} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{name} must have {len(args)} entries, got {value!r}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_coerce(f"{name}[{i}]", item, arg) for i, (item, arg) in pairs)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value


@dataclass(kw_only=True)
class DiffusionPolicyConfig(AgentConfig):
    """Fields shared by the agents with a diffusion policy and bootstrapped critics.

    Attributes:
        gamma: discount of the critics (0.99).
        tau: Polyak rate of the target critics (0.005).
        diffusion_steps: T, the number of diffusion steps (5).
        beta_schedule: ``"vp"``, ``"linear"`` or ``"cosine"`` (``"vp"``).
        sampler: ``"ddpm"`` or ``"ddim"`` (``"ddpm"``).
        variance_type: the noise of a DDPM step, ``"fixed_small"`` (the posterior's std) or
            ``"fixed_large"`` (``sqrt(beta_t)``, FISOR's sampler).
        ddim_eta: DDIM's stochasticity (0: deterministic; 1: DDPM-like).
        actor_width / actor_blocks: width and residual blocks of the noise network.
        ema_tau: EMA rate of the sampling copy of the noise network.
        n_candidates: actions sampled per state at execution.
    """

    gamma: float = 0.99
    tau: float = 0.005
    diffusion_steps: int = 5
    beta_schedule: str = "vp"
    sampler: str = "ddpm"
    variance_type: str = "fixed_small"
    ddim_eta: float = 0.0
    actor_width: int = 256
    actor_blocks: int = 3
    ema_tau: float = 0.005
    n_candidates: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("diffusion_steps", "actor_width", "actor_blocks", "n_candidates"):
            check_positive(name, getattr(self, name))
        check_in_range("gamma", self.gamma, 0.0, 0.999999)
        check_in_range("tau", self.tau, 0.0, 1.0)
        check_in_range("ema_tau", self.ema_tau, 0.0, 1.0)
        check_choice("beta_schedule", self.beta_schedule, SCHEDULES)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("variance_type", self.variance_type, VARIANCE_TYPES)
        check_in_range("ddim_eta", self.ddim_eta, 0.0, 1.0)

    def make_scheduler(self) -> NoiseScheduler:
        """The noise scheduler these fields describe."""
        return NoiseScheduler(
            self.diffusion_steps,
            self.beta_schedule,
            self.sampler,
            eta=self.ddim_eta,
            variance_type=self.variance_type,
        )
