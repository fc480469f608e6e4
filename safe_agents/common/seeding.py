"""Seeding: one integer fixes data order, initialisation and sampling."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_random_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def new_seed() -> int:
    """A fresh seed from the operating system's entropy (recorded so a run can be repeated)."""
    return int(np.random.SeedSequence().generate_state(1)[0] % 2**31)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
