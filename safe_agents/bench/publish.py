"""A sweep folder's report files: ``report.md``, ``report.csv`` and the plots.

Kept apart from :mod:`safe_agents.bench.report` (the tables) and :mod:`safe_agents.bench.plots`
(the figures, which read the tables), so that neither of those imports the other.
"""

from __future__ import annotations

from pathlib import Path

from safe_agents.bench.failures import DIAGNOSES_FILE, failures_section, load_diagnoses
from safe_agents.bench.folder import planned_runs
from safe_agents.bench.plots import plot_curves, plot_tasks
from safe_agents.bench.report import (
    compute_note,
    csv_table,
    data_notes,
    markdown_table,
    progress_note,
)
from safe_agents.bench.rows import load_rows
from safe_agents.common.fileio import atomic_write


def write_report(out_dir: str | Path) -> dict[str, Path]:
    """Render ``report.md``, ``report.csv``, ``plots/<task>.png``/``.svg`` and, for rows with
    learning curves, ``plots/curves_<task>.png``/``.svg`` from a sweep folder.

    ``report.md`` ends with the failures that need a diagnosis and the diagnoses written for
    them in the folder's ``diagnoses.toml`` (:mod:`safe_agents.bench.failures`), when any.

    Raises:
        ValueError: the folder has no rows, or its ``diagnoses.toml`` or ``sweep.json`` is
            malformed.
    """
    out = Path(out_dir)
    rows = load_rows(out)
    if not rows:
        raise ValueError(f"{out} has no result rows (expected {out / 'rows'}/*.json)")
    markdown = markdown_table(rows) + "\n\n" + data_notes(rows) + "\n\n" + compute_note(rows)
    planned = planned_runs(out)
    if planned:
        markdown += "\n\n" + progress_note(rows, planned)
    failures = failures_section(rows, load_diagnoses(out / DIAGNOSES_FILE))
    if failures:
        markdown += "\n\n" + failures
    paths = {"markdown": out / "report.md", "csv": out / "report.csv"}
    for key, text in (("markdown", markdown + "\n"), ("csv", csv_table(rows))):
        atomic_write(paths[key], text)
    plot_tasks(rows, out / "plots")
    plot_curves(rows, out / "plots")
    paths["plots"] = out / "plots"
    return paths
