"""FISOR against BC-All and BC-Safe on OfflineToyReachAvoid-v0, and the SafetyFilter's effect.

Same dataset, same evaluation seeds for every agent; 3 training seeds x 10 evaluation episodes.
FISOR uses its ``cpu`` preset (``REDUCED_FISOR``; the paper's defaults are 1M steps with a
4x-wide actor and 2 x 1024 actor samples per step: about 3 steps/s on a 2-core CPU). Speed
figures are measured in the same process, side by side.

    python benchmarks/fisor_toy.py --out benchmarks/results/fisor_toy.json
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
from safe_agents import FISOR, BCAll, BCSafe

TASK = "OfflineToyReachAvoid-v0"
# The cpu presets (every other hyperparameter is the paper's default).
FISOR_STEPS, REDUCED_FISOR = cpu_budget("fisor")
BC_STEPS, _ = cpu_budget("bc_all")
EVAL_SEED = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--ppo-steps", type=int, default=50_000)
    parser.add_argument("--out", default="benchmarks/results/fisor_toy.json")
    args = parser.parse_args()
    env = envs.make(TASK)
    data = envs.load_dataset(TASK)
    rows: dict[str, list] = {"fisor": [], "bc_all": [], "bc_safe": [], "bc_all+filter": []}
    fisor_agents = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        fisor = FISOR(env, seed=seed, **REDUCED_FISOR).learn_offline(data, n_steps=FISOR_STEPS)
        fisor_seconds = time.perf_counter() - start
        fisor_agents.append(fisor)
        rows["fisor"].append(summary(envs.evaluate(fisor, env, args.episodes, EVAL_SEED)))
        for agent_class in (BCAll, BCSafe):
            agent = agent_class(env, seed=seed).learn_offline(data, n_steps=BC_STEPS)
            rows[agent_class.name].append(
                summary(envs.evaluate(agent, env, args.episodes, EVAL_SEED))
            )
            if agent_class is BCAll:
                shielded = envs.SafetyFilter(
                    envs.make(TASK), fisor.candidate_actions, fisor.action_cost, n=16, seed=seed
                )
                report = envs.evaluate(agent, shielded, args.episodes, EVAL_SEED)
                rows["bc_all+filter"].append(
                    {**summary(report), "interventions": shielded.interventions}
                )
        print(
            f"seed {seed}: FISOR trained in {fisor_seconds:.0f} s",
            {k: v[-1] for k, v in rows.items()},
            flush=True,
        )
    table = mean_std_over_seeds(rows)
    # An online SB3 PPO agent trained without any cost signal, shielded by FISOR's critic.
    from stable_baselines3 import PPO

    start = time.perf_counter()
    ppo = PPO("MlpPolicy", envs.make(TASK), seed=0, device="cpu", verbose=0)
    ppo.learn(args.ppo_steps)
    ppo_seconds = time.perf_counter() - start
    shielded = envs.SafetyFilter(
        envs.make(TASK),
        fisor_agents[0].candidate_actions,
        fisor_agents[0].action_cost,
        n=16,
        seed=0,
    )
    ppo_rows = {
        "ppo": summary(envs.evaluate(ppo, env, args.episodes, EVAL_SEED)),
        "ppo+filter": {
            **summary(envs.evaluate(ppo, shielded, args.episodes, EVAL_SEED)),
            "interventions": shielded.interventions,
        },
        "ppo_train_seconds": round(ppo_seconds, 1),
        "ppo_steps": args.ppo_steps,
    }
    speed = {
        "fisor_reduced_steps_per_s": steps_per_second(FISOR, env, data, 200, **REDUCED_FISOR),
        "fisor_paper_default_steps_per_s": steps_per_second(FISOR, env, data, 20),
        "bc_all_steps_per_s": steps_per_second(BCAll, env, data, 500),
        "fisor_predict_ms_1": latency_ms(fisor_agents[0], 1),
        "fisor_predict_ms_256": latency_ms(fisor_agents[0], 256),
        "fisor_paper_default_predict_ms_1": latency_ms(FISOR(env, seed=0), 1),
        "fisor_paper_default_predict_ms_256": latency_ms(FISOR(env, seed=0), 256),
    }
    result = {
        "task": TASK,
        "seeds": args.seeds,
        "episodes": args.episodes,
        "fisor_config": REDUCED_FISOR,
        "fisor_steps": FISOR_STEPS,
        "bc_steps": BC_STEPS,
        "per_seed": rows,
        "mean_std_over_seeds": table,
        "ppo": ppo_rows,
        "speed": speed,
    }
    out = write_result(args.out, result)
    fisor_agents[0].save(out.with_suffix(".fisor_seed0.zip"))
    print(json.dumps({"mean_std_over_seeds": table, "ppo": ppo_rows, "speed": speed}, indent=2))


if __name__ == "__main__":
    main()
