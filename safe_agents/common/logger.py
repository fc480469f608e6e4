"""Training logs: namespaced keys recorded during a step, dumped every ``log_interval`` steps.

Writers: stdout, CSV, JSONL, tensorboard (when installed) and Weights & Biases (when a wandb run
is active: call ``wandb.init(...)`` before training, or ``safe-agents train --wandb PROJECT``).
The logger also keeps every dumped row in :attr:`Logger.history`, which is what tests and the
CLI read.

A fresh run starts new files. A run resumed from a checkpoint (``resume_step``: the checkpoint's
step) keeps the files and appends to them; rows past ``resume_step``, written by the interrupted
run after its last checkpoint, are dropped first (the file is rewritten atomically), so every
step appears once.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import IO, Any, Protocol

import torch

from safe_agents.common.fileio import atomic_path, atomic_write

#: One training step's metrics: floats, or 0-dim tensors that stay on the agent's device until
#: the logger's next dump (reading a CUDA value waits for the GPU; a step need not).
Metrics = dict[str, float | torch.Tensor]


class Writer(Protocol):
    def write(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class StdoutWriter:
    """Prints each dump as a small aligned table."""

    def write(self, values: dict[str, float], step: int) -> None:
        width = max(len(key) for key in values) if values else 0
        lines = [f"step {step}"] + [
            f"  {key:<{width}}  {value:.5g}" for key, value in values.items()
        ]
        print("\n".join(lines), flush=True)

    def close(self) -> None:
        pass


class CSVWriter:
    """``progress.csv``; columns grow when new keys appear (the file is rewritten then).

    Args:
        path: the CSV file.
        resume_step: None or 0 starts a new file at the first dump; a positive step keeps the
            file's rows up to that step (and its columns) and appends after them.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        self.keys: list[str] = []
        self.rows: list[dict[str, Any]] = []
        if resume_step:
            self._resume(resume_step)

    def _resume(self, resume_step: int) -> None:
        try:
            with self.path.open(newline="") as handle:
                text = handle.read()
        except FileNotFoundError:
            return
        reader = csv.DictReader(io.StringIO(_complete_lines(text), newline=""))
        header = list(reader.fieldnames or [])
        if "step" not in header:
            return  # not a log this writer understands: the first dump starts a new file
        self.keys = header
        for row in reader:
            # A row with missing or extra fields is the torn end of an interrupted write.
            if None in row or None in row.values():
                continue
            step = _as_step(row["step"])
            if step is not None and step <= resume_step:
                self.rows.append(row)
        self._rewrite_if_changed(text)

    def _rewrite_if_changed(self, text: str) -> None:
        buffer = io.StringIO(newline="")
        self._write_all(buffer)
        if buffer.getvalue() != text:
            atomic_write(self.path, buffer.getvalue())

    def _write_all(self, handle: IO[str]) -> None:
        writer = csv.DictWriter(handle, fieldnames=self.keys)
        writer.writeheader()
        writer.writerows(self.rows)

    def write(self, values: dict[str, float], step: int) -> None:
        row = {"step": step, **values}
        self.rows.append(row)
        new_keys = [key for key in row if key not in self.keys]
        if new_keys or not self.path.exists():
            self.keys += new_keys
            with atomic_path(self.path) as temporary, temporary.open("w", newline="") as handle:
                self._write_all(handle)
        else:
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.keys).writerow(row)

    def close(self) -> None:
        pass


