"""The shipped ``OfflineToyReachAvoid-v0`` dataset, and the script that records it.

``python -m envs.toy_dataset`` rewrites ``envs/data/OfflineToyReachAvoid-v0.hdf5``; the same seed
gives the same arrays. Kept apart from :mod:`envs.toy` (the environment and its scripted
controllers), which the environment factory imports, so that neither imports the other.
"""

from __future__ import annotations

import numpy as np

from envs.adapters import make
from envs.datasets import SHIPPED_DIR, OfflineDataset, save_dataset
from envs.evaluation import collect_episodes
from envs.toy import random_policy, scripted_policy


def build_toy_dataset(seed: int = 0, episodes_per_setting: int = 6) -> OfflineDataset:
    """Record the shipped toy dataset: scripted policies spread over the reward-cost plane.

    Reckless (straight through the hazard), cautious (around it) and in-between controllers,
    each with three action-noise levels, plus uniformly random actions. The reference returns
    and costs written into the metadata are the dataset's own extremes, as DSRL defines them.

    Returns:
        An :class:`envs.OfflineDataset` for ``OfflineToyReachAvoid-v0``.
    """
    env = make("OfflineToyReachAvoid-v0")
    rng = np.random.default_rng(seed)
    parts = []
    settings = [
        (margin, noise) for margin in np.linspace(-0.5, 0.15, 8) for noise in (0.0, 0.4, 1.0)
    ]
    for index, (margin, noise) in enumerate(settings):
        policy = scripted_policy(float(margin), noise, rng)
        parts.append(collect_episodes(env, policy, episodes_per_setting, seed=seed + 1000 * index))
    parts.append(
        collect_episodes(env, random_policy(rng), 2 * episodes_per_setting, seed=seed + 99_000)
    )
    dataset = OfflineDataset.concatenate(parts)
    returns, costs = dataset.episode_returns(), dataset.episode_costs()
    metadata = {
        **dataset.metadata,
        "reward_min": float(returns.min()),
        "reward_max": float(returns.max()),
        "cost_min": float(costs.min()),
        "cost_max": float(costs.max()),
        "behaviour": (
            "scripted reach-avoid controllers (margins -0.5..0.15, noise 0/0.4/1.0) and random"
        ),
        "seed": seed,
        "origin": "local",
        "builder": "envs.toy_dataset.build_toy_dataset",
    }
    return OfflineDataset.concatenate([dataset], metadata=metadata)


if __name__ == "__main__":
    toy = build_toy_dataset()
    path = save_dataset(toy, SHIPPED_DIR / "OfflineToyReachAvoid-v0.hdf5")
    print(
        path,
        toy.summary(),
        {key: toy.metadata[key] for key in ("reward_min", "reward_max", "cost_max")},
    )
