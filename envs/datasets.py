"""Offline datasets: :class:`OfflineDataset` in memory, DSRL-format HDF5 on disk.

The in-memory fields and the HDF5 dataset names are DSRL's: ``observations, actions, rewards,
costs, next_observations, terminals, timeouts``, one row per transition; an episode ends at a row
whose ``terminals`` or ``timeouts`` is set (or at the last row). ``costs`` may be absent (the
cost-label-free setting of DSPO). Metadata (task id, cost limit, reference returns and costs, how
the data was made) travels as HDF5 attributes.

Every dataset says where it came from (:attr:`OfflineDataset.origin`, :attr:`~OfflineDataset.
provenance`): DSRL's published files (``origin="dsrl"``, downloaded by :mod:`envs.download`), or
data built on this machine (``origin="local"``: :func:`envs.build_dataset` or the toy task's
script). The two are normalized differently (:meth:`OfflineDataset.reference_range`): DSRL's data
with DSRL's reference returns, as the papers do; locally built data with its own lowest and
highest episode return, so that a score on it is never mistaken for one on DSRL's data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

# Beyond this magnitude float32 statistics and weights overflow: shared with predict's check.
from safe_agents.common.data import MAX_ABS_VALUE

_LOG = logging.getLogger(__name__)

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

#: Environment variable overriding the user cache of built datasets.
CACHE_ENV_VAR = "SAFE_AGENTS_DATA_DIR"
SHIPPED_DIR = Path(__file__).parent / "data"

#: The largest metadata attribute read from a file (metadata is a few KB).
MAX_ATTRIBUTE_BYTES = 16 * 2**20
#: Environment variable bounding the bytes one dataset file may make the reader allocate
#: (default: 80% of the memory available when it is read).
MAX_BYTES_ENV_VAR = "SAFE_AGENTS_MAX_DATASET_BYTES"

#: Where a dataset came from (``metadata["origin"]``).
DSRL = "dsrl"
LOCAL = "local"
UNKNOWN = "unknown"
#: What :func:`load_dataset` may use for a task id.
ORIGINS = ("auto", "local", "dsrl")
#: DSRL's file names: ``Safety<Task>-v<k>-<a>-<b>.hdf5`` / ``SafeMetaDrive-<map>-v0-<a>-<b>.hdf5``.
_DSRL_FILE = re.compile(r"Safe[A-Za-z0-9-]+-v\d+-\d+-\d+\.hdf5")


class DatasetError(ValueError):
    """A dataset that is malformed: the message names the field, file and first bad index."""


class DatasetTooLargeError(DatasetError):
    """A file declaring more data than the reader may allocate (:func:`max_dataset_bytes`)."""


def _as_array(name: str, value: Any) -> np.ndarray:
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

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray | None
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
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
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        costs: np.ndarray | None,
        next_observations: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray | None = None,
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
    def from_dict(cls, arrays: Mapping[str, Any], metadata: Mapping[str, Any] | None = None):
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
        parts: dict[str, list[np.ndarray]] = {name: [] for name in FIELDS}
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

    def episode_ids(self) -> np.ndarray:
        """``(N,)`` index of the episode each row belongs to."""
        ids = np.empty(len(self), dtype=np.int64)
        for index, (start, stop) in enumerate(self.episode_bounds()):
            ids[start:stop] = index
        return ids

    def episode_lengths(self) -> np.ndarray:
        return np.array([stop - start for start, stop in self.episode_bounds()], dtype=np.int64)

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode."""
        return self._per_episode_sum(self.rewards)

    def episode_costs(self) -> np.ndarray:
        """Undiscounted cost of each episode.

        Raises:
            DatasetError: if the dataset has no cost labels.
        """
        if self.costs is None:
            raise DatasetError("this dataset has no cost labels (its costs were stripped)")
        return self._per_episode_sum(self.costs)

    def _per_episode_sum(self, values: np.ndarray) -> np.ndarray:
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

    def check_spaces(self, observation_space: gym.Space, action_space: gym.Space) -> None:
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
    def select(self, rows: np.ndarray) -> OfflineDataset:
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

    def to_dict(self) -> dict[str, np.ndarray]:
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


def _end_last(flags: np.ndarray) -> np.ndarray:
    flags = flags.copy()
    flags[-1] = 1.0
    return flags


