"""The ``safe-agents`` command line: train, evaluate, collect, bench, report and the rest.

This package is the application at the top of the import chain, so unlike the algorithm modules
it imports ``envs`` (tasks, datasets, evaluation). User mistakes (unknown task or algorithm, a
missing or malformed file, a bad hyperparameter) end with a one-line error and exit code 2, not
a traceback.

One module per group of commands: :mod:`~safe_agents.cli.demo`, :mod:`~safe_agents.cli.agents`
(``train``, ``evaluate``, ``plot-feasibility``), :mod:`~safe_agents.cli.data` (``info``,
``download``, ``collect``) and :mod:`~safe_agents.cli.sweeps` (``bench``, ``report``); each
module's ``add_<command>`` adds its command to the parser. Modules import what a command needs
when it runs, so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from safe_agents.cli import agents, data, demo, sweeps
from safe_agents.cli.agents import load_env
from safe_agents.cli.common import UserError

__all__ = ["UserError", "build_parser", "load_env", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``safe-agents`` command."""
    parser = argparse.ArgumentParser(
        prog="safe-agents",
        description="Safe offline reinforcement learning with diffusion models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    from safe_agents import __version__

    parser.add_argument("--version", action="version", version=f"safe-agents {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_demo(commands)
    agents.add_train(commands)
    agents.add_evaluate(commands)
    data.add_download(commands)
    data.add_collect(commands)
    agents.add_plot_feasibility(commands)
    sweeps.add_bench(commands)
    sweeps.add_report(commands)
    data.add_info(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``safe-agents`` console script."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from envs import DatasetError, DownloadError, UnknownTaskError
    from envs._compat import MissingDependencyError

    try:
        args.handler(args)
    except (
        UserError,
        UnknownTaskError,
        DatasetError,
        DownloadError,
        MissingDependencyError,
        FileNotFoundError,
        ValueError,
    ) as error:
        if args.verbose:
            raise
        print(f"safe-agents {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
