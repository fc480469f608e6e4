"""Training speed and ``predict`` latency of every agent, side by side, as ratios to BC-All.

Every agent is built with a profile of ``safe-agents bench`` (``--profile``: quick, the CPU
budgets of the toy benchmarks, by default; full, the papers' sizes) on one task's dataset, in this
one process, one after the other, so the ratios compare like with like on whatever machine runs
it. Measured:

- gradient steps per second, after a 5-step warm-up (``--steps`` steps; fewer for agents slower
  than 30 steps/s, see ``SLOW``);
- for DSPO, whose three stages differ widely in cost, the rate of each stage and the overall
  rate of its quick budget at those stage rates (``stage_steps_per_s``, ``generation_s``);
- ``predict`` latency in milliseconds for one observation and for a batch of 1000, deterministic,
  on the agent after its timed steps (latency does not depend on training).

    python benchmarks/speed.py                       # toy task, every agent
    python benchmarks/speed.py --task OfflineBallRun-v0 --agents bc_all,fisor
    python benchmarks/speed.py --profile full --steps 20   # the papers' sizes: slower steps

Writes ``benchmarks/results/speed_<task>.json`` (``speed_<task>_full.json`` for the full profile)
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

import envs
from safe_agents import bench, get_agent_class, list_agents
from safe_agents.common.callbacks import StopAfterSteps

# Agents that train at a few steps per second at the quick size: fewer timed steps.
SLOW = {"cdt": 20}


def measure(name: str, task: str, env, data, steps: int, profile: str = "quick") -> dict:
    """Steps/s and predict latency of one agent at its size under ``profile`` on ``task``."""
    settings = bench.SweepSettings(profile=profile)
    n_steps, hyperparameters = bench.budget(name, task, settings)
    agent_class = get_agent_class(name)
    if agent_class.needs_demos:
        config = agent_class.config_class.from_kwargs(
            bench.PROFILE_PRESETS[profile], **hyperparameters
        )
        return measure_stages(agent_class, env, data, n_steps, config, hyperparameters)
    timed = min(SLOW.get(name, steps), steps)
    rate = bench.steps_per_second(agent_class, env, data, timed, n_steps, **hyperparameters)
    agent = agent_class(env, seed=0, **hyperparameters).learn_offline(
        data, n_steps=n_steps, callback=StopAfterSteps(5)
    )
    return {
        "timed_steps": timed,
        "steps_per_s": rate,
        "predict_ms_1": bench.latency_ms(agent, 1),
        "predict_ms_1000": bench.latency_ms(agent, 1000, repeats=5),
    }


# DSPO's stages differ in cost by two orders of magnitude: each is timed on its own.
STAGE_STEPS = {"discriminator": 20, "diffusion": 20, "policy": 100}
WARMUP = 5


def measure_stages(agent_class, env, data, n_steps: int, config, hyperparameters: dict) -> dict:
    """Steps/s of each of DSPO's stages (after a warm-up of each), the one-off generation time,
    and the overall rate of the budget ``n_steps`` (of ``config``'s stages) at those rates."""
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
        "discriminator": config.discriminator_steps,
        "diffusion": config.diffusion_train_steps,
    }
    budget["policy"] = n_steps - sum(budget.values())
    seconds = sum(budget[stage] / rates[stage] for stage in budget) + generation_seconds
    return {
        "timed_steps": STAGE_STEPS,
        "steps_per_s": n_steps / seconds,
        "stage_steps_per_s": rates,
        "generation_s": generation_seconds,
        "predict_ms_1": bench.latency_ms(agent, 1),
        "predict_ms_1000": bench.latency_ms(agent, 1000, repeats=5),
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
    parser.add_argument(
        "--profile", choices=tuple(bench.PROFILE_PRESETS), default="quick", help="agents' sizes"
    )
    parser.add_argument(
        "--out", default=None, help="default results/speed_<task>.json (_full for --profile full)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a sweep's worker, and steadier timings
    env = envs.make(args.task)
    data = envs.load_dataset(args.task)
    names = [get_agent_class(name).name for name in args.agents.split(",")]
    if "bc_all" in names:  # the reference first
        names.insert(0, names.pop(names.index("bc_all")))
    results = {}
    for name in names:
        results[name] = measure(name, args.task, env, data, args.steps, args.profile)
        print(f"{name}: {results[name]}", flush=True)
    suffix = "" if args.profile == "quick" else f"_{args.profile}"
    out = bench.write_result(
        args.out or Path(__file__).parent / "results" / f"speed_{args.task}{suffix}.json",
        {
            "task": args.task,
            "torch_threads": 1,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            "profile": args.profile,
            "results": results,
        },
    )
    print(markdown(results))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
