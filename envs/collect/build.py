"""The build: :func:`build_dataset` runs the stages of :mod:`envs.collect` in order.

Plan (or resume) -> per checkpoint, across behaviours: train, roll out -> filter and assemble ->
write the file (and its picture) -> remove the work directory of a complete build.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from envs.adapters import make
from envs.collect.assemble import EpisodeCounts, dataset_metadata, filter_rollouts
from envs.collect.behaviours import CostPenalty, PPOTrainer
from envs.collect.plan import (
    STREAM_FILTER,
    STREAM_INIT,
    STREAM_TRAIN,
    BuildConfig,
    BuildPlan,
    Deadline,
    all_stages,
    checkpoint_stage,
    plan_training,
    rollout_stage,
    rollout_stages,
    rollout_steps,
    segment_steps,
    stream_seed,
)
from envs.collect.rollouts import checkpoint_policy, record_noise_levels
from envs.collect.workdir import (
    BuildIdentity,
    Manifest,
    PolicyWeights,
    load_checkpoint,
    load_rollout,
    save_checkpoint,
    save_rollout,
    work_dir,
)
from envs.datasets import OfflineDataset, cache_dir, save_dataset
from envs.plots import plot_dataset
from envs.tasks import get_task
from safe_agents.common.device import torch_threads

if TYPE_CHECKING:
    from stable_baselines3 import PPO
    from tqdm import tqdm

_LOG = logging.getLogger(__name__)


def default_output(task_id: str) -> Path:
    """Where :func:`build_dataset` writes by default: the user cache (found by ``load_dataset``)."""
    return cache_dir() / f"{task_id}.hdf5"


def build_dataset(
    task_id: str,
    out: str | os.PathLike | None = None,
    *,
    budget_minutes: float | None = 60.0,
    seed: int = 0,
    config: BuildConfig | None = None,
    progress_bar: bool = False,
    overwrite: bool = False,
    keep_work_dir: bool = False,
    plot: bool = True,
    **overrides: Any,
) -> Path:
    """Build an offline dataset for ``task_id``: train behaviour agents, roll out, filter, write.

    See :mod:`envs.collect` for the stages. Rerunning an interrupted build with the same
    settings resumes it from its work directory (``<out>.build``) and gives the same file as an
    uninterrupted build.

    Args:
        task_id: a registered task id (:func:`envs.list_tasks`).
        out: the HDF5 file to write; default the user cache (``envs.cache_dir()/<task_id>.hdf5``),
            where :func:`envs.load_dataset` finds it.
        budget_minutes: wall-clock budget of this call, also a hard deadline (None: no limit,
            which needs ``train_steps``). With ``train_steps=None`` the training length is
            planned to fit it.
        seed: seeds every stage (training, noise, episode starts, the filter).
        config: the build settings (default :class:`BuildConfig`'s).
        progress_bar: show a tqdm bar over environment steps.
        overwrite: replace an existing output file (otherwise that is an error, unless an
            unfinished build of it is being resumed).
        keep_work_dir: keep checkpoints and rollouts after a complete build.
        plot: also write the cost-vs-return scatter as ``<out>.png``.
        **overrides: :class:`BuildConfig` fields overriding ``config``'s, e.g.
            ``train_steps=50_000``.

    Returns:
        The path of the written HDF5 file. Its metadata says ``complete: false`` when the
        deadline cut the build; rerun to finish it.

    Raises:
        UnknownTaskError: an unknown task id.
        ValueError: a bad setting, or a work directory holding a build with other settings.
        FileExistsError: ``out`` exists (finished earlier) and ``overwrite`` is False.
        TimeoutError: the budget ran out before any episode was recorded.
    """
    spec = get_task(task_id)
    if config is None:
        config = BuildConfig.from_overrides(overrides)
    elif overrides:
        config = BuildConfig.from_overrides({**config.to_dict(), **overrides})
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if budget_minutes is not None and not budget_minutes > 0:
        raise ValueError(f"budget_minutes must be > 0 or None, got {budget_minutes}")
    out = Path(out) if out is not None else default_output(spec.task_id)
    if out.suffix not in (".hdf5", ".h5"):
        raise ValueError(f"out must name an .hdf5 (or .h5) file, got {out}")
    work = work_dir(out)
    deadline = Deadline(None if budget_minutes is None else budget_minutes * 60.0)
    build = _Build(spec.task_id, out, work, config, int(seed), deadline)

    resuming = build.manifest.open()
    if out.exists() and not resuming and not overwrite:
        raise FileExistsError(
            f"{out} already exists; pass overwrite=True (--overwrite) to rebuild it"
        )
    with torch_threads(config.torch_threads):
        if not resuming:
            work.mkdir(parents=True, exist_ok=True)
            build.manifest.start(build.plan())
        else:
            _LOG.info("resuming the build in %s", work)
        _run_stages(build, progress_bar)
        dataset, counts = build.assemble()
        dataset = OfflineDataset.concatenate([dataset], metadata=build.metadata(dataset, counts))
        save_dataset(dataset, out)
    if plot:
        plot_dataset(dataset, out.with_suffix(".png"))
    if dataset.metadata["complete"]:
        if not keep_work_dir:
            shutil.rmtree(work)
    else:
        _LOG.warning(
            "the time budget cut the build of %s (%d stages left): wrote %s from what was "
            "finished; rerun with the same settings to continue",
            task_id,
            dataset.metadata["missing_stages"],
            out,
        )
    return out


def _run_stages(build: _Build, progress_bar: bool) -> None:
    """Run the unfinished stages in order: checkpoint by checkpoint across behaviours."""
    from tqdm.auto import tqdm

    manifest, config = build.manifest, build.config
    n_behaviours = len(build.behaviours)
    one_rollout = rollout_steps(config, build.episode_length)
    total = n_behaviours * manifest.plan["train_steps"]
    total += len(rollout_stages(config)) * one_rollout
    done_steps = sum(
        segment_steps(manifest.plan, int(stage.split("/")[2]))
        if stage.startswith("train/")
        else one_rollout
        for stage in manifest.done
        if stage.startswith(("train/", "rollout/"))
    )
    blocked: set[int] = set()  # behaviours whose training the deadline cut
    with tqdm(
        total=total,
        initial=done_steps,
        unit="step",
        desc=build.task_id,
        disable=not progress_bar,
    ) as progress:
        for behaviour in range(n_behaviours):
            if not manifest.is_done(checkpoint_stage(behaviour, 0)):
                build.initial_checkpoint(behaviour)
                manifest.mark_done(checkpoint_stage(behaviour, 0))
        for behaviour, checkpoint in rollout_stages(config):
            if build.deadline.passed():
                return
            if behaviour in blocked:
                continue
            train = checkpoint_stage(behaviour, checkpoint)
            if checkpoint > 0 and not manifest.is_done(train):
                if not build.train_segment(behaviour, checkpoint, progress):
                    blocked.add(behaviour)
                    continue
                manifest.mark_done(train)
            stage = rollout_stage(behaviour, checkpoint)
            if not manifest.is_done(stage):
                if not build.rollout(behaviour, checkpoint):
                    return
                manifest.mark_done(stage)
                progress.update(one_rollout)


class _Build:
    """One build's state (task, settings, seed, deadline, manifest); a method per stage.

    Each stage reads its inputs from the work directory and writes its outputs there, so
    :func:`_run_stages` can start from any point an earlier run reached.
    """

    def __init__(
        self,
        task_id: str,
        out: Path,
        work: Path,
        config: BuildConfig,
        seed: int,
        deadline: Deadline,
    ) -> None:
        self.task_id = task_id
        self.spec = get_task(task_id)
        self.out = out
        self.work = work
        self.config = config
        self.seed = seed
        self.deadline = deadline
        self.behaviours = config.parsed_behaviours()
        self.episode_length = config.max_episode_steps or self.spec.max_episode_steps
        # The task's reference return per step (DSRL's maximum over its full-length episodes).
        cost_scale = max(abs(self.spec.reward_max) / self.spec.max_episode_steps, 1e-3)
        self.trainer = PPOTrainer(config, self.spec.cost_limit, cost_scale)
        identity: BuildIdentity = {"task_id": task_id, "seed": seed, "config": config.to_dict()}
        self.manifest = Manifest(work, identity)

    def make_env(self) -> gym.Env:
        """A fresh environment of the task (with the configured episode length)."""
        if self.config.max_episode_steps is None:
            return make(self.task_id)
        return make(self.task_id, max_episode_steps=self.config.max_episode_steps)

    def plan(self) -> BuildPlan:
        """The training plan of a new build (measures the speed when it follows the budget)."""
        return plan_training(self.config, self.deadline, self.episode_length, self.measure_speed)

    def measure_speed(self) -> tuple[float, float]:
        """PPO training and rollout steps per second on this machine."""
        with self.make_env() as env:
            return self.trainer.measure_speed(env, self.seed)

    # ---------------------------------------------------------------------------- the stages
    def initial_checkpoint(self, behaviour: int) -> None:
        """Checkpoint 0: the untrained policy, seeded per behaviour."""
        with self.make_env() as env:
            seed = stream_seed(self.seed, STREAM_INIT, behaviour)
            model, penalty = self.trainer.new_agent(env, self.behaviours[behaviour], seed)
            self.save_checkpoint(model, penalty, behaviour, 0)

    def train_segment(self, behaviour: int, checkpoint: int, progress: tqdm) -> bool:
        """Train from checkpoint ``checkpoint - 1`` to ``checkpoint``; False if cut by the deadline.

        The segment starts from files alone and reseeds Python, NumPy, torch and the environment
        from ``(seed, behaviour, checkpoint)``: the same code runs whether the previous segment
        ran in this process or in a killed one, which is what makes a resumed build exact.
        """
        weights, penalty_state = self.load_checkpoint(behaviour, checkpoint - 1)
        with self.make_env() as env:
            seed = stream_seed(self.seed, STREAM_TRAIN, behaviour, checkpoint)
            model, penalty = self.trainer.restore(
                env, self.behaviours[behaviour], weights, penalty_state, seed
            )
            steps = segment_steps(self.manifest.plan, checkpoint)
            if not self.trainer.train(model, penalty, steps, self.deadline, progress.update):
                return False
            self.save_checkpoint(model, penalty, behaviour, checkpoint)
        return True

    def rollout(self, behaviour: int, checkpoint: int) -> bool:
        """Record the checkpoint's episodes at every noise level; False if cut by the deadline."""
        weights, penalty_state = self.load_checkpoint(behaviour, checkpoint)
        with self.make_env() as env:
            policy = checkpoint_policy(env, weights, self.config.ppo_net_arch)
            parts = record_noise_levels(
                env,
                policy,
                self.config.noise_levels,
                self.config.episodes_per_noise,
                self.deadline,
                (self.seed, behaviour, checkpoint),
            )
        if parts is None:
            return False
        part = OfflineDataset.concatenate(
            parts,
            metadata={
                "behaviour": self.behaviours[behaviour].name,
                "checkpoint": checkpoint,
                "penalty": penalty_state["penalty"],
            },
        )
        save_rollout(self.work, behaviour, checkpoint, part)
        return True

    def assemble(self) -> tuple[OfflineDataset, EpisodeCounts]:
        """Filter the finished rollouts into the dataset; also returns per-behaviour counts.

        Raises:
            TimeoutError: no rollout finished (the budget ran out first).
        """
        finished = [
            (behaviour, checkpoint)
            for behaviour, checkpoint in rollout_stages(self.config)
            if self.manifest.is_done(rollout_stage(behaviour, checkpoint))
        ]
        if not finished:
            raise TimeoutError(
                f"the time budget ran out before any episode of {self.task_id} was recorded; "
                "rerun the same command with a larger --budget-minutes to continue the build "
                f"(its checkpoints are in {self.work})"
            )
        parts = [load_rollout(self.work, b, k) for b, k in finished]
        names = [self.behaviours[b].name for b, _ in finished]
        rng = np.random.default_rng(stream_seed(self.seed, STREAM_FILTER))
        return filter_rollouts(parts, names, self.config, rng)

    def metadata(self, dataset: OfflineDataset, counts: EpisodeCounts) -> dict[str, Any]:
        """The dataset's metadata, with each behaviour's last penalty and what is missing."""
        missing = [stage for stage in all_stages(self.config) if not self.manifest.is_done(stage)]
        final_penalties = {}
        for index, behaviour in enumerate(self.behaviours):
            last = max(
                (k for k in range(self.config.n_checkpoints + 1) if self.has_checkpoint(index, k)),
                default=None,
            )
            if last is not None:
                final_penalties[behaviour.name] = self.load_checkpoint(index, last)[1]["penalty"]
        return dataset_metadata(
            dataset,
            spec=self.spec,
            episode_length=self.episode_length,
            config=self.config,
            plan=self.manifest.plan,
            seed=self.seed,
            final_penalties=final_penalties,
            counts=counts,
            missing_stages=len(missing),
        )

    # ---------------------------------------------------------------------------- checkpoints
    def has_checkpoint(self, behaviour: int, checkpoint: int) -> bool:
        """Whether the stage writing this checkpoint finished."""
        return self.manifest.is_done(checkpoint_stage(behaviour, checkpoint))

    def save_checkpoint(
        self, model: PPO, penalty: CostPenalty, behaviour: int, checkpoint: int
    ) -> None:
        """Write a checkpoint into the work directory (``envs.collect.workdir.save_checkpoint``)."""
        save_checkpoint(self.work, behaviour, checkpoint, model, penalty)

    def load_checkpoint(
        self, behaviour: int, checkpoint: int
    ) -> tuple[PolicyWeights, dict[str, Any]]:
        """A checkpoint's weights and penalty state from the work directory."""
        return load_checkpoint(self.work, behaviour, checkpoint)
