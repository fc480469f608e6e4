"""The offline dataset type, :class:`OfflineDataset`: aligned arrays of transitions in memory.

The fields are DSRL's: ``observations, actions, rewards, costs, next_observations, terminals,
timeouts``, one row per transition; an episode ends at a row whose ``terminals`` or ``timeouts``
is set (or at the last row). ``costs`` may be absent (the cost-label-free setting of DSPO).
Metadata (task id, cost limit, reference returns and costs, how the data was made) travels with
the arrays, and as HDF5 attributes on disk (:mod:`safe_agents.common.hdf5`).

Every dataset says where it came from (:attr:`OfflineDataset.origin`, :attr:`~OfflineDataset.
provenance`): DSRL's published files (``origin="dsrl"``, downloaded by :mod:`envs.download`), or
data built on this machine (``origin="local"``: :func:`envs.build_dataset` or the toy task's
script). The two are normalized differently (:meth:`OfflineDataset.reference_range`): DSRL's data
with DSRL's reference returns, as the papers do; locally built data with its own lowest and
highest episode return, so that a score on it is never mistaken for one on DSRL's data.

The type lives here, below the algorithms, so that every agent can name its input; it needs
neither a simulator nor h5py. ``envs`` re-exports it (``envs.OfflineDataset``) with the loaders
that find a task's data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

FIELDS = (
    "observations",
    "actions",
    "rewards",
    "costs",
    "next_observations",
    "terminals",
    "timeouts",
)
_FLAG_FIELDS = ("terminals", "timeouts")
_VECTOR_FIELDS = ("observations", "actions", "next_observations")

#: The largest magnitude a data value or an observation may have: float32 sums of squares
#: (standardization, losses) overflow beyond about 1e19, and the networks' activations sooner.
MAX_ABS_VALUE = 1e12

#: Where a dataset came from (``metadata["origin"]``).
DSRL = "dsrl"
LOCAL = "local"
UNKNOWN = "unknown"


class DatasetError(ValueError):
    """A dataset that is malformed: the message names the field, file and first bad index."""


class DatasetTooLargeError(DatasetError):
    """A file declaring more data than the reader may allocate (:func:`max_dataset_bytes`)."""


def _as_array(name: str, value: Any) -> NDArray[np.float32]:
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - any conversion failure is a bad field
        raise DatasetError(f"field {name!r} cannot be converted to an array: {error}") from error
    if array.dtype.kind not in "biuf":
        raise DatasetError(f"field {name!r} must be numeric, got dtype {array.dtype}")
    return array.astype(np.float32, copy=False)


@dataclass(frozen=True, eq=False)
class OfflineDataset:
    """Aligned float32 arrays of transitions, validated on construction.

    Attributes:
        observations: ``(N, obs_dim)``.
        actions: ``(N, act_dim)``.
        rewards: ``(N,)``.
        costs: ``(N,)``, or None when the dataset carries no cost labels.
        next_observations: ``(N, obs_dim)``.
        terminals: ``(N,)``, 1.0 where the episode ended in a terminal state.
        timeouts: ``(N,)``, 1.0 where the episode was cut by the time limit.
        metadata: JSON-serializable facts about the data (``task_id``, ``cost_limit``,
            ``reward_min``/``reward_max``/``cost_min``/``cost_max``, provenance).

    Raises:
        DatasetError: on unequal lengths, wrong ranks, non-finite values or flags other than
            0/1; the message names the field and the first bad index.
    """

    observations: NDArray[np.float32]
    actions: NDArray[np.float32]
    rewards: NDArray[np.float32]
    costs: NDArray[np.float32] | None
    next_observations: NDArray[np.float32]
    terminals: NDArray[np.float32]
    timeouts: NDArray[np.float32]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arrays = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is None:
                if name != "costs":
                    raise DatasetError(f"field {name!r} is missing")
                continue
            arrays[name] = _as_array(name, value)
        n = len(arrays["observations"])
        if n == 0:
            raise DatasetError("the dataset has no transitions")
        for name, array in arrays.items():
            expected_rank = 2 if name in _VECTOR_FIELDS else 1
            if array.ndim == 1 and expected_rank == 2:
                array = array[:, None]  # one-dimensional spaces stored flat
            elif array.ndim == 2 and expected_rank == 1 and array.shape[1] == 1:
                array = array[:, 0]  # (N, 1) columns, as some DSRL files store rewards/costs
            if array.ndim != expected_rank:
                raise DatasetError(
                    f"field {name!r} must have {expected_rank} dimension(s) (one row per "
                    f"transition), got shape {array.shape}"
                )
            if len(array) != n:
                raise DatasetError(
                    f"field {name!r} has {len(array)} rows but 'observations' has {n}"
                )
            bad = np.flatnonzero(~np.isfinite(array).reshape(len(array), -1).all(axis=1))
            if bad.size:
                raise DatasetError(
                    f"field {name!r} has a non-finite value at index {bad[0]} "
                    f"({bad.size} bad rows in all)"
                )
            # max/min first: no copy of a large field unless it holds an offending value.
            if array.max() > MAX_ABS_VALUE or array.min() < -MAX_ABS_VALUE:
                over = np.abs(array) > MAX_ABS_VALUE
                huge = np.flatnonzero(over.reshape(len(array), -1).any(axis=1))
                raise DatasetError(
                    f"field {name!r} has a value of magnitude "
                    f"{np.abs(array[huge[0]]).max():.3g} at index {huge[0]}, beyond "
                    f"{MAX_ABS_VALUE:g} (statistics and weights would overflow float32)"
                )
            if name in _FLAG_FIELDS:
                bad = np.flatnonzero((array != 0) & (array != 1))
                if bad.size:
                    raise DatasetError(
                        f"field {name!r} must hold 0/1 flags, got {array[bad[0]]} at index {bad[0]}"
                    )
            object.__setattr__(self, name, array)
        if self.next_observations.shape[1] != self.observations.shape[1]:
            raise DatasetError(
                f"field 'next_observations' has {self.next_observations.shape[1]} columns but "
                f"'observations' has {self.observations.shape[1]}"
            )
        object.__setattr__(self, "metadata", _plain_metadata(self.metadata))

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_arrays(
        cls,
        observations: NDArray[Any],
        actions: NDArray[Any],
        rewards: NDArray[Any],
        costs: NDArray[Any] | None,
        next_observations: NDArray[Any],
        terminals: NDArray[Any],
        timeouts: NDArray[Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> OfflineDataset:
        """Build from aligned arrays; ``timeouts`` defaults to a cut after the last row only."""
        if timeouts is None:
            timeouts = np.zeros(len(np.asarray(observations)), dtype=np.float32)
            if len(timeouts) and not np.asarray(terminals)[-1]:
                timeouts[-1] = 1.0
        return cls(
            observations=observations,
            actions=actions,
            rewards=rewards,
            costs=costs,
            next_observations=next_observations,
            terminals=terminals,
            timeouts=timeouts,
            metadata=_plain_metadata(metadata if metadata is not None else {}),
        )

    @classmethod
    def from_dict(
        cls, arrays: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> OfflineDataset:
        """Build from a mapping with the DSRL field names (``costs`` and ``timeouts`` optional)."""
        missing = [
            name for name in FIELDS if name not in arrays and name not in ("costs", "timeouts")
        ]
        if missing:
            raise DatasetError(f"missing field(s) {missing}; expected the DSRL names {FIELDS}")
        unknown = sorted(set(arrays) - set(FIELDS))
        if unknown:
            raise DatasetError(f"unknown field(s) {unknown}; expected the DSRL names {FIELDS}")
        values: dict[str, Any] = {name: arrays.get(name) for name in FIELDS}
        return cls.from_arrays(**values, metadata=metadata)

    @classmethod
    def from_episodes(
        cls, episodes: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any] | None = None
    ) -> OfflineDataset:
        """Build from a list of episodes.

        Each episode is a mapping with ``observations`` (``T + 1`` rows: the last is the final
        observation; or ``T`` rows together with ``next_observations``), ``actions``, ``rewards``,
        optionally ``costs``, and ``terminated`` (bool: the episode ended in a terminal state;
        otherwise it was truncated).
        """
        if not episodes:
            raise DatasetError("from_episodes needs at least one episode")
        has_costs = {"costs" in episode for episode in episodes}
        if len(has_costs) != 1:
            raise DatasetError("either every episode has 'costs' or none has")
        parts: dict[str, list[NDArray[np.float32]]] = {name: [] for name in FIELDS}
        for index, episode in enumerate(episodes):
            actions = np.asarray(episode["actions"], dtype=np.float32)
            steps = len(actions)
            observations = np.asarray(episode["observations"], dtype=np.float32)
            if "next_observations" in episode:
                next_observations = np.asarray(episode["next_observations"], dtype=np.float32)
            elif len(observations) == steps + 1:
                observations, next_observations = observations[:-1], observations[1:]
            else:
                raise DatasetError(
                    f"episode {index}: 'observations' needs {steps + 1} rows (one more than "
                    f"'actions') or a 'next_observations' field, got {len(observations)}"
                )
            if steps == 0:
                raise DatasetError(f"episode {index} has no steps")
            end = np.zeros(steps, dtype=np.float32)
            end[-1] = 1.0
            terminated = bool(episode.get("terminated", False))
            parts["observations"].append(observations)
            parts["next_observations"].append(next_observations)
            parts["actions"].append(actions)
            parts["rewards"].append(np.asarray(episode["rewards"], dtype=np.float32))
            if "costs" in episode:
                parts["costs"].append(np.asarray(episode["costs"], dtype=np.float32))
            parts["terminals"].append(end if terminated else np.zeros_like(end))
            parts["timeouts"].append(np.zeros_like(end) if terminated else end)
        arrays = {name: np.concatenate(chunks) for name, chunks in parts.items() if chunks}
        return cls.from_dict(arrays, metadata=metadata)

    @staticmethod
    def concatenate(
        datasets: Iterable[OfflineDataset], metadata: Mapping[str, Any] | None = None
    ) -> OfflineDataset:
        """Join datasets end to end (metadata of the first unless given)."""
        datasets = list(datasets)
        if not datasets:
            raise DatasetError("concatenate needs at least one dataset")
        with_costs = {dataset.costs is not None for dataset in datasets}
        if len(with_costs) != 1:
            raise DatasetError("cannot concatenate datasets with and without cost labels")
        # The last row of each part must end an episode, or episodes would merge (see _ended).
        arrays = {
            name: np.concatenate([_ended(dataset, name) for dataset in datasets])
            for name in FIELDS
            if getattr(datasets[0], name) is not None
        }
        return OfflineDataset.from_dict(
            arrays, metadata=dict(metadata if metadata is not None else datasets[0].metadata)
        )

    # ----------------------------------------------------------------------------- inspection
    def __len__(self) -> int:
        return len(self.observations)

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def has_costs(self) -> bool:
        return self.costs is not None

    @property
    def origin(self) -> str:
        """``"dsrl"`` (DSRL's published data), ``"local"`` (built on a machine of a user of this
        package) or ``"unknown"`` (a file that does not say)."""
        return data_origin(self.metadata)

    @property
    def provenance(self) -> str:
        """One line saying where the data came from, e.g. ``DSRL SafetyCarCircle-v0-100-1450.hdf5``
        or ``built locally (envs.collect.build_dataset, seed 0, ...)``."""
        return describe_provenance(self.metadata)

    def reference_range(self) -> tuple[float, float]:
        """``(R_min, R_max)`` that normalize the returns of agents trained on this data.

        DSRL's reference returns for DSRL's data (its loader writes them into the metadata); for
        other data the lowest and highest episode return of the data it was built as (the
        metadata's ``reward_min``/``reward_max``, which the builders write), else of these rows.
        :data:`normalization` names the choice.

        Raises:
            DatasetError: the range is empty (every episode has the same return).
        """
        if "reward_min" in self.metadata and "reward_max" in self.metadata:
            low, high = float(self.metadata["reward_min"]), float(self.metadata["reward_max"])
        else:
            returns = self.episode_returns()
            low, high = float(returns.min()), float(returns.max())
        if not high > low:
            raise DatasetError(
                f"the reference returns of this dataset are an empty range [{low}, {high}]; pass "
                "reward_range to envs.evaluate"
            )
        return low, high

    @property
    def normalization(self) -> str:
        """What :meth:`reference_range` is: DSRL's reference returns, or the data's own range."""
        return normalization_label(self.metadata)

    def episode_bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` row ranges of the episodes, in order."""
        ends = np.flatnonzero((self.terminals > 0) | (self.timeouts > 0)) + 1
        if not len(ends) or ends[-1] != len(self):
            ends = np.append(ends, len(self))
        starts = np.concatenate([[0], ends[:-1]])
        return [(int(start), int(stop)) for start, stop in zip(starts, ends, strict=True)]

    @property
    def n_episodes(self) -> int:
        return len(self.episode_bounds())

    def episodes(self) -> list[OfflineDataset]:
        """Each episode as its own dataset (same metadata)."""
        return [self.select(np.arange(start, stop)) for start, stop in self.episode_bounds()]

    def episode_ids(self) -> NDArray[np.int64]:
        """``(N,)`` index of the episode each row belongs to."""
        ids = np.empty(len(self), dtype=np.int64)
        for index, (start, stop) in enumerate(self.episode_bounds()):
            ids[start:stop] = index
        return ids

    def episode_lengths(self) -> NDArray[np.int64]:
        return np.array([stop - start for start, stop in self.episode_bounds()], dtype=np.int64)

    def episode_returns(self) -> NDArray[np.float64]:
        """Undiscounted return of each episode."""
        return self._per_episode_sum(self.rewards)

    def episode_costs(self) -> NDArray[np.float64]:
        """Undiscounted cost of each episode.

        Raises:
            DatasetError: if the dataset has no cost labels.
        """
        if self.costs is None:
            raise DatasetError("this dataset has no cost labels (its costs were stripped)")
        return self._per_episode_sum(self.costs)

    def _per_episode_sum(self, values: NDArray[np.float32]) -> NDArray[np.float64]:
        starts = np.array([start for start, _ in self.episode_bounds()])
        return np.add.reduceat(values.astype(np.float64), starts)

    def summary(self) -> dict[str, Any]:
        """Counts and ranges (what a person checks first about a dataset)."""
        returns = self.episode_returns()
        info: dict[str, Any] = {
            "transitions": len(self),
            "episodes": self.n_episodes,
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
        }
        if self.costs is not None:
            costs = self.episode_costs()
            info.update(cost_min=float(costs.min()), cost_max=float(costs.max()))
            limit = self.metadata.get("cost_limit")
            if limit is not None:
                safe = costs <= limit
                info["safe_fraction"] = float(safe.mean())
                info["best_safe_return"] = float(returns[safe].max()) if safe.any() else None
        return info

    def check_spaces(self, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
        """Raise :class:`DatasetError` unless the arrays fit the given flat Box spaces."""
        for name, space in (("observations", observation_space), ("actions", action_space)):
            dim = int(np.prod(space.shape)) if space.shape else 0
            width = getattr(self, name).shape[1]
            if width != dim:
                raise DatasetError(
                    f"field {name!r} has {width} columns but the {name[:-1]} space "
                    f"{space} has {dim}"
                )
        if isinstance(action_space, gym.spaces.Box):
            low, high = action_space.low.reshape(-1), action_space.high.reshape(-1)
            outside = np.flatnonzero(
                ((self.actions < low - 1e-5) | (self.actions > high + 1e-5)).any(axis=1)
            )
            if outside.size:
                raise DatasetError(
                    f"field 'actions' leaves the action space bounds at index {outside[0]} "
                    f"({self.actions[outside[0]]} not in [{low}, {high}])"
                )

    # ----------------------------------------------------------------------------- derived data
    def select(self, rows: NDArray[np.integer[Any]]) -> OfflineDataset:
        """The transitions at ``rows`` (in that order)."""
        arrays = {name: values[rows] for name, values in self.to_dict().items()}
        return self._with(**arrays)

    def select_episodes(self, indices: Iterable[int]) -> OfflineDataset:
        """The episodes with the given indices, in that order."""
        bounds = self.episode_bounds()
        indices = list(indices)
        if not indices:
            raise DatasetError("no episode selected")
        rows = np.concatenate([np.arange(*bounds[index]) for index in indices])
        selected = self.select(rows)
        # An episode cut at the end of the array gets an explicit timeout once moved.
        ends = np.cumsum([bounds[index][1] - bounds[index][0] for index in indices]) - 1
        timeouts = selected.timeouts.copy()
        timeouts[ends] = np.where(selected.terminals[ends] > 0, 0.0, 1.0)
        return selected._with(timeouts=timeouts)

    def filter_episodes(
        self, max_cost: float | None = None, min_cost: float | None = None
    ) -> OfflineDataset:
        """Keep the episodes whose total cost lies within ``[min_cost, max_cost]``.

        Raises:
            DatasetError: if no episode qualifies, or the dataset has no costs.
        """
        costs = self.episode_costs()
        keep = np.ones(len(costs), dtype=bool)
        if max_cost is not None:
            keep &= costs <= max_cost
        if min_cost is not None:
            keep &= costs >= min_cost
        if not keep.any():
            raise DatasetError(
                f"no episode has a cost within [{min_cost}, {max_cost}] "
                f"(episode costs range over [{costs.min():.3g}, {costs.max():.3g}])"
            )
        return self.select_episodes(np.flatnonzero(keep))

    def without_costs(self) -> OfflineDataset:
        """The same transitions with the cost labels removed."""
        return self._with(costs=None)

    def strip_costs(
        self, n_safe_demos: int, cost_limit: float | None = None, seed: int = 0
    ) -> tuple[OfflineDataset, OfflineDataset]:
        """Split into the cost-label-free setting of DSPO.

        Args:
            n_safe_demos: how many safe episodes to hand over as demonstrations.
            cost_limit: an episode is safe when its cost is <= this (default: metadata's).
            seed: which safe episodes are drawn.

        Returns:
            ``(unlabeled, demos)``: every other episode with its costs removed, and
            ``n_safe_demos`` safe episodes drawn at random (costs removed too). Each part's
            ``metadata["source_episodes"]`` lists the indices of its episodes in this dataset,
            so the hidden labels can score a learner afterwards (``episode_costs()[ids]``).
        """
        if cost_limit is None:
            cost_limit = self.metadata.get("cost_limit")
            if cost_limit is None:
                raise DatasetError("strip_costs needs cost_limit (none in the metadata)")
        costs = self.episode_costs()
        safe = np.flatnonzero(costs <= cost_limit)
        if n_safe_demos < 1:
            raise ValueError(f"n_safe_demos must be >= 1, got {n_safe_demos}")
        if len(safe) < n_safe_demos:
            raise DatasetError(
                f"only {len(safe)} episodes have cost <= {cost_limit}; asked for {n_safe_demos} "
                "safe demonstrations"
            )
        rng = np.random.default_rng(seed)
        demo_ids = np.sort(rng.choice(safe, size=n_safe_demos, replace=False))
        rest = np.setdiff1d(np.arange(len(costs)), demo_ids)
        if not len(rest):
            raise DatasetError("no episode is left for the unlabeled part")
        metadata = {**self.metadata, "cost_limit": float(cost_limit)}
        demos = (
            self.select_episodes(demo_ids)
            .without_costs()
            ._with(
                metadata={
                    **metadata,
                    "split": "safe_demos",
                    "source_episodes": demo_ids.tolist(),
                }
            )
        )
        unlabeled = (
            self.select_episodes(rest)
            .without_costs()
            ._with(metadata={**metadata, "split": "unlabeled", "source_episodes": rest.tolist()})
        )
        return unlabeled, demos

    def to_dict(self) -> dict[str, NDArray[np.float32]]:
        """The arrays by DSRL name (``costs`` omitted when absent)."""
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}

    def _with(self, **changes: Any) -> OfflineDataset:
        values = {name: getattr(self, name) for name in FIELDS}
        values["metadata"] = dict(self.metadata)
        values.update(changes)
        return OfflineDataset(**values)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, bytes and tuples turned into JSON's types."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def _plain_metadata(metadata: Any) -> dict[str, Any]:
    """The metadata as plain JSON values (it must survive the HDF5 round trip).

    Raises:
        DatasetError: a value JSON cannot hold (an object, a NaN), naming its key.
    """
    if not isinstance(metadata, Mapping):
        raise DatasetError(f"metadata must be a mapping, got {type(metadata).__name__}")
    plain = {str(key): _plain(value) for key, value in metadata.items()}
    for key, value in plain.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as error:
            raise DatasetError(
                f"metadata {key!r} cannot be stored in a dataset file: {type(error).__name__}: "
                f"{str(error)[:200]}"
            ) from None
    return plain


def _end_last(flags: NDArray[np.float32]) -> NDArray[np.float32]:
    flags = flags.copy()
    flags[-1] = 1.0
    return flags


def _ended(dataset: OfflineDataset, name: str) -> NDArray[np.float32]:
    values: NDArray[np.float32] = getattr(dataset, name)
    if name == "timeouts" and not (dataset.terminals[-1] or dataset.timeouts[-1]):
        return _end_last(values)
    return values


# --------------------------------------------------------------------------------- provenance
def data_origin(metadata: Mapping[str, Any]) -> str:
    """:data:`DSRL`, :data:`LOCAL` or :data:`UNKNOWN` for a dataset's metadata.

    Files built before the ``origin`` attribute existed are recognised by their ``builder``.
    """
    origin = metadata.get("origin")
    if origin in (DSRL, LOCAL):
        return str(origin)
    return LOCAL if "builder" in metadata else UNKNOWN


def describe_provenance(metadata: Mapping[str, Any]) -> str:
    """One line on where a dataset came from (see :attr:`OfflineDataset.provenance`)."""
    origin = data_origin(metadata)
    if origin == DSRL:
        return f"DSRL {metadata.get('dsrl_file', '')}".rstrip()
    if origin == UNKNOWN:
        return "origin unknown (the file does not say)"
    parts = [str(metadata.get("builder", "unknown builder"))]
    if "seed" in metadata:
        parts.append(f"seed {metadata['seed']}")
    plan = metadata.get("build_plan")
    if isinstance(plan, Mapping) and "train_steps" in plan:
        parts.append(f"{int(plan['train_steps']):,} behaviour training steps")
    if "episodes_recorded" in metadata:
        parts.append(f"{int(metadata['episodes_recorded']):,} episodes recorded")
    if metadata.get("complete") is False:
        parts.append("incomplete build")
    return f"built locally ({', '.join(parts)})"


def normalization_label(metadata: Mapping[str, Any]) -> str:
    """How returns on a dataset's task are normalized (:meth:`OfflineDataset.reference_range`)."""
    origin = data_origin(metadata)
    if origin == DSRL:
        return "DSRL reference returns"
    if origin == UNKNOWN and "reward_min" in metadata and "reward_max" in metadata:
        # A file that does not say where it came from: its numbers are used, for what they are.
        return "the reference returns in the dataset's metadata"
    return "the dataset's own return range"
