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
