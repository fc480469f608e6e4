"""safe-agents environments: three simulators behind one Gymnasium API, datasets and metrics.

>>> import envs
>>> env = envs.make("OfflineToyReachAvoid-v0")      # info["cost"] on every step
>>> data = envs.load_dataset("OfflineToyReachAvoid-v0")
>>> path = envs.build_dataset("OfflineBallRun-v0", budget_minutes=30)  # or `safe-agents collect`
>>> report = envs.evaluate(lambda obs: env.action_space.sample(), env, n_episodes=2)
"""

from envs.adapters import CostAdapter, find_task_spec, make
from envs.collect import Behaviour, BuildConfig, CostPenalty, build_dataset, density_filter
from envs.datasets import (
    DatasetError,
    OfflineDataset,
    cache_dir,
    load_dataset,
    read_hdf5,
    save_dataset,
)
from envs.evaluation import collect_episodes, evaluate
from envs.metrics import Normalizer
from envs.tasks import TaskSpec, UnknownTaskError, get_task, list_tasks
from envs.wrappers import NormalizedMetrics, SafetyFilter, StripCost, find_wrapper

__all__ = [
    "Behaviour",
    "BuildConfig",
    "CostAdapter",
    "CostPenalty",
    "DatasetError",
    "NormalizedMetrics",
    "Normalizer",
    "OfflineDataset",
    "SafetyFilter",
    "StripCost",
    "TaskSpec",
    "UnknownTaskError",
    "build_dataset",
    "cache_dir",
    "collect_episodes",
    "density_filter",
    "evaluate",
    "find_task_spec",
    "find_wrapper",
    "get_task",
    "list_tasks",
    "load_dataset",
    "make",
    "read_hdf5",
    "save_dataset",
]
