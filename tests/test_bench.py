"""Benchmark sweeps: process pool and Ray agree, resume, budgets, the report."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import envs
from safe_agents import bench
from safe_agents.cli import main

TOY = "OfflineToyReachAvoid-v0"
TINY = bench.SweepSettings(episodes=2, overrides={"n_steps": 30})
# What differs between two executions of the same run: timings and where it ran.
VOLATILE = {"train_seconds", "eval_seconds", "git_revision", "finished"}


def stable(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in VOLATILE} for row in rows]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_process_pool_and_ray_give_the_same_rows(tmp_path, monkeypatch):
    runs = bench.plan_runs(["bc_all", "bc-safe"], [TOY], [0])
    assert [run.agent for run in runs] == ["bc_all", "bc_safe"]
    pooled = bench.run_sweep(runs, TINY, tmp_path / "pool", workers=2)
    # --ray local starts its own instance even where the environment names a (dead) cluster.
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port()}")
    on_ray = bench.run_sweep(runs, TINY, tmp_path / "ray", workers=2, ray_address="local")
    assert len(pooled) == 2
    assert stable(pooled) == stable(on_ray)
    row = pooled[0]
    assert row["n_steps"] == 30 and len(row["episodes"]["return"]) == 2
    assert row["mean_return"] == pytest.approx(sum(row["episodes"]["return"]) / 2)
    assert (tmp_path / "ray" / "agents" / f"{runs[0].key}.zip").is_file()
    # Which data, and which reference returns normalized it, travel with every row.
    assert row["data_origin"] == "local" and row["data_provenance"].startswith("built locally")
    assert row["normalization"].startswith("the dataset's own return range")
    assert row["reward_range"] == list(envs.load_dataset(TOY).reference_range())


def test_a_rerun_skips_finished_runs_and_retries_the_rest(tmp_path):
    runs = bench.plan_runs(["bc_all"], [TOY], [0, 1])
    first = bench.run_sweep(runs, TINY, tmp_path, workers=1)
    kept = tmp_path / "rows" / f"{runs[0].key}.json"
    kept_text = kept.read_text()
    (tmp_path / "rows" / f"{runs[1].key}.json").unlink()  # as if killed before the second row
    executed = []
    again = bench.run_sweep(
        runs, TINY, tmp_path, workers=1, on_row=lambda run, row, error: executed.append(run)
    )
    assert executed == [runs[1]]
    assert kept.read_text() == kept_text
    assert stable(again) == stable(first)


def test_a_failed_run_is_reported_and_leaves_no_row(tmp_path):
    settings = bench.SweepSettings(episodes=1, overrides={"n_steps": 0})  # learn_offline refuses
    outcomes = []
    rows = bench.run_sweep(
        bench.plan_runs(["bc_all"], [TOY], [0]),
        settings,
        tmp_path,
        workers=1,
        on_row=lambda run, row, error: outcomes.append((row, error)),
    )
    assert rows == [] and outcomes[0][0] is None
    assert "n_steps must be" in str(outcomes[0][1]) and ">= 1" in str(outcomes[0][1])
    assert not list((tmp_path / "rows").glob("*.json"))


def test_budgets_layer_the_profile_the_agent_file_and_the_task(tmp_path):
    (tmp_path / "cpq.toml").write_text(
        "[quick]\nn_steps = 500\n[quick.hyperparameters]\nbatch_size = 32\n"
        '[tasks."OfflineBallRun-v0".quick.hyperparameters]\ngamma = 0.9\n'
    )
    settings = bench.SweepSettings(configs=str(tmp_path))
    steps, toy = bench.budget("cpq", TOY, settings)
    assert steps == 500 and toy["batch_size"] == 32 and "gamma" not in toy
    assert toy["vae_hidden_sizes"] == (64, 64)  # from the built-in quick profile
    assert bench.budget("cpq", "OfflineBallRun-v0", settings)[1]["gamma"] == 0.9
    # The full profile is the agent's own config: the paper's steps and networks.
    assert bench.budget("cpq", TOY, bench.SweepSettings(profile="full")) == (100_000, {})
    # DRCORL's discount follows the episode length in the quick profile.
    assert bench.budget("drcorl", TOY, bench.SweepSettings())[1]["gamma"] == 0.95
    assert bench.budget("drcorl", "OfflineCarCircle-v0", bench.SweepSettings())[1]["gamma"] == 0.99
    (tmp_path / "cpq.toml").write_text("[quick]\nsteps = 5\n")
    with pytest.raises(ValueError, match=r"unknown keys \['steps'\]"):
        bench.budget("cpq", TOY, settings)
    (tmp_path / "cpq.toml").write_text("[quick\n")
    with pytest.raises(ValueError, match="cpq.toml"):
        bench.budget("cpq", TOY, settings)


def test_unknown_agents_tasks_and_profiles_are_named():
    with pytest.raises(ValueError, match="unknown agent 'fisr'"):
        bench.plan_runs(["fisr"], [TOY], [0])
    import envs

    with pytest.raises(envs.UnknownTaskError):
        bench.plan_runs(["bc_all"], ["OfflineToy-v9"], [0])
    with pytest.raises(ValueError, match="profile"):
        bench.SweepSettings(profile="medium")


def crafted_row(
    agent: str, task: str, seed: int, reward: float, cost: float, sim: str, origin: str = "local"
) -> dict:
    provenance = "DSRL SafetyB.hdf5" if origin == "dsrl" else "built locally (test, seed 0)"
    return {
        "agent": agent,
        "task": task,
        "seed": seed,
        "simulator": sim,
        "mean_return": reward * 100,
        "mean_cost": cost * 10,
        "mean_normalized_return": reward,
        "mean_normalized_cost": cost,
        "data_origin": origin,
        "data_provenance": provenance,
        "normalization": "DSRL reference returns" if origin == "dsrl" else "own range",
    }


CRAFTED = [
    crafted_row("bc_all", "TaskA", 0, 0.4, 2.0, "bullet"),
    crafted_row("bc_all", "TaskA", 1, 0.6, 2.0, "bullet"),
    crafted_row("fisor", "TaskA", 0, 0.3, 0.5, "bullet"),
    crafted_row("fisor", "TaskA", 1, 0.5, 0.5, "bullet"),
    crafted_row("bc_all", "TaskB", 0, 0.8, 0.2, "metadrive", origin="dsrl"),
]


def test_the_report_renders_crafted_rows(tmp_path):
    markdown = bench.markdown_table(CRAFTED)
    lines = markdown.splitlines()
    assert lines[0] == "| task | data | bc_all | fisor |"
    assert lines[2] == (
        "| TaskA | built locally | **0.50 +- 0.10 / 2.00 +- 0.00 (unsafe)** | "
        "0.40 +- 0.10 / 0.50 +- 0.00 |"
    )
    assert lines[3] == "| TaskB | DSRL | 0.80 +- 0.00 / 0.20 +- 0.00 | - |"
    assert "| average bullet | | 0.50 / 2.00 | 0.40 / 0.50 |" in lines
    assert "| average metadrive | | 0.80 / 0.20 | - |" in lines
    # FISOR has no TaskB cell, so it gets no overall average.
    assert lines[-1] == "| average | | 0.65 / 1.10 | - |"
    csv = bench.csv_table(CRAFTED).splitlines()
    assert csv[0] == "task,agent,reward,reward_spread,cost,cost_spread,seeds,safe,data"
    assert "TaskA,bc_all,0.5000,0.1000,2.0000,0.0000,2,false,built locally" in csv
    assert "TaskA,fisor,0.4000,0.1000,0.5000,0.0000,2,true,built locally" in csv
    assert "TaskB,bc_all,0.8000,0.0000,0.2000,0.0000,1,true,DSRL" in csv
    notes = bench.data_notes(CRAFTED).splitlines()
    assert notes[1:] == [
        "- TaskA: built locally (test, seed 0); normalized return uses own range",
        "- TaskB: DSRL SafetyB.hdf5; normalized return uses DSRL reference returns",
    ]

    for row in CRAFTED:
        path = tmp_path / "rows" / f"{row['agent']}__{row['task']}__seed{row['seed']}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(row))
    paths = bench.write_report(tmp_path)
    # Nothing fails (no paper agent unsafe, no bc_safe to compare FISOR with): no failures.
    assert paths["markdown"].read_text().strip() == (
        markdown
        + "\n\n"
        + "\n".join(notes)
        + "\n\nCompute: 5 runs, not timed (5 rows without timings)."
    )
    assert sorted(p.name for p in paths["plots"].glob("*.png")) == ["TaskA.png", "TaskB.png"]
    svg = (paths["plots"] / "TaskA.svg").read_text()
    # The legend says how many seeds each point averages, the title which data.
    assert "bc_all (2 seeds)" in svg and "built locally" in svg and "mean ± std" in svg


def test_the_report_never_hides_which_data_a_task_used():
    old = {k: v for k, v in crafted_row("bc_all", "TaskA", 2, 0.1, 0.1, "bullet").items()}
    for key in ("data_origin", "data_provenance", "normalization"):
        del old[key]  # a row written before provenance was recorded
    mixed = [*CRAFTED, old, crafted_row("fisor", "TaskB", 0, 0.1, 0.1, "metadrive")]
    assert bench.data_labels(mixed) == {
        "TaskA": "built locally + not recorded (mixed)",
        "TaskB": "DSRL + built locally (mixed)",
    }
    assert "| TaskB | DSRL + built locally (mixed) |" in bench.markdown_table(mixed)


def with_curve(row: dict, points: list[tuple[int, float, float]], seconds: float = 3600.0):
    curve = [
        {"step": s, "normalized_return": r, "normalized_cost": c, "train": {"loss": r, "lr": 1e-4}}
        for s, r, c in points
    ]
    return {**row, "curve": curve, "train_seconds": seconds, "eval_seconds": seconds / 2}


FAILING = [
    # FISOR: safe on TaskA but below BC-Safe; unsafe on TaskB. SPI unsafe on TaskA.
    with_curve(crafted_row("fisor", "TaskA", 0, 0.2, 0.0, "bullet"), [(5, 0.1, 0.0), (10, 0.2, 0)]),
    with_curve(crafted_row("fisor", "TaskA", 1, 0.4, 0.0, "bullet"), [(5, 0.3, 0.0), (10, 0.4, 0)]),
    crafted_row("bc_safe", "TaskA", 0, 0.5, 0.0, "bullet"),
    crafted_row("spi", "TaskA", 0, 0.9, 3.0, "bullet"),
    crafted_row("fisor", "TaskB", 0, 0.6, 1.5, "toy"),
    crafted_row("bc_safe", "TaskB", 0, 0.5, 0.0, "toy"),
    # Unsafe, but not one of the papers' methods: not listed.
    crafted_row("cpq", "TaskB", 0, 0.9, 9.0, "toy"),
    # FISOR a hair below BC-Safe: enough digits to show it.
    crafted_row("fisor", "TaskC", 0, 0.3811, 0.0, "toy"),
    crafted_row("bc_safe", "TaskC", 0, 0.3829, 2.0, "toy"),
]


def test_failing_cells_are_listed_with_their_numbers_and_diagnoses(tmp_path):
    failures = bench.find_failures(FAILING)
    assert [(f.agent, f.task, f.reasons) for f in failures] == [
        ("fisor", "TaskA", ("return 0.30 below bc_safe's 0.50",)),
        ("spi", "TaskA", ("unsafe (cost 3.00)",)),
        ("fisor", "TaskB", ("unsafe (cost 1.50)",)),
        ("fisor", "TaskC", ("return 0.381 below bc_safe's 0.383",)),
    ]
    (tmp_path / bench.DIAGNOSES_FILE).write_text(
        '[fisor."TaskA"]\nkind = "budget"\ntext = """The curve still\n  climbs."""\n'
        '[cpq."TaskB"]\nkind = "bug"\ntext = "fixed"\n'
        '[dspo."TaskA"]\nkind = "data"\ntext = "never ran"\n'
    )
    diagnoses = bench.load_diagnoses(tmp_path / bench.DIAGNOSES_FILE)
    assert diagnoses[("fisor", "TaskA")] == bench.Diagnosis("budget", "The curve still climbs.")
    section = bench.failures_section(FAILING, diagnoses).splitlines()
    assert section[2].startswith(f"Listed: {bench.LISTING_RULE}: 4, 1 of them diagnosed (in ")
    at = section.index("### fisor on TaskA: return 0.30 below bc_safe's 0.50")
    assert section[at + 2 : at + 6] == [
        "- Final: 0.30 / 0.00 over 2 seeds (seed 0 0.20 / 0.00, seed 1 0.40 / 0.00).",
        "- Curve: 5 0.20 / 0.00, 10 0.30 / 0.00.",
        "- Training values at the last curve point: loss 0.3, lr 0.0001.",
        "- Diagnosis: **The budget.** The curve still climbs.",
    ]
    at = section.index("### spi on TaskA: unsafe (cost 3.00)")
    assert section[at + 3 : at + 5] == [
        "- Curve: not recorded.",
        "- Training values at the last curve point: not recorded.",
    ]
    assert section.count("- Diagnosis: **Not diagnosed yet.**") == 3
    # Diagnoses without a failing cell are called out, not silently kept: cpq's cell has rows
    # and does not fail (cpq is not one of the papers' methods); dspo's has no rows.
    at = section.index("Diagnoses whose cell no longer fails (remove them):")
    assert section[at + 2] == "- cpq on TaskB"
    at = section.index("Diagnoses of cells without rows (not run yet, or a misspelt name):")
    assert section[at + 2 :] == ["- dspo on TaskA"]
    assert bench.failures_section([FAILING[2], *FAILING[5:7]], {}) == ""

    # A cell whose seeds do not all have a curve shows none, rather than a partial mean.
    partial = [FAILING[0], {**FAILING[1], "curve": []}, FAILING[2]]
    section = bench.failures_section(partial, {}).splitlines()
    assert "- Curve: recorded for 1 of its 2 seeds." in section
    assert "- Training values at the last curve point: recorded for 1 of its 2 seeds." in section

    for row in FAILING:
        path = tmp_path / "rows" / f"{row['agent']}__{row['task']}__seed{row['seed']}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(row))
    report = bench.write_report(tmp_path)["markdown"].read_text()
    assert report.endswith(bench.failures_section(FAILING, diagnoses) + "\n")
    assert "Compute: 9 runs, 3.0 h of worker time (2.0 h training" in report
    assert "; 7 rows without timings." in report
    headline = bench.headline_table([{**row, "n_steps": 10} for row in FAILING], "sweep")
    assert f"- Cells needing a diagnosis ({bench.LISTING_RULE}): 4, 0 of them diagnosed, " in (
        headline
    )
    assert "in `sweep/report.md`." in headline
    headline = bench.headline_table(
        [{**row, "n_steps": 10} for row in FAILING], "sweep", None, diagnoses
    )
    assert "): 4, 1 of them diagnosed, in `sweep/report.md`." in headline


def test_the_compute_note_sums_worker_time_and_leaves_pauses_out_of_the_wall_time():
    def timed(seed: int, finished: str) -> dict:
        row = crafted_row("bc_all", "TaskA", seed, 0.5, 0.0, "bullet")
        return {**row, "train_seconds": 1500.0, "eval_seconds": 300.0, "finished": finished}

    # Two sittings: rows at 10:00, 10:20, 10:45, then a pause, and rows at 20:00 and 20:20.
    times = ["10:00", "10:20", "10:45", "20:00", "20:20"]
    rows = [timed(i, f"2026-12-03T{t}:00Z") for i, t in enumerate(times)]
    # 5 x 1800 s; the gaps of 20, 25 and 20 min count, the 9 h pause (more than twice the
    # longest run) does not.
    assert bench.compute_note(rows) == (
        "Compute: 5 runs, 2.5 h of worker time (2.1 h training with its curve evaluations, "
        "0.4 h final evaluation, summed over runs); about 1.1 h of wall time (the gaps "
        "between rows finishing, pauses left out)."
    )
    assert bench.compute_note([{"agent": "x"}, {"agent": "y"}]) == (
        "Compute: 2 runs, not timed (2 rows without timings)."
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[fisor", "is not valid TOML"),
        ("fisor = 1", "must hold one table per task"),
        ("[fisor]\nTaskA = 1", "must be a table with kind and text"),
        ('[fisor.TaskA]\nkind = "luck"\ntext = "x"', "kind 'luck' is not one of bug"),
        ('[fisor.TaskA]\nkind = ["data"]\ntext = "x"', "kind ['data'] is not one of bug"),
        ('[fisor.TaskA]\nkind = "data"\ntext = " "', "text is missing or empty"),
        ('[fisor.TaskA]\nkind = "data"\ntext = "x"\nseed = 1', "unknown keys seed"),
    ],
)
def test_a_malformed_diagnoses_file_is_refused_by_name(tmp_path, text, problem):
    path = tmp_path / bench.DIAGNOSES_FILE
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(problem)):
        bench.load_diagnoses(path)


def test_runs_are_planned_task_by_task_then_seed_by_seed():
    runs = bench.plan_runs(["bc_all", "bc_safe"], [TOY, "OfflineBallRun-v0"], [0, 1])
    assert [(run.task == TOY, run.seed, run.agent) for run in runs[:4]] == [
        (True, 0, "bc_all"),
        (True, 0, "bc_safe"),
        (True, 1, "bc_all"),
        (True, 1, "bc_safe"),
    ]
    assert {run.task for run in runs[4:]} == {"OfflineBallRun-v0"}


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


@pytest.fixture
def repository(tmp_path, monkeypatch):
    """A fresh git repository, the user's and the system's git configuration out of the way."""
    for name in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # tmp_path is no work tree
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q")
    _git(path, "config", "user.email", "tests@example.com")
    _git(path, "config", "user.name", "tests")
    (path / ".gitignore").write_text("ignored/\n")
    _git(path, "add", ".gitignore")
    _git(path, "commit", "-q", "-m", "start")
    return path


def test_commit_rows_commits_the_rows_and_nothing_else(repository, tmp_path, capsys, monkeypatch):
    repo = repository
    monkeypatch.chdir(repo)  # --out relative to the working directory
    # Someone's work in progress in the same checkout: staged and unstaged changes.
    (repo / "staged.txt").write_text("mine")
    _git(repo, "add", "staged.txt")
    (repo / ".gitignore").write_text("ignored/\nmore/\n")
    argv = ["bench", "--algos", "bc_all,bc_safe", "--tasks", TOY, "--seeds", "1"]
    argv += ["--episodes", "1", "--workers", "1", "--no-save-agents", "--commit-rows"]
    assert main([*argv, "--steps", "20", "--out", "results/sweep"]) == 0
    assert "not committed" not in capsys.readouterr().out
    log = _git(repo, "log", "--format=%s").splitlines()
    assert log[0].startswith(f"sweep row bc_safe__{TOY}__seed0: normalized return ")
    assert log[1].startswith(f"sweep row bc_all__{TOY}__seed0: normalized return ")
    assert log[2:] == ["sweep: sweep of 2 runs, 2 to do", "start"]
    committed = set(_git(repo, "ls-tree", "-r", "--name-only", "HEAD").split())
    assert committed == {
        ".gitignore",
        "results/sweep/sweep.json",
        f"results/sweep/rows/bc_all__{TOY}__seed0.json",
        f"results/sweep/rows/bc_safe__{TOY}__seed0.json",
    }
    # The rows as written, and the work in progress left as it was.
    assert _git(repo, "diff", "HEAD", "--", "results") == ""
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["staged.txt"]
    assert _git(repo, "diff", "--name-only").split() == [".gitignore"]
    # Other settings, forced: the discarded rows leave the commits too, not just the disk.
    assert (
        main([*argv, "--algos", "bc_all", "--steps", "21", "--out", "results/sweep", "--force"])
        == 0
    )
    committed = set(_git(repo, "ls-tree", "-r", "--name-only", "HEAD", "results").split())
    assert committed == {
        "results/sweep/sweep.json",
        f"results/sweep/rows/bc_all__{TOY}__seed0.json",
    }
    assert (
        json.loads(_git(repo, "show", f"HEAD:results/sweep/rows/bc_all__{TOY}__seed0.json"))[
            "n_steps"
        ]
        == 21
    )
    # Nothing new to commit: no empty commit.
    head = _git(repo, "rev-parse", "HEAD")
    assert bench.commit_rows(repo / "results" / "sweep", "again") is None
    assert _git(repo, "rev-parse", "HEAD") == head
    # Refused before any run: a folder outside a work tree, and one git ignores.
    for folder, reason in (
        (tmp_path / "elsewhere", "not inside a git work tree"),
        (repo / "ignored" / "sweep", "git ignores"),
    ):
        assert main([*argv, "--steps", "20", "--out", str(folder)]) == 2
        assert reason in capsys.readouterr().err
        assert not (folder / "rows").exists()


def test_bad_rows_are_named(tmp_path):
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not a result row"):
        bench.load_rows(tmp_path)
    (tmp_path / "rows" / "broken.json").write_text('{"agent": "bc_all"}')
    with pytest.raises(ValueError, match="missing"):
        bench.load_rows(tmp_path)


def test_bench_and_report_commands(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["bench", "--algos", "bc_safe", "--tasks", TOY, "--seeds", "1", "--steps", "20"]
    argv += ["--episodes", "1", "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "1 runs (0 already finished" in printed
    assert "| OfflineToyReachAvoid-v0 | built locally |" in printed
    assert "- OfflineToyReachAvoid-v0: built locally (envs.toy_dataset.build_toy_dataset" in printed
    assert main(argv) == 0
    assert "1 runs (1 already finished" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert (out / "report.csv").is_file() and (out / "plots" / f"{TOY}.png").is_file()
    # Other settings into the same folder: refused in one line, unless forced.
    assert main([*argv[:-4], "--steps", "21", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("safe-agents bench: error: ") and len(err.strip().splitlines()) == 1
    assert "other settings (overrides {'n_steps': 20} there, {'n_steps': 21} now)" in err
    assert main([*argv[:-4], "--steps", "21", "--out", str(out), "--force"]) == 0
    assert "1 runs (0 already finished" in capsys.readouterr().out
    assert json.loads((out / "rows" / f"bc_safe__{TOY}__seed0.json").read_text())["n_steps"] == 21
    assert main(["bench", "--algos", "nope", "--tasks", TOY]) == 2
    assert "unknown agent 'nope'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_dspo_runs_in_the_cost_label_free_setting(tmp_path):
    """DSPO's runs get the unlabeled part and safe demos; its row says so and times its stages."""
    (tmp_path / "dspo.toml").write_text(
        "[quick]\nn_steps = 60\n[quick.hyperparameters]\n"
        "discriminator_steps = 20\ndiffusion_train_steps = 20\nwindow_len = 16\n"
        "embedding_dim = 16\nnum_layers = 1\nnum_heads = 2\nsegment_len = 8\n"
        "diffusion_timesteps = 5\ndenoiser_width = 16\nn_generated_segments = 8\n"
        "hidden_sizes = [32, 32]\n"
    )
    settings = bench.SweepSettings(episodes=1, configs=str(tmp_path), n_safe_demos=12)
    (row,) = bench.run_sweep(bench.plan_runs(["dspo"], [TOY], [0]), settings, tmp_path / "out")
    assert row["setting"] == "cost-label-free, 12 safe demos"
    assert row["n_steps"] == 60 and row["hyperparameters"]["discriminator_steps"] == 20
    assert set(row["stage_seconds"]) == {"discriminator", "diffusion", "generation", "policy"}
    assert (
        "stage_seconds"
        not in bench.run_sweep(
            bench.plan_runs(["bc_all"], [TOY], [0]), TINY, tmp_path / "bc", workers=1
        )[0]
    )


