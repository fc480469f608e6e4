"""A sweep folder's record of its settings, and its lock: one set of settings, one writer.

``<out>/sweep.json`` records the settings and the budget of every (agent, task) the folder's
rows were made with. A sweep with other settings is refused (its rows would mix with the old
ones in one table) unless forced, which discards the rows the new settings would not reproduce.
``<out>/.lock`` keeps a second sweep out while one writes the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safe_agents.bench.budgets import budget
from safe_agents.bench.rows import finished
from safe_agents.bench.settings import Run, SweepError, SweepSettings
from safe_agents.common.fileio import LockHeld, exclusive_lock

logger = logging.getLogger(__name__)


# The folder's record of its settings, budgets and planned runs.
RECORD_FILE = "sweep.json"
# The settings every row of a folder shares. ``configs`` is compared through the budgets it
# gives (where the files live changes no run), and ``save_agents`` changes no row.
SHARED_SETTINGS = ("profile", "episodes", "eval_seed", "overrides", "n_safe_demos", "data_origin")


def _pair(agent: str, task: str) -> str:
    return f"{agent}/{task}"


def _pair_of_key(key: str) -> str:
    """The ``agent/task`` of a row key ``<agent>__<task>__seed<seed>``."""
    agent, _, rest = key.partition("__")
    return _pair(agent, rest.rsplit("__seed", 1)[0])


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), to compare with a record."""
    return json.loads(json.dumps(value, default=str))


def _budget_record(run: Run, settings: SweepSettings) -> dict[str, Any]:
    n_steps, hyperparameters = budget(run.agent, run.task, settings)
    return _as_json({"n_steps": n_steps, "hyperparameters": hyperparameters})


@dataclass
class _FolderRecord:
    """What ``sweep.json`` says a folder's rows were made with."""

    settings: SweepSettings
    budgets: dict[str, dict[str, Any]]  # {"agent/task": {"n_steps": ..., "hyperparameters": ...}}
    runs: list[Run]

    @classmethod
    def read(cls, path: Path) -> _FolderRecord:
        """Parse a record; a setting added since it was written ran with its default then.

        Raises:
            ValueError: not a record (also for JSON, key and type errors).
        """
        try:
            document = json.loads(path.read_text())
            settings = asdict(SweepSettings())
            settings.update({k: v for k, v in document["settings"].items() if k in settings})
            return cls(
                SweepSettings(**settings),
                {str(pair): dict(budget) for pair, budget in document.get("budgets", {}).items()},
                [Run(**run) for run in document.get("runs", [])],
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path.name} is unreadable ({error})") from error


def read_settings(out_dir: str | Path) -> SweepSettings:
    """The settings a sweep folder's rows were made with, from its ``sweep.json``.

    Raises:
        ValueError: the folder has no record, or an unreadable one.
    """
    path = Path(out_dir) / RECORD_FILE
    if not path.is_file():
        raise ValueError(f"{out_dir} has no sweep.json: not a folder safe-agents bench wrote")
    return _FolderRecord.read(path).settings


def planned_runs(out_dir: str | Path) -> list[Run] | None:
    """The runs a sweep folder's ``sweep.json`` plans, or None when the folder has no record.

    Raises:
        ValueError: an unreadable record.
    """
    path = Path(out_dir) / RECORD_FILE
    return _FolderRecord.read(path).runs if path.is_file() else None


