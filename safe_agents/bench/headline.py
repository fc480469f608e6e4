"""The README's headline: a results table generated from a sweep's rows, never by hand.

A document marks where the table goes with ``<!-- headline: FOLDER -->`` and
``<!-- /headline -->``; :func:`update_headline` regenerates what lies between from FOLDER's rows
(``safe-agents report --headline README.md``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safe_agents.bench.failures import (
    DIAGNOSES_FILE,
    LISTING_RULE,
    Diagnosis,
    find_failures,
    load_diagnoses,
)
from safe_agents.bench.folder import planned_runs
from safe_agents.bench.report import (
    NOT_RECORDED,
    _averages,
    compute_note,
    data_labels,
    normalization_rule,
    progress_note,
    table,
)
from safe_agents.bench.rows import load_rows
from safe_agents.bench.settings import Run
from safe_agents.common.fileio import atomic_write

HEADLINE_BEGIN = "<!-- headline: {source} -->"
HEADLINE_END = "<!-- /headline -->"
_HEADLINE_MARK = re.compile(r"<!-- headline: (?P<source>[^ ]+) -->\n.*?<!-- /headline -->", re.S)


def _short_task(task: str) -> str:
    """``OfflineBallRun-v0`` -> ``BallRun`` (column titles)."""
    name = task.removeprefix("Offline")
    return re.sub(r"(Gymnasium)?-v\d+$", "", name)


def _recorded(rows: Sequence[dict[str, Any]], key: str, width: int | None = None) -> str:
    values = sorted({str(row[key])[:width] for row in rows if row.get(key)})
    missing = sum(1 for row in rows if not row.get(key))
    if not values:
        return "not recorded"
    text = ", ".join(values)
    return text + (f" (not recorded in {missing} of {len(rows)} rows)" if missing else "")


def _revisions(rows: Sequence[dict[str, Any]]) -> str:
    """The code revisions the rows were made at: all of them when few, else the first and last.

    A sweep that commits its rows as they come makes each row at a new revision (the one that
    committed the row before it), so a long sweep has as many revisions as rows.
    """
    recorded = [row for row in rows if row.get("git_revision")]
    # In the order the rows finished; rows that do not say when go last.
    recorded.sort(key=lambda row: (not row.get("finished"), str(row.get("finished", ""))))
    revisions = list(dict.fromkeys(str(row["git_revision"])[:7] for row in recorded))
    if len(revisions) <= 3:
        return _recorded(rows, "git_revision", 7)
    missing = len(rows) - len(recorded)
    return (
        f"{len(revisions)} revisions, from {revisions[0]} (first row) to {revisions[-1]} "
        "(last row)" + (f", not recorded in {missing} of {len(rows)} rows" if missing else "")
    )


def headline_table(
    rows: Sequence[dict[str, Any]],
    source: str,
    planned: Sequence[Run] | None = None,
    diagnoses: Mapping[tuple[str, str], Diagnosis] | None = None,
) -> str:
    """The README's results table, generated from a sweep's rows (never copied by hand).

    One line per agent: normalized return / normalized cost per task (mean over seeds of the
    mean over episodes; bold when unsafe), the number of tasks where the agent is safe, and
    the average per simulator with more than one task and over all tasks. Under the table: how
    many seeds and episodes, the profile, when, on which machine and at which code revisions the
    rows were made, what they cost, how many cells need a diagnosis
    (:func:`~safe_agents.bench.failures.find_failures`), and which data each task's agents were
    trained on. With ``planned`` (the runs ``sweep.json`` lists), also how many of them have
    finished; with ``diagnoses`` (the folder's ``diagnoses.toml``), how many failing cells have
    one.
    """
    cells = table(rows)
    tasks = list(cells)
    simulators = {row["task"]: row.get("simulator", "?") for row in rows}
    agents = sorted({agent for row in cells.values() for agent in row})
    averages = {
        name: values
        for name, values in _averages(cells, simulators).items()
        if name == "average" or sum(1 for t in tasks if f"average {simulators[t]}" == name) > 1
    }
    if len(tasks) < 2:
        averages.pop("average", None)
    header = ["agent", *(_short_task(task) for task in tasks), "safe on", *averages]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for agent in agents:
        entries = [agent]
        for task in tasks:
            cell = cells[task].get(agent)
            if cell is None:
                entries.append("-")
                continue
            text = f"{cell.reward:.2f} / {cell.cost:.2f}"
            entries.append(text if cell.safe else f"**{text}**")
        present = [cells[task][agent] for task in tasks if agent in cells[task]]
        entries.append(f"{sum(cell.safe for cell in present)} of {len(present)}")
        for values in averages.values():
            entries.append(
                f"{values[agent][0]:.2f} / {values[agent][1]:.2f}" if agent in values else "-"
            )
        lines.append("| " + " | ".join(entries) + " |")
    seeds = sorted({cell.seeds for row in cells.values() for cell in row.values()})
    episodes = sorted({len(row["episodes"]["return"]) for row in rows if "episodes" in row})
    data = data_labels(rows)
    notes = [
        f"Normalized return / normalized cost (safe when the cost is at most 1; **bold**: unsafe), "
        f"the final iterate, mean over {'/'.join(map(str, seeds))} training seeds of "
        f"{'/'.join(map(str, episodes)) or '?'} evaluation episodes each. Generated from "
        f"`{source}` by `safe-agents report --headline README.md`.",
        f"- Budgets: profile {_recorded(rows, 'profile')}; gradient steps "
        + ", ".join(
            f"{agent} {'/'.join(sorted({str(r['n_steps']) for r in rows if r['agent'] == agent}))}"
            for agent in agents
        )
        + ".",
        f"- Run on: {_recorded(rows, 'finished', 10)}; machine: {_recorded(rows, 'machine')}; "
        f"code revision: {_revisions(rows)}.",
        f"- {compute_note(rows)}",
    ]
    if planned:
        notes.append(f"- {progress_note(rows, planned)}")
    failures = find_failures(rows)
    if failures:
        diagnosed = sum(1 for f in failures if (f.agent, f.task) in (diagnoses or {}))
        notes.append(
            f"- Cells needing a diagnosis ({LISTING_RULE}): {len(failures)}, {diagnosed} of "
            f"them diagnosed, in `{source}/report.md`."
        )
    for task in tasks:
        provenance = _recorded([r for r in rows if r["task"] == task], "data_provenance")
        labels = [
            {"normalization": normalization_rule(r["normalization"])}
            for r in rows
            if r["task"] == task and r.get("normalization")
        ]
        normalization = _recorded(labels, "normalization") if labels else NOT_RECORDED
        notes.append(
            f"- {_short_task(task)} data ({data[task]}): {provenance}; normalized return uses "
            f"{normalization}."
        )
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def render_headlines(text: str, base: str | Path) -> tuple[str, list[str]]:
    """``text`` with each headline block regenerated from its folder (relative to ``base``).

    A block starts with ``<!-- headline: FOLDER -->`` and ends with ``<!-- /headline -->``;
    what lies between is replaced by :func:`headline_table` of FOLDER's rows and of the runs
    its ``sweep.json`` plans, with the count of diagnoses in its ``diagnoses.toml``.

    Returns:
        The new text and the folders its blocks were generated from.

    Raises:
        ValueError: a folder without rows.
    """
    sources: list[str] = []

    def render(match: re.Match[str]) -> str:
        source = match["source"]
        rows = load_rows(Path(base) / source)
        if not rows:
            raise ValueError(f"the headline's folder {source} has no result rows")
        sources.append(source)
        planned = planned_runs(Path(base) / source)
        diagnoses = load_diagnoses(Path(base) / source / DIAGNOSES_FILE)
        begin = HEADLINE_BEGIN.format(source=source)
        return f"{begin}\n{headline_table(rows, source, planned, diagnoses)}\n{HEADLINE_END}"

    return _HEADLINE_MARK.sub(render, text), sources


def update_headline(document: str | Path) -> list[str]:
    """Regenerate every headline block of ``document`` (e.g. README.md) in place, atomically.

    See :func:`render_headlines`; folders are relative to the document's folder.

    Returns:
        The folders the blocks were generated from.

    Raises:
        ValueError: the document has no headline block, or a folder has no rows.
    """
    path = Path(document)
    text = path.read_text()
    updated, sources = render_headlines(text, path.parent)
    if not sources:
        raise ValueError(
            f"{path} has no headline block: add a line {HEADLINE_BEGIN.format(source='FOLDER')} "
            f"and a line {HEADLINE_END} where the table goes"
        )
    if updated != text:
        atomic_write(path, updated)
    return sources
