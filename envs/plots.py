"""Pictures: the feasible region a safety critic learned on the toy task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from envs.protocols import Policy
from envs.toy import GOAL, GOAL_RADIUS, HAZARD, HAZARD_RADIUS
from safe_agents.common.dataset import OfflineDataset


def plot_feasibility(
    value_fn: Callable[[np.ndarray], np.ndarray],
    path: str | Path,
    policy: Policy | None = None,
    n_rollouts: int = 4,
    seed: int = 0,
    resolution: int = 101,
    title: str = "Feasibility value V_h over OfflineToyReachAvoid-v0",
) -> Path:
    """Draw ``value_fn`` (e.g. FISOR's ``feasibility_value``) over the toy task's plane as a PNG.

    The zero level set (the learned boundary of the feasible region) is drawn in black, the
    hazard in red, the goal in green, and ``n_rollouts`` episodes of ``policy`` (a callable or
    an agent with ``predict``) as white paths.

    Returns:
        The PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from safe_agents.common.fileio import atomic_path

    axis = np.linspace(-1.0, 1.0, resolution, dtype=np.float32)
    xs, ys = np.meshgrid(axis, axis)
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (resolution^2, 2)
    values = np.asarray(value_fn(points), dtype=np.float64).reshape(resolution, resolution)

    figure, ax = plt.subplots(figsize=(6, 5.2))
    limit = float(np.abs(values).max()) or 1.0
    image = ax.pcolormesh(xs, ys, values, cmap="coolwarm", vmin=-limit, vmax=limit, shading="auto")
    figure.colorbar(image, ax=ax, label="V_h (> 0: infeasible)")
    if values.min() <= 0.0 <= values.max():
        ax.contour(xs, ys, values, levels=[0.0], colors="black", linewidths=1.5)
    ax.add_patch(
        plt.Circle(tuple(HAZARD), HAZARD_RADIUS, fill=False, color="red", lw=2, label="hazard")
    )
    ax.add_patch(
        plt.Circle(tuple(GOAL), GOAL_RADIUS, fill=False, color="green", lw=2, label="goal")
    )
    if policy is not None and n_rollouts > 0:
        from envs.adapters import make
        from envs.evaluation import as_callable

        act = as_callable(policy)
        env = make("OfflineToyReachAvoid-v0")
        for episode in range(n_rollouts):
            obs, _ = env.reset(seed=seed + episode)
            path_points, done = [obs], False
            while not done:
                obs, _, terminated, truncated, _ = env.step(act(obs))
                path_points.append(obs)
                done = terminated or truncated
            trace = np.asarray(path_points)
            ax.plot(trace[:, 0], trace[:, 1], color="white", lw=1.2, alpha=0.9)
            ax.plot(*trace[0], "o", color="white", markersize=4)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    path = Path(path)
    try:
        # matplotlib picks the format from the temporary's suffix: give it the destination's.
        with atomic_path(path, suffix=path.suffix or ".png") as temporary:
            figure.savefig(temporary, dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def plot_dataset(
    dataset: OfflineDataset,
    path: str | Path,
    cost_limit: float | None = None,
    title: str | None = None,
) -> Path:
    """Scatter each episode's cost against its return, with the cost limit drawn, as a PNG.

    Episodes within the cost limit are blue, the others red; the limit is a dashed vertical
    line. The PNG is written atomically (``atomic_path``), so no half-written picture is left.

    Args:
        dataset: an :class:`envs.OfflineDataset` with cost labels.
        path: the PNG to write.
        cost_limit: the limit drawn (default: the dataset's ``cost_limit`` metadata; none drawn
            when neither is known).
        title: the figure title (default: the task id and the episode count).

    Returns:
        The PNG's path.

    Raises:
        DatasetError: the dataset has no cost labels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from safe_agents.common.fileio import atomic_path

    returns, costs = dataset.episode_returns(), dataset.episode_costs()
    if cost_limit is None:
        cost_limit = dataset.metadata.get("cost_limit")
    figure, ax = plt.subplots(figsize=(6, 4.5))
    if cost_limit is None:
        ax.scatter(costs, returns, s=10, alpha=0.6, color="tab:blue")
    else:
        safe = costs <= cost_limit
        ax.scatter(costs[safe], returns[safe], s=10, alpha=0.6, color="tab:blue", label="safe")
        ax.scatter(
            costs[~safe], returns[~safe], s=10, alpha=0.6, color="tab:red", label="over the limit"
        )
        ax.axvline(cost_limit, color="black", ls="--", lw=1.2, label=f"cost limit {cost_limit:g}")
        ax.legend(loc="lower right", fontsize=8)
    task = dataset.metadata.get("task_id", "dataset")
    ax.set_title(title or f"{task}: {len(returns)} episodes", fontsize=10)
    ax.set_xlabel("episode cost")
    ax.set_ylabel("episode return")
    ax.grid(alpha=0.3)
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, dpi=120, bbox_inches="tight", format="png")
    finally:
        plt.close(figure)
    return path
