"""OfflineDataset validation, episode bookkeeping, the cost-free split and DSRL-format HDF5 I/O."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import envs
from envs import DatasetError, OfflineDataset


def _arrays(n=6, obs_dim=3, act_dim=2):
    rng = np.random.default_rng(0)
    terminals = np.zeros(n)
    timeouts = np.zeros(n)
    timeouts[2] = 1.0  # two episodes: rows 0-2 and 3-5
    terminals[5] = 1.0
    return {
        "observations": rng.normal(size=(n, obs_dim)),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)),
        "rewards": np.arange(n, dtype=float),
        "costs": np.array([0, 1, 0, 2, 2, 2], dtype=float),
        "next_observations": rng.normal(size=(n, obs_dim)),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def test_episodes_returns_and_costs_follow_terminals_and_timeouts():
    data = OfflineDataset.from_dict(_arrays(), metadata={"cost_limit": 1.0})
    assert data.episode_bounds() == [(0, 3), (3, 6)]
    np.testing.assert_allclose(data.episode_returns(), [0 + 1 + 2, 3 + 4 + 5])
    np.testing.assert_allclose(data.episode_costs(), [1, 6])
    assert data.observations.dtype == np.float32 and data.terminals.dtype == np.float32
    safe = data.filter_episodes(max_cost=1.0)
    assert len(safe) == 3 and safe.n_episodes == 1
    assert [len(episode) for episode in data.episodes()] == [3, 3]
    assert data.summary()["safe_fraction"] == 0.5


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rewards", np.zeros(5), "'rewards' has 5 rows but 'observations' has 6"),
        ("actions", np.zeros((6, 2, 2)), "'actions' must have 2 dimension"),
        ("costs", np.array([0, 0, 0, np.nan, 0, 0]), "'costs' has a non-finite value at index 3"),
        (
            "observations",
            np.full((6, 3), np.inf),
            "'observations' has a non-finite value at index 0",
        ),
        ("terminals", np.array([0, 0, 0, 0, 0.5, 1]), "'terminals' must hold 0/1 flags.*index 4"),
        ("rewards", np.array(["a"] * 6), "'rewards' must be numeric"),
    ],
)
def test_bad_arrays_name_the_field_and_index(field, value, message):
    arrays = _arrays()
    arrays[field] = value
    with pytest.raises(DatasetError, match=message):
        OfflineDataset.from_dict(arrays)


def test_unknown_and_missing_fields_are_named():
    arrays = _arrays()
    with pytest.raises(DatasetError, match="unknown field.*'dones'"):
        OfflineDataset.from_dict({**arrays, "dones": arrays["terminals"]})
    del arrays["next_observations"]
    with pytest.raises(DatasetError, match="missing field.*next_observations"):
        OfflineDataset.from_dict(arrays)


def test_check_spaces_names_the_mismatch():
    data = OfflineDataset.from_dict(_arrays())
    env = envs.make("OfflineToyReachAvoid-v0")
    with pytest.raises(DatasetError, match="'observations' has 3 columns.*has 2"):
        data.check_spaces(env.observation_space, env.action_space)


def test_from_episodes_and_concatenate_keep_episode_boundaries():
    episode = {
        "observations": np.zeros((4, 2)),  # T + 1 rows
        "actions": np.zeros((3, 2)),
        "rewards": np.ones(3),
        "costs": np.zeros(3),
    }
    data = OfflineDataset.from_episodes([episode, {**episode, "terminated": True}])
    np.testing.assert_array_equal(data.timeouts, [0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(data.terminals, [0, 0, 0, 0, 0, 1])
    joined = OfflineDataset.concatenate([data, data])
    assert joined.n_episodes == 4
    np.testing.assert_allclose(joined.episode_returns(), [3, 3, 3, 3])
    with pytest.raises(DatasetError, match="4 rows"):
        OfflineDataset.from_episodes([{**episode, "observations": np.zeros((2, 2))}])


def test_strip_costs_gives_safe_demos_and_an_unlabeled_rest(toy_dataset):
    limit = toy_dataset.metadata["cost_limit"]
    unlabeled, demos = toy_dataset.strip_costs(n_safe_demos=10, cost_limit=limit, seed=3)
    assert unlabeled.costs is None and demos.costs is None
    assert demos.n_episodes == 10
    assert unlabeled.n_episodes == toy_dataset.n_episodes - 10
    # The demos are safe episodes of the original data (checked against the hidden costs).
    costs = toy_dataset.episode_costs()
    returns = toy_dataset.episode_returns()
    for demo_return in demos.episode_returns():
        match = np.flatnonzero(np.isclose(returns, demo_return))
        assert match.size and (costs[match] <= limit).all()
    with pytest.raises(DatasetError, match="no cost labels"):
        unlabeled.episode_costs()
    with pytest.raises(DatasetError, match="safe demonstrations"):
        toy_dataset.strip_costs(n_safe_demos=10_000, cost_limit=limit)
    again, _ = toy_dataset.strip_costs(n_safe_demos=10, cost_limit=limit, seed=3)
    np.testing.assert_array_equal(again.observations, unlabeled.observations)


def test_hdf5_round_trip_keeps_arrays_and_metadata(tmp_path):
    data = OfflineDataset.from_dict(
        _arrays(), metadata={"task_id": "X", "cost_limit": 5.0, "settings": {"noise": [0.1, 0.2]}}
    )
    path = envs.save_dataset(data, tmp_path / "sub" / "data.hdf5")
    loaded = envs.load_dataset(path)
    for name, values in data.to_dict().items():
        np.testing.assert_array_equal(getattr(loaded, name), values)
    assert loaded.metadata == data.metadata
    with h5py.File(path) as file:  # DSRL's on-disk conventions
        assert file["terminals"].dtype == bool and file["observations"].dtype == np.float32
    assert [p.name for p in path.parent.iterdir()] == ["data.hdf5"]  # no temp file left


def test_a_file_written_the_dsrl_way_loads_unchanged(tmp_path):
    # DSRL's files: float32 arrays, bool flags, no attributes; written here with plain h5py.
    arrays = _arrays()
    path = tmp_path / "SafetyCarCircle-v0-100-1450.hdf5"
    with h5py.File(path, "w") as file:
        for name, values in arrays.items():
            dtype = bool if name in ("terminals", "timeouts") else np.float32
            file.create_dataset(name, data=np.asarray(values).astype(dtype))
    loaded = envs.load_dataset(str(path))
    np.testing.assert_allclose(loaded.rewards, arrays["rewards"])
    assert loaded.n_episodes == 2
    # Recognised by DSRL's file name: labelled with its task and DSRL's reference values.
    spec = envs.get_task("OfflineCarCircle-v0")
    assert loaded.origin == "dsrl" and loaded.metadata["task_id"] == spec.task_id
    assert loaded.provenance == "DSRL SafetyCarCircle-v0-100-1450.hdf5"
    assert loaded.reference_range() == (spec.reward_min, spec.reward_max)


def test_bad_files_give_clear_errors(tmp_path):
    data = OfflineDataset.from_dict(_arrays())
    good = envs.save_dataset(data, tmp_path / "good.hdf5")

    missing = tmp_path / "missing_key.hdf5"
    with h5py.File(missing, "w") as file:
        for name, values in data.to_dict().items():
            if name != "rewards":
                file.create_dataset(name, data=values)
    with pytest.raises(DatasetError, match=r"missing_key.hdf5: missing key\(s\) \['rewards'\]"):
        envs.load_dataset(missing)

    wrong_dtype = tmp_path / "wrong_dtype.hdf5"
    with h5py.File(wrong_dtype, "w") as file:
        for name, values in data.to_dict().items():
            file.create_dataset(name, data=values if name != "costs" else np.array([b"x"] * 6))
    with pytest.raises(DatasetError, match="key 'costs' has dtype"):
        envs.load_dataset(wrong_dtype)

    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(DatasetError, match="not a readable HDF5 file"):
        envs.load_dataset(truncated)

    with pytest.raises(FileNotFoundError):
        envs.load_dataset(tmp_path / "absent.hdf5")


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    data = OfflineDataset.from_dict(_arrays())
    target = tmp_path / "data.hdf5"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(OSError, match="disk full"):
        envs.save_dataset(data, target)
    assert list(tmp_path.iterdir()) == []


def test_load_by_task_id_uses_cache_then_shipped(tmp_path, monkeypatch, toy_dataset):
    assert toy_dataset.metadata["task_id"] == "OfflineToyReachAvoid-v0"
    assert toy_dataset.n_episodes >= 100
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(tmp_path))
    small = toy_dataset.select_episodes([0, 1])
    envs.save_dataset(small, tmp_path / "OfflineToyReachAvoid-v0.hdf5")
    assert len(envs.load_dataset("OfflineToyReachAvoid-v0")) == len(small)
    # AntRun ships no dataset (only the toy and Bullet benchmark tasks do).
    with pytest.raises(FileNotFoundError, match="no dataset for OfflineAntRun-v0"):
        envs.load_dataset("OfflineAntRun-v0")
    with pytest.raises(envs.UnknownTaskError):
        envs.load_dataset("OfflineBallRn-v0")


def test_shipped_toy_dataset_spreads_over_the_reward_cost_plane(toy_dataset):
    spec = envs.get_task("OfflineToyReachAvoid-v0")
    returns, costs = toy_dataset.episode_returns(), toy_dataset.episode_costs()
    safe = costs <= spec.cost_limit
    assert 0.2 < safe.mean() < 0.8
    # The best return overall is unsafe: the task is not trivially solved by ignoring cost.
    assert returns.max() > returns[safe].max()
    assert returns.min() == pytest.approx(spec.reward_min)
    assert returns.max() == pytest.approx(spec.reward_max)


@pytest.mark.simulator
@pytest.mark.parametrize(
    "task_id, most_safe",
    [
        ("OfflineBallRun-v0", 0.95),
        ("OfflineCarCircle-v0", 0.95),
        ("OfflineDroneCircle-v0", 0.95),
        # The CPU-built MetaDrive data is mostly safe driving (benchmarks/datasets.md says why).
        ("OfflineMetadrive-easysparse-v0", 0.995),
    ],
)
def test_shipped_simulator_datasets_fit_their_task_and_are_not_trivial(
    task_id, most_safe, tmp_path, monkeypatch
):
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(tmp_path))  # an empty cache: the shipped file
    dataset = envs.load_dataset(task_id)
    assert dataset.metadata["task_id"] == task_id
    assert dataset.metadata["complete"]
    env = envs.make(task_id)
    try:
        dataset.check_spaces(env.observation_space, env.action_space)
    finally:
        env.close()
    returns, costs = dataset.episode_returns(), dataset.episode_costs()
    safe = costs <= envs.get_task(task_id).cost_limit
    assert dataset.n_episodes >= 100
    assert 0.05 < safe.mean() < most_safe
    # The unconstrained optimum of the data is unsafe, so ignoring the cost does not solve it.
    assert returns.max() > returns[safe].max()


def _datasets_script():
    """benchmarks/datasets.py as a module (a script, not part of the package)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "datasets.py"
    spec = importlib.util.spec_from_file_location("_datasets_script", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cost_free_rest_of_a_dataset_counts_steps_that_never_cost_again():
    # benchmarks/datasets.py's lower bound on FISOR's feasible region, on two hand-made
    # episodes: costs [0, 1, 0] then [0, 0]: the last step of the first and all of the second.
    module = _datasets_script()
    n = 5
    data = OfflineDataset(
        observations=np.zeros((n, 2), np.float32),
        actions=np.zeros((n, 1), np.float32),
        rewards=np.ones(n, np.float32),
        costs=np.array([0, 1, 0, 0, 0], np.float32),
        next_observations=np.zeros((n, 2), np.float32),
        terminals=np.zeros(n, np.float32),
        timeouts=np.array([0, 0, 1, 0, 1], np.float32),
    )
    assert module.cost_free_rest_fraction(data) == pytest.approx(3 / 5)


def test_the_median_safe_return_is_normalized_with_the_data_range():
    module = _datasets_script()
    from envs.metrics import Normalizer

    # Safe returns 0 and 5: median 2.5, on the reference range [-10, 30].
    normalizer = Normalizer(-10.0, 30.0, cost_limit=10.0)
    assert module.median_normalized(np.array([0.0, 5.0]), normalizer) == pytest.approx(12.5 / 40)
