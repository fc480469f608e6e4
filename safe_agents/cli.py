"""The ``safe-agents`` command line: ``demo``, ``info``, ``train``, ``evaluate``.

This module is the application at the top of the import chain, so unlike the algorithm modules
it imports ``envs`` (tasks, datasets, evaluation). User mistakes (unknown task or algorithm, a
missing or malformed file, a bad hyperparameter) end with a one-line error and exit code 2, not
a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_TASKS = (
    "OfflineToyReachAvoid-v0",
    "OfflineBallRun-v0",
    "OfflineHalfCheetahVelocityGymnasium-v1",
    "OfflinePointGoal1Gymnasium-v0",
    "OfflineMetadrive-easysparse-v0",
)


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit code 2."""


def _format_report(report: dict[str, Any]) -> str:
    parts = [f"return {report['mean_return']:9.2f}", f"cost {report['mean_cost']:7.2f}"]
    if "mean_normalized_return" in report:
        parts += [
            f"normalized return {report['mean_normalized_return']:6.3f}",
            f"normalized cost {report['mean_normalized_cost']:6.3f}",
        ]
    return "  ".join(parts)


def cmd_demo(args: argparse.Namespace) -> None:
    """Load the shipped toy dataset, train BC-Safe on it, and roll out in every simulator."""
    import envs

    data = envs.load_dataset("OfflineToyReachAvoid-v0")
    summary = data.summary()
    print(
        f"Toy dataset: {summary['episodes']} episodes, {summary['transitions']} transitions, "
        f"{summary['safe_fraction']:.0%} within the cost limit "
        f"{data.metadata['cost_limit']:g}; best safe return {summary['best_safe_return']:.1f} "
        f"vs best overall {summary['return_max']:.1f}"
    )
    print(f"\nRandom actions, {args.episodes} episode(s) of at most {args.steps} steps per task:")
    for task_id in DEMO_TASKS:
        length = min(args.steps, envs.get_task(task_id).max_episode_steps)
        env = envs.make(task_id, max_episode_steps=length)
        env.action_space.seed(args.seed)
        start = time.perf_counter()
        report = envs.evaluate(
            lambda obs, space=env.action_space: space.sample(), env, args.episodes, args.seed
        )
        env.close()
        seconds = time.perf_counter() - start
        print(f"  {task_id:40s} {_format_report(report)}  ({seconds:.1f} s)")
    print(
        "\n(Normalized return uses each task's full-length reference returns, so short random "
        "rollouts score low.)"
    )


def cmd_info(args: argparse.Namespace) -> None:
    """List tasks, agents and the datasets available offline."""
    import envs
    from envs.datasets import dataset_locations

    print("Tasks (id, simulator, episode length, cost limit, dataset):")
    for task_id in envs.list_tasks():
        spec = envs.get_task(task_id)
        found = next((path for path in dataset_locations(task_id) if path.is_file()), None)
        where = str(found) if found else "-"
        print(
            f"  {task_id:42s} {spec.simulator:17s} {spec.max_episode_steps:5d} "
            f"{spec.cost_limit:6g}  {where}"
        )
    print(f"\nDataset cache: {envs.cache_dir()} (set SAFE_AGENTS_DATA_DIR to move it)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``safe-agents`` command."""
    parser = argparse.ArgumentParser(
        prog="safe-agents",
        description="Safe offline reinforcement learning with diffusion models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="the quick check: toy dataset, BC-Safe, and a short rollout in every simulator",
        description=cmd_demo.__doc__,
    )
    demo.add_argument("--episodes", type=int, default=1, help="rollout episodes per task")
    demo.add_argument("--steps", type=int, default=200, help="maximum steps per episode")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(handler=cmd_demo)

    info = commands.add_parser("info", help="list tasks, agents and datasets", description=cmd_info.__doc__)
    info.set_defaults(handler=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``safe-agents`` console script."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from envs import DatasetError, UnknownTaskError

    try:
        args.handler(args)
    except (UserError, UnknownTaskError, DatasetError, FileNotFoundError, ValueError) as error:
        if args.verbose:
            raise
        print(f"safe-agents {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
