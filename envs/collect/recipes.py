"""The benchmark datasets' builds, pinned: the settings each local dataset was built with.

The benchmark's local datasets are not DSRL's: each was built with :func:`build_dataset` on the
project's machine (``benchmarks/datasets.md``). Five are shipped in ``envs/data/``; the two
largest (HalfCheetahVelocity, 24 MB, and PointGoal1, 43 MB) are not, and a machine without them
rebuilds them with their recipe:

    safe-agents collect --recipe --task OfflinePointGoal1Gymnasium-v0
    safe-agents collect --recipe --task missing      # every benchmark dataset this machine lacks

A recipe fixes the training length instead of planning it from the machine's speed, and every
stage is seeded, so a rebuild gives the same episodes as the file it stands for (with the same
library versions). A sweep whose settings say ``build_data`` builds what its tasks lack before
its first run (:func:`build_missing`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from envs.cache import dataset_locations
from envs.collect.build import build_dataset

#: The seed of every recipe (``safe-agents collect``'s default).
RECIPE_SEED = 0
_THREE = ["unconstrained", "limit:0.5", "limit:2"]

#: Task id -> the :class:`~envs.collect.BuildConfig` settings its benchmark dataset was built
#: with: PPO steps per behaviour (the length each build planned, in its metadata's
#: ``build_plan``) and, where not the default five, the behaviours. The rest are defaults.
RECIPES: dict[str, dict[str, Any]] = {
    "OfflineBallRun-v0": {"train_steps": 323_584},
    "OfflineCarCircle-v0": {"train_steps": 339_968, "behaviours": _THREE},
    "OfflineDroneCircle-v0": {"train_steps": 225_280},
    "OfflineHalfCheetahVelocityGymnasium-v1": {"train_steps": 890_880, "behaviours": _THREE},
    "OfflinePointGoal1Gymnasium-v0": {"train_steps": 77_824, "behaviours": _THREE},
    "OfflineMetadrive-easysparse-v0": {
        "train_steps": 501_760,
        "behaviours": ["unconstrained", "limit:1"],
    },
}


def recipe(task_id: str) -> dict[str, Any]:
    """The build settings of ``task_id``'s benchmark dataset (a copy).

    Raises:
        ValueError: the task has no recipe (the message lists those that do).
    """
    if task_id not in RECIPES:
        raise ValueError(
            f"{task_id} has no dataset recipe; the benchmark datasets with one: "
            f"{', '.join(sorted(RECIPES))} (build another with safe-agents collect --task ...)"
        )
    return {
        key: list(value) if isinstance(value, list) else value
        for key, value in RECIPES[task_id].items()
    }


def has_local_dataset(task_id: str) -> bool:
    """Whether this machine has a locally built dataset of ``task_id`` (cache or shipped)."""
    return any(path.is_file() for path in dataset_locations(task_id))


def build_from_recipe(
    task_id: str,
    out: str | Path | None = None,
    *,
    progress_bar: bool = False,
    overwrite: bool = False,
    keep_work_dir: bool = False,
) -> Path:
    """Build ``task_id``'s benchmark dataset with its recipe (into the user cache by default).

    No time budget: the recipe fixes the work. A stopped build continues from its work
    directory when called again, as every :func:`build_dataset` does.
    """
    return build_dataset(
        task_id,
        out,
        budget_minutes=None,
        seed=RECIPE_SEED,
        progress_bar=progress_bar,
        overwrite=overwrite,
        keep_work_dir=keep_work_dir,
        **recipe(task_id),
    )


def build_missing(
    task_ids: Sequence[str],
    *,
    progress_bar: bool = False,
    announce: Callable[[str], None] = print,
) -> list[Path]:
    """Build, one after the other, the benchmark datasets of ``task_ids`` this machine lacks.

    Tasks with a local dataset, and tasks without a recipe (their data comes from elsewhere:
    DSRL's download, the toy task's generator), are left alone. Returns the files written.
    """
    built = []
    for task_id in dict.fromkeys(task_ids):
        if task_id not in RECIPES or has_local_dataset(task_id):
            continue
        settings = ", ".join(f"{key}={value}" for key, value in RECIPES[task_id].items())
        announce(f"building the benchmark dataset of {task_id} ({settings}, seed {RECIPE_SEED})")
        built.append(build_from_recipe(task_id, progress_bar=progress_bar))
    return built
