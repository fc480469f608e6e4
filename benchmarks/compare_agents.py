"""Every agent on one benchmark task, at the CPU budgets of the toy benchmarks.

Trains BC-All, BC-Safe, BCQ-Lag, CPQ, COptiDICE, CDT, FISOR and DRCORL on the task's dataset
(``envs.load_dataset(task)``: shipped, cached, or ``--dataset PATH``) for 3 training seeds, and
evaluates each final iterate on 10 episodes from evaluation seed 1000, as the toy benchmarks do.
The budgets (gradient steps and reduced network sizes) are the ones defined in
``baselines_toy.py``, ``fisor_toy.py`` and ``drcorl_toy.py``, so a row here is the same
algorithm at the same cost as its toy row, on a real simulator. They are far below the papers'
(hundreds of thousands of steps on a GPU), so absolute scores are lower than published ones;
the comparison between agents is the point.

DRCORL's discount is 0.95 on tasks with episodes of at most 100 steps and its paper's 0.99 on
longer ones: its episode-cost estimate needs ``1 / (1 - gamma)`` well under the episode length
(see the DRCORL docstring).

    python benchmarks/compare_agents.py --task OfflineBallRun-v0
"""

from __future__ import annotations

import argparse
import time

from baselines_toy import BUDGETS
from bench_utils import mean_std_over_seeds, summary, write_result
from drcorl_toy import EXTRACTION_STEPS, PRETRAIN_STEPS, REDUCED_DRCORL
from fisor_toy import FISOR_STEPS, REDUCED_FISOR

import envs
from safe_agents import get_agent_class

EVAL_SEED = 1000
METRICS = ("mean_normalized_return", "mean_normalized_cost")


def agent_budgets(max_episode_steps: int) -> dict[str, tuple[int, dict]]:
    """name -> (gradient steps, hyperparameters) for every agent of the comparison."""
    drcorl = {**REDUCED_DRCORL, "gamma": 0.95 if max_episode_steps <= 100 else 0.99}
    return {
        **BUDGETS,
        "fisor": (FISOR_STEPS, REDUCED_FISOR),
        "drcorl": (PRETRAIN_STEPS + EXTRACTION_STEPS, {**drcorl, "pretrain_steps": PRETRAIN_STEPS}),
    }


def markdown(table: dict, train_seconds: dict) -> str:
    """Normalized return and cost, mean +- std over seeds, and training seconds per seed."""
    lines = [
        "| agent | normalized return | normalized cost | train s / seed |",
        "|---|---:|---:|---:|",
    ]
    for name, row in table.items():
        cells = [f"{row[key][0]:.3f} +- {row[key][1]:.3f}" for key in METRICS]
        seconds = sum(train_seconds[name]) / len(train_seconds[name])
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="OfflineBallRun-v0")
    parser.add_argument("--dataset", default=None, help="an HDF5 path instead of the task's")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--agents", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--out", default=None, help="default results/compare_<task>.json")
    args = parser.parse_args()
    env = envs.make(args.task)
    data = envs.load_dataset(args.dataset or args.task)
    budgets = agent_budgets(envs.get_task(args.task).max_episode_steps)
    names = args.agents.split(",") if args.agents else list(budgets)
    rows: dict[str, list] = {name: [] for name in names}
    train_seconds: dict[str, list] = {name: [] for name in names}
    for seed in range(args.seeds):
        for name in names:
            steps, hyperparameters = budgets[name]
            start = time.perf_counter()
            agent = get_agent_class(name)(env, seed=seed, **hyperparameters)
            agent.learn_offline(data, n_steps=steps)
            train_seconds[name].append(round(time.perf_counter() - start, 1))
            rows[name].append(summary(envs.evaluate(agent, env, args.episodes, EVAL_SEED)))
            print(f"seed {seed} {name}: {train_seconds[name][-1]} s", rows[name][-1], flush=True)
    table = mean_std_over_seeds(rows)
    result = {
        "task": args.task,
        "dataset": data.metadata.get("behaviour", "unknown"),
        "data_provenance": data.provenance,
        "normalization": data.normalization,
        "seeds": args.seeds,
        "episodes": args.episodes,
        "eval_seed": EVAL_SEED,
        "budgets": {name: {"steps": budgets[name][0], **budgets[name][1]} for name in names},
        "train_seconds": train_seconds,
        "per_seed": rows,
        "mean_std_over_seeds": table,
    }
    out = write_result(args.out or f"benchmarks/results/compare_{args.task}.json", result)
    print(f"data: {data.provenance}; normalized return uses {data.normalization}")
    print(markdown(table, train_seconds))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
