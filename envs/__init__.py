"""safe-agents environments: three simulators behind one Gymnasium API, datasets and metrics.

>>> import envs
>>> env = envs.make("OfflineToyReachAvoid-v0")      # info["cost"] on every step
>>> data = envs.load_dataset("OfflineToyReachAvoid-v0")
>>> path = envs.build_dataset("OfflineBallRun-v0", budget_minutes=30)  # or `safe-agents collect`
>>> report = envs.evaluate(lambda obs: env.action_space.sample(), env, n_episodes=2)
>>> env = gymnasium.make("safe_agents/OfflineCarCircle-v0")  # every task id, once envs is imported

Importing ``envs`` also makes a later ``import dsrl`` or ``import safety_gymnasium`` work on
Python 3.11 (see :mod:`envs._compat`).
"""

import safe_agents._notices  # noqa: F401, I001  (first: before gymnasium is imported)
from envs import _compat
from envs._compat import SimulatorNotInstalledError
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
from envs.download import DownloadError
from envs.evaluation import collect_episodes, evaluate
from envs.metrics import Normalizer, discriminator_report
from envs.protocols import CandidateSampler, Policy, Predictor, SafetyScore
from envs.registration import gymnasium_id, register_tasks
from envs.tasks import TaskSpec, UnknownTaskError, get_task, list_tasks
from envs.wrappers import NormalizedMetrics, SafetyFilter, StripCost, find_wrapper
from safe_agents.common.data import register_dataset_loader

# Neither imports a simulator: the hooks wait for `import safety_gymnasium`/`import dsrl`.
_compat.install_import_hooks()
register_tasks()
# learn_offline("<task id>") and learn_offline("<DSRL file>") resolve through load_dataset.
register_dataset_loader(load_dataset)

__all__ = [
    "CandidateSampler",
    "Policy",
    "Predictor",
    "SafetyScore",
    "Behaviour",
    "BuildConfig",
    "CostAdapter",
    "CostPenalty",
    "DatasetError",
    "DownloadError",
    "NormalizedMetrics",
    "Normalizer",
    "OfflineDataset",
    "SafetyFilter",
    "SimulatorNotInstalledError",
    "StripCost",
    "TaskSpec",
    "UnknownTaskError",
    "build_dataset",
    "cache_dir",
    "collect_episodes",
    "density_filter",
    "discriminator_report",
    "evaluate",
    "find_task_spec",
    "find_wrapper",
    "get_task",
    "gymnasium_id",
    "list_tasks",
    "load_dataset",
    "make",
    "read_hdf5",
    "register_tasks",
    "save_dataset",
]
