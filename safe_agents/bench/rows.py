"""A sweep folder's files: one JSON row per finished run, its saved agent, its work folder.

``<out>/rows/<agent>__<task>__seed<seed>.json`` is a run's result row (its presence marks the
run finished), ``<out>/agents/<key>.zip`` the trained agent, ``<out>/work/<key>/`` the
checkpoint of a run under way. :func:`write_result` writes the JSON result of a benchmark
script that measures something other than a sweep (speed, datasets).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from safe_agents.bench.settings import Run
from safe_agents.common.fileio import atomic_write


def row_key(row: dict[str, Any]) -> str:
    """The key (file stem) of a result row."""
    return Run(row["agent"], row["task"], int(row["seed"])).key


def load_rows(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every row of a sweep folder, in a stable order (agent, task, seed).

    Raises:
        ValueError: a row file that is not valid JSON or lacks the row fields, naming it.
    """
    rows = []
    for path in sorted((Path(out_dir) / "rows").glob("*.json")):
        try:
            row = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a result row ({error})") from error
        missing = {"agent", "task", "seed", "mean_return", "mean_cost"} - set(row)
        if missing:
            raise ValueError(f"{path}: not a result row (missing {sorted(missing)})")
        rows.append(row)
    return sorted(rows, key=lambda row: (row["agent"], row["task"], row["seed"]))


def finished(out_dir: str | Path) -> set[str]:
    """The keys of the runs that already have a row in ``out_dir``."""
    return {path.stem for path in (Path(out_dir) / "rows").glob("*.json")}


def agent_path(out: str | Path, run: Run) -> Path:
    """Where the sweep folder ``out`` keeps the agent ``run`` trained (``load_agent`` reads it)."""
    return Path(out) / "agents" / f"{run.key}.zip"


def run_work_dir(out: str | Path, run: Run) -> Path:
    """Where a run of the sweep folder ``out`` keeps its checkpoint until its row is written."""
    return Path(out) / "work" / run.key


def write_result(path: str | Path, result: dict[str, Any]) -> Path:
    """Write a benchmark's JSON result (creating the folder, atomically) and return its path."""
    return atomic_write(path, json.dumps(result, indent=2))


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(payload, indent=1))


def _git_revision() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
