"""Where and with how many threads the agents compute.

One intra-op thread is the default for the ``cpu`` preset: its small networks gain nothing from a
second thread, and on a busy 2-core machine torch's default count made training up to 25x
slower (measured in ``benchmarks/results/threads.json``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from safe_agents.common.config import CPU


def get_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_threads(preset: str) -> int | None:
    """One thread for the small networks of the cpu preset, else torch's own setting."""
    return 1 if preset == CPU else None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: leave torch's setting), then
    restore the previous count."""
    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
