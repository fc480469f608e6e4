"""Inspect the benchmark datasets: is each one useful for safe offline RL?

For every task of the benchmark set it loads the dataset (from ``--dir`` or the way
``envs.load_dataset`` resolves a task id), and reports what the dataset issue asks of it: episodes
and transitions, the fraction of episodes within the cost limit, the best return among safe
episodes against the best return overall (and that episode's cost: if the best episode is safe
the task is trivial), the ranges next to DSRL's published reference values, how it was built
(behaviours, PPO steps per behaviour) and the file size. It draws the reward-cost scatter of each
dataset next to the results.

    python benchmarks/datasets.py                      # datasets as load_dataset finds them
    python benchmarks/datasets.py --dir /tmp/builds    # <dir>/<task>.hdf5 first

Writes ``benchmarks/results/datasets.json`` and ``benchmarks/results/datasets/<task>.png`` and
prints a Markdown table (the one in ``benchmarks/datasets.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import envs
from envs.datasets import dataset_locations
from envs.metrics import Normalizer
from envs.plots import plot_dataset
from safe_agents.bench import write_result
from safe_agents.common.data import returns_to_go

HERE = Path(__file__).resolve().parent

BENCHMARK_TASKS = (
    "OfflineToyReachAvoid-v0",
    "OfflineBallRun-v0",
    "OfflineCarCircle-v0",
    "OfflineDroneCircle-v0",
    "OfflineHalfCheetahVelocityGymnasium-v1",
    "OfflinePointGoal1Gymnasium-v0",
    "OfflineMetadrive-easysparse-v0",
)


def locate(task_id: str, folder: Path | None) -> Path | None:
    """The dataset file of ``task_id``: in ``folder`` first, then where load_dataset looks."""
    candidates = ([folder / f"{task_id}.hdf5"] if folder else []) + dataset_locations(task_id)
    return next((path for path in candidates if path.is_file()), None)


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (the results stay portable)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def cost_free_rest_fraction(dataset: envs.OfflineDataset) -> float:
    """The fraction of steps from which the logged episode incurs no more cost.

    A lower bound, in the data's own terms, on the states FISOR's hard constraint can call
    feasible (some in-data continuation never violates again): its feasibility critic's
    ``feasible_fraction`` should approach at least this as it converges.
    """
    # The costs-to-go (CDT's): the undiscounted cost from each step to the end of its episode.
    costs_to_go = returns_to_go(dataset.costs, dataset.episode_bounds())
    return float(np.mean(costs_to_go <= 0))


def median_normalized(returns: np.ndarray, normalizer: Normalizer) -> float:
    """The median of ``returns`` on the benchmark's normalized scale (``normalizer``: the data's
    reference returns, which agents trained on it are normalized with), so the median safe
    episode reads beside an agent's score (what BC-Safe imitates, roughly)."""
    return float(normalizer.normalized_return(float(np.median(returns))))


def inspect(task_id: str, path: Path, picture_dir: Path) -> dict:
    """The usefulness figures of one dataset file, and its scatter picture."""
    dataset = envs.load_dataset(path)
    spec = envs.get_task(task_id)
    meta = dataset.metadata
    returns, costs = dataset.episode_returns(), dataset.episode_costs()
    limit = float(meta.get("cost_limit", spec.cost_limit))
    safe = costs <= limit
    best = int(returns.argmax())
    plan = meta.get("build_plan") or {}
    picture = plot_dataset(dataset, picture_dir / f"{task_id}.png", cost_limit=limit)
    return {
        "path": shown(path),
        "file_mb": round(path.stat().st_size / 2**20, 2),
        "episodes": dataset.n_episodes,
        "transitions": len(dataset),
        "cost_limit": limit,
        "safe_fraction": round(float(safe.mean()), 3),
        "cost_free_rest_fraction": round(cost_free_rest_fraction(dataset), 3),
        "best_safe_return": round(float(returns[safe].max()), 1) if safe.any() else None,
        "median_safe_normalized_return": (
            round(
                median_normalized(returns[safe], Normalizer(*dataset.reference_range(), limit)), 2
            )
            if safe.any()
            else None
        ),
        "best_return": round(float(returns[best]), 1),
        "best_return_cost": round(float(costs[best]), 1),
        "best_return_is_unsafe": bool(not safe[best]),
        "return_range": [round(float(returns.min()), 1), round(float(returns.max()), 1)],
        "cost_range": [round(float(costs.min()), 1), round(float(costs.max()), 1)],
        "dsrl_reference": {
            "reward_min": round(spec.reward_min, 1),
            "reward_max": round(spec.reward_max, 1),
            "cost_max": round(spec.cost_max, 1),
        },
        "complete": bool(meta.get("complete", True)),
        "provenance": dataset.provenance,
        "behaviour": meta.get("behaviour", meta.get("builder", "unknown")),
        "ppo_steps_per_behaviour": plan.get("train_steps"),
        "seed": meta.get("seed"),
        "picture": picture.name,
    }


def _two_decimals(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(rows: dict[str, dict | None]) -> str:
    """The table of the figures, one row per task."""
    lines = [
        "| task | episodes | transitions | safe | cost-free rest | median safe (normalized) "
        "| best safe return | best return (its cost) | DSRL return max | MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task_id, row in rows.items():
        if row is None:
            lines.append(f"| {task_id} | not built | | | | | | | | |")
            continue
        lines.append(
            f"| {task_id} | {row['episodes']} | {row['transitions']} "
            f"| {100 * row['safe_fraction']:.0f}% "
            f"| {100 * row['cost_free_rest_fraction']:.0f}% "
            f"| {_two_decimals(row['median_safe_normalized_return'])} | {row['best_safe_return']} "
            f"| {row['best_return']} ({row['best_return_cost']:g}) "
            f"| {row['dsrl_reference']['reward_max']} | {row['file_mb']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="folder of <task>.hdf5 files")
    parser.add_argument("--tasks", default=",".join(BENCHMARK_TASKS), help="comma-separated ids")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "datasets.json")
    args = parser.parse_args()
    picture_dir = args.out.parent / "datasets"
    rows: dict[str, dict | None] = {}
    for task_id in args.tasks.split(","):
        path = locate(task_id, args.dir)
        rows[task_id] = inspect(task_id, path, picture_dir) if path else None
    write_result(args.out, rows)
    print(markdown(rows))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
