"""Offline datasets: :class:`OfflineDataset` in memory, DSRL-format HDF5 on disk.

The in-memory fields and the HDF5 dataset names are DSRL's: ``observations, actions, rewards,
costs, next_observations, terminals, timeouts``, one row per transition; an episode ends at a row
whose ``terminals`` or ``timeouts`` is set (or at the last row). ``costs`` may be absent (the
cost-label-free setting of DSPO). Metadata (task id, cost limit, reference returns and costs, how
the data was made) travels as HDF5 attributes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

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


class DatasetError(ValueError):
    """A dataset that is malformed: the message names the field, file and first bad index."""


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
        for name, array in arrays.items():
            expected_rank = 2 if name in _VECTOR_FIELDS else 1
            if array.ndim == 1 and expected_rank == 2:
                array = array[:, None]  # one-dimensional spaces stored flat
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
            if name in _FLAG_FIELDS:
                bad = np.flatnonzero((array != 0) & (array != 1))
                if bad.size:
                    raise DatasetError(
                        f"field {name!r} must hold 0/1 flags, got {array[bad[0]]} at index {bad[0]}"
                    )
            object.__setattr__(self, name, array)
        if n == 0:
            raise DatasetError("the dataset has no transitions")
        if self.next_observations.shape[1] != self.observations.shape[1]:
            raise DatasetError(
                f"field 'next_observations' has {self.next_observations.shape[1]} columns but "
                f"'observations' has {self.observations.shape[1]}"
            )
        json.dumps(self.metadata)  # metadata must survive the HDF5 round trip

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
            metadata=dict(metadata or {}),
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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with h5py.File(temp_name, "w") as file:
            for name, values in dataset.to_dict().items():
                data = values.astype(bool) if name in _FLAG_FIELDS else values
                file.create_dataset(name, data=data, compression=compression)
            for key, value in dataset.metadata.items():
                file.attrs[key] = _encode_attribute(value)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def _encode_attribute(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    return "json:" + json.dumps(value)


def _decode_attribute(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith("json:"):
        return json.loads(value[5:])
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_hdf5(path: str | os.PathLike) -> OfflineDataset:
    """Read a DSRL-format HDF5 file (ours or one made by DSRL).

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: the file is not readable HDF5 (e.g. truncated), lacks a required key, or
            holds bad values; the message names the file and the key.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset file at {path}")
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
                arrays[name] = node[()]
            metadata = {key: _decode_attribute(value) for key, value in file.attrs.items()}
    except DatasetError:
        raise
    except OSError as error:
        raise DatasetError(
            f"{path} is not a readable HDF5 file (truncated or not HDF5?): {error}"
        ) from error
    try:
        return OfflineDataset.from_dict(arrays, metadata=metadata)
    except DatasetError as error:
        raise DatasetError(f"{path}: {error}") from error


def cache_dir() -> Path:
    """The user cache of built datasets.

    ``$SAFE_AGENTS_DATA_DIR`` when set, else ``~/.cache/safe-agents/datasets``.
    """
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override) if override else Path.home() / ".cache" / "safe-agents" / "datasets"


def dataset_locations(task_id: str) -> list[Path]:
    """Where :func:`load_dataset` looks for a task's dataset, in order."""
    return [cache_dir() / f"{task_id}.hdf5", SHIPPED_DIR / f"{task_id}.hdf5"]


def load_dataset(source: str | os.PathLike) -> OfflineDataset:
    """Load a dataset from an HDF5 path or by task id.

    A task id resolves to the user cache (:func:`cache_dir`), then to the datasets shipped with
    the package. Datasets are never built silently: a missing one is an error that names the
    ``safe-agents collect`` command (or :func:`envs.build_dataset`) that builds it.

    Raises:
        FileNotFoundError: neither a file nor a known dataset.
        DatasetError: the file is malformed (see :func:`read_hdf5`).
    """
    path = Path(source)
    if path.suffix in (".hdf5", ".h5") or path.is_file():
        return read_hdf5(path)
    task_id = str(source)
    for candidate in dataset_locations(task_id):
        if candidate.is_file():
            return read_hdf5(candidate)
    from envs.tasks import get_task

    get_task(task_id)  # an unknown id raises here, listing close matches
    places = ", ".join(str(place) for place in dataset_locations(task_id))
    raise FileNotFoundError(
        f"no dataset for {task_id} (looked in {places}). Build one into the cache with "
        f"`safe-agents collect --task {task_id}` (or envs.build_dataset({task_id!r})), "
        "or pass the path of a DSRL-format HDF5 file. benchmarks/datasets.md in the repository "
        "gives the command and time budget used for each benchmark task."
    )
