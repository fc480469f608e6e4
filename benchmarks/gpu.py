"""Training speed, ``predict`` latency and peak memory of every agent at its paper preset on a GPU.

Every agent at its ``paper`` preset (``safe-agents bench --profile full``) with ``device="cuda"``
on one task's dataset, one after the other in one process: gradient steps per second after a
5-step warm-up (DRCORL's first steps are its pretraining; DSPO's three stages are timed one by one
and combined over its paper budget, as ``speed.py`` does), deterministic ``predict`` latency for
1 and 1000 observations, and peak GPU memory (``torch.cuda.max_memory_allocated``, reset before
each agent). Then ``--fisor-steps`` steps of FISOR's paper run (1M steps, its schedules planned
over them): its rate over the last half extrapolates the paper's budget to hours.

    python benchmarks/gpu.py                         # toy task, every agent
    python benchmarks/gpu.py --task OfflineCarCircle-v0 --agents fisor,dspo --steps 100
    python benchmarks/gpu.py --fisor-steps 10000     # a longer FISOR run

Needs CUDA (exits with status 2 without it). Writes ``benchmarks/results/gpu_<task>.json``
(with the date, GPU, torch and CUDA versions and git revision) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import envs
from safe_agents import bench, get_agent_class, list_agents
from safe_agents.common.callbacks import BaseCallback, StopAfterSteps

DEVICE = "cuda"
PROFILE = "full"  # the paper presets
WARMUP = 5
# DSPO's stages differ in cost by orders of magnitude: each is timed on its own (as in speed.py).
STAGE_STEPS = {"discriminator": 20, "diffusion": 20, "policy": 100}


def synchronized() -> float:
    """``time.perf_counter()`` once the GPU has finished the work queued so far."""
    torch.cuda.synchronize()
    return time.perf_counter()


def fresh_gpu() -> None:
    """Free what earlier agents left and restart the peak-memory count."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


class Clock(BaseCallback):
    """Stops training after ``steps`` steps and notes the time after ``half`` and ``steps``."""

    def __init__(self, half: int, steps: int) -> None:
        super().__init__()
        self.half, self.steps = half, steps
        self.times: dict[int, float] = {}

    def _on_step(self) -> bool:
        if self.num_steps in (self.half, self.steps):
            self.times[self.num_steps] = synchronized()
        return self.num_steps < self.steps