class JSONLWriter:
    """``progress.jsonl``, one JSON object per dump.

    Args:
        path: the JSONL file.
        resume_step: None or 0 starts a new file at the first dump; a positive step keeps the
            file's lines up to that step and appends after them.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        self.handle: IO[str] | None = None
        if resume_step:
            self._resume(resume_step)

    def _resume(self, resume_step: int) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        kept = []
        for line in _complete_lines(text).splitlines(keepends=True):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            step = _as_step(row.get("step")) if isinstance(row, dict) else None
            if step is not None and step <= resume_step:
                kept.append(line)
        if "".join(kept) != text:
            atomic_write(self.path, "".join(kept))
        self.handle = self.path.open("a")

    def write(self, values: dict[str, float], step: int) -> None:
        line = json.dumps({"step": step, **values}) + "\n"
        if self.handle is None:  # a fresh run: the first dump replaces any older file
            atomic_write(self.path, line)
            self.handle = self.path.open("a")
        else:
            self.handle.write(line)
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


class TensorboardWriter:
    """Scalars for tensorboard (needs the ``tensorboard`` package).

    On resume, events past ``resume_step`` left by the interrupted run are hidden
    (``SummaryWriter(purge_step=...)``).
    """

    def __init__(self, log_dir: Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge_step = resume_step + 1 if resume_step else None
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def write(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbWriter:
    """Scalars for Weights & Biases (needs the ``wandb`` package).

    Logs into the run the user started with ``wandb.init(...)``; with none active it starts one
    (files under ``log_dir``) and finishes it on :meth:`close`. wandb keeps steps increasing, so
    a resumed run's repeated steps are dropped by wandb with a warning.
    """

    def __init__(self, log_dir: Path | None) -> None:
        import wandb

        self.wandb = wandb
        self.owns_run = wandb.run is None
        if self.owns_run:
            wandb.init(dir=str(log_dir) if log_dir is not None else None)

    def write(self, values: dict[str, float], step: int) -> None:
        self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.owns_run:
            self.wandb.finish()


FORMATS = ("stdout", "csv", "jsonl", "tensorboard", "wandb")


class Logger:
    """Collects ``record(key, value)`` calls and writes their means at ``dump(step)``.

    Args:
        log_dir: folder for the file writers (created if needed); None keeps logs in memory.
        formats: any of ``stdout, csv, jsonl, tensorboard, wandb``; by default ``csv`` and
            ``jsonl`` when ``log_dir`` is given (plus ``tensorboard`` if it is installed), and
            ``wandb`` whenever a wandb run is active.
        resume_step: the step a resumed run continues from (the checkpoint's ``num_steps``).
            None or 0: a fresh run, whose first dump starts new files. A positive step keeps
            the files in ``log_dir``, drops their rows past that step (left by the interrupted
            run after its last checkpoint) and appends to them.
    """

    def __init__(
        self,
        log_dir: str | Path | None = None,
        formats: tuple[str, ...] | None = None,
        resume_step: int | None = None,
    ):
        unknown = set(formats or ()) - set(FORMATS)
        if unknown:
            raise ValueError(f"unknown log format(s) {sorted(unknown)}; choose from {FORMATS}")
        if resume_step is not None and resume_step < 0:
            raise ValueError(f"resume_step must be >= 0, got {resume_step}")
        if formats is None:
            formats = ("csv", "jsonl") if log_dir is not None else ()
            if log_dir is not None and _tensorboard_available():
                formats += ("tensorboard",)
            if wandb_run_active():
                formats += ("wandb",)
        if log_dir is None and set(formats) - {"stdout", "wandb"}:
            raise ValueError("file log formats need a log_dir")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.resume_step = resume_step or 0
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writers: list[Writer] = []
        folder = self.log_dir if self.log_dir is not None else Path(".")
        for name in formats:
            if name == "stdout":
                self.writers.append(StdoutWriter())
            elif name == "csv":
                self.writers.append(CSVWriter(folder / "progress.csv", resume_step))
            elif name == "jsonl":
                self.writers.append(JSONLWriter(folder / "progress.jsonl", resume_step))
            elif name == "wandb":
                self.writers.append(WandbWriter(self.log_dir))
            else:
                self.writers.append(TensorboardWriter(folder, resume_step))
        self._sums: dict[str, float | torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self.history: list[dict[str, float]] = []
        self.latest: dict[str, float] = {}

    def record(self, key: str, value: float | torch.Tensor) -> None:
        """Add a value under a namespaced key (``train/actor_loss``); dumps write the mean.

        A tensor (one number) is summed where it lives and read at the next dump.
        """
        if "/" not in key:
            raise ValueError(f"log keys are namespaced ('train/{key}'), got {key!r}")
        if isinstance(value, torch.Tensor):
            value = value.detach().reshape(())
        else:
            value = float(value)
        self._sums[key] = self._sums.get(key, 0.0) + value
        self._counts[key] = self._counts.get(key, 0) + 1

    def dump(self, step: int) -> dict[str, float]:
        """Write the means recorded since the last dump; returns them."""
        values = {key: float(self._sums[key]) / self._counts[key] for key in sorted(self._sums)}
        self._sums.clear()
        self._counts.clear()
        if not values:
            return values
        self.latest = values
        self.history.append({"step": step, **values})
        for writer in self.writers:
            writer.write(values, step)
        return values

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def _complete_lines(text: str) -> str:
    """``text`` without a last line that has no newline (torn by an interrupted write)."""
    return text if text.endswith("\n") else text[: text.rfind("\n") + 1]


def _as_step(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def wandb_run_active() -> bool:
    """Whether a Weights & Biases run is active in this process (``wandb.init`` was called)."""
    # Only a program that imported wandb can have started a run: never import it here (slow).
    wandb = sys.modules.get("wandb")
    return wandb is not None and getattr(wandb, "run", None) is not None


def all_finite(values: dict[str, float]) -> bool:
    """Whether every logged value is finite."""
    return all(math.isfinite(value) for value in values.values())
