"""Where one agent's training step spends its time: torch's profiler over a few steps.

Builds the agent at a preset on the toy task's shipped data (seed 0, one torch thread, as a
sweep's worker), trains a few warm-up steps, then profiles ``--steps`` more and prints the
operations that take the most time of their own, per step. With ``--stages`` a multi-stage
agent's steps are profiled wherever its run is after the warm-up (DRCORL and DSPO start with
their pretraining and discriminator stages).

    python benchmarks/profile_step.py fisor                  # cpu preset, 100 steps
    python benchmarks/profile_step.py spi --preset paper --steps 10
    python benchmarks/profile_step.py fisor --out benchmarks/results/profile_fisor_cpu.txt
    python benchmarks/profile_step.py fisor --compile   # the compiled updates (compile=True)

The profiler adds a few microseconds to every operation, so the shares matter, not the times.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import envs
from safe_agents import get_agent_class
from safe_agents.common.callbacks import StopAfterSteps
from safe_agents.common.fileio import atomic_write

WARMUP = 5


def profile_steps(
    name: str, preset: str, task: str, steps: int, rows: int, compile: bool = False
) -> str:
    """The profiler's table of ``steps`` training steps of agent ``name`` after a warm-up."""
    torch.set_num_threads(1)
    env = envs.make(task)
    data = envs.load_dataset(task)
    agent_class = get_agent_class(name)
    kwargs = {}
    if agent_class.needs_demos:
        data, kwargs["demos"] = data.strip_costs(10)
    agent = agent_class(env, seed=0, preset=preset, compile=compile)
    agent.learn_offline(data, callback=StopAfterSteps(WARMUP), **kwargs)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        agent.learn_offline(data, callback=StopAfterSteps(WARMUP + steps), **kwargs)
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    total_ms = sum(event.self_cpu_time_total for event in profiler.key_averages()) / 1000
    compiled = f", compiled (compile=True: {agent.compile_seconds:.1f} s)" if compile else ""
    return (
        f"{name} at the {preset} preset{compiled} on {task}: {steps} steps after {WARMUP} "
        "warm-up steps, "
        f"{total_ms / steps:.2f} ms of operations per step under the profiler\n"
        f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}, "
        f"{platform.machine()}, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}), 1 thread\n\n{table}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("agent")
    parser.add_argument("--preset", default="cpu", choices=("cpu", "paper"))
    parser.add_argument("--task", default="OfflineToyReachAvoid-v0")
    parser.add_argument("--steps", type=int, default=100, help="profiled steps")
    parser.add_argument("--rows", type=int, default=25, help="operations listed")
    parser.add_argument("--compile", action="store_true", help="compile the updates")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    report = profile_steps(args.agent, args.preset, args.task, args.steps, args.rows, args.compile)
    print(report)
    if args.out is not None:
        atomic_write(args.out, report + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
