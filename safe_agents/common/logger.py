"""Training logs: namespaced keys recorded during a step, dumped every ``log_interval`` steps.

Writers: stdout, CSV, JSONL and (when installed) tensorboard. The logger also keeps every dumped
row in :attr:`Logger.history`, which is what tests and the CLI read.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Protocol


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
    """``progress.csv``; columns grow when new keys appear (the file is rewritten then)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def write(self, values: dict[str, float], step: int) -> None:
        row = {"step": step, **values}
        self.rows.append(row)
        new_keys = [key for key in row if key not in self.keys]
        if new_keys or not self.path.exists():
            self.keys += new_keys
            with self.path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.keys)
                writer.writeheader()
                writer.writerows(self.rows)
        else:
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.keys).writerow(row)

    def close(self) -> None:
        pass


class JSONLWriter:
    """``progress.jsonl``, one JSON object per dump."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("a")

    def write(self, values: dict[str, float], step: int) -> None:
        self.handle.write(json.dumps({"step": step, **values}) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class TensorboardWriter:
    """Scalars for tensorboard (needs the ``tensorboard`` package)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def write(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


FORMATS = ("stdout", "csv", "jsonl", "tensorboard")


class Logger:
    """Collects ``record(key, value)`` calls and writes their means at ``dump(step)``.

    Args:
        log_dir: folder for the file writers (created if needed); None keeps logs in memory.
        formats: any of ``stdout, csv, jsonl, tensorboard``; by default ``csv`` and ``jsonl``
            when ``log_dir`` is given (plus ``tensorboard`` if it is installed), else none.
    """

    def __init__(self, log_dir: str | Path | None = None, formats: tuple[str, ...] | None = None):
        unknown = set(formats or ()) - set(FORMATS)
        if unknown:
            raise ValueError(f"unknown log format(s) {sorted(unknown)}; choose from {FORMATS}")
        if formats is None:
            formats = ("csv", "jsonl") if log_dir is not None else ()
            if log_dir is not None and _tensorboard_available():
                formats += ("tensorboard",)
        if log_dir is None and set(formats) - {"stdout"}:
            raise ValueError("file log formats need a log_dir")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writers: list[Writer] = []
        folder = self.log_dir if self.log_dir is not None else Path(".")
        for name in formats:
            if name == "stdout":
                self.writers.append(StdoutWriter())
            elif name == "csv":
                self.writers.append(CSVWriter(folder / "progress.csv"))
            elif name == "jsonl":
                self.writers.append(JSONLWriter(folder / "progress.jsonl"))
            else:
                self.writers.append(TensorboardWriter(folder))
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self.history: list[dict[str, float]] = []
        self.latest: dict[str, float] = {}

    def record(self, key: str, value: float) -> None:
        """Add a value under a namespaced key (``train/actor_loss``); dumps write the mean."""
        if "/" not in key:
            raise ValueError(f"log keys are namespaced ('train/{key}'), got {key!r}")
        self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._counts[key] = self._counts.get(key, 0) + 1

    def dump(self, step: int) -> dict[str, float]:
        """Write the means recorded since the last dump; returns them."""
        values = {key: self._sums[key] / self._counts[key] for key in sorted(self._sums)}
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


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def all_finite(values: dict[str, float]) -> bool:
    """Whether every logged value is finite."""
    return all(math.isfinite(value) for value in values.values())
