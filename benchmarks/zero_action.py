"""The do-nothing reference: the zero action at every step, on every task of a sweep.

A floor under every table of normalized returns: doing nothing is safe on every benchmark task,
and on some it earns a fair share of the data's return range (a point that stays where it
starts on PointGoal1). An agent's score reads against it: a "safe" agent below it does worse
than what a user gets for free.

The protocol is the sweep's final evaluation: the same episodes (``episodes`` of them, reset
with seeds from ``eval_seed``) and the normalization of the sweep's rows on that task (the
``reward_range`` they recorded: the training data's reference returns).

    python benchmarks/zero_action.py --sweep benchmarks/results/suite

Writes ``<sweep>/zero_action.json`` (``--out`` elsewhere) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import envs
from safe_agents import bench


def zero_action_row(task: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The zero action on ``task``, evaluated as the sweep's ``rows`` of that task were."""
    first = rows[0]
    for name in ("reward_range", "eval_seed", "episodes_count"):
        values = {json.dumps(row[name]) for row in rows}
        if len(values) != 1:
            raise ValueError(f"{task}: the sweep's rows differ in {name} ({sorted(values)})")
    reward_range = tuple(first["reward_range"])
    env = envs.make(task)
    try:
        zero = np.zeros(env.action_space.shape, dtype=env.action_space.dtype)
        start = time.perf_counter()
        report = envs.evaluate(
            lambda obs: zero,
            env,
            first["episodes_count"],
            first["eval_seed"],
            reward_range=reward_range,
        )
    finally:
        env.close()
    return {
        "task": task,
        "policy": "zero action",
        "episodes": first["episodes_count"],
        "eval_seed": first["eval_seed"],
        "reward_range": list(reward_range),
        **{key: report[key] for key in report if key.startswith("mean_")},
        "per_episode": {key: report[key] for key in ("return", "cost", "length")},
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True, help="a sweep folder with rows")
    parser.add_argument("--out", type=Path, default=None, help="default <sweep>/zero_action.json")
    args = parser.parse_args()
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in bench.load_rows(args.sweep):
        row = {**row, "episodes_count": len(row["episodes"]["return"])}
        by_task.setdefault(row["task"], []).append(row)
    if not by_task:
        raise SystemExit(f"no rows in {args.sweep}")
    results = [zero_action_row(task, rows) for task, rows in sorted(by_task.items())]
    out = bench.write_result(
        args.out or args.sweep / "zero_action.json",
        {
            "protocol": "the zero action; the sweep's evaluation episodes and normalization",
            "sweep": str(args.sweep),
            "rows": results,
        },
    )
    print("| task | normalized return | normalized cost | mean length |")
    print("|---|---:|---:|---:|")
    for result in results:
        print(
            f"| {result['task']} | {result['mean_normalized_return']:.2f} "
            f"| {result['mean_normalized_cost']:.2f} | {result['mean_length']:.0f} |"
        )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
