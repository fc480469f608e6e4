"""FISOR's critic as a safety filter (``envs.SafetyFilter``) for policies that know no costs.

A sweep trains and evaluates the agents; this script measures what a sweep cannot, a wrapper
around them. It reads the FISOR and BC-All agents of a sweep folder on the toy task (the
``fisor_toy`` config set's, or the quick set's, which holds the same runs) and evaluates, by the
protocol of the sweep's rows (their episodes and evaluation seed, the return normalized with the
rows' reference range):

- **bc_all+filter**: each seed's BC-All agent, each action checked by the same seed's FISOR:
  the filter samples ``FILTER_CANDIDATES`` actions from FISOR's policy and executes the one its
  critic rates safest when the agent's own action is unsafe (``interventions`` counts them);
- **ppo** and **ppo+filter**: an online stable-baselines3 PPO agent trained on the environment
  without any cost signal (``--ppo-steps``), alone and behind seed 0's FISOR.

The filtered rows have the shape of a sweep's rows, so ``bench.markdown_table`` prints them.

    safe-agents bench --configs benchmarks/configs/fisor_toy --out benchmarks/results/fisor_toy
    python benchmarks/safety_filter.py --sweep benchmarks/results/fisor_toy

Writes ``benchmarks/results/safety_filter.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import envs
from safe_agents import bench, load_agent

TASK = "OfflineToyReachAvoid-v0"
# Actions the filter samples from FISOR's policy at each step (the SafetyFilter's n).
FILTER_CANDIDATES = 16
MEANS = ("mean_return", "mean_cost", "mean_normalized_return", "mean_normalized_cost")


def filtered_row(
    agent: str, seed: int, policy: Any, fisor: Any, reference: dict[str, Any]
) -> dict[str, Any]:
    """``policy`` evaluated behind ``fisor``'s filter like ``reference``, a sweep row of FISOR."""
    shielded = envs.SafetyFilter(
        envs.make(TASK), fisor.candidate_actions, fisor.action_cost, n=FILTER_CANDIDATES, seed=seed
    )
    return {
        **evaluated_row(agent, seed, policy, shielded, reference),
        "interventions": shielded.interventions,
    }


def evaluated_row(
    agent: str, seed: int, policy: Any, env: Any, reference: dict[str, Any]
) -> dict[str, Any]:
    """A row of ``policy`` on ``env``, evaluated and normalized as the sweep row ``reference``."""
    reward_range = reference.get("reward_range")
    report = envs.evaluate(
        policy,
        env,
        len(reference["episodes"]["return"]),
        reference["eval_seed"],
        reward_range=tuple(reward_range) if reward_range else None,
    )
    keys = ("simulator", "data_origin", "data_provenance", "eval_seed", "normalization")
    return {
        "agent": agent,
        "task": TASK,
        "seed": seed,
        **{key: report[key] for key in MEANS if key in report},
        **{key: reference[key] for key in (*keys, "reward_range") if key in reference},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sweep",
        type=Path,
        default=Path("benchmarks/results/fisor_toy"),
        help="a sweep folder with FISOR and BC-All agents on the toy task",
    )
    parser.add_argument("--ppo-steps", type=int, default=50_000, help="PPO's online steps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/safety_filter.json"))
    args = parser.parse_args()
    sweep_rows = {bench.row_key(row): row for row in bench.load_rows(args.sweep)}
    seeds = sorted(
        row["seed"]
        for row in sweep_rows.values()
        if row["agent"] == "fisor"
        and row["task"] == TASK
        and bench.Run("bc_all", TASK, row["seed"]).key in sweep_rows
    )
    if not seeds:
        raise SystemExit(
            f"{args.sweep} holds no FISOR and BC-All rows of one seed on {TASK}: "
            "safe-agents bench --configs benchmarks/configs/fisor_toy --out " + str(args.sweep)
        )

    def agent(name: str, seed: int) -> Any:
        return load_agent(bench.agent_path(args.sweep, bench.Run(name, TASK, seed)))

    rows = []
    for seed in seeds:
        reference = sweep_rows[bench.Run("fisor", TASK, seed).key]
        rows.append(
            filtered_row(
                "bc_all+filter", seed, agent("bc_all", seed), agent("fisor", seed), reference
            )
        )
        print(f"seed {seed}: {rows[-1]}", flush=True)

    from stable_baselines3 import PPO

    start = time.perf_counter()
    ppo = PPO("MlpPolicy", envs.make(TASK), seed=0, device="cpu", verbose=0)
    ppo.learn(args.ppo_steps)
    ppo_seconds = time.perf_counter() - start
    reference = sweep_rows[bench.Run("fisor", TASK, seeds[0]).key]
    rows.append(evaluated_row("ppo", 0, ppo, envs.make(TASK), reference))
    rows.append(filtered_row("ppo+filter", 0, ppo, agent("fisor", seeds[0]), reference))
    result = {
        "task": TASK,
        "sweep": str(args.sweep),
        "filter_candidates": FILTER_CANDIDATES,
        "ppo_steps": args.ppo_steps,
        "ppo_train_seconds": round(ppo_seconds, 1),
        "rows": rows,
    }
    out = bench.write_result(args.out, result)
    print(bench.markdown_table(rows))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
