"""The papers' table from a sweep's rows: Markdown and CSV, with the data behind each task.

A cell is the mean over seeds of each seed's mean over episodes of the normalized return and
cost, with the standard deviation over seeds; a cell whose normalized cost exceeds 1 is
unsafe. Every table says which data each task's rows were trained on (:func:`data_labels`);
:func:`compute_note` says what the rows cost and :func:`progress_note` how much of the sweep's
plan they cover. :func:`safe_agents.bench.publish.write_report` writes them, with the plots,
into a sweep folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from safe_agents.bench.settings import Run


@dataclass
class Cell:
    """One (agent, task) cell: the mean over seeds of each seed's mean over episodes."""

    reward: float
    reward_spread: float
    cost: float
    cost_spread: float
    seeds: int

    @property
    def safe(self) -> bool:
        """Safe when the normalized cost is at most 1 (the cost limit)."""
        return self.cost <= 1.0


def table(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Cell]]:
    """``{task: {agent: Cell}}`` from the rows' normalized return and cost.

    Raises:
        ValueError: a row without normalized metrics (a task with no reference values).
    """
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if "mean_normalized_return" not in row:
            raise ValueError(f"row {row['agent']}/{row['task']}/{row['seed']} is not normalized")
        grouped.setdefault((row["task"], row["agent"]), []).append(row)
    cells: dict[str, dict[str, Cell]] = {}
    for (task, agent), group in sorted(grouped.items()):
        rewards = np.array([row["mean_normalized_return"] for row in group])
        costs = np.array([row["mean_normalized_cost"] for row in group])
        cells.setdefault(task, {})[agent] = Cell(
            float(rewards.mean()),
            float(rewards.std()),
            float(costs.mean()),
            float(costs.std()),
            len(group),
        )
    return cells