def test_a_shortened_sweep_keeps_drcorls_pretraining_share():
    settings = bench.SweepSettings(overrides={"n_steps": 30})
    steps, hyperparameters = bench.budget("drcorl", TOY, settings)
    # The cpu preset pretrains 4k of 6k steps: two thirds of 30 leaves steps to extract.
    assert steps == 30 and hyperparameters["pretrain_steps"] == 20
    full = bench.SweepSettings(profile="full", overrides={"n_steps": 11})
    assert bench.budget("drcorl", TOY, full)[1]["pretrain_steps"] == 10


def test_a_shortened_sweep_keeps_dspos_stage_shares():
    # The cpu preset: 1k discriminator + 2.5k generator steps of 5k; --steps 30 keeps the shares.
    shortened = bench.SweepSettings(overrides={"n_steps": 30})
    steps, hyperparameters = bench.budget("dspo", TOY, shortened)
    assert steps == 30
    assert hyperparameters["discriminator_steps"] == 6
    assert hyperparameters["diffusion_train_steps"] == 15
    with pytest.raises(ValueError, match="dspo trains in 3 stages"):
        bench.budget("dspo", TOY, bench.SweepSettings(overrides={"n_steps": 2}))


def test_a_folder_swept_with_other_settings_is_refused_unless_forced(tmp_path):
    runs = bench.plan_runs(["bc_all"], [TOY], [0])
    (row,) = bench.run_sweep(runs, TINY, tmp_path, workers=1)
    kept = (tmp_path / "rows" / f"{runs[0].key}.json").read_text()
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["budgets"][f"bc_all/{TOY}"]["n_steps"] == 30

    other = bench.SweepSettings(episodes=1, overrides={"n_steps": 40})
    with pytest.raises(bench.SweepError) as refused:
        bench.run_sweep(runs, other, tmp_path, workers=1)
    message = str(refused.value)
    assert "episodes 2 there, 1 now" in message and "overrides {'n_steps': 30} there" in message
    assert "its 1 row(s) would mix with new ones" in message and "--force" in message
    assert (tmp_path / "rows" / f"{runs[0].key}.json").read_text() == kept
    assert json.loads((tmp_path / "sweep.json").read_text()) == record

    # A changed budget file is a changed setting of its (agent, task) only.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "bc_all.toml").write_text("[quick.hyperparameters]\nbatch_size = 7\n")
    retuned = dataclasses.replace(TINY, configs=str(tmp_path / "configs"))
    changed = f"the budget of bc_all on {TOY}: batch_size .* -> 7"
    with pytest.raises(bench.SweepError, match=changed):
        bench.run_sweep(runs, retuned, tmp_path, workers=1)

    # Forced: the old row goes, the run is made again with the new settings.
    executed = []
    (forced,) = bench.run_sweep(
        runs, other, tmp_path, workers=1, force=True, on_start=executed.extend
    )
    assert executed == runs and forced["n_steps"] == 40 and len(forced["episodes"]["return"]) == 1
    assert json.loads((tmp_path / "sweep.json").read_text())["settings"]["episodes"] == 1

    # More seeds under the same settings resume; whether agents are kept changes no row.
    record_path = tmp_path / "sweep.json"
    legacy = json.loads(record_path.read_text())
    del legacy["budgets"], legacy["settings"]["data_origin"]  # as written by older versions
    record_path.write_text(json.dumps(legacy))
    more = bench.plan_runs(["bc_all"], [TOY], [0, 1])
    executed.clear()
    rows = bench.run_sweep(
        more,
        dataclasses.replace(other, save_agents=False),
        tmp_path,
        workers=1,
        on_start=executed.extend,
    )
    assert executed == [more[1]] and [row["seed"] for row in rows] == [0, 1]
    assert stable(rows[:1]) == stable([forced])


