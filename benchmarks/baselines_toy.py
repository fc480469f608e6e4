"""The DSRL baselines on OfflineToyReachAvoid-v0: BCQ-Lag, CPQ, COptiDICE and CDT next to BC-All
and BC-Safe, on the same data, training seeds and evaluation seeds as the other toy benchmarks.

Each agent trains at its ``cpu`` preset (``BUDGETS``: smaller networks and batches than the
DSRL defaults, the same for every seed), then is evaluated on 10 episodes from evaluation seed
1000. The final iterate is reported. Training speed (gradient steps/s) is measured at the
reduced and the default sizes, and ``predict`` latency for 1 and 1000 observations, all in this
one process, as ratios to BC-All.

    python benchmarks/baselines_toy.py --out benchmarks/results/baselines_toy.json
"""

from __future__ import annotations

import argparse
import json
import time

from bench_utils import (
    cpu_budget,
    latency_ms,
    mean_std_over_seeds,
    steps_per_second,
    summary,
    write_result,
)

import envs
from safe_agents import get_agent_class

TASK = "OfflineToyReachAvoid-v0"
EVAL_SEED = 1000
# name -> (gradient steps, hyperparameters): every agent's cpu preset.
BUDGETS: dict[str, tuple[int, dict]] = {
    name: cpu_budget(name) for name in ("bc_all", "bc_safe", "bcq_lag", "cpq", "coptidice", "cdt")
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--agents", default=",".join(BUDGETS))
    parser.add_argument("--out", default="benchmarks/results/baselines_toy.json")
    args = parser.parse_args()
    names = args.agents.split(",")
    env = envs.make(TASK)
    data = envs.load_dataset(TASK)
    rows: dict[str, list] = {name: [] for name in names}
    train_seconds: dict[str, list] = {name: [] for name in names}
    last_agents = {}
    for seed in range(args.seeds):
        for name in names:
            steps, hyperparameters = BUDGETS[name]
            agent_class = get_agent_class(name)
            start = time.perf_counter()
            agent = agent_class(env, seed=seed, **hyperparameters)
            agent.learn_offline(data, n_steps=steps)
            train_seconds[name].append(round(time.perf_counter() - start, 1))
            rows[name].append(summary(envs.evaluate(agent, env, args.episodes, EVAL_SEED)))
            last_agents[name] = agent
            print(f"seed {seed} {name}: {train_seconds[name][-1]} s", rows[name][-1], flush=True)

    speed: dict[str, dict] = {}
    for name in names:
        steps, hyperparameters = BUDGETS[name]
        agent_class = get_agent_class(name)
        speed[name] = {
            "steps_per_s_reduced": steps_per_second(agent_class, env, data, 50, **hyperparameters),
            "steps_per_s_default": steps_per_second(agent_class, env, data, 20),
            "predict_ms_1": latency_ms(last_agents[name], 1),
            "predict_ms_1000": latency_ms(last_agents[name], 1000, repeats=5),
        }
    if "bc_all" in speed:
        reference = speed["bc_all"]
        for values in speed.values():
            for key in list(values):
                if not key.endswith("_over_bc_all"):
                    values[f"{key}_over_bc_all"] = values[key] / reference[key]
    table = mean_std_over_seeds(rows)
    result = {
        "task": TASK,
        "seeds": args.seeds,
        "episodes": args.episodes,
        "eval_seed": EVAL_SEED,
        "budgets": {name: {"steps": BUDGETS[name][0], **BUDGETS[name][1]} for name in names},
        "train_seconds": train_seconds,
        "per_seed": rows,
        "mean_std_over_seeds": table,
        "speed": speed,
    }
    write_result(args.out, result)
    print(json.dumps({"mean_std_over_seeds": table, "speed": speed}, indent=2))


if __name__ == "__main__":
    main()
