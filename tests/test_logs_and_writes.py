"""Training logs kept across a resume, and the writers that use ``safe_agents.common.fileio``.

A resumed run (``Logger(log_dir, resume_step=N)``) keeps ``progress.csv``/``progress.jsonl``,
drops the rows past ``N`` that the interrupted run wrote after its last checkpoint, and appends;
a fresh run starts new files. Every writer here leaves no temporary behind.
"""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest

import envs
from safe_agents.common.logger import Logger, WandbWriter

TOY = "OfflineToyReachAvoid-v0"


def _run(log_dir: Path, steps: range, resume_step: int | None = None, extra: str = "") -> Logger:
    """A logger that dumps ``train/loss`` (= step) at each of ``steps``, plus ``extra`` keys."""
    logger = Logger(log_dir, formats=("csv", "jsonl"), resume_step=resume_step)
    for step in steps:
        logger.record("train/loss", float(step))
        if extra:
            logger.record(extra, -float(step))
        logger.dump(step)
    logger.close()
    return logger


def _csv_rows(log_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (log_dir / "progress.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _jsonl_rows(log_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (log_dir / "progress.jsonl").read_text().splitlines()]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


# ------------------------------------------------------------------------------------ the logger
def test_fresh_run_starts_new_files(tmp_path):
    _run(tmp_path, range(10, 40, 10))
    _run(tmp_path, range(10, 30, 10))  # a second fresh run in the same folder replaces the logs
    header, rows = _csv_rows(tmp_path)
    assert header == ["step", "train/loss"]
    assert [row["step"] for row in rows] == ["10", "20"]
    assert [row["step"] for row in _jsonl_rows(tmp_path)] == [10, 20]
    assert _run(tmp_path, [], resume_step=0).resume_step == 0  # 0 is a fresh run too
    assert _leftovers(tmp_path) == []


def test_resume_keeps_rows_up_to_the_step_and_appends(tmp_path):
    _run(tmp_path, range(50, 500, 50))  # the killed run: 50..450, its last checkpoint at 200
    logger = _run(tmp_path, range(250, 450, 50), resume_step=200)
    header, rows = _csv_rows(tmp_path)
    assert header == ["step", "train/loss"]
    assert [int(row["step"]) for row in rows] == list(range(50, 450, 50))
    assert [float(row["train/loss"]) for row in rows] == [float(s) for s in range(50, 450, 50)]
    assert [row["step"] for row in _jsonl_rows(tmp_path)] == list(range(50, 450, 50))
    assert [row["step"] for row in logger.history] == list(range(250, 450, 50))  # this run's
    assert _leftovers(tmp_path) == []


def test_resume_without_rows_past_the_step_leaves_the_files_alone(tmp_path):
    _run(tmp_path, range(50, 250, 50))
    before = {name: (tmp_path / name).stat().st_ino for name in ("progress.csv", "progress.jsonl")}
    Logger(tmp_path, formats=("csv", "jsonl"), resume_step=200).close()
    after = {name: (tmp_path / name).stat().st_ino for name in ("progress.csv", "progress.jsonl")}
    assert before == after  # not rewritten


def test_rows_past_the_step_are_dropped_by_an_atomic_rewrite(tmp_path, monkeypatch):
    import safe_agents.common.logger as logger_module

    _run(tmp_path, range(50, 500, 50))
    rewritten = []
    real = logger_module.atomic_write

    def spy(path, content):
        rewritten.append(Path(path).name)
        return real(path, content)

    monkeypatch.setattr(logger_module, "atomic_write", spy)
    Logger(tmp_path, formats=("csv", "jsonl"), resume_step=200).close()
    assert sorted(rewritten) == ["progress.csv", "progress.jsonl"]
    assert [int(row["step"]) for row in _csv_rows(tmp_path)[1]] == [50, 100, 150, 200]
    assert [row["step"] for row in _jsonl_rows(tmp_path)] == [50, 100, 150, 200]


def test_new_columns_after_a_resume_keep_one_consistent_header(tmp_path):
    _run(tmp_path, range(50, 350, 50))
    _run(tmp_path, range(250, 450, 50), resume_step=200, extra="eval/cost")
    header, rows = _csv_rows(tmp_path)
    assert header == ["step", "train/loss", "eval/cost"]
    assert [int(row["step"]) for row in rows] == list(range(50, 450, 50))
    assert [row["eval/cost"] for row in rows[:4]] == [""] * 4  # older rows: an empty cell
    assert [float(row["eval/cost"]) for row in rows[4:]] == [-250.0, -300.0, -350.0, -400.0]
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    assert sum(line.startswith("step,") for line in lines) == 1
    # A second resume reads the grown header and appends under it.
    _run(tmp_path, range(450, 550, 50), resume_step=400, extra="eval/cost")
    header, rows = _csv_rows(tmp_path)
    assert header == ["step", "train/loss", "eval/cost"]
    assert [int(row["step"]) for row in rows] == list(range(50, 550, 50))


def test_resume_drops_a_torn_last_line(tmp_path):
    _run(tmp_path, range(50, 250, 50))
    with (tmp_path / "progress.csv").open("a", newline="") as handle:
        handle.write("25")  # the killed run's half-written row (would parse as step 25)
    with (tmp_path / "progress.jsonl").open("a") as handle:
        handle.write('{"step": 25')
    _run(tmp_path, range(250, 350, 50), resume_step=200)
    assert [int(row["step"]) for row in _csv_rows(tmp_path)[1]] == [50, 100, 150, 200, 250, 300]
    assert [row["step"] for row in _jsonl_rows(tmp_path)] == [50, 100, 150, 200, 250, 300]


def test_resume_into_an_empty_folder_starts_the_files(tmp_path):
    _run(tmp_path, range(250, 350, 50), resume_step=200)
    assert [int(row["step"]) for row in _csv_rows(tmp_path)[1]] == [250, 300]
    assert [row["step"] for row in _jsonl_rows(tmp_path)] == [250, 300]


def test_resume_step_must_not_be_negative(tmp_path):
    with pytest.raises(ValueError, match="resume_step must be >= 0"):
        Logger(tmp_path, resume_step=-1)


def test_tensorboard_hides_events_past_the_resume_step(tmp_path, monkeypatch):
    made = []

    class FakeSummaryWriter:
        def __init__(self, log_dir, purge_step=None):
            made.append(purge_step)

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeSummaryWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    Logger(tmp_path, formats=("tensorboard",))
    Logger(tmp_path, formats=("tensorboard",), resume_step=200)
    assert made == [None, 201]


def test_tensorboard_writes_real_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(tmp_path / "plain", range(10, 40, 10))  # csv/jsonl only: no event file
    assert not list((tmp_path / "plain").glob("events.out.tfevents.*"))
    logger = Logger(tmp_path / "tb", formats=("tensorboard",))
    for step in (10, 20):
        logger.record("train/loss", step / 10)
        logger.dump(step)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(10, 1.0), (20, 2.0)]


def test_an_active_wandb_run_receives_the_training_rows(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    from safe_agents import BCSafe

    monkeypatch.setenv("WANDB_MODE", "offline")  # no account, no network: files under tmp_path
    monkeypatch.setenv("WANDB_SILENT", "true")
    env, data = envs.make(TOY), envs.load_dataset(TOY)
    agent = BCSafe(env, seed=0, batch_size=64)  # built before the run starts: still logs to it
    run = wandb.init(project="safe-agents-tests", dir=str(tmp_path))
    try:
        agent.learn_offline(data, n_steps=60, log_interval=20)  # no log_dir: wandb only
        # wandb commits a step's row when the next step arrives: rows 20 and 40 are in.
        assert run.summary["_step"] == 40
        second = agent.logger.history[1]
        assert run.summary["train/actor_loss"] == pytest.approx(second["train/actor_loss"])
    finally:
        run.finish()
    # Without an active run no wandb writer is made, even with wandb imported.
    assert not any(isinstance(w, WandbWriter) for w in Logger(tmp_path / "after").writers)


def test_training_resumed_from_a_checkpoint_logs_each_step_once(tmp_path):
    # Needs base.py's _learn_offline to pass the resume step: Logger(log_dir, resume_step=...).
    from safe_agents import BCAll, CheckpointCallback

    env, data = envs.make(TOY), envs.load_dataset(TOY)
    logs, checkpoints = tmp_path / "logs", tmp_path / "checkpoints"
    hyper = {"batch_size": 64, "hidden_sizes": (64, 64)}
    first = CheckpointCallback(100, checkpoints)
    BCAll(env, seed=0, **hyper).learn_offline(
        data, n_steps=300, log_dir=logs, log_interval=50, callback=first
    )
    resume_from = checkpoints / "agent_200_steps.zip"  # the "killed" run logged 250 and 300 too
    assert resume_from in first.saved
    BCAll(env, seed=0, **hyper).learn_offline(
        data, n_steps=400, log_dir=logs, log_interval=50, resume_from=resume_from
    )
    steps = [int(row["step"]) for row in _csv_rows(logs)[1]]
    assert steps == list(range(50, 450, 50))
    assert [row["step"] for row in _jsonl_rows(logs)] == list(range(50, 450, 50))


# ------------------------------------------------------------------------- the other writers
def test_plot_feasibility_writes_the_destination_format_atomically(tmp_path):
    from envs.plots import plot_feasibility

    def value(points):
        return points[:, 0] ** 2 + points[:, 1] ** 2 - 0.25

    png = plot_feasibility(value, tmp_path / "out" / "vh.png", resolution=11)
    assert png.read_bytes().startswith(b"\x89PNG")
    svg = plot_feasibility(value, tmp_path / "out" / "vh.svg", resolution=11)
    assert b"<svg" in svg.read_bytes()[:1000]
    bare = plot_feasibility(value, tmp_path / "out" / "vh", resolution=11)
    assert bare.read_bytes().startswith(b"\x89PNG")  # no suffix: a PNG at exactly that path
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vh", "vh.png", "vh.svg"]


def test_a_failed_plot_leaves_neither_file_nor_temporary(tmp_path):
    from envs.plots import plot_feasibility

    with pytest.raises(ValueError):
        plot_feasibility(lambda p: p[:, 0], tmp_path / "vh.nosuchformat", resolution=11)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.simulator
def test_metadrive_offline_assets_are_written_atomically(tmp_path, monkeypatch):
    pytest.importorskip("metadrive")
    from envs import _compat

    monkeypatch.setattr(_compat, "_metadrive_assets", lambda: tmp_path / "assets")
    assets = _compat.ensure_metadrive_offline_assets()
    from metadrive.version import VERSION

    assert (assets / "version.txt").read_text() == VERSION
    texture = assets / "textures" / "grass1" / "GroundGrassGreen002_COL_1K.jpg"
    assert texture.read_bytes() == b""
    assert "MetaDrive's real assets are absent" in (assets / "SAFE_AGENTS_STUB").read_text()
    assert _leftovers(tmp_path) == []
    assert not _compat.metadrive_has_real_assets()
    # A real texture is kept when only the version file is missing.
    texture.write_bytes(b"real")
    (assets / "version.txt").unlink()
    _compat.ensure_metadrive_offline_assets()
    assert texture.read_bytes() == b"real" and (assets / "version.txt").exists()


def test_collect_checkpoints_and_texts_go_through_fileio(tmp_path):
    import torch

    from envs import collect

    collect._atomic_write_text(tmp_path / "manifest.json", '{"a": 1}')
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"a": 1}

    class Policy(torch.nn.Linear):
        def __init__(self):
            super().__init__(2, 1)
            self.optimizer = torch.optim.SGD(self.parameters(), lr=0.1)

    class Penalty:
        def state_dict(self):
            return {"multiplier": 0.5}

    build = object.__new__(collect._Build)
    build.work = tmp_path / "work"  # type: ignore[attr-defined]
    model = types.SimpleNamespace(policy=Policy())
    build.save_checkpoint(model, Penalty(), 0, 3)  # type: ignore[arg-type]
    weights, penalty = build.load_checkpoint(0, 3)
    assert torch.equal(weights["policy"]["weight"], model.policy.weight)
    assert penalty == {"multiplier": 0.5}
    assert _leftovers(tmp_path) == []


def test_bench_write_result_is_atomic(tmp_path):
    from safe_agents.bench import write_result

    path = write_result(tmp_path / "results" / "x.json", {"a": 1})
    assert path == tmp_path / "results" / "x.json"
    assert json.loads(path.read_text()) == {"a": 1}
    assert _leftovers(tmp_path) == []