def test_one_sweep_at_a_time_writes_a_folder(tmp_path):
    runs = bench.plan_runs(["bc_all"], [TOY], [0])
    leftover = tmp_path / "rows" / f".{runs[0].key}.json.x1y2.tmp"  # of a killed writer
    leftover.parent.mkdir()
    leftover.write_text("{")
    with bench._folder_lock(tmp_path):
        with pytest.raises(bench.SweepError, match=f"another sweep is writing {tmp_path}"):
            bench.run_sweep(runs, TINY, tmp_path, workers=1)
        assert leftover.exists() and not (tmp_path / "sweep.json").exists()
    assert bench.run_sweep([], TINY, tmp_path, workers=1) == []
    assert not leftover.exists()


def test_a_dead_ray_address_fails_in_seconds(tmp_path, capsys):
    runs = bench.plan_runs(["bc_all"], [TOY], [0])
    address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(bench.SweepError, match=f"no Ray cluster answers at {address}"):
        bench.run_sweep(runs, TINY, tmp_path / "out", ray_address=address)
    assert time.monotonic() - start < 30 and not (tmp_path / "out").exists()
    with pytest.raises(bench.SweepError, match="expects local, auto or HOST:PORT"):
        bench.run_sweep(runs, TINY, tmp_path / "out", ray_address="head-node")
    argv = ["bench", "--algos", "bc_all", "--tasks", TOY, "--ray", address]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "error: no Ray cluster answers" in capsys.readouterr().err


