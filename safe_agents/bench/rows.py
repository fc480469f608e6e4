"""A sweep folder's files: one JSON row per finished run, its saved agent, its work folder.

``<out>/rows/<agent>__<task>__seed<seed>.json`` is a run's result row (its presence marks the
run finished), ``<out>/agents/<key>.zip`` the trained agent, ``<out>/work/<key>/`` the
checkpoint of a run under way. :func:`write_result` writes the JSON result of a benchmark
script that measures something other than a sweep (speed, datasets). :func:`commit_rows` commits
the finished rows to the git repository holding the folder, so a long sweep's results are kept as
they come (``safe-agents bench --commit-rows``).
"""

from __future__ import annotations

import json
import os
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
    """A sweep folder's rows could not be committed (the message gives git's answer)."""


# Automated commits: no signing prompt to wait on, git's messages in English whatever the
# locale; pathspecs taken literally (a folder named "res[1]" is not a pattern) where a command
# takes pathspecs (check-ignore takes plain paths and refuses the option).
_GIT = ["git", "-c", "commit.gpgsign=false"]


def _git(folder: Path, *args: str, literal: bool = True) -> subprocess.CompletedProcess[str]:
    command = [*_GIT, "--literal-pathspecs", *args] if literal else [*_GIT, *args]
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=folder,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise RowCommitError(f"git {' '.join(args[:1])} failed in {folder}: {error}") from error


def _answer(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"


def check_committable(out_dir: str | Path) -> Path:
    """The root of the git work tree ``out_dir`` lies in, where its rows can be committed.

    ``out_dir`` need not exist yet (its nearest existing parent is asked).

    Raises:
        RowCommitError: git is missing, ``out_dir`` is outside a work tree, or git ignores its
            rows or its ``sweep.json`` (``.gitignore``): each message says which.
    """
    out = Path(out_dir).resolve()
    folder = next(parent for parent in (out, *out.parents) if parent.is_dir())
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise RowCommitError(
            f"{out_dir} is not inside a git work tree, so its rows cannot be committed "
            f"(git: {_answer(top)})"
        )
    root = Path(top.stdout.rstrip("\n"))
    for probe in (out / "rows" / "probe.json", out / "sweep.json"):
        path = str(probe.relative_to(root))
        ignored = _git(root, "check-ignore", "-q", "--no-index", path, literal=False)
        if ignored.returncode == 0:
            raise RowCommitError(
                f"git ignores {probe.parent if probe.name == 'probe.json' else probe} "
                "(.gitignore), so the rows cannot be committed; sweep into a folder git keeps"
            )
        if ignored.returncode != 1:
            raise RowCommitError(f"git check-ignore failed in {root}: {_answer(ignored)}")
    return root


def commit_rows(out_dir: str | Path, message: str, attempts: int = 5) -> str | None:
    """Commit a sweep folder's rows as they are on disk (added, changed and deleted ones) and
    its ``sweep.json``, and nothing else.

    Other changes of the work tree, staged or not, are left as they are (``git commit
    --only``), so the rows of a sweep running in the background can be committed while someone
    works in the same checkout; rows an earlier call could not commit go with the next. The
    commit skips hooks and signing. One that meets another git command's lock is tried again,
    up to ``attempts`` times a second apart; one that fails unstages what it staged.

    Returns:
        The new commit's hash, or None when the committed rows are already those on disk.

    Raises:
        RowCommitError: git refused (its answer is quoted) or could not run.
    """
    out = Path(out_dir).resolve()
    root = check_committable(out)
    candidates = [out / "rows", out / "sweep.json"]
    tracked = _git(root, "ls-files", "--", *(str(p.relative_to(root)) for p in candidates))
    paths = [
        str(path.relative_to(root))
        for path in candidates
        if path.exists() or str(path.relative_to(root)) in tracked.stdout
    ]
    if not paths:
        return None
    answer = ""
    for attempt in range(attempts):
        result = _git(root, "add", "--all", "--", *paths)
        if result.returncode == 0:
            if _git(root, "diff", "--cached", "--quiet", "HEAD", "--", *paths).returncode == 0:
                return None  # nothing new
            result = _git(root, "commit", "--no-verify", "-m", message, "--only", "--", *paths)
            if result.returncode == 0:
                return _git(root, "rev-parse", "HEAD").stdout.strip()
        answer = _answer(result)
        if ".lock" not in answer or attempt == attempts - 1:
            break
        time.sleep(1.0)
    _git(root, "reset", "-q", "--", *paths)  # leave the index as it was
    raise RowCommitError(f"git did not commit the rows of {out_dir}: {answer}")