def _averages(
    cells: dict[str, dict[str, Cell]], simulators: dict[str, str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """``{group: {agent: (reward, cost)}}`` averaged over the tasks of each simulator, and all."""
    groups: dict[str, list[str]] = {}
    for task in cells:
        groups.setdefault(f"average {simulators.get(task, '?')}", []).append(task)
    groups["average"] = list(cells)
    agents = sorted({agent for row in cells.values() for agent in row})
    averages: dict[str, dict[str, tuple[float, float]]] = {}
    for name, tasks in groups.items():
        averages[name] = {}
        for agent in agents:
            present = [cells[task][agent] for task in tasks if agent in cells[task]]
            if len(present) == len(tasks):  # only complete rows are averaged
                averages[name][agent] = (
                    float(np.mean([cell.reward for cell in present])),
                    float(np.mean([cell.cost for cell in present])),
                )
    return averages


_ORIGIN_LABELS = {"dsrl": "DSRL", "local": "built locally", "unknown": "unknown"}
NOT_RECORDED = "not recorded"


def data_labels(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``{task: which data its rows were trained on}``: ``DSRL``, ``built locally``, ...

    Rows written before provenance was recorded read ``not recorded`` (they were normalized
    with DSRL's reference returns, whatever their data). A task whose rows disagree lists every
    label and is marked ``(mixed)``.
    """
    labels: dict[str, set[str]] = {}
    for row in rows:
        label = _ORIGIN_LABELS.get(row.get("data_origin", ""), NOT_RECORDED)
        labels.setdefault(row["task"], set()).add(label)
    return {
        task: " + ".join(sorted(found)) + (" (mixed)" if len(found) > 1 else "")
        for task, found in labels.items()
    }


def normalization_rule(label: str) -> str:
    """A row's normalization label without the provenance the evaluation appends to it.

    Evaluation labels the range ``"<rule> of the training data: <provenance>"``; a table that
    states the provenance beside it needs only the rule.
    """
    return label.split(" of the training data:")[0]


def data_notes(rows: Sequence[dict[str, Any]]) -> str:
    """The data and normalization of each task, one line per distinct pair (under the table)."""
    lines = ["Data and normalization per task:"]
    seen: dict[str, set[tuple[str, str]]] = {}
    for row in rows:
        pair = (
            row.get("data_provenance", "data not recorded (a row from before it was recorded)"),
            normalization_rule(
                row.get("normalization", "the task's reference returns (the rule of that time)")
            ),
        )
        seen.setdefault(row["task"], set()).add(pair)
    for task, pairs in sorted(seen.items()):
        for provenance, normalization in sorted(pairs):
            lines.append(f"- {task}: {provenance}; normalized return uses {normalization}")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _hours(seconds: float) -> str:
    """Hours with one decimal, or minutes below a tenth of an hour."""
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def compute_note(rows: Sequence[dict[str, Any]]) -> str:
    """What the rows cost: runs, worker time and an estimate of the wall time.

    Worker time is the training and evaluation times summed over runs. The wall time is the
    sum of the gaps between consecutive rows' ``finished`` times, leaving out every gap longer
    than twice the longest run (the sweep was stopped then): about the time a sweep that was
    stopped and resumed actually ran, short of each sitting's first run. Rows without timings
    (written before they were recorded) are counted apart.
    """
    timed = [row for row in rows if "train_seconds" in row]
    untimed = f"{_count(len(rows) - len(timed), 'row')} without timings"
    if not timed:
        return f"Compute: {_count(len(rows), 'run')}, not timed ({untimed})."
    train = sum(row["train_seconds"] for row in timed)
    evaluate = sum(row.get("eval_seconds", 0.0) for row in timed)
    note = (
        f"Compute: {_count(len(rows), 'run')}, {_hours(train + evaluate)} of worker time "
        f"({_hours(train)} training with its curve evaluations, {_hours(evaluate)} final "
        "evaluation, summed over runs)"
    )
    finished = sorted(
        datetime.fromisoformat(row["finished"].replace("Z", "+00:00"))
        for row in timed
        if row.get("finished")
    )
    if len(finished) > 1:
        longest = max(row["train_seconds"] + row.get("eval_seconds", 0.0) for row in timed)
        gaps = [(b - a).total_seconds() for a, b in zip(finished, finished[1:], strict=False)]
        wall = sum(gap for gap in gaps if gap <= 2 * longest)
        note += (
            f"; about {_hours(wall)} of wall time (the gaps between rows finishing, pauses left "
            "out)"
        )
    return note + (f"; {untimed}" if len(timed) < len(rows) else "") + "."


def progress_note(rows: Sequence[dict[str, Any]], planned: Sequence[Run]) -> str:
    """How much of the sweep's plan (the runs of its ``sweep.json``) the rows cover."""
    keys = {(run.agent, run.task, run.seed) for run in planned}
    done = keys & {(row["agent"], row["task"], row["seed"]) for row in rows}
    if done == keys:
        return f"Progress: all {_count(len(keys), 'run')} of the sweep's plan have finished."
    tasks = {task for _, task, _ in keys} - {task for _, task, _ in done}
    return (
        f"Progress: {len(done)} of the {_count(len(keys), 'run')} of the sweep's plan have "
        "finished; cells of unfinished runs average fewer seeds"
        + (f", and {_count(len(tasks), 'planned task')} without rows yet" if tasks else "")
        + "."
    )


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The papers' table: one row per task, one reward/cost column pair per agent.

    Cells read ``reward +- spread / cost +- spread`` (normalized; spread = std over seeds);
    unsafe cells (normalized cost above 1) are marked ``(unsafe)``. The ``data`` column says
    which data the task's rows were trained on (:func:`data_labels`): DSRL's or data built
    locally, whose normalized returns are not comparable with the papers'. Averages per
    simulator and over all tasks close the table (an agent missing on a task is left out of
    the average).
    """
    cells = table(rows)
    simulators = {row["task"]: row.get("simulator", "?") for row in rows}
    data = data_labels(rows)
    agents = sorted({agent for row in cells.values() for agent in row})
    lines = [
        "| task | data | " + " | ".join(agents) + " |",
        "|---|---|" + "---|" * len(agents),
    ]
    for task, row in cells.items():
        entries = [data[task]]
        for agent in agents:
            cell = row.get(agent)
            if cell is None:
                entries.append("-")
                continue
            text = (
                f"{cell.reward:.2f} +- {cell.reward_spread:.2f} / "
                f"{cell.cost:.2f} +- {cell.cost_spread:.2f}"
            )
            entries.append(text if cell.safe else f"**{text} (unsafe)**")
        lines.append(f"| {task} | " + " | ".join(entries) + " |")
    for name, values in _averages(cells, simulators).items():
        entries = [
            f"{values[agent][0]:.2f} / {values[agent][1]:.2f}" if agent in values else "-"
            for agent in agents
        ]
        lines.append(f"| {name} | | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def csv_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per (task, agent) cell: normalized reward and cost with spreads, seeds, safe,
    and the data the task's rows were trained on (:func:`data_labels`)."""
    data = data_labels(rows)
    lines = ["task,agent,reward,reward_spread,cost,cost_spread,seeds,safe,data"]
    for task, row in table(rows).items():
        for agent, cell in row.items():
            lines.append(
                f"{task},{agent},{cell.reward:.4f},{cell.reward_spread:.4f},{cell.cost:.4f},"
                f"{cell.cost_spread:.4f},{cell.seeds},{str(cell.safe).lower()},{data[task]}"
            )
    return "\n".join(lines) + "\n"
