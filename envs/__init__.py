"""safe-agents environments: three simulators behind one Gymnasium API, datasets and metrics.

>>> import envs
>>> env = envs.make("OfflineToyReachAvoid-v0")      # info["cost"] on every step
>>> data = envs.load_dataset("OfflineToyReachAvoid-v0")
>>> report = envs.evaluate(lambda obs: env.action_space.sample(), env, n_episodes=2)
"""

from envs.adapters import CostAdapter, find_task_spec, make
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
    "CostAdapter",
    "DatasetError",
    "NormalizedMetrics",
    "Normalizer",
    "OfflineDataset",
    "SafetyFilter",
    "StripCost",
    "TaskSpec",
    "UnknownTaskError",
    "cache_dir",
    "collect_episodes",
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
