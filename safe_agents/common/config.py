"""Hyperparameter dataclasses: the base every algorithm's config extends, and validation helpers.

Each algorithm declares ``@dataclass(kw_only=True) class XConfig(AgentConfig)`` with the paper's
defaults (source noted per field) and validates in ``__post_init__``. Configs round-trip through
JSON: no callables, tuples stored as lists and restored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


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
    """

    n_steps: int = 100_000
    batch_size: int = 256
    normalize_observations: bool = True

    def __post_init__(self) -> None:
        check_positive("n_steps", self.n_steps)
        check_positive("batch_size", self.batch_size)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):  # JSON gives lists back for tuple fields
                setattr(self, field.name, tuple(value))

    @classmethod
    def from_kwargs(cls, **hyperparameters: Any) -> AgentConfig:
        """Build from keyword arguments, naming the valid ones when one is unknown."""
        valid = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(hyperparameters) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for {cls.__name__}; valid ones are "
                f"{sorted(valid)}"
            )
        return cls(**hyperparameters)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable field values."""
        return {
            field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)
        }


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
        actor_width / actor_blocks: width and residual blocks of the noise network.
        ema_tau: EMA rate of the sampling copy of the noise network.
        n_candidates: actions sampled per state at execution.
    """

    gamma: float = 0.99
    tau: float = 0.005
    diffusion_steps: int = 5
    beta_schedule: str = "vp"
    sampler: str = "ddpm"
    actor_width: int = 256
    actor_blocks: int = 3
    ema_tau: float = 0.005
    n_candidates: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        from safe_agents.common.diffusion import SAMPLERS, SCHEDULES

        for name in ("diffusion_steps", "actor_width", "actor_blocks", "n_candidates"):
            check_positive(name, getattr(self, name))
        check_in_range("gamma", self.gamma, 0.0, 0.999999)
        check_in_range("tau", self.tau, 0.0, 1.0)
        check_in_range("ema_tau", self.ema_tau, 0.0, 1.0)
        check_choice("beta_schedule", self.beta_schedule, SCHEDULES)
        check_choice("sampler", self.sampler, SAMPLERS)
