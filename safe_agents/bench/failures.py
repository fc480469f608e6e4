"""The cells of a sweep that need a diagnosis, and the diagnoses written for them.

The suite's rule: every unsafe cell of the four papers' methods (:data:`PAPER_AGENTS`) and
every task where FISOR earns less than BC-Safe needs a short diagnosis, read off the curves and
logs: a bug (fixed, and the cell rerun), a property of the method (its paper's own numbers show
it), the data, or the budget. Diagnoses are written by hand in ``diagnoses.toml`` in the sweep
folder, one table per cell::

    [fisor."OfflineBallRun-v0"]
    kind = "budget"
    text = "The return still climbs at the last evaluation..."

The numbers printed beside them are generated from the rows (:func:`failures_section`), never
copied by hand. A failing cell without a diagnosis and a diagnosis whose cell no longer fails are
both listed, so the list cannot go stale unnoticed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safe_agents.bench.report import Cell, table

# The four papers' methods: each of their unsafe cells needs a diagnosis.
PAPER_AGENTS = ("fisor", "drcorl", "spi", "dspo")
# FISOR's paper claims safety with competitive return: a task where it earns less than this
# baseline (which imitates only the safe episodes) needs a diagnosis too.
FISOR_FLOOR_AGENT = "bc_safe"
# Which cells need a diagnosis, in words (the report and the headline say it).
LISTING_RULE = (
    f"every unsafe cell of {', '.join(PAPER_AGENTS)}, and every task where fisor earns less "
    f"than {FISOR_FLOOR_AGENT}"
)
DIAGNOSES_FILE = "diagnoses.toml"
KINDS = {
    "bug": "A bug",  # fixed, and the cell rerun
    "method": "A property of the method",  # its paper's numbers or its design show it
    "data": "The data",
    "budget": "The budget",  # the curve had not levelled off
}


@dataclass(frozen=True)
class Diagnosis:
    """A hand-written diagnosis of one (agent, task) cell."""

    kind: str
    text: str


@dataclass(frozen=True)
class Failure:
    """One (agent, task) cell that needs a diagnosis, and why it is listed."""

    agent: str
    task: str
    reasons: tuple[str, ...]


def find_failures(rows: Sequence[dict[str, Any]]) -> list[Failure]:
    """The cells that need a diagnosis, by task then agent.

    A cell is listed when it is an unsafe cell of :data:`PAPER_AGENTS`, or FISOR's cell on a
    task where it earns a lower normalized return than :data:`FISOR_FLOOR_AGENT`.
    """
    failures = []
    for task, cells in table(rows).items():
        for agent, cell in sorted(cells.items()):
            reasons = []
            if agent in PAPER_AGENTS and not cell.safe:
                reasons.append(f"unsafe (cost {cell.cost:.2f})")
            floor = cells.get(FISOR_FLOOR_AGENT)
            if agent == "fisor" and floor is not None and cell.reward < floor.reward:
                # Enough digits to show the difference (0.38 against 0.38 says nothing).
                digits = 2 if f"{cell.reward:.2f}" != f"{floor.reward:.2f}" else 3
                reasons.append(
                    f"return {cell.reward:.{digits}f} below {FISOR_FLOOR_AGENT}'s "
                    f"{floor.reward:.{digits}f}"
                )
            if reasons:
                failures.append(Failure(agent, task, tuple(reasons)))
    return failures


def load_diagnoses(path: str | Path) -> dict[tuple[str, str], Diagnosis]:
    """``{(agent, task): Diagnosis}`` from a ``diagnoses.toml`` (none when the file is absent).

    Raises:
        ValueError: the file is not TOML, or an entry lacks a known ``kind`` or a ``text``.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error
    diagnoses = {}
    for agent, tasks in document.items():
        if not isinstance(tasks, Mapping):
            raise ValueError(f"{path}: [{agent}] must hold one table per task")
        for task, entry in tasks.items():
            where = f'{path}: [{agent}."{task}"]'
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where} must be a table with kind and text")
            kind, text = entry.get("kind"), entry.get("text")
            if not isinstance(kind, str) or kind not in KINDS:
                raise ValueError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: text is missing or empty")
            unknown = set(entry) - {"kind", "text"}
            if unknown:
                raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
            diagnoses[(agent, task)] = Diagnosis(kind, " ".join(text.split()))
    return diagnoses


