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
    assert "data: built locally (envs.toy.build_toy_dataset, seed 0)" in out
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
    for command in ("train", "evaluate", "collect", "download", "info", "demo"):
        with pytest.raises(SystemExit) as raised:
            main([command, "--help"])
        assert raised.value.code == 0
    assert "--steps" in capsys.readouterr().out
