"""Assembly: the finished rollouts, density-filtered, become the dataset; and its metadata.

The metadata holds the dataset's own min/max episode return and cost (the reference values, as
DSRL defines them), the build's settings, plan, seed and completeness, and the package version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from envs.collect.filter import density_filter
from envs.datasets import OfflineDataset

if TYPE_CHECKING:
    from envs.collect.plan import BuildConfig, BuildPlan
    from envs.tasks import TaskSpec


class EpisodeCounts(TypedDict):
    """How many episodes were recorded, and how many of each behaviour were kept."""

    episodes_recorded: int
    episodes_by_behaviour: dict[str, int]


def filter_rollouts(
    parts: Sequence[OfflineDataset],
    behaviours: Sequence[str],
    config: BuildConfig,
    rng: np.random.Generator,
) -> tuple[OfflineDataset, EpisodeCounts]:
    """The rollouts' episodes joined and thinned by :func:`~envs.collect.density_filter`.

    Args:
        parts: the finished rollouts, in the canonical stage order.
        behaviours: the behaviour name of each part.
        config: the build settings (the filter's grid and cap).
        rng: the filter's draws.

    Returns:
        The kept episodes (empty metadata) and the episode counts.
    """
    labels: list[str] = []
    for part, behaviour in zip(parts, behaviours, strict=True):
        labels += [behaviour] * part.n_episodes
    everything = OfflineDataset.concatenate(parts, metadata={})
    returns, costs = everything.episode_returns(), everything.episode_costs()
    keep = density_filter(returns, costs, config.n_bins, config.bin_cap, rng)
    kept = everything.select_episodes(keep)
    counts: dict[str, int] = {}
    for index in keep:
        counts[labels[index]] = counts.get(labels[index], 0) + 1
    return kept, {"episodes_recorded": everything.n_episodes, "episodes_by_behaviour": counts}


def dataset_metadata(
    dataset: OfflineDataset,
    *,
    spec: TaskSpec,
    episode_length: int,
    config: BuildConfig,
    plan: BuildPlan,
    seed: int,
    final_penalties: Mapping[str, float],
    counts: EpisodeCounts,
    missing_stages: int,
) -> dict[str, Any]:
    """The metadata of a built dataset.

    Args:
        dataset: the filtered episodes (their extremes become the reference values).
        spec: the task.
        episode_length: the episode length the build used.
        config: the build settings.
        plan: the training plan.
        seed: the build seed.
        final_penalties: each behaviour's ``lambda`` at its last finished checkpoint.
        counts: from :func:`filter_rollouts`.
        missing_stages: stages not finished (the deadline cut the build when above 0).
    """
    returns, costs = dataset.episode_returns(), dataset.episode_costs()
    return {
        "task_id": spec.task_id,
        "cost_limit": float(spec.cost_limit),
        "reward_min": float(returns.min()),
        "reward_max": float(returns.max()),
        "cost_min": float(costs.min()),
        "cost_max": float(costs.max()),
        "max_episode_steps": int(episode_length),
        "behaviour": (
            f"stable-baselines3 PPO behaviour agents ({', '.join(config.behaviours)}), "
            f"{plan['train_steps']} steps each, {config.n_checkpoints} checkpoints, "
            f"action noise {list(config.noise_levels)}, density-filtered "
            f"({config.n_bins}x{config.n_bins} bins, cap {config.bin_cap})"
        ),
        "origin": "local",
        "builder": "envs.collect.build_dataset",
        "build_config": config.to_dict(),
        "build_plan": plan,
        "final_penalties": dict(final_penalties),
        **counts,
        "seed": int(seed),
        "package_version": _package_version(),
        "complete": not missing_stages,
        "missing_stages": missing_stages,
    }


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("safe-agents")
    except PackageNotFoundError:
        return "unknown"
