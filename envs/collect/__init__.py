"""Building offline datasets: behaviour agents, noisy rollouts and a reward-cost density filter.

The DSRL download host is unreachable from many machines, so datasets are built locally the way
DSRL built them (Liu et al., 2023, "Datasets and Benchmarks for Offline Safe Reinforcement
Learning", Sec. 4):

1. **Behaviour agents.** stable-baselines3 PPO (one environment, one torch thread: it suits two
   cores) is trained once per *behaviour*: unconstrained, with a fixed cost penalty
   (``reward - lambda * cost``), or Lagrangian with a cost limit, where ``lambda`` follows the
   dual ascent rule ``lambda <- clip(lambda + lr * (C - kappa) / max(kappa, 1), 0, lambda_max)``
   after every PPO rollout (``C`` the mean cost of the episodes finished since the last update,
   ``kappa`` the behaviour's limit). The cost is scaled by the task's reference return per step
   (``reward_max / episode_length``), so ``lambda = 1`` makes a step of cost as bad as a typical
   step of reward is good, on every task. The policy is checkpointed ``n_checkpoints`` times
   along training, by default at 1/16, 1/8, 1/4, 1/2 and all of it (a geometric schedule: early
   checkpoints cover the middle returns that a fast learner passes quickly).
2. **Rollouts.** Every checkpoint (and the untrained initial policy of the first behaviour) is
   rolled out with Gaussian action noise at several levels (the mean action plus
   ``noise * half_range * N(0, 1)``, clipped), which spreads episodes from low to high return and
   cost.
3. **Density filter.** The episodes are binned on a grid over episode cost and return and each
   cell keeps at most ``bin_cap`` episodes drawn at random (:func:`density_filter`), so dense
   regions (converged policies) do not drown the rest of the reward-cost plane.
4. **Output.** A DSRL-format HDF5 file (:func:`envs.save_dataset`, atomic) whose metadata holds
   the task, its cost limit, the dataset's own min/max episode return and cost (the reference
   values, as DSRL defines them), the build settings, the seed and the package version; and a
   scatter picture of episode cost vs return next to it (``<out>.png``).

**Resuming.** Every finished stage (a training segment, a rollout of one checkpoint) is written
atomically into a work directory next to the output (``<out>.build/``) and recorded in its
``manifest.json``. A killed or budget-cut build rerun with the same settings continues from the
last finished stage. Each stage starts from files only (policy and optimizer weights, the cost
penalty's state) and reseeds everything from ``(seed, stage)``, so a resumed build writes exactly
the arrays of an uninterrupted one. The work directory is removed after a complete build unless
``keep_work_dir=True``.

**Time budget.** With ``train_steps=None`` the training length is planned from a short speed
measurement so that the build fits ``budget_minutes``; the plan is stored in the manifest (a
resumed build reuses it) and in the dataset's metadata. Pass ``train_steps`` for a build that
is identical on every machine (with the same library versions and ``torch_threads``). The
budget is also a hard deadline, checked at every training step and between the noise levels of a
rollout: when it passes, the unfinished stage is dropped, a dataset is written from the stages
finished so far (metadata ``complete: false``) and the work directory is kept; rerunning
continues the build (each call gets its own budget).

Checkpoints in the work directory hold only tensors (``torch.load(weights_only=True)``), never
pickled objects.

**Deviations from DSRL.** DSRL trained several online safe-RL algorithms (PPO-Lagrangian, CVPO,
DDPG-Lagrangian...) with many more steps and hand-tuned cost limits per task; here one PPO with
a reward penalty stands in for all of them, and the default budget is minutes, not GPU-days. The
reference values in the metadata are this dataset's extremes, not DSRL's published numbers (the
task registry keeps those).

**Layout.** One module per stage: :mod:`envs.collect.plan` (the settings, behaviours, checkpoint
schedule, stage order, random streams and time budget), :mod:`envs.collect.behaviours` (PPO and
the cost penalty), :mod:`envs.collect.rollouts` (noisy episodes of a checkpoint),
:mod:`envs.collect.filter` (the density filter), :mod:`envs.collect.assemble` (the dataset and
its metadata), :mod:`envs.collect.workdir` (the manifest, checkpoints and rollout files) and
:mod:`envs.collect.build` (:func:`build_dataset`, which runs them in order);
:mod:`envs.collect.recipes` pins the settings the benchmark's datasets were built with.
"""

# `_Build` and `_atomic_write_text` are private, but tests reach them through this package: they
# patch the stages of `_Build` and check that the manifest is written through
# safe_agents.common.fileio.
from envs.collect.behaviours import CostPenalty
from envs.collect.build import _Build as _Build
from envs.collect.build import build_dataset, default_output
from envs.collect.filter import density_filter
from envs.collect.plan import Behaviour, BehaviourKind, BuildConfig, checkpoint_steps
from envs.collect.recipes import RECIPES, build_from_recipe, build_missing, recipe
from envs.collect.workdir import MANIFEST_NAME, work_dir
from envs.collect.workdir import _atomic_write_text as _atomic_write_text

__all__ = [
    "MANIFEST_NAME",
    "RECIPES",
    "Behaviour",
    "BehaviourKind",
    "BuildConfig",
    "CostPenalty",
    "build_dataset",
    "build_from_recipe",
    "build_missing",
    "checkpoint_steps",
    "default_output",
    "density_filter",
    "recipe",
    "work_dir",
]