def _common_curves(rows: Sequence[dict[str, Any]]) -> tuple[list[list[dict[str, Any]]], str]:
    """The seeds' curves when every seed has one at the same steps, else why not."""
    curves = [row.get("curve") or [] for row in rows]
    steps = [[point["step"] for point in curve] for curve in curves]
    if not any(steps):
        return [], "not recorded"
    if not all(steps):
        return [], f"recorded for {sum(1 for s in steps if s)} of its {len(steps)} seeds"
    if any(other != steps[0] for other in steps):
        return [], "its seeds' curves were evaluated at different steps"
    return curves, ""


def _curve_line(rows: Sequence[dict[str, Any]]) -> str:
    """The cell's learning curve, mean over seeds: ``step return / cost, ...`` (or why not)."""
    curves, why_not = _common_curves(rows)
    if not curves:
        return why_not
    points = []
    for index, point in enumerate(curves[0]):
        reward = np.mean([curve[index]["normalized_return"] for curve in curves])
        cost = np.mean([curve[index]["normalized_cost"] for curve in curves])
        step = point["step"]
        label = f"{step / 1000:g}k" if step >= 1000 else str(step)
        points.append(f"{label} {reward:.2f} / {cost:.2f}")
    return ", ".join(points)


def _training_line(rows: Sequence[dict[str, Any]]) -> str:
    """The training values logged at the cell's last curve point, mean over seeds."""
    curves, why_not = _common_curves(rows)
    if not curves:
        return why_not
    logged = [curve[-1].get("train") or {} for curve in curves]
    keys = [key for key in logged[0] if all(key in values for values in logged)]
    if not keys:
        return "not recorded"
    return ", ".join(f"{key} {np.mean([values[key] for values in logged]):.3g}" for key in keys)


def _seed_line(cell: Cell, rows: Sequence[dict[str, Any]]) -> str:
    ordered = sorted(rows, key=lambda row: row["seed"])
    per_seed = ", ".join(
        f"seed {row['seed']} {row['mean_normalized_return']:.2f} / "
        f"{row['mean_normalized_cost']:.2f}"
        for row in ordered
    )
    seeds = f"{cell.seeds} seed{'s' if cell.seeds != 1 else ''}"
    return f"{cell.reward:.2f} / {cell.cost:.2f} over {seeds} ({per_seed})"


def failures_section(
    rows: Sequence[dict[str, Any]], diagnoses: Mapping[tuple[str, str], Diagnosis]
) -> str:
    """The report's section on failures: each failing cell with its numbers and its diagnosis.

    Per cell: why it is listed, its normalized return / cost per seed, its learning curve
    (mean over seeds at each evaluation), the training values logged at the curve's last point
    (mean over seeds: FISOR's feasible fraction, the critics' losses, ...), and the diagnosis
    from ``diagnoses`` or a line saying there is none yet. Diagnoses whose cell no longer fails,
    and those of cells without rows, are listed at the end. Empty when nothing fails and
    nothing is diagnosed.
    """
    failures = find_failures(rows)
    listed = {(failure.agent, failure.task) for failure in failures}
    present = {(row["agent"], row["task"]) for row in rows}
    passing = sorted(key for key in diagnoses if key not in listed and key in present)
    rowless = sorted(key for key in diagnoses if key not in present)
    if not failures and not passing and not rowless:
        return ""
    cells = table(rows)
    diagnosed = sum(1 for key in listed if key in diagnoses)
    lines = [
        "## Failures and their diagnoses",
        "",
        f"Listed: {LISTING_RULE}: {len(failures)}, {diagnosed} of them diagnosed (in "
        f"`{DIAGNOSES_FILE}`; the numbers are generated from the rows). Curves: "
        "normalized return / cost of the iterate at each evaluation step, mean over seeds.",
    ]
    for failure in failures:
        group = [r for r in rows if r["agent"] == failure.agent and r["task"] == failure.task]
        diagnosis = diagnoses.get((failure.agent, failure.task))
        verdict = (
            f"**{KINDS[diagnosis.kind]}.** {diagnosis.text}"
            if diagnosis
            else "**Not diagnosed yet.**"
        )
        lines += [
            "",
            f"### {failure.agent} on {failure.task}: {'; '.join(failure.reasons)}",
            "",
            f"- Final: {_seed_line(cells[failure.task][failure.agent], group)}.",
            f"- Curve: {_curve_line(group)}.",
            f"- Training values at the last curve point: {_training_line(group)}.",
            f"- Diagnosis: {verdict}",
        ]
    if passing:
        lines += ["", "Diagnoses whose cell no longer fails (remove them):", ""]
        lines += [f"- {agent} on {task}" for agent, task in passing]
    if rowless:
        lines += ["", "Diagnoses of cells without rows (not run yet, or a misspelt name):", ""]
        lines += [f"- {agent} on {task}" for agent, task in rowless]
    return "\n".join(lines)