def _ended(dataset: OfflineDataset, name: str) -> np.ndarray:
    values = getattr(dataset, name)
    if name == "timeouts" and not (dataset.terminals[-1] or dataset.timeouts[-1]):
        return _end_last(values)
    return values


# --------------------------------------------------------------------------------- HDF5 files
def save_dataset(
    dataset: OfflineDataset, path: str | os.PathLike, compression: str | None = "gzip"
) -> Path:
    """Write ``dataset`` as a DSRL-format HDF5 file, atomically (temp file + rename).

    Flags are stored as booleans and arrays as float32, as DSRL does; metadata becomes HDF5
    attributes (non-scalar values JSON-encoded).
    """
    import h5py

    from safe_agents.common.fileio import atomic_path

    path = Path(path)
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        for name, values in dataset.to_dict().items():
            data = values.astype(bool) if name in _FLAG_FIELDS else values
            file.create_dataset(name, data=data, compression=compression)
        for key, value in dataset.metadata.items():
            file.attrs[key] = _encode_attribute(value)
    return path


def _encode_attribute(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    return "json:" + json.dumps(value)


def _decode_attribute(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str) and value.startswith("json:"):
        try:
            return json.loads(value[5:])
        except (ValueError, RecursionError):
            return value  # not ours after all: kept as the text it is
    return _plain(value)  # numpy scalars and arrays, byte strings inside arrays


def max_dataset_bytes() -> int:
    """How many bytes one dataset file may make :func:`read_hdf5` allocate: ``$SAFE_AGENTS_MAX_
    DATASET_BYTES`` when set, else 80% of the memory available now: the system's available
    memory, or a container's (cgroup) limit when lower; 16 GiB where neither is known.

    Raises:
        ValueError: the variable is not a positive finite number of bytes.
    """
    override = os.environ.get(MAX_BYTES_ENV_VAR)
    if override:
        try:
            limit = float(override)
        except ValueError:
            limit = math.nan
        if not (math.isfinite(limit) and limit > 0):
            raise ValueError(
                f"{MAX_BYTES_ENV_VAR} must be a positive number of bytes, got {override!r}"
            )
        return int(limit)
    available = [_proc_meminfo_available(), _cgroup_memory_left()]
    known = [value for value in available if value is not None]
    return int(0.8 * min(known)) if known else 16 * 2**30


def _proc_meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_memory_left() -> int | None:
    """What a cgroup v2 memory limit leaves (``memory.max - memory.current``), if one is set."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text().strip()), 0)
    except (OSError, ValueError):
        return None


def read_hdf5(
    path: str | os.PathLike,
    max_bytes: int | None = None,
    *,
    labels: Mapping[str, Any] | None = None,
) -> OfflineDataset:
    """Read a DSRL-format HDF5 file (ours or one made by DSRL).

    ``labels`` are metadata set over the file's own (how :func:`load_dataset` labels DSRL's
    files); without them, a file named as DSRL names its files is labelled as that task's.

    The shapes the file declares are checked against ``max_bytes`` (default
    :func:`max_dataset_bytes`) before anything is read, so a small file declaring a huge array
    is an error, not an allocation.

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: the file is not readable HDF5 (truncated, a corrupt chunk), lacks a
            required key, declares more data than ``max_bytes``, or holds bad values; the
            message names the file and the key.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset file at {path}")
    limit = max_dataset_bytes() if max_bytes is None else max_bytes
    try:
        with h5py.File(path, "r") as file:
            missing = [
                name for name in FIELDS if name not in file and name not in ("costs", "timeouts")
            ]
            if missing:
                raise DatasetError(
                    f"{path}: missing key(s) {missing}; the file has {sorted(file.keys())}, a "
                    f"DSRL-format file has {list(FIELDS)}"
                )
            arrays = {}
            for name in FIELDS:
                if name not in file:
                    continue
                node = file[name]
                if not isinstance(node, h5py.Dataset):
                    raise DatasetError(f"{path}: key {name!r} is a group, expected an array")
                if node.dtype.kind not in "biuf":
                    raise DatasetError(
                        f"{path}: key {name!r} has dtype {node.dtype}, expected numbers"
                    )
            # Declared shapes first, nothing read yet: equal row counts, then the bytes (the
            # file's plus their float32 copies) against the limit.
            rows = {
                name: file[name].shape[0] if file[name].shape else 0
                for name in FIELDS
                if name in file
            }
            if len(set(rows.values())) > 1:
                name = max(rows, key=lambda key: rows[key])
                raise DatasetError(
                    f"{path}: key {name!r} declares {rows[name]:,} rows but "
                    f"'observations' declares {rows['observations']:,} (every field has one "
                    "row per transition)"
                )
            # The file's bytes, plus a float32 copy of the fields stored in another type.
            declared = {
                name: int(np.prod(file[name].shape, dtype=np.float64))
                * (file[name].dtype.itemsize + (0 if file[name].dtype == np.float32 else 4))
                for name in FIELDS
                if name in file
            }
            if sum(declared.values()) > limit:
                name = max(declared, key=lambda key: declared[key])
                raise DatasetTooLargeError(
                    f"{path}: key {name!r} declares shape {file[name].shape} "
                    f"({sum(declared.values()):,} bytes to read in all), more than the "
                    f"{limit:,} allowed ({MAX_BYTES_ENV_VAR} raises the limit)"
                )
            for name in declared:
                arrays[name] = file[name][()]
            metadata = {}
            for key in file.attrs:
                info = file.attrs.get_id(key)
                size = int(np.prod(info.shape or (), dtype=np.float64)) * info.dtype.itemsize
                if size > MAX_ATTRIBUTE_BYTES:  # checked before the attribute is read
                    raise DatasetError(
                        f"{path}: attribute {key!r} declares {size:,} bytes, more than the "
                        f"{MAX_ATTRIBUTE_BYTES:,} metadata may hold"
                    )
                metadata[key] = _decode_attribute(file.attrs[key])
    except DatasetError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, MemoryError) as error:
        # h5py raises OSError for a truncated file, RuntimeError/ValueError for a corrupt
        # chunk or filter; any of them means the file cannot be read as it is.
        raise DatasetError(
            f"{path} is not a readable HDF5 file (truncated, corrupt or not HDF5?): "
            f"{type(error).__name__}: {error}"
        ) from error
    if labels is not None:
        metadata = {**metadata, **labels}
    elif data_origin(metadata) == UNKNOWN and _DSRL_FILE.fullmatch(path.name):
        metadata = {**metadata, **_dsrl_metadata_for_file(path.name)}
    try:
        return OfflineDataset.from_dict(arrays, metadata=metadata)
    except DatasetError as error:
        raise DatasetError(f"{path}: {error}") from error


