"""What the commands share: the one-line user error, and the helpers of their arguments."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

ENV_HELP = (
    "a custom environment instead of --task: MODULE:FUNCTION (FUNCTION() returns a "
    "gymnasium.Env whose info has 'cost'; MODULE may be a .py file in the current folder) or a "
    "Gymnasium id; train needs --dataset with it"
)


def torch_default_threads() -> int:
    """The torch threads an agent without ``torch_threads`` trains with."""
    import torch

    return torch.get_num_threads()


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit code 2."""


def format_report(report: dict[str, Any]) -> str:
    """An ``envs.evaluate`` report's means on one line (normalized ones where it has them)."""
    parts = [f"return {report['mean_return']:9.2f}", f"cost {report['mean_cost']:7.2f}"]
    if "mean_normalized_return" in report:
        parts += [
            f"normalized return {report['mean_normalized_return']:6.3f}",
            f"normalized cost {report['mean_normalized_cost']:6.3f}",
        ]
    return "  ".join(parts)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as a dict: JSON values, else the bare string."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text  # a bare string, e.g. actor=gaussian
    return overrides


def split(text: str) -> list[str]:
    """A comma-separated list, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def add_data_origin(command: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """The ``--data-origin`` option of the commands that load a task's data (``default`` None:
    the command tells an option given from one left out; auto all the same)."""
    command.add_argument(
        "--data-origin",
        choices=("auto", "local", "dsrl"),
        default=default,
        help="which data a task id means: local (built locally: the cache, then shipped; no "
        "network), dsrl (DSRL's, downloaded once if needed), auto (a copy on this machine, "
        "DSRL's first, else DSRL's download; the default)",
    )
