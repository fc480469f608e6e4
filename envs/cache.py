"""Where offline datasets live on this machine: the user cache and the files the package ships.

Built datasets are cached as ``<cache_dir()>/<task_id>.hdf5`` and DSRL's downloads under
``<cache_dir()>/dsrl/``; the toy task's dataset ships in ``envs/data/``.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable overriding the user cache of built datasets.
CACHE_ENV_VAR = "SAFE_AGENTS_DATA_DIR"
SHIPPED_DIR = Path(__file__).parent / "data"


def cache_dir() -> Path:
    """The user cache of datasets (built ones as ``<task_id>.hdf5``, DSRL's under ``dsrl/``).

    ``$SAFE_AGENTS_DATA_DIR`` when set, else ``~/.cache/safe-agents/datasets``.
    """
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override) if override else Path.home() / ".cache" / "safe-agents" / "datasets"


def dataset_locations(task_id: str) -> list[Path]:
    """Where :func:`load_dataset` looks for a locally built dataset of a task, in order."""
    return [cache_dir() / f"{task_id}.hdf5", SHIPPED_DIR / f"{task_id}.hdf5"]