def pool_workers(parent: int) -> list[int]:
    """The spawned pool workers of process ``parent`` (psutil where installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == parent and b"spawn_main" in cmdline:
                found.append(int(stat.parent.name))
        return found
    try:
        children = psutil.Process(parent).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead and not yet reaped, does not)."""
    try:
        import psutil
    except ImportError:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_sweep_takes_its_workers_with_it(tmp_path):
    """SIGKILL leaves the main process no chance to stop its pool: the workers must notice."""
    argv = [sys.executable, "-m", "safe_agents.cli", "bench", "--algos", "bc_all"]
    argv += ["--tasks", TOY, "--seeds", "4", "--steps", "1000000", "--episodes", "1"]
    argv += ["--workers", "2", "--no-save-agents", "--out", str(tmp_path / "sweep")]
    sweep = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        # Kill once both workers compute (imports done, training under way).
        while not (len(workers) == 2 and min(map(cpu_seconds, workers)) > 8):
            assert time.monotonic() < deadline, f"workers {workers} never got to work"
            assert sweep.poll() is None, "the sweep ended before its workers started"
            time.sleep(0.5)
            workers = pool_workers(sweep.pid) or workers
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(alive, workers)), "the killed sweep's workers still run"
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_readme_headline_is_the_one_its_rows_generate():
    # The README's results table is generated (safe-agents report --headline README.md), never
    # edited by hand: regenerating it from the rows it names changes nothing.
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    regenerated, sources = bench.render_headlines(text, root)
    assert sources == ["benchmarks/results/suite"]
    assert regenerated == text, "README.md's headline is stale: safe-agents report --headline"