def cache_dir() -> Path:
    """The user cache of datasets (built ones as ``<task_id>.hdf5``, DSRL's under ``dsrl/``).

    ``$SAFE_AGENTS_DATA_DIR`` when set, else ``~/.cache/safe-agents/datasets``.
    """
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override) if override else Path.home() / ".cache" / "safe-agents" / "datasets"


def dataset_locations(task_id: str) -> list[Path]:
    """Where :func:`load_dataset` looks for a locally built dataset of a task, in order."""
    return [cache_dir() / f"{task_id}.hdf5", SHIPPED_DIR / f"{task_id}.hdf5"]


def load_dataset(
    source: str | os.PathLike,
    origin: str = "auto",
    *,
    progress_bar: bool = True,
    timeout: float | None = None,
) -> OfflineDataset:
    """Load a dataset from an HDF5 path or by task id.

    A task id resolves by ``origin``:

    - ``"local"``: data built locally, never the network: a dataset built into the user cache
      (:func:`cache_dir`, by ``safe-agents collect``), then one shipped with the package.
    - ``"dsrl"``: DSRL's data: a copy downloaded earlier (this package's cache, then
      ``dsrl``'s own), else the download (:func:`envs.download.download_dsrl`;
      ``$SAFE_AGENTS_DSRL_URL`` names a mirror).
    - ``"auto"`` (default): a copy on this machine (DSRL's first, then one built locally), else
      DSRL's download.

    The loaded dataset's :attr:`~OfflineDataset.origin` and :attr:`~OfflineDataset.provenance`
    say which one it is.

    Datasets are never built silently: when nothing is found, the error names the
    ``safe-agents collect`` command (or :func:`envs.build_dataset`) that builds one.

    Args:
        source: a task id, or the path of a DSRL-format HDF5 file (``origin`` is then ignored).
        origin: ``"auto"``, ``"local"`` or ``"dsrl"``.
        progress_bar: show the download's progress bar.
        timeout: seconds to wait for the download's host (default
            :data:`envs.download.DEFAULT_TIMEOUT`).

    Raises:
        FileNotFoundError: neither a file nor a dataset found for ``origin`` (with ``"auto"``,
            the failed download's reason is in the message).
        envs.download.DownloadError: ``origin="dsrl"`` and the download failed.
        DatasetError: the file is malformed (see :func:`read_hdf5`), or the toy task was asked
            for with ``origin="dsrl"``.
        UnknownTaskError: an unknown task id.
    """
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    path = Path(source)
    if path.suffix in (".hdf5", ".h5") or path.is_file():
        return read_hdf5(path)
    task_id = str(source)
    from envs import download
    from envs.tasks import get_task

    spec = get_task(task_id)  # an unknown id raises here, listing close matches
    has_dsrl_data = spec.dsrl_name is not None
    reuse_dsrl_cache = True
    if origin != "local" and has_dsrl_data:
        found = download.find_dsrl_file(task_id)
        if found is not None:
            try:
                return _read_dsrl(found, task_id)
            except DatasetError as error:
                if found.parent == download.download_dir():  # ours: validated when it arrived
                    raise DatasetError(f"{error}; delete {found} to download it again") from None
                # dsrl writes its cache in place, so an interrupted dsrl download leaves half a
                # file there: download a copy of our own instead.
                _LOG.warning("skipping %s, a damaged copy in dsrl's cache: %s", found, error)
                reuse_dsrl_cache = False
    if origin != "dsrl":
        for candidate in dataset_locations(task_id):
            if candidate.is_file():
                return read_hdf5(candidate)
    reason = "origin='local' does not download"
    if origin != "local" and has_dsrl_data:
        fetch: dict[str, Any] = {
            "progress_bar": progress_bar,
            "reuse_dsrl_cache": reuse_dsrl_cache,
        }
        if timeout is not None:
            fetch["timeout"] = timeout
        try:
            return _read_dsrl(download.download_dsrl(task_id, **fetch), task_id)
        except download.DownloadError as error:
            if origin == "dsrl":
                raise
            reason = f"DSRL's download failed: {error}"
    elif origin == "dsrl":
        download.dsrl_url(task_id)  # raises: the toy task has no DSRL dataset
    places = ", ".join(str(place) for place in dataset_locations(task_id))
    raise FileNotFoundError(
        f"no dataset for {task_id} (looked in {places}; {reason}). Build one into the cache "
        f"with `safe-agents collect --task {task_id}` (or envs.build_dataset({task_id!r})), "
        "or pass the path of a DSRL-format HDF5 file. benchmarks/datasets.md in the repository "
        "gives the command and time budget used for each benchmark task."
    )