def _prepare_folder(
    out: Path,
    runs: Sequence[Run],
    settings: SweepSettings,
    budgets: dict[str, dict[str, Any]],
    force: bool,
) -> dict[str, Any]:
    """Check the folder's rows against the new settings; return the record to write.

    Rows the new settings would not reproduce are refused (``SweepError``) or, with ``force``,
    discarded before the new record is written: a sweep killed in between leaves the old
    record over fewer rows, never the new record over old rows.
    """
    done = finished(out)
    record, stale, reasons = _stale_rows(out, settings, budgets, done)
    if stale and not force:
        raise SweepError(
            f"{out} was swept with other settings ({'; '.join(reasons)}): its {len(stale)} "
            "row(s) would mix with new ones. Rerun with its settings, sweep into another "
            "folder, or force it (--force) to discard those rows"
        )
    if stale:
        logger.warning(
            "discarding %d row(s) of %s made with other settings (%s)",
            len(stale),
            out,
            "; ".join(reasons),
        )
        for key in sorted(stale):
            (out / "agents" / f"{key}.zip").unlink(missing_ok=True)
            (out / "rows" / f"{key}.json").unlink(missing_ok=True)
            shutil.rmtree(out / "work" / key, ignore_errors=True)
        # A report of discarded rows would mislead; the next one is rendered from the rows.
        for path in (out / "report.md", out / "report.csv", *(out / "plots").glob("*.png")):
            path.unlink(missing_ok=True)
    # The record keeps describing the rows that stay (those of runs not planned now).
    kept = record if record is not None and len(stale) < len(done) else None
    planned = {run.key for run in runs}
    old_runs = [run for run in kept.runs if run.key not in planned] if kept else []
    return {
        "settings": asdict(settings),
        "budgets": {**(kept.budgets if kept else {}), **budgets},
        "runs": [asdict(run) for run in [*old_runs, *runs]],
    }


def _stale_rows(
    out: Path, settings: SweepSettings, budgets: dict[str, dict[str, Any]], done: set[str]
) -> tuple[_FolderRecord | None, set[str], list[str]]:
    """``(record, stale, reasons)``: the folder's record (``None`` when it has none), the keys
    of its rows the new settings would not reproduce, and why, one phrase per difference."""
    path = out / RECORD_FILE
    if not path.is_file():
        reason = "it has rows but no sweep.json recording their settings"
        return None, set(done), [reason] if done else []
    try:
        record = _FolderRecord.read(path)
    except ValueError as error:
        return None, set(done), [f"its {error}"] if done else []
    there, now = _as_json(asdict(record.settings)), _as_json(asdict(settings))
    reasons = [
        f"{name} {there[name]!r} there, {now[name]!r} now"
        for name in SHARED_SETTINGS
        if there[name] != now[name]
    ]
    if reasons:
        return record, set(done), reasons
    stale: set[str] = set()
    for pair, wanted in budgets.items():
        keys = {key for key in done if _pair_of_key(key) == pair}
        if not keys:
            continue
        agent, task = pair.split("/", 1)
        # Records of older versions hold no budgets: those their settings give.
        had = record.budgets.get(pair) or _budget_record(Run(agent, task, 0), record.settings)
        if had != wanted:
            stale |= keys
            reasons.append(f"the budget of {agent} on {task}: {_budget_change(had, wanted)}")
    return record, stale, reasons


def _budget_change(had: dict[str, Any], wanted: dict[str, Any]) -> str:
    """``n_steps 1500 -> 100, batch_size 256 -> 128``: what changed between two budgets."""
    before, after = (
        {"n_steps": budget.get("n_steps"), **budget.get("hyperparameters", {})}
        for budget in (had, wanted)
    )
    return ", ".join(
        f"{key} {before.get(key, 'default')} -> {after.get(key, 'default')}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    )


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """Hold ``<out>/.lock`` for the sweep: a second sweep into the folder would run every run
    again and race the first one's writes. The lock dies with the process that holds it, so a
    killed sweep never leaves the folder locked."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(out / ".lock", wait=False))
        except LockHeld:
            raise SweepError(
                f"another sweep is writing {out}; wait for it to end or choose another folder"
            ) from None
        yield


def _remove_leftovers(out: Path) -> None:
    """Remove the temporaries of writers killed part way (none writes now: the folder is
    locked), and those of the fixed names earlier versions used."""
    for folder in (out / "rows", out / "agents"):
        for pattern in (".*.tmp", ".*.partial"):
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)