def test_headline_table_counts_safe_tasks_and_says_where_rows_came_from(tmp_path):
    rows = []
    for task, simulator in (("OfflineToyReachAvoid-v0", "toy"), ("OfflineBallRun-v0", "bullet")):
        costs = (0.5, 2.5) if task == "OfflineBallRun-v0" else (0.2, 0.2)
        for seed, cost in enumerate(costs):
            rows.append(
                {
                    "agent": "fisor",
                    "task": task,
                    "seed": seed,
                    "simulator": simulator,
                    "n_steps": 100,
                    "profile": "quick",
                    "mean_return": 1.5,
                    "mean_cost": cost,
                    "mean_normalized_return": 0.5,
                    "mean_normalized_cost": cost,
                    "episodes": {"return": [1.0, 2.0]},
                    "finished": "2026-12-02T06:00:00Z",
                    "machine": "Linux x86_64, 2 CPUs",
                    "data_origin": "local",
                    "data_provenance": "built locally (test)",
                    "normalization": "its own return range",
                }
            )
    text = bench.headline_table(rows, "sweep")
    assert "| fisor | **0.50 / 1.50** | 0.50 / 0.20 | 1 of 2 | 0.50 / 0.85 |" in text
    assert "Run on: 2026-12-02; machine: Linux x86_64, 2 CPUs" in text
    assert "BallRun data (built locally): built locally (test)" in text
    assert "mean over 2 training seeds of 2 evaluation episodes each" in text
    document = tmp_path / "README.md"
    document.write_text("a\n<!-- headline: sweep -->\nSTALE\n<!-- /headline -->\nb\n")
    (tmp_path / "sweep" / "rows").mkdir(parents=True)
    for row in rows:
        name = f"{row['agent']}__{row['task']}__seed{row['seed']}.json"
        (tmp_path / "sweep" / "rows" / name).write_text(json.dumps(row))
    planned = [{k: row[k] for k in ("agent", "task", "seed")} for row in rows]
    planned.append({"agent": "fisor", "task": "OfflineCarCircle-v0", "seed": 0})
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps({"settings": {}, "runs": planned}))
    assert bench.update_headline(document) == ["sweep"]
    runs = [bench.Run(**run) for run in planned]
    # The block is the table of the folder's rows and of the runs its sweep.json plans.
    assert "STALE" not in document.read_text()
    assert bench.headline_table(rows, "sweep", runs, {}) in document.read_text()
    # The headline says how much of the sweep's plan has finished.
    progress = (
        "- Progress: 4 of the 5 runs of the sweep's plan have finished; cells of unfinished "
        "runs average fewer seeds, and 1 planned task without rows yet."
    )
    assert document.read_text().count(progress) == 1
    assert "- Progress: all 4 runs of the sweep's plan have finished." in bench.headline_table(
        rows, "sweep", runs[:4]
    )
    with pytest.raises(ValueError, match="has no headline block"):
        bench.update_headline(tmp_path / "sweep" / "rows" / name)


