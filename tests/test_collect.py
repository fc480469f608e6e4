"""Dataset building: density filter, cost penalty, end-to-end builds, resume and time budget."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import envs
from envs import collect
from envs.cache import SHIPPED_DIR
from envs.collect import (
    Behaviour,
    BuildConfig,
    CostPenalty,
    build_dataset,
    checkpoint_steps,
    density_filter,
)
from safe_agents.cli import main

TOY = "OfflineToyReachAvoid-v0"
BALL = "OfflineBallRun-v0"
# A build small enough for tests: 2 behaviours x 2 checkpoints x 256 PPO steps, 4 episodes per
# rolled-out checkpoint (5 checkpoints with the initial policy).
TINY = {
    "behaviours": ("unconstrained", "limit:1"),
    "train_steps": 512,
    "n_checkpoints": 2,
    "noise_levels": (0.0, 0.5),
    "episodes_per_noise": 2,
    "ppo_n_steps": 128,
    "ppo_batch_size": 64,
    "ppo_n_epochs": 2,
    "ppo_net_arch": (32, 32),
    "n_bins": 4,
    "bin_cap": 3,
}


def _same_arrays(first: envs.OfflineDataset, second: envs.OfflineDataset) -> None:
    for name, values in first.to_dict().items():
        other = second.to_dict()[name]
        assert values.shape == other.shape, name
        assert np.array_equal(values, other), f"{name} differs"


@pytest.fixture(scope="module")
def toy_build(tmp_path_factory):
    """One uninterrupted tiny toy build (kept work dir), shared by the comparisons."""
    out = tmp_path_factory.mktemp("reference") / f"{TOY}.hdf5"
    build_dataset(TOY, out, budget_minutes=None, seed=3, keep_work_dir=True, **TINY)
    return out


# ------------------------------------------------------------------------------ density filter
def test_density_filter_caps_dense_cells_and_keeps_sparse_ones():
    # Costs in [0, 10] and returns in [0, 100] on a 2x2 grid: a dense safe/high-return cluster
    # of 20 episodes, 3 episodes at low cost/low return, 1 at high cost/high return.
    costs = np.array([1.0] * 20 + [0.0, 2.0, 3.0] + [10.0])
    returns = np.array([90.0] * 20 + [0.0, 10.0, 20.0] + [100.0])
    kept = density_filter(returns, costs, bins=2, cap=5, rng=np.random.default_rng(1))
    assert kept.dtype == np.int64 and np.all(np.diff(kept) > 0)
    assert len(kept) == 5 + 3 + 1
    assert np.count_nonzero(kept < 20) == 5  # the cluster is capped ...
    assert set(range(20, 24)) <= set(kept.tolist())  # ... the sparse cells keep everything
    again = density_filter(returns, costs, bins=2, cap=5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(kept, again)
    # Equal values form one cell; a cap above the count keeps all; (cost, return) bins work.
    assert len(density_filter(np.ones(4), np.zeros(4), bins=3, cap=2, rng=0)) == 2
    assert len(density_filter(returns, costs, bins=(1, 50), cap=100)) == len(costs)
    assert len(density_filter(np.zeros(0), np.zeros(0))) == 0


@pytest.mark.parametrize(
    ("returns", "costs", "kwargs", "message"),
    [
        (np.zeros(3), np.zeros(2), {}, "returns has 3 episodes but costs has 2"),
        (np.array([0.0, np.nan]), np.zeros(2), {}, "returns has a non-finite value at index 1"),
        (np.zeros(2), np.zeros(2), {"cap": 0}, "bins and cap must be >= 1"),
    ],
)
def test_density_filter_rejects_bad_input(returns, costs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        density_filter(returns, costs, **kwargs)


# ----------------------------------------------------------------------- settings and penalty
def test_behaviours_and_settings_are_validated():
    assert Behaviour.parse("limit:0.5").cost_limit(10.0) == 5.0
    assert Behaviour.parse("penalty:2").initial_penalty() == 2.0
    assert Behaviour.parse("unconstrained").cost_limit(10.0) is None
    with pytest.raises(ValueError, match="bad behaviour 'limit:-1'"):
        Behaviour.parse("limit:-1")
    with pytest.raises(ValueError, match=r"unknown build setting\(s\) \['epochs'\]; valid"):
        BuildConfig.from_overrides({"epochs": 3})
    with pytest.raises(ValueError, match="n_checkpoints must be an integer >= 1"):
        BuildConfig(n_checkpoints=0)
    config = BuildConfig.from_overrides({"behaviours": ["unconstrained"], "noise_levels": [0.1]})
    assert config.behaviours == ("unconstrained",) and config.to_dict()["noise_levels"] == [0.1]


def test_cost_penalty_subtracts_lambda_cost_and_follows_the_dual_rule():
    env = CostPenalty(envs.make(TOY), penalty=0.5, cost_limit=5.0, lr=0.1, max_penalty=1.0)
    env.reset(seed=0)
    saw_cost = False
    for _ in range(30):  # head for the hazard at the origin
        _, reward, _, _, info = env.step(np.array([1.0, 1.0], dtype=np.float32))
        assert reward == pytest.approx(info["reward"] - 0.5 * info["cost"])
        saw_cost |= info["cost"] > 0
    assert saw_cost
    env.finished_costs = [15.0, 5.0]  # mean 10 = twice the limit: violation (10 - 5) / 5 = 1
    assert env.update_penalty() == pytest.approx(0.5 + 0.1 * 1.0)
    assert env.finished_costs == []
    assert env.update_penalty() == pytest.approx(0.6)  # no finished episode: unchanged
    env.finished_costs = [0.0]  # violation -1
    assert env.update_penalty() == pytest.approx(0.5)
    env.load_state_dict({"penalty": 0.05, "finished_costs": [0.0]})
    assert env.update_penalty() == 0.0  # clipped at zero
    fixed = CostPenalty(envs.make(TOY), penalty=2.0, cost_scale=3.0)
    fixed.finished_costs = [100.0]
    assert fixed.update_penalty() == 2.0
    fixed.reset(seed=0)
    for _ in range(30):
        _, reward, _, _, info = fixed.step(np.array([1.0, 1.0], dtype=np.float32))
        assert reward == pytest.approx(info["reward"] - 6.0 * info["cost"])


def test_checkpoint_schedule():
    # 25 rollouts of 2048 steps: fractions 1/16..1 of them, rounded up to whole rollouts.
    assert checkpoint_steps(51200, 5, 2048) == [2048 * n for n in (2, 4, 7, 13, 25)]
    assert checkpoint_steps(51200, 5, 2048, "linear") == [2048 * n for n in (5, 10, 15, 20, 25)]
    assert checkpoint_steps(640, 5, 128) == [128, 256, 384, 512, 640]  # one rollout each
    with pytest.raises(ValueError, match="at least 5 rollouts long"):
        checkpoint_steps(512, 5, 128)
    with pytest.raises(ValueError, match="checkpoint_spacing must be 'geometric' or 'linear'"):
        BuildConfig(checkpoint_spacing="log")


# ------------------------------------------------------------------------------------ builds
def test_toy_build_end_to_end(toy_build, tmp_path, monkeypatch):
    data = envs.load_dataset(toy_build)
    meta = data.metadata
    returns, costs = data.episode_returns(), data.episode_costs()
    assert meta["task_id"] == TOY and meta["cost_limit"] == envs.get_task(TOY).cost_limit
    assert meta["reward_min"] == pytest.approx(returns.min())
    assert meta["reward_max"] == pytest.approx(returns.max())
    assert meta["cost_max"] == pytest.approx(costs.max())
    assert meta["complete"] is True and meta["seed"] == 3 and meta["package_version"]
    assert meta["build_config"]["behaviours"] == list(TINY["behaviours"])
    assert meta["build_plan"]["train_steps"] == 512
    assert set(meta["final_penalties"]) == {"unconstrained", "limit:1"}
    # 5 rolled-out checkpoints x 2 noise levels x 2 episodes, then the density filter.
    assert meta["episodes_recorded"] == 20
    assert data.n_episodes == sum(meta["episodes_by_behaviour"].values()) <= 20
    assert set(data.episode_lengths()) == {100}
    data.check_spaces(envs.make(TOY).observation_space, envs.make(TOY).action_space)
    assert toy_build.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Default output: the user cache, which load_dataset searches before the shipped dataset;
    # a finished build's work directory is removed.
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(tmp_path))
    path = build_dataset(TOY, budget_minutes=None, seed=3, plot=False, **TINY)
    assert path == tmp_path / f"{TOY}.hdf5" and not collect.work_dir(path).exists()
    _same_arrays(envs.load_dataset(TOY), data)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_dataset(TOY, budget_minutes=None, seed=3, **TINY)


def test_resume_after_a_kill_gives_the_same_file(toy_build, tmp_path, monkeypatch):
    out = tmp_path / "resumed.hdf5"
    calls = {"updates": 0}
    original_update = CostPenalty.update_penalty

    def killed_mid_training(self):
        calls["updates"] += 1
        if calls["updates"] == 5:  # the first rollout of the third training segment
            raise KeyboardInterrupt
        return original_update(self)

    monkeypatch.setattr(CostPenalty, "update_penalty", killed_mid_training)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(TOY, out, budget_minutes=None, seed=3, **TINY)
    manifest = json.loads((collect.work_dir(out) / collect.MANIFEST_NAME).read_text())
    assert "train/0/1" in manifest["done"] and "train/0/2" not in manifest["done"]
    assert not out.exists()

    monkeypatch.setattr(CostPenalty, "update_penalty", original_update)
    trained = []
    original_train = collect._Build.train_segment

    def counting(self, behaviour, checkpoint, progress):
        trained.append((behaviour, checkpoint))
        return original_train(self, behaviour, checkpoint, progress)

    monkeypatch.setattr(collect._Build, "train_segment", counting)
    build_dataset(TOY, out, budget_minutes=None, seed=3, **TINY)
    assert trained == [(0, 2), (1, 2)]  # finished segments were not trained again
    resumed, reference = envs.load_dataset(out), envs.load_dataset(toy_build)
    _same_arrays(resumed, reference)
    assert resumed.metadata == reference.metadata

    # Another seed gives other data (so the comparison above has teeth); other settings refuse
    # to resume a kept work directory.
    other = envs.load_dataset(
        build_dataset(TOY, tmp_path / "seed4.hdf5", budget_minutes=None, seed=4, **TINY)
    )
    assert not np.array_equal(other.observations[:100], reference.observations[:100])
    with pytest.raises(ValueError, match=r"other settings \(bin_cap: 3 -> 4\)"):
        build_dataset(TOY, toy_build, budget_minutes=None, seed=3, **{**TINY, "bin_cap": 4})


def test_budget_cut_writes_what_is_finished_and_a_rerun_completes_it(toy_build, tmp_path):
    out = tmp_path / "budget.hdf5"
    original_rollout = collect._Build.rollout

    def clock_runs_out_after_first_rollout(self, behaviour, checkpoint):
        finished = original_rollout(self, behaviour, checkpoint)
        self.deadline.end = time.monotonic()  # the budget is spent from here on
        return finished

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(collect._Build, "rollout", clock_runs_out_after_first_rollout)
        build_dataset(TOY, out, budget_minutes=30, seed=3, **TINY)
    partial = envs.load_dataset(out)
    assert partial.metadata["complete"] is False and partial.metadata["missing_stages"] > 0
    assert partial.metadata["episodes_recorded"] == 4  # only the initial policy was rolled out
    assert collect.work_dir(out).is_dir()

    build_dataset(TOY, out, budget_minutes=30, seed=3, **TINY)  # continues the build
    _same_arrays(envs.load_dataset(out), envs.load_dataset(toy_build))

    with pytest.raises(TimeoutError, match="rerun the same command"):
        build_dataset(TOY, tmp_path / "none.hdf5", budget_minutes=1e-4, seed=3, **TINY)


@pytest.mark.slow
def test_budget_plans_the_training_length(tmp_path):
    settings = {**TINY, "train_steps": None, "n_bins": 10}
    out = build_dataset(TOY, tmp_path / "planned.hdf5", budget_minutes=0.1, seed=0, **settings)
    plan = envs.load_dataset(out).metadata["build_plan"]
    assert plan["measured_train_steps_per_s"] > 0 and plan["measured_rollout_steps_per_s"] > 0
    assert plan["train_steps"] >= 2 * 128 and plan["train_steps"] % 128 == 0
    assert plan["checkpoint_steps"][-1] == plan["train_steps"]


@pytest.mark.simulator
def test_bullet_build_end_to_end(tmp_path):
    out = build_dataset(BALL, tmp_path / f"{BALL}.hdf5", budget_minutes=None, seed=0, **TINY)
    data = envs.load_dataset(out)
    env = envs.make(BALL)
    data.check_spaces(env.observation_space, env.action_space)
    env.close()
    assert data.metadata["task_id"] == BALL and data.metadata["cost_limit"] == 10.0
    assert data.metadata["episodes_recorded"] == 20 and data.n_episodes <= 20
    assert data.episode_lengths().max() <= envs.get_task(BALL).max_episode_steps
    assert data.episode_costs().max() > 0  # untrained and noisy behaviour leaves the safe zone
    assert out.with_suffix(".png").is_file()


# ------------------------------------------------------------------------ CLI, loading, plots
def test_collect_command(tmp_path, capsys):
    out = tmp_path / "cli.hdf5"
    argv = ["collect", "--task", TOY, "--out", str(out), "--seed", "1", "--no-progress"]
    argv += ["--set", "train_steps=256", "--set", 'behaviours=["limit:2"]', "--set"]
    argv += ["n_checkpoints=1", "--set", "ppo_n_steps=128", "--set", "episodes_per_noise=1"]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists; pass overwrite=True (--overwrite)" in err
    assert main([*argv, "--set", "bins=3"]) == 2
    assert "unknown build setting(s) ['bins']" in capsys.readouterr().err


def test_missing_dataset_names_the_collect_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(tmp_path))  # an empty cache; nothing shipped
    task = "OfflinePointGoal1Gymnasium-v0"
    with pytest.raises(FileNotFoundError, match=f"safe-agents collect --task {task}"):
        envs.load_dataset(task)


def test_plot_dataset_writes_a_png(tmp_path, toy_dataset):
    from envs.plots import plot_dataset

    path = plot_dataset(toy_dataset, tmp_path / "plane" / "toy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [item.name for item in path.parent.iterdir()] == ["toy.png"]
    with pytest.raises(envs.DatasetError, match="no cost labels"):
        plot_dataset(toy_dataset.without_costs(), tmp_path / "none.png")


def test_recipes_are_the_settings_the_shipped_datasets_were_built_with():
    """A recipe rebuilds its shipped file: the same length, behaviours and seed, and every
    other setting the default (the shipped files were built with defaults and a budget)."""
    defaults = BuildConfig()
    shipped = [task for task in collect.RECIPES if (SHIPPED_DIR / f"{task}.hdf5").is_file()]
    assert len(shipped) >= 4
    for task in shipped:
        metadata = envs.read_hdf5(SHIPPED_DIR / f"{task}.hdf5").metadata
        settings = collect.recipe(task)
        assert metadata["build_plan"]["train_steps"] == settings["train_steps"], task
        assert metadata["seed"] == collect.recipes.RECIPE_SEED
        config = BuildConfig(**{k: v for k, v in settings.items() if k != "train_steps"})
        assert metadata["behaviour"].startswith(
            f"stable-baselines3 PPO behaviour agents ({', '.join(config.behaviours)}), "
            f"{settings['train_steps']} steps each, {defaults.n_checkpoints} checkpoints"
        ), task
    with pytest.raises(ValueError, match="has no dataset recipe; the benchmark datasets with"):
        collect.recipe(TOY)


def test_build_missing_builds_only_what_this_machine_lacks(tmp_path, monkeypatch):
    """With an empty cache and nothing shipped for it, the toy task's (tiny) recipe is built
    into the cache and loads; a second call finds it and builds nothing."""
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(collect.recipes, "RECIPES", {TOY: dict(TINY)})
    monkeypatch.setattr(
        collect.recipes, "dataset_locations", lambda task: [tmp_path / f"{task}.hdf5"]
    )
    messages: list[str] = []
    built = collect.build_missing([TOY, BALL, TOY], announce=messages.append)
    assert built == [tmp_path / f"{TOY}.hdf5"]
    assert messages == [
        f"building the benchmark dataset of {TOY} ("
        + ", ".join(f"{key}={value}" for key, value in TINY.items())
        + ", seed 0)"
    ]
    data = envs.read_hdf5(built[0])
    assert data.metadata["build_plan"]["train_steps"] == TINY["train_steps"]
    assert data.metadata["seed"] == 0
    assert collect.build_missing([TOY], announce=messages.append) == []


def test_collect_recipe_command_refuses_settings_and_unknown_tasks(capsys):
    assert main(["collect", "--recipe", "--task", TOY, "--set", "train_steps=1"]) == 2
    assert "--recipe fixes the build settings and seed" in capsys.readouterr().err
    assert main(["collect", "--recipe", "--task", TOY]) == 2
    assert f"{TOY} has no dataset recipe" in capsys.readouterr().err
