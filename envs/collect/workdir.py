"""The work directory of a build, ``<out>.build/``: what makes a stopped build resumable.

Every finished stage leaves files here, each written atomically (a temporary renamed over the
destination), and then its name in ``manifest.json``; so a stage is either recorded with all its
files or redone. The layout::

    manifest.json                the build's identity (task, seed, settings), plan, done stages
    checkpoints/b<B>_c<K>.pt     policy and optimizer weights (tensors only, no pickle)
    checkpoints/b<B>_c<K>.json   the cost penalty's state
    rollouts/b<B>_c<K>.hdf5      the checkpoint's episodes at every noise level
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import torch

from envs.datasets import OfflineDataset, read_hdf5, save_dataset
from safe_agents.common.fileio import atomic_path, atomic_write

if TYPE_CHECKING:
    from stable_baselines3 import PPO

    from envs.collect.behaviours import CostPenalty
    from envs.collect.plan import BuildPlan

MANIFEST_NAME = "manifest.json"
_MANIFEST_VERSION = 1


class BuildIdentity(TypedDict):
    """What a build must share with the one in a work directory to resume it."""

    task_id: str
    seed: int
    config: dict[str, Any]


class PolicyWeights(TypedDict):
    """A checkpoint's tensors: the policy's and its Adam optimizer's state dicts."""

    policy: dict[str, Any]
    optimizer: dict[str, Any]


def work_dir(out: str | os.PathLike) -> Path:
    """The work directory of a build writing ``out``: ``<out>.build``."""
    out = Path(out)
    return out.with_name(out.name + ".build")


# ------------------------------------------------------------------------------ the manifest
class Manifest:
    """The build's record in ``<work>/manifest.json``: identity, plan and finished stages.

    Empty until :meth:`open` finds an earlier run's record or :meth:`start` begins one.

    Args:
        work: the work directory.
        identity: this build's task, seed and settings.
    """

    def __init__(self, work: Path, identity: BuildIdentity) -> None:
        self.work = work
        self.identity = identity
        self._record: dict[str, Any] = {}

    def open(self) -> bool:
        """Load the manifest of an earlier run (True), or find none (False).

        Raises:
            ValueError: the work directory holds a build with other settings, or a manifest
                that is not JSON.
        """
        path = self.work / MANIFEST_NAME
        if not path.is_file():
            return False
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); delete {self.work} to start over"
            ) from error
        earlier = record.get("identity", {})
        if earlier != self.identity:
            now, then = _flat(self.identity), _flat(earlier)
            changed = sorted(key for key in set(now) | set(then) if now.get(key) != then.get(key))
            details = ", ".join(f"{key}: {then.get(key)!r} -> {now.get(key)!r}" for key in changed)
            raise ValueError(
                f"{self.work} holds an unfinished build with other settings ({details}); rerun "
                f"with the same settings to resume it, or delete {self.work} to start over"
            )
        self._record = record
        return True

    def start(self, plan: BuildPlan) -> None:
        """Begin a new record with nothing done, and write it."""
        self._record = {
            "version": _MANIFEST_VERSION,
            "identity": self.identity,
            "plan": plan,
            "done": [],
        }
        self._save()

    @property
    def plan(self) -> BuildPlan:
        """The training plan (made once, by the run that started the build)."""
        return self._record["plan"]

    @property
    def done(self) -> list[str]:
        """The finished stages, in the order they finished."""
        return self._record["done"]

    def is_done(self, stage: str) -> bool:
        """Whether ``stage`` finished (in this run or an earlier one)."""
        return stage in self._record["done"]

    def mark_done(self, stage: str) -> None:
        """Record ``stage`` as finished; call it after the stage's files are written."""
        self._record["done"].append(stage)
        self._save()

    def _save(self) -> None:
        _atomic_write_text(self.work / MANIFEST_NAME, json.dumps(self._record, indent=1))


def _flat(identity: BuildIdentity | dict[str, Any]) -> dict[str, Any]:
    """Task, seed and settings side by side, to name what differs between two identities."""
    return {
        "task_id": identity.get("task_id"),
        "seed": identity.get("seed"),
        **identity.get("config", {}),
    }


# ----------------------------------------------------------------- checkpoints and rollouts
def checkpoint_path(work: Path, behaviour: int, checkpoint: int) -> Path:
    """The weights file of a checkpoint (its penalty state is beside it, as ``.json``)."""
    return work / "checkpoints" / f"b{behaviour}_c{checkpoint}.pt"


def save_checkpoint(
    work: Path, behaviour: int, checkpoint: int, model: PPO, penalty: CostPenalty
) -> None:
    """Policy and optimizer weights (loaded without pickle) plus the penalty's state."""
    path = checkpoint_path(work, behaviour, checkpoint)
    with atomic_path(path) as temporary:
        torch.save(
            {
                "policy": model.policy.state_dict(),
                "optimizer": model.policy.optimizer.state_dict(),
            },
            temporary,
        )
    _atomic_write_text(path.with_suffix(".json"), json.dumps(penalty.state_dict()))


def load_checkpoint(
    work: Path, behaviour: int, checkpoint: int
) -> tuple[PolicyWeights, dict[str, Any]]:
    """A checkpoint's weights and its penalty state (:meth:`CostPenalty.state_dict`)."""
    path = checkpoint_path(work, behaviour, checkpoint)
    weights = torch.load(path, map_location="cpu", weights_only=True)
    return weights, json.loads(path.with_suffix(".json").read_text())


def rollout_path(work: Path, behaviour: int, checkpoint: int) -> Path:
    """The episodes file of a checkpoint's rollout."""
    return work / "rollouts" / f"b{behaviour}_c{checkpoint}.hdf5"


def save_rollout(work: Path, behaviour: int, checkpoint: int, part: OfflineDataset) -> None:
    """Write a checkpoint's episodes (uncompressed)."""
    save_dataset(part, rollout_path(work, behaviour, checkpoint), compression=None)


def load_rollout(work: Path, behaviour: int, checkpoint: int) -> OfflineDataset:
    """Read a checkpoint's episodes back."""
    return read_hdf5(rollout_path(work, behaviour, checkpoint))


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text)