# ------------------------------------------------------------------ learning curves, resuming
@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_and_ends_with_the_same_row(tmp_path):
    """SIGKILL once the first checkpoint is written; the rerun resumes and matches a run that
    was never stopped: its curve, its final evaluation, its agent."""
    argv = [sys.executable, "-m", "safe_agents.cli", "bench", "--algos", "bc_safe"]
    argv += ["--tasks", TOY, "--seeds", "1", "--steps", "6000", "--episodes", "2"]
    argv += ["--checkpoints", "3", "--curve-points", "3", "--curve-episodes", "1"]
    argv += ["--workers", "1"]
    key = f"bc_safe__{TOY}__seed0"
    killed_out, whole_out = tmp_path / "killed", tmp_path / "whole"
    sweep = subprocess.Popen(
        [*argv, "--out", str(killed_out)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = bench.run_work_dir(killed_out, bench.Run("bc_safe", TOY, 0)) / "checkpoint.zip"
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.is_file():
            assert time.monotonic() < deadline, "no checkpoint was written"
            assert sweep.poll() is None, "the sweep ended before its first checkpoint"
            time.sleep(0.02)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(timeout=30)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert not (killed_out / "rows" / f"{key}.json").exists()
    for out in (killed_out, whole_out):
        done = subprocess.run([*argv, "--out", str(out)], cwd=tmp_path, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    resumed, whole = (
        json.loads((out / "rows" / f"{key}.json").read_text()) for out in (killed_out, whole_out)
    )
    assert resumed.pop("resumed_from_step") == 2000 and "resumed_from_step" not in whole
    assert [point["step"] for point in whole["curve"]] == [2000, 4000, 6000]
    assert stable([resumed]) == stable([whole])
    assert not (killed_out / "work" / key).exists()  # the row replaced the checkpoint
    from safe_agents import load_agent

    first, second = (load_agent(out / "agents" / f"{key}.zip") for out in (killed_out, whole_out))
    for name, module in first._saved_modules().items():
        theirs = second._saved_modules()[name].state_dict()
        for tensor_name, tensor in module.state_dict().items():
            assert (tensor == theirs[tensor_name]).all(), f"{name}.{tensor_name}"


def test_a_learning_curve_changes_neither_training_nor_the_final_evaluation():
    # SPI samples its candidates with the agent's action generator even when deterministic:
    # the curve's evaluations must leave that generator as they found it.
    run = bench.plan_runs(["spi"], [TOY], [0])[0]
    plain, _ = bench.execute(run, TINY)
    curved, _ = bench.execute(run, dataclasses.replace(TINY, curve_points=3, curve_episodes=1))
    assert [point["step"] for point in curved.pop("curve")] == [10, 20, 30]
    assert stable([plain]) == stable([curved])


@pytest.mark.simulator
def test_a_metadrive_run_with_a_curve_evaluates_to_the_end():
    # MetaDrive runs one environment per process: the curve's environment must be closed
    # before the final evaluation resets the run's own (the suite's MetaDrive runs once
    # failed there with MetaDrive's "Agents: 0 != Num_agents: 1").
    run = bench.Run("bc_all", "OfflineMetadrive-easysparse-v0", 0)
    settings = dataclasses.replace(
        TINY, episodes=1, overrides={"n_steps": 4}, curve_points=2, curve_episodes=1
    )
    row, _ = bench.execute(run, settings)
    assert [point["step"] for point in row["curve"]] == [2, 4]
    assert row["mean_length"] > 0 and math.isfinite(row["mean_normalized_cost"])


def test_a_checkpoint_of_another_budget_is_not_resumed(tmp_path):
    run = bench.Run("bc_all", TOY, 0)
    short = dataclasses.replace(TINY, checkpoints=3)
    stages = bench._RunStages(run, short, 30, tmp_path)
    from safe_agents import BCAll

    agent = BCAll(envs.make(TOY), seed=0, **bench.budget("bc_all", TOY, short)[1])
    agent.learn_offline(envs.load_dataset(TOY), n_steps=10)
    stages.save(agent)
    assert bench._RunStages(run, short, 30, tmp_path).resume_from == tmp_path / "checkpoint.zip"
    longer = dataclasses.replace(short, overrides={"n_steps": 40})
    assert bench._RunStages(run, longer, 40, tmp_path).resume_from is None
    other_episodes = dataclasses.replace(short, episodes=5)
    assert bench._RunStages(run, other_episodes, 30, tmp_path).resume_from is None


def test_curves_average_the_seeds_and_are_drawn(tmp_path):
    def row(seed: int, returns: list[float], costs: list[float]) -> dict:
        curve = [
            {"step": step, "normalized_return": r, "normalized_cost": c}
            for step, r, c in zip((10, 20, 30), returns, costs, strict=False)
        ]
        return {"agent": "fisor", "task": TOY, "seed": seed, "curve": curve}

    rows = [row(0, [0.1, 0.3, 0.5], [2.0, 1.0, 0.0]), row(1, [0.3, 0.5], [0.0, 1.0])]
    rows.append({"agent": "bc_all", "task": TOY, "seed": 0})  # no curve: left out
    curve = bench.curves(rows)[TOY]["fisor"]
    assert list(curve["step"]) == [10, 20]  # only the steps every seed reached
    assert curve["return"] == pytest.approx([0.2, 0.4])
    assert curve["return_std"] == pytest.approx([0.1, 0.1])
    assert curve["cost"] == pytest.approx([1.0, 1.0]) and int(curve["seeds"]) == 2
    assert list(bench.curves(rows)[TOY]) == ["fisor"]
    paths = bench.plot_curves(rows, tmp_path)
    assert paths == [tmp_path / f"curves_{TOY}.png"]
    assert paths[0].stat().st_size > 10_000 and (tmp_path / f"curves_{TOY}.svg").is_file()


# ------------------------------------------------------------------ config sets, one mechanism
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "benchmarks" / "configs"


def test_every_shipped_config_set_builds_its_agents_configs():
    from safe_agents import get_agent_class

    names = []
    for folder in sorted(path for path in CONFIGS.iterdir() if path.is_dir()):
        sets = bench.load_config_sets(folder)
        assert sets, f"{folder} has no {bench.SWEEP_FILE}"
        for config_set in sets:
            settings = config_set.sweep_settings()
            assert settings.configs == str(config_set.folder)
            for run in config_set.runs():
                n_steps, hyperparameters = bench.budget(run.agent, run.task, settings)
                preset = bench.PROFILE_PRESETS[settings.profile]
                get_agent_class(run.agent).config_class.from_kwargs(preset, **hyperparameters)
                assert n_steps >= 1
            names.append(config_set.name)
    assert {"quick", "curves", "fisor_toy", "spi_toy/without_safety_q", "dspo/no_vclub"} <= set(
        names
    )
    # A variant differs from its set's default by the hyperparameter it names, in every profile.
    (crpo,) = bench.load_config_sets(CONFIGS / "drcorl_toy" / "crpo")
    for profile in ("quick", "full"):
        changed = bench.budget("drcorl", TOY, crpo.sweep_settings(profile=profile))[1]
        assert changed["adaptation"] == "crpo"


def write_set(folder: Path, sweep: str, **budgets: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if sweep:
        (folder / bench.SWEEP_FILE).write_text(sweep)
    for agent, text in budgets.items():
        (folder / f"{agent}.toml").write_text(text)
    return folder


def test_a_config_set_names_its_runs_and_its_variants_inherit_its_keys(tmp_path):
    study = write_set(
        tmp_path / "study",
        f'agents = ["bc-all"]\ntasks = ["{TOY}"]\nseeds = [0, 4]\nepisodes = 2\n',
    )
    write_set(study / "base", 'description = "the preset"\nseeds = 1\n')
    write_set(study / "wide", "", bc_all="[hyperparameters]\nhidden_sizes = [16, 16]\n")
    base, wide = bench.load_config_sets(study)
    assert (base.name, base.variant, base.seeds, base.description) == (
        "study/base",
        "base",
        (0,),
        "the preset",
    )
    assert wide.agents == ("bc_all",) and wide.seeds == (0, 4)
    assert [run.key for run in wide.runs()] == [f"bc_all__{TOY}__seed0", f"bc_all__{TOY}__seed4"]
    settings = wide.sweep_settings(episodes=3)
    assert settings.episodes == 3 and settings.configs == str(study / "wide")
    assert bench.budget("bc_all", TOY, wide.sweep_settings())[1]["hidden_sizes"] == [16, 16]
    full = bench.budget("bc_all", TOY, wide.sweep_settings(profile="full"))[1]
    assert full == {"hidden_sizes": [16, 16]}  # [hyperparameters]: every profile
    # A variant given alone is the same sweep, with its parent's keys.
    assert bench.load_config_sets(study / "wide") == [wide]
    # A folder of budget files alone names no sweep; a set with variants holds none of its own.
    assert bench.load_config_sets(write_set(tmp_path / "plain", "", cpq="[quick]\n")) == []
    (study / "cpq.toml").write_text("[quick]\nn_steps = 5\n")
    with pytest.raises(ValueError, match="put each budget file in the variants"):
        bench.load_config_sets(study)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f'tasks = ["{TOY}"]\nstep = 5\n', r"unknown keys \['step'\]"),
        ('agents = ["bc_all"]\n', "no tasks"),
        (f'agents = ["fisr"]\ntasks = ["{TOY}"]\n', "unknown agent 'fisr'"),
        ('tasks = ["OfflineToy-v9"]\n', "OfflineToy-v9"),
        (f'tasks = ["{TOY}"]\nseeds = 0\n', "seeds must be N >= 1"),
        (f'tasks = ["{TOY}"]\nseeds = [1, 1]\n', "distinct seeds"),
        (f'tasks = ["{TOY}"]\nepisodes = "2"\n', "episodes must be of type int"),
        (f'tasks = ["{TOY}"]\nprofile = "medium"\n', "profile must be 'quick' or 'full'"),
        (f'tasks = "{TOY}"\n', "tasks must be a non-empty list"),
        ("tasks = [\n", "sweep.toml"),
    ],
)
def test_a_malformed_sweep_file_is_named_with_what_is_wrong(tmp_path, text, message):
    folder = write_set(tmp_path / "set", text)
    with pytest.raises(ValueError, match=message) as raised:
        bench.load_config_sets(folder)
    assert str(folder / bench.SWEEP_FILE) in str(raised.value)


def test_budget_files_refuse_tables_they_cannot_hold(tmp_path):
    settings = bench.SweepSettings(configs=str(tmp_path))
    for text, message in (
        ("[quik]\nn_steps = 5\n", r"unknown top-level keys \['quik'\]"),
        ("hyperparameters = 5\n", "hyperparameters must be a table"),
        (f'[tasks."{TOY}".hyperparameters]\ngamma = 0.9\n', "may hold only profile tables"),
    ):
        (tmp_path / "cpq.toml").write_text(text)
        with pytest.raises(ValueError, match=message):
            bench.budget("cpq", TOY, settings)
    # [hyperparameters] applies in every profile; the profile's own table still wins.
    (tmp_path / "cpq.toml").write_text(
        "[hyperparameters]\nbatch_size = 8\ngamma = 0.9\n[quick.hyperparameters]\nbatch_size = 16\n"
    )
    assert bench.budget("cpq", TOY, settings)[1]["batch_size"] == 16
    full = bench.SweepSettings(profile="full", configs=str(tmp_path))
    assert bench.budget("cpq", TOY, full) == (100_000, {"batch_size": 8, "gamma": 0.9})


def test_bench_runs_a_config_set_each_variant_into_its_folder(tmp_path, capsys, monkeypatch):
    sweep = f'agents = ["bc_all"]\ntasks = ["{TOY}"]\nseeds = 1\nepisodes = 1\n'
    study = write_set(tmp_path / "study", sweep + 'data_origin = "local"\ncheckpoints = 0\n')
    write_set(study / "narrow", "", bc_all="[hyperparameters]\nhidden_sizes = [16, 16]\n")
    write_set(study / "later", "seeds = [1]\n")
    out = tmp_path / "out"
    argv = ["bench", "--configs", str(study), "--steps", "20", "--workers", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"study/later -> {out / 'later'}" in printed and "study/narrow -> " in printed
    narrow = bench.load_rows(out / "narrow")
    assert [bench.row_key(row) for row in narrow] == [f"bc_all__{TOY}__seed0"]
    assert narrow[0]["hyperparameters"]["hidden_sizes"] == [16, 16]
    assert narrow[0]["n_steps"] == 20 and narrow[0]["data_origin"] == "local"
    assert [row["seed"] for row in bench.load_rows(out / "later")] == [1]
    assert bench.read_settings(out / "later").configs == str(study / "later")
    # One variant alone, into bench/<set>/<variant> by default; options win over the set's.
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--configs", str(study / "later"), "--seeds", "1", *argv[3:]]) == 0
    assert "1 runs (0 already finished in bench/study/later)" in capsys.readouterr().out
    assert [row["seed"] for row in bench.load_rows(tmp_path / "bench/study/later")] == [0]
    assert main(["bench", "--algos", "bc_all"]) == 2
    assert "give --tasks" in capsys.readouterr().err
    assert main(["bench", "--configs", str(tmp_path / "missing")]) == 2
    assert "no config folder" in capsys.readouterr().err


def test_benchmark_scripts_load_and_import_no_other_script():
    # The layers: a script of benchmarks/ calls the bench API, never another script.
    import ast
    import importlib.util

    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    names = {path.stem for path in scripts}
    for path in scripts:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        assert not imported & names, f"{path.name} imports {sorted(imported & names)}"
        spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_the_bench_and_cli_modules_stay_short():
    # The rule: no file over ~600 lines without a reason in its docstring.
    for package in ("bench", "cli"):
        for path in sorted((ROOT / "safe_agents" / package).glob("*.py")):
            assert len(path.read_text().splitlines()) <= 500, path.name


def test_sweep_with_build_data_builds_the_missing_dataset_first(tmp_path, monkeypatch):
    """A sweep whose task has no local dataset builds it with its recipe (here a tiny toy build
    into an empty cache), then trains on it; without build_data it fails naming the command."""
    from test_collect import TINY as TINY_BUILD  # tests/ is on the path (rootdir)

    from envs import collect

    cache = tmp_path / "cache"
    monkeypatch.setenv("SAFE_AGENTS_DATA_DIR", str(cache))
    monkeypatch.setattr(collect.recipes, "RECIPES", {TOY: dict(TINY_BUILD)})
    monkeypatch.setattr(collect.recipes, "dataset_locations", lambda task: [cache / f"{task}.hdf5"])
    runs = bench.plan_runs(["bc_all"], [TOY], [0])
    messages: list[str] = []
    settings = bench.SweepSettings(
        episodes=1, overrides={"n_steps": 5}, data_origin="local", build_data=True
    )
    rows = bench.run_sweep(runs, settings, tmp_path / "sweep", workers=1, on_build=messages.append)
    assert len(rows) == 1 and messages[0].startswith(f"building the benchmark dataset of {TOY}")
    assert (cache / f"{TOY}.hdf5").is_file()
    assert "512 behaviour training steps" in rows[0]["data_provenance"]  # the file just built


def test_the_zero_action_floor_is_evaluated_as_the_sweep_rows_were(tmp_path):
    # benchmarks/zero_action.py: the sweep's evaluation episodes and seed, and its rows'
    # normalization, on a real environment.
    rows = tmp_path / "sweep" / "rows"
    rows.mkdir(parents=True)
    row = {
        "agent": "bc_all",
        "task": TOY,
        "seed": 0,
        "eval_seed": 1234,
        "reward_range": [-100.0, 100.0],
        "episodes": {"return": [1.0, 2.0], "cost": [0.0, 0.0], "length": [100, 100]},
        "mean_return": 1.5,
        "mean_cost": 0.0,
    }
    (rows / f"bc_all__{TOY}__seed0.json").write_text(json.dumps(row))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "zero_action.py"
    done = subprocess.run(
        [sys.executable, str(script), "--sweep", str(tmp_path / "sweep")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = json.loads((tmp_path / "sweep" / "zero_action.json").read_text())["rows"]
    env = envs.make(TOY)
    zero = envs.evaluate(
        lambda obs: np.zeros(2, np.float32), env, 2, 1234, reward_range=(-100.0, 100.0)
    )
    assert result["episodes"] == 2 and result["eval_seed"] == 1234
    assert result["reward_range"] == [-100.0, 100.0]
    assert result["mean_normalized_return"] == pytest.approx(zero["mean_normalized_return"])
    assert result["mean_return"] == pytest.approx(zero["mean_return"])