def measure(name: str, task: str, env: Any, data: Any, steps: int) -> dict[str, Any]:
    """Steps/s, predict latency and peak GPU memory of one agent at its paper preset.

    Each measurement starts on an idle GPU; the bench timers then time finished work, since
    every step reads its losses with ``.item()`` and ``predict`` copies its actions back.
    """
    fresh_gpu()
    n_steps, hyperparameters = bench.budget(name, task, bench.SweepSettings(profile=PROFILE))
    agent_class = get_agent_class(name)
    if agent_class.needs_demos:
        row, agent = measure_stages(agent_class, env, data, n_steps, hyperparameters)
    else:
        synchronized()
        rate = bench.steps_per_second(
            agent_class, env, data, steps, n_steps, device=DEVICE, **hyperparameters
        )
        agent = agent_class(env, seed=0, device=DEVICE, **hyperparameters)
        agent.learn_offline(data, n_steps=n_steps, callback=StopAfterSteps(WARMUP))
        row = {"timed_steps": steps, "steps_per_s": rate}
    synchronized()
    row["predict_ms_1"] = bench.latency_ms(agent, 1)
    row["predict_ms_1000"] = bench.latency_ms(agent, 1000, repeats=5)
    row["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def measure_stages(
    agent_class: Any, env: Any, data: Any, n_steps: int, hyperparameters: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """DSPO: the rate of each stage after a warm-up of each, the one-off generation time, the
    overall rate of the paper budget ``n_steps`` at those rates, and the trained agent."""
    paper = agent_class.config_class.from_kwargs(bench.PROFILE_PRESETS[PROFILE], **hyperparameters)
    unlabeled, demos = data.strip_costs(bench.SweepSettings().n_safe_demos)
    lengths = {stage: WARMUP + timed for stage, timed in STAGE_STEPS.items()}
    short = {"discriminator_steps": lengths["discriminator"]}
    short["diffusion_train_steps"] = lengths["diffusion"]
    agent = agent_class(env, seed=0, device=DEVICE, **{**hyperparameters, **short})
    synchronized()
    agent.learn_offline(unlabeled, demos=demos, n_steps=sum(lengths.values()), log_interval=1)
    step_seconds = [1.0 / row["time/steps_per_second"] for row in agent.logger.history]
    rates, start, generation_seconds = {}, 0, 0.0
    for stage, length in lengths.items():
        timed = step_seconds[start + WARMUP : start + length]
        rates[stage] = len(timed) / sum(timed)
        if stage == "policy":  # its first step generates the segments
            generation_seconds = step_seconds[start]
        start += length
    budget = {"discriminator": paper.discriminator_steps, "diffusion": paper.diffusion_train_steps}
    budget["policy"] = n_steps - sum(budget.values())
    seconds = sum(budget[stage] / rates[stage] for stage in budget) + generation_seconds
    row = {"timed_steps": STAGE_STEPS, "steps_per_s": n_steps / seconds}
    return {**row, "stage_steps_per_s": rates, "generation_s": generation_seconds}, agent


def fisor_run(task: str, env: Any, data: Any, steps: int) -> dict[str, Any]:
    """FISOR's paper run for ``steps`` steps: the rate over the last half (the first includes
    the warm-up) and the hours its full budget takes at that rate."""
    fresh_gpu()
    n_steps, hyperparameters = bench.budget("fisor", task, bench.SweepSettings(profile=PROFILE))
    steps = min(steps, n_steps)
    agent = get_agent_class("fisor")(env, seed=0, device=DEVICE, **hyperparameters)
    clock = Clock(steps // 2, steps)
    start = synchronized()
    agent.learn_offline(data, n_steps=n_steps, callback=clock, log_interval=clock.half)
    rate = (steps - clock.half) / (clock.times[steps] - clock.times[clock.half])
    return {
        "steps": steps,
        "first_half_s": clock.times[clock.half] - start,
        "steps_per_s_last_half": rate,
        "paper_steps": n_steps,
        "extrapolated_hours": n_steps / rate / 3600,
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
    }


def git_revision() -> str | None:
    """The checkout's commit, or None outside a git checkout."""
    command = ["git", "rev-parse", "HEAD"]
    here = Path(__file__).resolve().parent
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=here)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def markdown(results: dict[str, dict[str, Any]], fisor: dict[str, Any] | None) -> str:
    """The table, and FISOR's extrapolation under it."""
    lines = [
        "| agent | steps/s | predict 1 obs (ms) | 1000 obs (ms) | peak GPU memory (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        lines.append(
            f"| {name} | {row['steps_per_s']:.1f} | {row['predict_ms_1']:.2f} "
            f"| {row['predict_ms_1000']:.2f} | {row['peak_memory_mib']:.0f} |"
        )
    if fisor is not None:
        lines.append(
            f"\nFISOR, {fisor['steps']} steps of its paper run: "
            f"{fisor['steps_per_s_last_half']:.1f} steps/s over the last half, so its "
            f"{fisor['paper_steps']:,} steps would take {fisor['extrapolated_hours']:.1f} h."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="OfflineToyReachAvoid-v0")
    parser.add_argument("--agents", default=",".join(list_agents()))
    parser.add_argument("--steps", type=int, default=200, help="timed gradient steps per agent")
    parser.add_argument(
        "--fisor-steps", type=int, default=2000, help="steps of the FISOR run (0: no FISOR run)"
    )
    parser.add_argument("--out", default=None, help="default results/gpu_<task>.json")
    args = parser.parse_args()
    if args.steps < 1 or args.fisor_steps < 0 or args.fisor_steps == 1:
        parser.error("--steps must be >= 1, and --fisor-steps 0 or >= 2")
    if not torch.cuda.is_available():
        parser.exit(
            2,
            "benchmarks/gpu.py needs a CUDA GPU, and torch finds none "
            f"(torch.cuda.is_available() is False; torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda}); run it on a machine with one\n",
        )
    env = envs.make(args.task)
    data = envs.load_dataset(args.task)
    results = {}
    for name in [get_agent_class(name).name for name in args.agents.split(",")]:
        results[name] = measure(name, args.task, env, data, args.steps)
        print(f"{name}: {results[name]}", flush=True)
    fisor = fisor_run(args.task, env, data, args.fisor_steps) if args.fisor_steps else None
    out = bench.write_result(
        args.out or Path(__file__).parent / "results" / f"gpu_{args.task}.json",
        {
            "task": args.task,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "git_revision": git_revision(),
            "profile": PROFILE,
            "results": results,
            "fisor": fisor,
        },
    )
    print(markdown(results, fisor))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
