"""Finding a task's offline data: the user cache, the shipped files, DSRL's download.

:func:`load_dataset` resolves a task id (or a path) to an :class:`OfflineDataset`, the type
defined in :mod:`safe_agents.common.dataset` and re-exported here with the HDF5 reader and
writer of :mod:`safe_agents.common.hdf5`, so ``envs.OfflineDataset``, ``envs.read_hdf5`` and
``envs.save_dataset`` are the ones users know. This module adds what needs the task registry:
where built datasets are cached, DSRL's file names and reference returns, and the download.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from envs import download
from envs.cache import CACHE_ENV_VAR, SHIPPED_DIR, cache_dir, dataset_locations
from envs.download import dsrl_address, dsrl_file_name
from envs.tasks import get_task, list_tasks
from safe_agents.common import hdf5
from safe_agents.common.dataset import (
    DSRL,
    FIELDS,
    LOCAL,
    UNKNOWN,
    DatasetError,
    DatasetTooLargeError,
    OfflineDataset,
    data_origin,
    describe_provenance,
    normalization_label,
)
from safe_agents.common.hdf5 import MAX_BYTES_ENV_VAR, max_dataset_bytes, save_dataset

__all__ = [
    "CACHE_ENV_VAR",
    "DSRL",
    "FIELDS",
    "LOCAL",
    "MAX_BYTES_ENV_VAR",
    "ORIGINS",
    "UNKNOWN",
    "DatasetError",
    "DatasetTooLargeError",
    "OfflineDataset",
    "SHIPPED_DIR",
    "cache_dir",
    "data_origin",
    "dataset_locations",
    "describe_provenance",
    "load_dataset",
    "max_dataset_bytes",
    "normalization_label",
    "read_hdf5",
    "save_dataset",
]

_LOG = logging.getLogger(__name__)

#: What :func:`load_dataset` may use for a task id.
ORIGINS = ("auto", "local", "dsrl")
#: DSRL's file names: ``Safety<Task>-v<k>-<a>-<b>.hdf5`` / ``SafeMetaDrive-<map>-v0-<a>-<b>.hdf5``.
_DSRL_FILE = re.compile(r"Safe[A-Za-z0-9-]+-v\d+-\d+-\d+\.hdf5")


def read_hdf5(
    path: str | os.PathLike,
    max_bytes: int | None = None,
    *,
    labels: dict[str, Any] | None = None,
) -> OfflineDataset:
    """Read a DSRL-format HDF5 file (ours or one made by DSRL): :func:`safe_agents.common.hdf5.
    read_hdf5`, with a file named as DSRL names its files labelled as that task's (task id,
    origin, DSRL's reference returns) when its own metadata does not say where it came from.

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: see :func:`safe_agents.common.hdf5.read_hdf5`.
    """
    return hdf5.read_hdf5(path, max_bytes, labels=labels, label_unknown=_dsrl_labels)


def _dsrl_labels(path: Path) -> dict[str, Any]:
    """The labels of a file of DSRL's found by its name (none for another name)."""
    return _dsrl_metadata_for_file(path.name) if _DSRL_FILE.fullmatch(path.name) else {}


