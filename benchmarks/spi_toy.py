"""SPI on OfflineToyReachAvoid-v0: against FISOR / BC (same data and seeds) and its ablation.

The FISOR, BC-All and BC-Safe rows come from ``fisor_toy.py``'s results (same dataset, training
seeds 0-2 and evaluation seeds); this script trains SPI with the reduced CPU budget below for the
same seeds, then the paper's Table 2 ablation (SPI without Q_c': phi = 0; without Q_r: mu = 0;
eta keeps 0.5, the removed weight goes to the remaining critic) on seed 0.

    python benchmarks/spi_toy.py --out benchmarks/results/spi_toy.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_utils import (
    cpu_budget,
    latency_ms,
    mean_std_over_seeds,
    steps_per_second,
    summary,
    write_result,
)

import envs
from safe_agents import SPI

TASK = "OfflineToyReachAvoid-v0"
SPI_STEPS, REDUCED_SPI = cpu_budget("spi")  # the cpu preset
EVAL_SEED = 1000
ABLATIONS = {
    "spi": {},
    "spi_without_safety_q": {"eta": 0.5, "mu": 0.5, "phi": 0.0},
    "spi_without_reward_q": {"eta": 0.5, "mu": 0.0, "phi": 0.5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--fisor-results", default="benchmarks/results/fisor_toy.json")
    parser.add_argument("--out", default="benchmarks/results/spi_toy.json")
    args = parser.parse_args()
    env = envs.make(TASK)
    data = envs.load_dataset(TASK)
    rows: dict[str, list] = {"spi": [], "spi_safety_aware": []}
    seconds = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        agent = SPI(env, seed=seed, **REDUCED_SPI).learn_offline(data, n_steps=SPI_STEPS)
        seconds.append(time.perf_counter() - start)
        rows["spi"].append(summary(envs.evaluate(agent, env, args.episodes, EVAL_SEED)))
        agent.config.selection = "safety_aware"
        rows["spi_safety_aware"].append(
            summary(envs.evaluate(agent, env, args.episodes, EVAL_SEED))
        )
        print(
            f"seed {seed}: {seconds[-1]:.0f} s",
            rows["spi"][-1],
            rows["spi_safety_aware"][-1],
            flush=True,
        )
    ablation = {"spi": rows["spi"][0]}
    for name, weights in ABLATIONS.items():
        if name == "spi":
            continue
        agent = SPI(env, seed=0, **REDUCED_SPI, **weights).learn_offline(data, n_steps=SPI_STEPS)
        ablation[name] = summary(envs.evaluate(agent, env, args.episodes, EVAL_SEED))
        print(name, ablation[name], flush=True)
    table = mean_std_over_seeds(rows)
    fisor_path = Path(args.fisor_results)
    if fisor_path.is_file():
        table.update(json.loads(fisor_path.read_text())["mean_std_over_seeds"])
    speed = {
        "spi_reduced_steps_per_s": steps_per_second(SPI, env, data, 100, **REDUCED_SPI),
        "spi_paper_default_steps_per_s": steps_per_second(SPI, env, data, 30),
        "spi_predict_ms_1": latency_ms(agent, 1),
        "spi_predict_ms_256": latency_ms(agent, 256),
    }
    result = {
        "task": TASK,
        "seeds": args.seeds,
        "episodes": args.episodes,
        "spi_config": REDUCED_SPI,
        "spi_steps": SPI_STEPS,
        "train_seconds": seconds,
        "per_seed": rows,
        "mean_std_over_seeds": table,
        "ablation_seed0": ablation,
        "speed": speed,
    }
    write_result(args.out, result)
    print(
        json.dumps(
            {"mean_std_over_seeds": table, "ablation_seed0": ablation, "speed": speed}, indent=2
        )
    )


if __name__ == "__main__":
    main()