def _read_dsrl(path: Path, task_id: str) -> OfflineDataset:
    """Read a DSRL file, labelled with its task, origin and DSRL's reference values."""
    from envs.download import dsrl_address

    labels = {
        **_dsrl_metadata(task_id, path.name),
        "source_url": dsrl_address(task_id),  # DSRL's address, whichever mirror served it
    }
    return read_hdf5(path, labels=labels)  # one read, one validation of the arrays


def _dsrl_metadata(task_id: str, file_name: str) -> dict[str, Any]:
    from envs.tasks import get_task

    spec = get_task(task_id)
    return {
        "task_id": task_id,
        "origin": DSRL,
        "dsrl_file": file_name,
        "cost_limit": spec.cost_limit,
        "reward_min": spec.reward_min,
        "reward_max": spec.reward_max,
        "cost_min": spec.cost_min,
        "cost_max": spec.cost_max,
        "max_episode_steps": spec.max_episode_steps,
    }


def _dsrl_metadata_for_file(file_name: str) -> dict[str, Any]:
    """The labels of a DSRL file given by path, found by its file name (none if unknown)."""
    from envs.download import dsrl_file_name
    from envs.tasks import get_task, list_tasks

    for task_id in list_tasks():
        if get_task(task_id).dsrl_name is not None and dsrl_file_name(task_id) == file_name:
            return _dsrl_metadata(task_id, file_name)
    return {}


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
