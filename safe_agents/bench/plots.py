"""The report's figures: a reward-cost plot per task, and learning curves.

Each agent keeps one marker and one colour in every figure of a report; figures are written
as PNG and SVG, atomically. matplotlib is imported when a figure is drawn, not before.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safe_agents.bench.report import NOT_RECORDED, data_labels, table
from safe_agents.common.fileio import atomic_path

# One marker and one colour per agent, the same in every plot of a report.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def plot_tasks(rows: Sequence[dict[str, Any]], folder: str | Path) -> list[Path]:
    """A normalized cost vs return plot per task, ``<folder>/<task>.png`` and ``.svg``.

    One point per agent at its mean over seeds, with the standard deviation over seeds as
    error bars (the cost's clipped at zero, where costs end) and the seed count in the legend;
    each agent keeps its marker and colour across the tasks of the report; the legend sits
    outside the data; the cost limit is the dashed line at 1; the title names the data the
    task's rows were trained on. Returns the PNG paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cells = table(rows)
    data = data_labels(rows)
    style = _agent_styles(rows)
    paths = []
    for task, row in cells.items():
        figure, axes = plt.subplots(figsize=(7.0, 4.2))
        for agent, cell in row.items():
            marker, colour = style[agent]
            axes.errorbar(
                cell.cost,
                cell.reward,
                xerr=[[min(cell.cost_spread, max(cell.cost, 0.0))], [cell.cost_spread]],
                yerr=cell.reward_spread,
                fmt=marker,
                color=colour,
                markersize=7,
                capsize=3,
                label=f"{agent} ({cell.seeds} seed{'s' if cell.seeds != 1 else ''})",
            )
        axes.axvline(1.0, color="black", linestyle="--", linewidth=1, label="cost limit")
        axes.set_xlabel("normalized cost (mean ± std over seeds)")
        axes.set_ylabel("normalized return (mean ± std over seeds)")
        # A little room left of zero, so the many safe agents at cost 0 show whole markers.
        right = max(axes.get_xlim()[1], 1.2)
        axes.set_xlim(-0.04 * right, right)
        axes.set_title(f"{task} (data: {data.get(task, NOT_RECORDED)})", fontsize=10)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        paths.append(_save_figure(figure, folder / task))
    return paths


def _save_figure(figure: Any, stem: Path) -> Path:
    """Write ``figure`` as ``<stem>.png`` and ``<stem>.svg`` (atomically), close it, return the
    PNG's path."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    try:
        for suffix in (".png", ".svg"):
            with atomic_path(stem.with_name(stem.name + suffix), suffix=suffix) as temporary:
                figure.savefig(temporary, dpi=130, bbox_inches="tight")
    finally:
        plt.close(figure)
    return stem.with_name(stem.name + ".png")


def _agent_styles(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """``{agent: (marker, colour)}``, the same in every plot of a report."""
    import matplotlib.pyplot as plt

    agents = sorted({row["agent"] for row in rows})
    colours = plt.get_cmap("tab20" if len(agents) > 10 else "tab10")
    return {
        agent: (_MARKERS[index % len(_MARKERS)], colours(index % colours.N))
        for index, agent in enumerate(agents)
    }


def curves(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{task: {agent: {"step", "return", "return_std", "cost", "cost_std", "seeds"}}}``.

    The mean and std over seeds of the rows' learning curves (normalized return and cost at
    each evaluated step; raw ones where a task has no reference values). Only the steps every
    seed reached are kept, and rows without a curve are left out.
    """
    grouped: dict[tuple[str, str], list[list[dict[str, Any]]]] = {}
    for row in rows:
        if row.get("curve"):
            grouped.setdefault((row["task"], row["agent"]), []).append(row["curve"])
    result: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for (task, agent), seeds in sorted(grouped.items()):
        steps = sorted(set.intersection(*({p["step"] for p in curve} for curve in seeds)))
        if not steps:
            continue
        key = "normalized_return" if "normalized_return" in seeds[0][0] else "return"
        cost_key = "normalized_cost" if "normalized_cost" in seeds[0][0] else "cost"
        by_step = [{p["step"]: p for p in curve} for curve in seeds]
        values = np.array([[c[s][key] for s in steps] for c in by_step])  # (seeds, steps)
        costs = np.array([[c[s][cost_key] for s in steps] for c in by_step])
        result.setdefault(task, {})[agent] = {
            "step": np.array(steps),
            "return": values.mean(axis=0),
            "return_std": values.std(axis=0),
            "cost": costs.mean(axis=0),
            "cost_std": costs.std(axis=0),
            "seeds": np.array(len(seeds)),
        }
    return result


def plot_curves(rows: Sequence[dict[str, Any]], folder: str | Path) -> list[Path]:
    """Learning curves per task, ``<folder>/curves_<task>.png`` and ``.svg``.

    Two panels, normalized return and normalized cost against gradient steps: one line per
    agent at the mean over seeds, a band of one std over seeds, the cost limit dashed at 1.
    The curve points use their own evaluation seeds and fewer episodes than the final
    evaluation, so the last point and the table may differ. Returns the PNG paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    style = _agent_styles(rows)
    data = data_labels(rows)
    paths = []
    for task, by_agent in curves(rows).items():
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.0), sharex=True)
        for agent, curve in by_agent.items():
            marker, colour = style[agent]
            seeds = int(curve["seeds"])
            label = f"{agent} ({seeds} seed{'s' if seeds != 1 else ''})"
            for axes, key in ((top, "return"), (bottom, "cost")):
                mean, spread = curve[key], curve[f"{key}_std"]
                axes.plot(
                    curve["step"],
                    mean,
                    marker=marker,
                    markersize=4,
                    color=colour,
                    label=label if axes is top else None,
                )
                low = np.maximum(mean - spread, 0.0) if key == "cost" else mean - spread
                axes.fill_between(curve["step"], low, mean + spread, color=colour, alpha=0.15)
        bottom.axhline(1.0, color="black", linestyle="--", linewidth=1, label="cost limit")
        top.set_ylabel("normalized return")
        bottom.set_ylabel("normalized cost")
        bottom.set_xlabel("gradient steps (mean ± std over seeds)")
        top.set_title(
            f"{task}: learning curves (data: {data.get(task, NOT_RECORDED)})", fontsize=10
        )
        handles, labels = top.get_legend_handles_labels()
        extra_handles, extra_labels = bottom.get_legend_handles_labels()
        top.legend(
            handles + extra_handles,
            labels + extra_labels,
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0,
        )
        paths.append(_save_figure(figure, folder / f"curves_{task}"))
    return paths
