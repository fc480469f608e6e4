"""Turning what a user passes to ``learn_offline`` into tensors, and sampling minibatches.

``learn_offline`` accepts an :class:`~safe_agents.common.dataset.OfflineDataset`, a dict of
arrays with the DSRL names, a path to a DSRL-format HDF5 file, or a task id. Task ids (and
DSRL's files given by path, which their names label) are resolved by the loader that ``envs``
registers when it is imported (:func:`register_dataset_loader`), so the algorithms never import
the environment package; without it a path is read as a plain HDF5 file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import torch
from numpy.typing import NDArray

from safe_agents.common.dataset import OfflineDataset
from safe_agents.common.hdf5 import read_hdf5
from safe_agents.common.lagrangian import cost_limit_in_q_units

#: What ``learn_offline`` accepts as data.
DatasetLike: TypeAlias = OfflineDataset | Mapping[str, Any] | str | os.PathLike[str]
#: Resolves a task id or a path to a dataset (``envs.load_dataset``).
DatasetLoader: TypeAlias = Callable[[str | os.PathLike[str]], OfflineDataset]

_loader: DatasetLoader | None = None


def register_dataset_loader(loader: DatasetLoader | None) -> None:
    """Make ``loader`` resolve the task ids and paths given to ``learn_offline`` (``envs`` registers
    :func:`envs.load_dataset` when imported; None removes it)."""
    global _loader
    _loader = loader


def coerce_dataset(dataset: DatasetLike) -> OfflineDataset:
    """Return an :class:`~safe_agents.common.dataset.OfflineDataset` for any accepted input.

    Raises:
        TypeError: for anything else.
        FileNotFoundError: a name that is neither a file nor, without ``envs``, resolvable.
    """
    if isinstance(dataset, OfflineDataset):
        return dataset
    if isinstance(dataset, Mapping):
        return OfflineDataset.from_dict(dataset)
    if isinstance(dataset, str | os.PathLike):
        if _loader is not None:
            return _loader(dataset)
        if not os.path.isfile(dataset):
            raise FileNotFoundError(
                f"no dataset file at {dataset}; task ids are resolved by the envs package: "
                "`import envs` first (it registers the tasks and their data)"
            )
        return read_hdf5(dataset)
    raise TypeError(
        "dataset must be an OfflineDataset, a path to a DSRL-format HDF5 file, a dict of "
        f"arrays with the DSRL field names, or a task id; got {type(dataset).__name__}"
    )


def describe_training_data(dataset: OfflineDataset) -> dict[str, Any]:
    """What an agent records about the data it learned from (saved with it, read by evaluation).

    ``task_id``, ``origin`` (``"dsrl"``/``"local"``/``"unknown"``), ``provenance`` (one line),
    ``normalization`` and ``reward_range``: the reference returns that normalize the agent's
    returns on the data's task (``envs.OfflineDataset.reference_range``; None when empty), and
    ``cost_limit``: the data's ``cost_limit`` metadata (None without one), which normalizes the
    cost on a custom environment.
    """
    try:
        reward_range: list[float] | None = [float(value) for value in dataset.reference_range()]
    except ValueError:  # DatasetError: every episode has the same return
        reward_range = None
    cost_limit = dataset.metadata.get("cost_limit")
    return {
        "task_id": dataset.metadata.get("task_id"),
        "origin": dataset.origin,
        "provenance": dataset.provenance,
        "normalization": dataset.normalization,
        "reward_range": reward_range,
        "cost_limit": float(cost_limit) if cost_limit is not None else None,
    }


def check_training_data(record: Any) -> dict[str, Any] | None:
    """A saved :func:`describe_training_data` record, checked (None when absent).

    Raises:
        ValueError: a record of the wrong shape (a tampered or foreign file).
    """
    if record is None:
        return None
    text_keys = ("origin", "provenance", "normalization")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in text_keys):
        raise ValueError(f"training_data must be a record with {text_keys}, got {record!r}")
    if not isinstance(record.get("task_id"), str | None):
        raise ValueError(f"training_data.task_id must be a string, got {record['task_id']!r}")
    reward_range = record.get("reward_range")
    if reward_range is not None and not (
        isinstance(reward_range, list)
        and len(reward_range) == 2
        and all(isinstance(v, int | float) and np.isfinite(v) for v in reward_range)
        and reward_range[1] > reward_range[0]
    ):
        raise ValueError(f"training_data.reward_range must be [low, high], got {reward_range!r}")
    cost_limit = record.get("cost_limit")
    if cost_limit is not None and not (
        isinstance(cost_limit, int | float)
        and not isinstance(cost_limit, bool)
        and np.isfinite(cost_limit)
        and cost_limit >= 0
    ):
        raise ValueError(f"training_data.cost_limit must be a number >= 0, got {cost_limit!r}")
    return dict(record)


DEFAULT_COST_LIMIT = 10.0  # OSRL's default episode cost limit (CDT's target before training)


def resolve_cost_limit(dataset: OfflineDataset, cost_limit: float | None) -> float:
    """The episode cost limit to train for: ``cost_limit`` if given, else the dataset's own
    (its ``cost_limit`` metadata, which every dataset of ``envs`` carries: the task's limit).

    Raises:
        ValueError: neither is set (a custom dataset without metadata): a limit is never guessed.
    """
    if cost_limit is not None:
        return float(cost_limit)
    if dataset.metadata.get("cost_limit") is None:
        raise ValueError(
            "no cost limit: pass cost_limit=... to the agent, or set "
            "dataset.metadata['cost_limit'] (datasets of envs carry their task's limit)"
        )
    return float(dataset.metadata["cost_limit"])


def episode_horizon(dataset: OfflineDataset) -> int:
    """The task's episode length: the dataset's ``max_episode_steps`` metadata, else its longest
    episode."""
    recorded = dataset.metadata.get("max_episode_steps")
    return int(recorded) if recorded else longest_episode(dataset)


def longest_episode(dataset: OfflineDataset) -> int:
    """The number of steps of the dataset's longest episode (the task's horizon ``L``)."""
    return max(stop - start for start, stop in dataset.episode_bounds())


def returns_to_go(
    values: NDArray[np.float32], bounds: list[tuple[int, int]]
) -> NDArray[np.float64]:
    """``(N,)`` undiscounted sums from each row to the end of its episode (row included)."""
    result = np.empty(len(values), dtype=np.float64)
    for start, stop in bounds:
        result[start:stop] = np.cumsum(values[start:stop][::-1].astype(np.float64))[::-1]
    return result


def q_cost_limit(
    dataset: OfflineDataset, cost_limit: float | None, gamma: float, episode_length: int | None
) -> float:
    """The episode cost limit as a threshold on discounted cost values.

    ``cost_limit`` (else the dataset's, see :func:`resolve_cost_limit`) converted by
    :func:`~safe_agents.common.lagrangian.cost_limit_in_q_units` with ``episode_length`` (else the
    dataset's longest episode).
    """
    limit = resolve_cost_limit(dataset, cost_limit)
    length = episode_length or longest_episode(dataset)
    return cost_limit_in_q_units(limit, gamma, length)


class TransitionBatch(NamedTuple):
    """A minibatch of transitions (tensors with a leading batch dimension)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    costs: torch.Tensor
    next_obs: torch.Tensor
    terminals: torch.Tensor
    timeouts: torch.Tensor
    next_actions: torch.Tensor  # the dataset's next action (meaningless where an episode ends)


def done_mask(batch: TransitionBatch, through_timeouts: bool) -> torch.Tensor:
    """``1`` where a TD target stops bootstrapping (the ``done`` of ``td_target``), else ``0``.

    Each agent chooses what its authors did and says so in its docstring:

    - ``through_timeouts=False``: a time-out ends the return too, ``done = terminals |
      timeouts``: DSRL's ``done``, which FISOR's code and OSRL's baselines (BCQ-Lag, CPQ,
      COptiDICE) train with; SPI follows FISOR.
    - ``through_timeouts=True``: only true terminations end the return. A time limit is not a
      property of the state, so the value after it is still the value of continuing (DRCORL,
      whose episode-cost estimate ``Q (1 - gamma) L`` assumes an unending per-step rate).
    """
    if through_timeouts:
        return batch.terminals
    return torch.maximum(batch.terminals, batch.timeouts)


# The fields of a TransitionBatch that hold one number per transition.
_SCALAR_FIELDS = (2, 3, 5, 6)


class TransitionSampler:
    """Uniform minibatches from a dataset, drawn with the agent's torch generator.

    The arrays are columns of one ``(N, width)`` table, so a minibatch is one gather (not one
    per field); the batch's fields are column views of the gathered rows, and the sampler's
    ``obs``, ``actions``, ... are column views of the table.

    Args:
        dataset: the data; datasets without costs give zero costs.
        device: where the tensors live.
        generator: the generator that fixes the data order (saved with checkpoints).
    """

    def __init__(
        self, dataset: OfflineDataset, device: torch.device, generator: torch.Generator
    ) -> None:
        costs = dataset.costs if dataset.costs is not None else np.zeros_like(dataset.rewards)
        # SARSA-style targets need a' from the next row; at episode ends the bootstrap is cut.
        next_actions = np.concatenate([dataset.actions[1:], dataset.actions[-1:]])
        columns = [
            dataset.observations,
            dataset.actions,
            dataset.rewards,
            costs,
            dataset.next_observations,
            dataset.terminals,
            dataset.timeouts,
            next_actions,
        ]
        columns = [np.asarray(c, dtype=np.float32).reshape(len(c), -1) for c in columns]
        self.widths = [c.shape[1] for c in columns]
        self.table = torch.as_tensor(np.concatenate(columns, axis=1), device=device)
        fields = self._split(self.table)
        (
            self.obs,
            self.actions,
            self.rewards,
            self.costs,
            self.next_obs,
            self.terminals,
            self.timeouts,
            self.next_actions,
        ) = fields
        self.generator = generator
        self.size = len(self.table)

    def _split(self, rows: torch.Tensor) -> TransitionBatch:
        """The fields of ``rows`` of the table, as column views (scalars as ``(B,)``)."""
        parts = torch.split(rows, self.widths, dim=1)
        return TransitionBatch(
            *(
                part.squeeze(1) if part.shape[1] == 1 and k in _SCALAR_FIELDS else part
                for k, part in enumerate(parts)
            )
        )

    def sample(self, batch_size: int) -> TransitionBatch:
        index = torch.randint(
            self.size, (batch_size,), generator=self.generator, device=self.generator.device
        ).to(self.table.device)
        return self._split(self.table[index])
