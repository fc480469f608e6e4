"""Where and with how many threads the agents compute.

One intra-op thread is the default for the ``cpu`` preset: its small networks gain nothing from a
second thread, and on a busy 2-core machine torch's default count made training up to 25x
slower (measured in ``benchmarks/results/threads.json``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

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


@functools.cache
def _fused_adam_supported(device_type: str) -> bool:
    probe = torch.zeros(1, device=device_type, requires_grad=True)
    try:  # CUDA always; the CPU since torch 2.4
        torch.optim.Adam([probe], fused=True)
    except RuntimeError:
        return False
    return True


def optimizer_options(device: torch.device) -> dict[str, Any]:
    """Keyword arguments that give ``torch.optim.Adam`` / ``AdamW`` their fastest update on
    ``device``: the fused kernel where torch has one (a third of the multi-tensor update's time
    for the agents' small networks on a CPU), else the multi-tensor (``foreach``) one.

    The agents build their optimizers before moving the networks to ``device``, so the fused
    kernel is chosen only where the CPU has one too.
    """
    if _fused_adam_supported("cpu") and _fused_adam_supported(device.type):
        return {"fused": True}
    return {"foreach": True}
