"""The safe-agents command line, run in-process: train, evaluate, info, and user errors."""

from __future__ import annotations

import json

import pytest

from safe_agents.cli import main

TOY = "OfflineToyReachAvoid-v0"


def test_train_then_evaluate_a_saved_agent(tmp_path, capsys):
    code = main(
        [
            "train",
            "bc_safe",
            "--task",
            TOY,
            "--steps",
            "200",
            "--seed",
            "3",
            "--out",
            str(tmp_path),
            "--set",
            "batch_size=64",
            "--set",
            "hidden_sizes=[32,32]",
            "--eval-episodes",
            "2",
            "--data-origin",
            "local",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    saved = tmp_path / f"bc_safe-{TOY}-seed3.zip"
    assert saved.is_file() and "normalized cost" in out
    assert "data: built locally (envs.toy_dataset.build_toy_dataset, seed 0)" in out
    assert (tmp_path / f"bc_safe-{TOY}-seed3" / "progress.csv").is_file()

    assert main(["evaluate", str(saved), "--task", TOY, "--episodes", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["normalized_cost"]) == 2 and "mean_normalized_return" in report
    assert report["normalization"].startswith("the dataset's own return range of the training")
    assert main(["evaluate", str(saved), "--task", TOY, "--episodes", "1"]) == 0
    assert "normalized return uses the dataset's own" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "bc_sfe", "--task", TOY], "unknown agent 'bc_sfe'. Did you mean bc_safe?"),
        (["train", "bc_all", "--task", "ToyReach"], "Did you mean: OfflineToyReachAvoid-v0"),
        (["train", "bc_all", "--task", TOY, "--set", "foo=1"], "unknown hyperparameter(s) ['foo']"),
        (["train", "bc_all", "--task", TOY, "--set", "foo"], "--set expects KEY=VALUE"),
        (["train", "bc_all", "--task", TOY, "--dataset", "missing.hdf5"], "no dataset file at"),
        (["evaluate", "missing.zip", "--task", TOY], "no saved agent at missing.zip"),
        (["train", "bc_all", "--task", TOY, "--data-origin", "dsrl"], "has no DSRL dataset"),
        (
            ["train", "bc_all", "--task", "OfflineAntRun-v0", "--data-origin", "local"],
            "safe-agents collect --task OfflineAntRun-v0",
        ),
    ],
)
def test_user_errors_are_one_line_without_traceback(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_info_lists_tasks_agents_and_the_shipped_dataset(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "OfflineMetadrive-harddense-v0" in out and "bc_safe" in out
    assert "built locally " in out and f"envs/data/{TOY}.hdf5" in out
    assert "DSRL SafetyAntRun-v0-150-1816.hdf5 downloads on first use" in out


def test_help_for_every_command(capsys):
    commands = ("train", "evaluate", "collect", "download", "info", "demo", "plot-feasibility")
    for command in (*commands, "bench", "report"):
        with pytest.raises(SystemExit) as raised:
            main([command, "--help"])
        assert raised.value.code == 0
    printed = capsys.readouterr().out
    assert "--steps" in printed and "a config set (a folder with sweep.toml" in printed


def test_the_package_runs_as_a_module():
    # python -m safe_agents.cli is what the sweep tests and the docs run (safe_agents/cli/).
    import subprocess
    import sys

    import safe_agents

    result = subprocess.run(
        [sys.executable, "-m", "safe_agents.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"safe-agents {safe_agents.__version__}"


CUSTOM_ENV_MODULE = '''
import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk right to the goal; the cost is the speed above 0.5."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = np.zeros(1, np.float32), 0
        return self.x.copy(), {}

    def step(self, action):
        speed = float(np.clip(action, -1.0, 1.0)[0])
        self.x = self.x + np.float32(speed)
        self.t += 1
        info = {"cost": float(max(speed - 0.5, 0.0) > 0)}
        return self.x.copy(), speed, False, self.t >= 20, info


def make():
    return Corridor()
'''


def test_train_and_evaluate_a_custom_env_from_the_command_line(tmp_path, capsys, monkeypatch):
    import numpy as np

    import envs

    (tmp_path / "corridor.py").write_text(CUSTOM_ENV_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from corridor import make  # type: ignore[import-not-found]

    env = make()
    parts = [
        envs.collect_episodes(env, lambda obs, s=speed: np.array([s], np.float32), 3, seed=i)
        for i, speed in enumerate((0.3, 0.6, 0.9))
    ]
    metadata = {**parts[0].metadata, "cost_limit": 5.0}
    data = envs.OfflineDataset.concatenate(parts, metadata=metadata)
    envs.save_dataset(data, tmp_path / "corridor.hdf5")

    argv = ["train", "bc_safe", "--env", "corridor:make", "--dataset", "corridor.hdf5"]
    argv += ["--steps", "100", "--eval-episodes", "2", "--out", "runs", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    saved = tmp_path / "runs" / "bc_safe-corridor.make-seed0.zip"
    assert saved.is_file() and "evaluation over 2 episodes" in out
    argv = ["evaluate", str(saved), "--env", "corridor:make", "--json", "--episodes", "2"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    # Normalized with the custom data's own return range, which the agent saved.
    assert report["reward_range"] == pytest.approx(list(data.reference_range()))
    assert len(report["normalized_cost"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "x.zip", "--env", "nosuchmodule:make"], "cannot import 'nosuchmodule'"),
        (["train", "bc_all", "--env", "corridor:make"], "--env needs --dataset FILE"),
        (["evaluate", "x.zip"], "give --task TASK_ID"),
    ],
)
def test_custom_env_mistakes_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    import envs

    monkeypatch.chdir(tmp_path)
    if argv[0] == "evaluate":  # a real saved agent, so the error is about the environment
        from safe_agents import BCAll

        BCAll(envs.make(TOY), seed=0).save(tmp_path / "x.zip")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_missing_simulator_names_the_extra_to_install(monkeypatch, capsys, tmp_path):
    import envs
    from safe_agents import BCAll

    BCAll(envs.make(TOY), seed=0).save(tmp_path / "x.zip")
    from envs import _compat

    def missing_simulator():  # what a core install meets (scripts/check_core_install.sh: real)
        raise ModuleNotFoundError("No module named 'pybullet'", name="pybullet")

    monkeypatch.setattr(_compat, "import_bullet_safety_gym", missing_simulator)
    with pytest.raises(envs.SimulatorNotInstalledError) as raised:
        envs.make("OfflineBallRun-v0")
    assert 'pip install "safe-agents[bullet]"' in str(raised.value)
    assert isinstance(raised.value, ImportError)
    assert main(["evaluate", str(tmp_path / "x.zip"), "--task", "OfflineBallRun-v0"]) == 2
    err = capsys.readouterr().err
    assert "OfflineBallRun-v0 runs on Bullet-Safety-Gym, which is not installed here" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_trains_fisor_and_the_bc_baselines_and_draws_the_feasible_region(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path), "--fisor-steps", "30", "--bc-steps", "30"]
    assert main([*argv, "--episodes", "2", "--steps", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.strip().startswith(("bc_", "fisor"))]
    assert [row[0] for row in table] == ["bc_all", "bc_safe", "fisor"]
    for row in table:  # steps, seconds, normalized return, normalized cost, safe episodes
        assert len(row) == 6 and row[-1].endswith("/2") and float(row[4]) >= 0.0
    assert (tmp_path / "fisor_feasibility.png").stat().st_size > 10_000
    assert (tmp_path / "fisor_toy.zip").is_file()
    assert out.count(" runs: return ") + out.count(" not available: ") == 4


def test_one_version_source(capsys):
    from importlib.metadata import version

    import safe_agents

    # pyproject.toml reads the version from safe_agents/_version.py (dynamic = ["version"]).
    assert version("safe-agents") == safe_agents.__version__
    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.strip() == f"safe-agents {safe_agents.__version__}"