def load_dataset(
    source: str | os.PathLike,
    origin: str = "auto",
    *,
    progress_bar: bool = True,
    timeout: float | None = None,
) -> OfflineDataset:
    """Load a dataset from an HDF5 path or by task id.

    A task id resolves by ``origin``:

    - ``"local"``: data built locally, never the network: a dataset built into the user cache
      (:func:`cache_dir`, by ``safe-agents collect``), then one shipped with the package.
    - ``"dsrl"``: DSRL's data: a copy downloaded earlier (this package's cache, then
      ``dsrl``'s own), else the download (:func:`envs.download.download_dsrl`;
      ``$SAFE_AGENTS_DSRL_URL`` names a mirror).
    - ``"auto"`` (default): a copy on this machine (DSRL's first, then one built locally), else
      DSRL's download.

    The loaded dataset's :attr:`~OfflineDataset.origin` and :attr:`~OfflineDataset.provenance`
    say which one it is.

    Datasets are never built silently: when nothing is found, the error names the
    ``safe-agents collect`` command (or :func:`envs.build_dataset`) that builds one.

    Args:
        source: a task id, or the path of a DSRL-format HDF5 file (``origin`` is then ignored).
        origin: ``"auto"``, ``"local"`` or ``"dsrl"``.
        progress_bar: show the download's progress bar.
        timeout: seconds to wait for the download's host (default
            :data:`envs.download.DEFAULT_TIMEOUT`).

    Raises:
        FileNotFoundError: neither a file nor a dataset found for ``origin`` (with ``"auto"``,
            the failed download's reason is in the message).
        envs.download.DownloadError: ``origin="dsrl"`` and the download failed.
        DatasetError: the file is malformed (see :func:`read_hdf5`), or the toy task was asked
            for with ``origin="dsrl"``.
        UnknownTaskError: an unknown task id.
    """
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    path = Path(source)
    if path.suffix in (".hdf5", ".h5") or path.is_file():
        return read_hdf5(path)
    task_id = str(source)

    spec = get_task(task_id)  # an unknown id raises here, listing close matches
    has_dsrl_data = spec.dsrl_name is not None
    reuse_dsrl_cache = True
    if origin != "local" and has_dsrl_data:
        found = download.find_dsrl_file(task_id)
        if found is not None:
            try:
                return _read_dsrl(found, task_id)
            except DatasetError as error:
                if found.parent == download.download_dir():  # ours: validated when it arrived
                    raise DatasetError(f"{error}; delete {found} to download it again") from None
                # dsrl writes its cache in place, so an interrupted dsrl download leaves half a
                # file there: download a copy of our own instead.
                _LOG.warning("skipping %s, a damaged copy in dsrl's cache: %s", found, error)
                reuse_dsrl_cache = False
    if origin != "dsrl":
        for candidate in dataset_locations(task_id):
            if candidate.is_file():
                return read_hdf5(candidate)
    reason = "origin='local' does not download"
    if origin != "local" and has_dsrl_data:
        fetch: dict[str, Any] = {
            "progress_bar": progress_bar,
            "reuse_dsrl_cache": reuse_dsrl_cache,
        }
        if timeout is not None:
            fetch["timeout"] = timeout
        try:
            return _read_dsrl(download.download_dsrl(task_id, **fetch), task_id)
        except download.DownloadError as error:
            if origin == "dsrl":
                raise
            reason = f"DSRL's download failed: {error}"
    elif origin == "dsrl":
        download.dsrl_url(task_id)  # raises: the toy task has no DSRL dataset
    places = ", ".join(str(place) for place in dataset_locations(task_id))
    raise FileNotFoundError(
        f"no dataset for {task_id} (looked in {places}; {reason}). Build one into the cache "
        f"with `safe-agents collect --task {task_id}` (or envs.build_dataset({task_id!r})), "
        "or pass the path of a DSRL-format HDF5 file. For a benchmark task, `safe-agents "
        f"collect --recipe --task {task_id}` rebuilds the benchmark's own dataset "
        "(envs.collect.RECIPES; benchmarks/datasets.md gives each build's time)."
    )


def _read_dsrl(path: Path, task_id: str) -> OfflineDataset:
    """Read a DSRL file, labelled with its task, origin and DSRL's reference values."""
    labels = {
        **_dsrl_metadata(task_id, path.name),
        "source_url": dsrl_address(task_id),  # DSRL's address, whichever mirror served it
    }
    return read_hdf5(path, labels=labels)  # one read, one validation of the arrays


def _dsrl_metadata(task_id: str, file_name: str) -> dict[str, Any]:

    spec = get_task(task_id)
    return {
        "task_id": task_id,
        "origin": DSRL,
        "dsrl_file": file_name,
        "cost_limit": spec.cost_limit,
        "reward_min": spec.reward_min,
        "reward_max": spec.reward_max,
        "cost_min": spec.cost_min,
        "cost_max": spec.cost_max,
        "max_episode_steps": spec.max_episode_steps,
    }


def _dsrl_metadata_for_file(file_name: str) -> dict[str, Any]:
    """The labels of a DSRL file given by path, found by its file name (none if unknown)."""
    for task_id in list_tasks():
        if get_task(task_id).dsrl_name is not None and dsrl_file_name(task_id) == file_name:
            return _dsrl_metadata(task_id, file_name)
    return {}
