"""A sweep folder's files: one JSON row per finished run, its saved agent, its work folder.

``<out>/rows/<agent>__<task>__seed<seed>.json`` is a run's result row (its presence marks the
run finished), ``<out>/agents/<key>.zip`` the trained agent, ``<out>/work/<key>/`` the
checkpoint of a run under way. :func:`write_result` writes the JSON result of a benchmark
script that measures something other than a sweep (speed, datasets). :func:`commit_row` commits
a finished row to the git repository holding the folder, so a long sweep's results are kept as
they come (``safe-agents bench --commit-rows``).
"""

from __future__ import annotations

import json
import subprocess
import time
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


class RowCommitError(RuntimeError):
    """A row could not be committed (the message gives git's answer)."""


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, timeout=60, cwd=folder, check=False
    )


def check_committable(out_dir: str | Path) -> Path:
    """The root of the git work tree ``out_dir`` lies in, where its rows can be committed.

    ``out_dir`` need not exist yet (its nearest existing parent is asked).

    Raises:
        RowCommitError: git is missing, ``out_dir`` is outside a work tree, or git ignores its
            rows (``.gitignore``): each message says which.
    """
    out = Path(out_dir).resolve()
    folder = next(parent for parent in (out, *out.parents) if parent.is_dir())
    try:
        top = _git(folder, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.SubprocessError) as error:
        raise RowCommitError(f"cannot run git to commit the rows of {out_dir}: {error}") from error
    if top.returncode != 0:
        raise RowCommitError(
            f"{out_dir} is not inside a git work tree, so its rows cannot be committed"
        )
    root = Path(top.stdout.strip())
    probe = (out / "rows" / "probe.json").relative_to(root)
    if _git(root, "check-ignore", "-q", "--no-index", str(probe)).returncode == 0:
        raise RowCommitError(
            f"git ignores {out / 'rows'} (.gitignore), so its rows cannot be committed; "
            "sweep into a folder git keeps"
        )
    return root


def commit_row(out_dir: str | Path, key: str, message: str, attempts: int = 5) -> str:
    """Commit run ``key``'s row (and the folder's ``sweep.json``), and nothing else.

    Other changes of the work tree, staged or not, are left as they are (``git commit --only``),
    so the rows of a sweep running in the background can be committed while someone works in
    the same checkout. A commit that meets another git command's lock is tried again, up to
    ``attempts`` times a second apart. Returns the new commit's hash.

    Raises:
        RowCommitError: the row does not exist, or git refused (its message is quoted).
    """
    out = Path(out_dir).resolve()
    row = out / "rows" / f"{key}.json"
    if not row.is_file():
        raise RowCommitError(f"no row {row} to commit")
    root = check_committable(out)
    paths = [str(row.relative_to(root))]
    if (out / "sweep.json").is_file():
        paths.append(str((out / "sweep.json").relative_to(root)))
    answer = ""
    for attempt in range(attempts):
        added = _git(root, "add", "--", *paths)
        result = (
            added
            if added.returncode
            else _git(root, "commit", "-m", message, "--only", "--", *paths)
        )
        if result.returncode == 0:
            return _git(root, "rev-parse", "HEAD").stdout.strip()
        answer = (result.stderr or result.stdout).strip()
        if "nothing to commit" in answer or "no changes added" in answer:
            return _git(root, "rev-parse", "HEAD").stdout.strip()  # committed already
        if ".lock" not in answer or attempt == attempts - 1:
            break
        time.sleep(1.0)
    raise RowCommitError(f"git did not commit {row}: {answer}")
