"""``safe-agents demo``: FISOR and the BC baselines on the toy task, then the simulators."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEMO_SIMULATOR_TASKS = (
    "OfflineBallRun-v0",
    "OfflineHalfCheetahVelocityGymnasium-v1",
    "OfflinePointGoal1Gymnasium-v0",
    "OfflineMetadrive-easysparse-v0",
)


class _RandomPolicy:
    def __init__(self, space: Any) -> None:
        self.space = space

    def __call__(self, obs: Any) -> Any:
        return self.space.sample()


def cmd_demo(args: argparse.Namespace) -> None:
    """FISOR, BC-All and BC-Safe on the shipped toy data, in about two minutes on 2 cores.

    Trains FISOR (its cpu preset's networks for --fisor-steps gradient steps), BC-All and BC-Safe
    on the toy reach-avoid dataset, prints each agent's normalized return and cost, saves FISOR
    and draws its learned feasible region, then checks that each installed simulator runs.
    """
    import envs
    from envs.plots import plot_feasibility
    from envs.tasks import TOY_TASK_ID as task
    from safe_agents import FISOR, BCAll, BCSafe

    data = envs.load_dataset(task)
    summary = data.summary()
    limit = data.metadata["cost_limit"]
    print(
        f"{task}: reach the goal, avoid the hazard. Data: {data.provenance}; "
        f"{summary['episodes']} episodes, {summary['safe_fraction']:.0%} of them within the cost "
        f"limit {limit:g}; best safe return {summary['best_safe_return']:.1f}, best overall "
        f"{summary['return_max']:.1f}."
    )
    env = envs.make(task)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fisor = FISOR(env, seed=args.seed, preset="cpu")
    runs = [
        (BCAll(env, seed=args.seed), args.bc_steps, "imitates every episode, reckless ones too"),
        (BCSafe(env, seed=args.seed), args.bc_steps, "imitates the episodes within the limit"),
        (fisor, args.fisor_steps, "feasibility-guided diffusion policy (cpu preset)"),
    ]
    rows = []
    for agent, steps, what in runs:
        print(f"\ntraining {agent.name}: {what}, {steps} gradient steps", flush=True)
        start = time.perf_counter()
        agent.learn_offline(data, n_steps=steps, progress_bar=not args.no_progress)
        seconds = time.perf_counter() - start
        report = envs.evaluate(agent, env, n_episodes=args.episodes, seed=args.seed)
        safe = sum(cost <= 1.0 for cost in report["normalized_cost"])
        rows.append((agent.name, steps, seconds, report, safe))
    agent_path = fisor.save(out / "fisor_toy.zip")
    picture = plot_feasibility(fisor.feasibility_value, out / "fisor_feasibility.png", fisor)

    print(f"\n{args.episodes} evaluation episodes each (normalized cost <= 1: within the limit):")
    print(
        f"  {'agent':8s} {'steps':>6s} {'train s':>8s} {'normalized return':>18s} "
        f"{'normalized cost':>16s} {'safe episodes':>14s}"
    )
    for name, steps, seconds, report, safe in rows:
        print(
            f"  {name:8s} {steps:6d} {seconds:8.1f} {report['mean_normalized_return']:18.3f} "
            f"{report['mean_normalized_cost']:16.3f} {f'{safe}/{args.episodes}':>14s}"
        )
    preset_steps = FISOR.config_class.presets["cpu"]["n_steps"]
    print(
        f"\nFISOR saved to {agent_path}; its feasible region (V_h <= 0) is drawn in {picture}.\n"
        f"The cpu preset trains FISOR for {preset_steps:,} steps: "
        f"safe-agents train fisor --task {task} --preset cpu"
    )

    print(f"\nSimulators (one episode of at most {args.steps} random steps each):")
    for task_id in DEMO_SIMULATOR_TASKS:
        try:
            length = min(args.steps, envs.get_task(task_id).max_episode_steps)
            env = envs.make(task_id, max_episode_steps=length)
        except ImportError as error:  # a simulator or dsrl not installed: say how to get it
            print(f"  {task_id:40s} not available: {error}")
            continue
        env.action_space.seed(args.seed)
        start = time.perf_counter()
        report = envs.evaluate(_RandomPolicy(env.action_space), env, 1, args.seed)
        env.close()
        seconds = time.perf_counter() - start
        print(
            f"  {task_id:40s} runs: return {report['mean_return']:8.2f}, cost "
            f"{report['mean_cost']:6.2f} ({seconds:.1f} s)"
        )


def add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``demo`` command."""
    demo = commands.add_parser(
        "demo",
        help="FISOR, BC-All and BC-Safe on the toy task (about two minutes), then the simulators",
        description=cmd_demo.__doc__,
    )
    demo.add_argument(
        "--fisor-steps", type=int, default=5000, help="FISOR gradient steps (default 5000)"
    )
    demo.add_argument(
        "--bc-steps", type=int, default=2000, help="BC-All/BC-Safe gradient steps (default 2000)"
    )
    demo.add_argument("--episodes", type=int, default=10, help="evaluation episodes (default 10)")
    demo.add_argument(
        "--steps", type=int, default=50, help="random steps per simulator check (default 50)"
    )
    demo.add_argument("--out", default="safe-agents-demo", help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=cmd_demo)
