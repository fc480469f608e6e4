"""Training speed and ``predict`` latency of every agent, side by side, as ratios to BC-All.

Every agent is built with the quick profile of ``safe-agents bench`` (the CPU budgets of the toy
benchmarks) on one task's dataset, in this one process, one after the other, so the ratios
compare like with like on whatever machine runs it. Measured:

- gradient steps per second, after a 5-step warm-up (``--steps`` steps; fewer for agents slower
  than 30 steps/s, see ``SLOW``);
- for DSPO, whose three stages differ widely in cost, the rate of each stage and the overall
  rate of its quick budget at those stage rates (``stage_steps_per_s``, ``generation_s``);
- ``predict`` latency in milliseconds for one observation and for a batch of 1000, deterministic,
  on the agent after its timed steps (latency does not depend on training).

    python benchmarks/speed.py                       # toy task, every agent
    python benchmarks/speed.py --task OfflineBallRun-v0 --agents bc_all,fisor

Writes ``benchmarks/results/speed_<task>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from bench_utils import latency_ms, steps_per_second, write_result

import envs
from safe_agents import bench, get_agent_class, list_agents
from safe_agents.common.callbacks import StopAfterSteps

# Agents that train at a few steps per second at the quick size: fewer timed steps.
SLOW = {"cdt": 20}


def measure(name: str, task: str, env, data, steps: int) -> dict:
    """Steps/s and predict latency of one agent at its quick-profile size on ``task``."""
    n_steps, hyperparameters = bench.budget(name, task, bench.SweepSettings())
    agent_class = get_agent_class(name)
    if agent_class.needs_demos:
        return measure_stages(agent_class, env, data, n_steps, hyperparameters)
    timed = SLOW.get(name, steps)
    rate = steps_per_second(agent_class, env, data, timed, n_steps, **hyperparameters)
    agent = agent_class(env, seed=0, **hyperparameters).learn_offline(
        data, n_steps=n_steps, callback=StopAfterSteps(5)
    )
    return {
        "timed_steps": timed,
        "steps_per_s": rate,
        "predict_ms_1": latency_ms(agent, 1),
        "predict_ms_1000": latency_ms(agent, 1000, repeats=5),
    }


# DSPO's stages differ in cost by two orders of magnitude: each is timed on its own.
STAGE_STEPS = {"discriminator": 20, "diffusion": 20, "policy": 100}
WARMUP = 5


def measure_stages(agent_class, env, data, n_steps: int, hyperparameters: dict) -> dict:
    """Steps/s of each of DSPO's stages (after a warm-up of each), the one-off generation time,
    and the overall rate of the quick budget ``n_steps`` at those stage rates."""
    unlabeled, demos = data.strip_costs(bench.SweepSettings().n_safe_demos)
    lengths = {stage: WARMUP + steps for stage, steps in STAGE_STEPS.items()}
    timed_hyperparameters = {
        **hyperparameters,
        "discriminator_steps": lengths["discriminator"],
        "diffusion_train_steps": lengths["diffusion"],
    }
    agent = agent_class(env, seed=0, **timed_hyperparameters)
    agent.learn_offline(unlabeled, demos=demos, n_steps=sum(lengths.values()), log_interval=1)
    step_seconds = [1.0 / row["time/steps_per_second"] for row in agent.logger.history]
    rates, start = {}, 0
    for stage, length in lengths.items():
        timed = step_seconds[start + WARMUP : start + length]
        rates[stage] = len(timed) / sum(timed)
        if stage == "policy":  # its first step generates the segments
            generation_seconds = step_seconds[start]
        start += length
    budget = {
        "discriminator": hyperparameters["discriminator_steps"],
        "diffusion": hyperparameters["diffusion_train_steps"],
    }
    budget["policy"] = n_steps - sum(budget.values())
    seconds = sum(budget[stage] / rates[stage] for stage in budget) + generation_seconds
    return {
        "timed_steps": STAGE_STEPS,
        "steps_per_s": n_steps / seconds,
        "stage_steps_per_s": rates,
        "generation_s": generation_seconds,
        "predict_ms_1": latency_ms(agent, 1),
        "predict_ms_1000": latency_ms(agent, 1000, repeats=5),
    }


def markdown(results: dict[str, dict]) -> str:
    """The table, with ratios to BC-All where it was measured."""
    base = results.get("bc_all")
    lines = [
        "| agent | steps/s | vs BC-All | predict 1 obs (ms) | vs BC-All | 1000 obs (ms) "
        "| vs BC-All |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        cells = [f"{row['steps_per_s']:.1f}"]
        cells.append(f"{row['steps_per_s'] / base['steps_per_s']:.2f}x" if base else "-")
        for key in ("predict_ms_1", "predict_ms_1000"):
            cells.append(f"{row[key]:.2f}")
            cells.append(f"{row[key] / base[key]:.1f}x" if base else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="OfflineToyReachAvoid-v0")
    parser.add_argument("--agents", default=",".join(list_agents()))
    parser.add_argument("--steps", type=int, default=200, help="timed gradient steps per agent")
    parser.add_argument("--out", default=None, help="default results/speed_<task>.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a sweep's worker, and steadier timings
    env = envs.make(args.task)
    data = envs.load_dataset(args.task)
    names = [get_agent_class(name).name for name in args.agents.split(",")]
    if "bc_all" in names:  # the reference first
        names.insert(0, names.pop(names.index("bc_all")))
    results = {}
    for name in names:
        results[name] = measure(name, args.task, env, data, args.steps)
        print(f"{name}: {results[name]}", flush=True)
    out = write_result(
        args.out or Path(__file__).parent / "results" / f"speed_{args.task}.json",
        {
            "task": args.task,
            "torch_threads": 1,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            "profile": "quick",
            "results": results,
        },
    )
    print(markdown(results))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
