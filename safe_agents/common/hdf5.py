"""DSRL-format HDF5 files: :func:`save_dataset` writes one, :func:`read_hdf5` reads one back.

One HDF5 dataset per field (DSRL's names, flags as booleans, arrays as float32) and the metadata
as attributes (non-scalar values JSON-encoded), so files made here open in DSRL's tools and
DSRL's files open here. Reading checks the shapes a file declares against a memory budget before
anything is read, so a small file declaring a huge array is an error, not an allocation.
Finding a task's file (the cache, the shipped files, DSRL's download) is :mod:`envs.datasets`'s.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from safe_agents.common.dataset import (
    _FLAG_FIELDS,
    FIELDS,
    UNKNOWN,
    DatasetError,
    DatasetTooLargeError,
    OfflineDataset,
    _plain,
    data_origin,
)
from safe_agents.common.fileio import atomic_path

#: The largest metadata attribute read from a file (metadata is a few KB).
MAX_ATTRIBUTE_BYTES = 16 * 2**20
#: Environment variable bounding the bytes one dataset file may make the reader allocate
#: (default: 80% of the memory available when it is read).
MAX_BYTES_ENV_VAR = "SAFE_AGENTS_MAX_DATASET_BYTES"


def save_dataset(
    dataset: OfflineDataset, path: str | os.PathLike[str], compression: str | None = "gzip"
) -> Path:
    """Write ``dataset`` as a DSRL-format HDF5 file, atomically (temp file + rename).

    Flags are stored as booleans and arrays as float32, as DSRL does; metadata becomes HDF5
    attributes (non-scalar values JSON-encoded).
    """
    import h5py

    path = Path(path)
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        for name, values in dataset.to_dict().items():
            data = values.astype(bool) if name in _FLAG_FIELDS else values
            file.create_dataset(name, data=data, compression=compression)
        for key, value in dataset.metadata.items():
            file.attrs[key] = _encode_attribute(value)
    return path


def _encode_attribute(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    return "json:" + json.dumps(value)


def _decode_attribute(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str) and value.startswith("json:"):
        try:
            return json.loads(value[5:])
        except (ValueError, RecursionError):
            return value  # not ours after all: kept as the text it is
    return _plain(value)  # numpy scalars and arrays, byte strings inside arrays


def max_dataset_bytes() -> int:
    """How many bytes one dataset file may make :func:`read_hdf5` allocate: ``$SAFE_AGENTS_MAX_
    DATASET_BYTES`` when set, else 80% of the memory available now: the system's available
    memory, or a container's (cgroup) limit when lower; 16 GiB where neither is known.

    Raises:
        ValueError: the variable is not a positive finite number of bytes.
    """
    override = os.environ.get(MAX_BYTES_ENV_VAR)
    if override:
        try:
            limit = float(override)
        except ValueError:
            limit = math.nan
        if not (math.isfinite(limit) and limit > 0):
            raise ValueError(
                f"{MAX_BYTES_ENV_VAR} must be a positive number of bytes, got {override!r}"
            )
        return int(limit)
    available = [_proc_meminfo_available(), _cgroup_memory_left()]
    known = [value for value in available if value is not None]
    return int(0.8 * min(known)) if known else 16 * 2**30


def _proc_meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_memory_left() -> int | None:
    """What a cgroup v2 memory limit leaves (``memory.max - memory.current``), if one is set."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text().strip()), 0)
    except (OSError, ValueError):
        return None


def read_hdf5(
    path: str | os.PathLike[str],
    max_bytes: int | None = None,
    *,
    labels: Mapping[str, Any] | None = None,
    label_unknown: Callable[[Path], Mapping[str, Any]] | None = None,
) -> OfflineDataset:
    """Read a DSRL-format HDF5 file (ours or one made by DSRL).

    ``labels`` are metadata set over the file's own (how :func:`envs.load_dataset` labels DSRL's
    files). Without them, ``label_unknown(path)`` labels a file whose metadata does not say
    where it came from (:func:`envs.read_hdf5` recognises DSRL's files by their names).

    The shapes the file declares are checked against ``max_bytes`` (default
    :func:`max_dataset_bytes`) before anything is read, so a small file declaring a huge array
    is an error, not an allocation.

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: the file is not readable HDF5 (truncated, a corrupt chunk), lacks a
            required key, declares more data than ``max_bytes``, or holds bad values; the
            message names the file and the key.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset file at {path}")
    limit = max_dataset_bytes() if max_bytes is None else max_bytes
    try:
        with h5py.File(path, "r") as file:
            missing = [
                name for name in FIELDS if name not in file and name not in ("costs", "timeouts")
            ]
            if missing:
                raise DatasetError(
                    f"{path}: missing key(s) {missing}; the file has {sorted(file.keys())}, a "
                    f"DSRL-format file has {list(FIELDS)}"
                )
            arrays = {}
            for name in FIELDS:
                if name not in file:
                    continue
                node = file[name]
                if not isinstance(node, h5py.Dataset):
                    raise DatasetError(f"{path}: key {name!r} is a group, expected an array")
                if node.dtype.kind not in "biuf":
                    raise DatasetError(
                        f"{path}: key {name!r} has dtype {node.dtype}, expected numbers"
                    )
            # Declared shapes first, nothing read yet: equal row counts, then the bytes (the
            # file's plus their float32 copies) against the limit.
            rows = {
                name: file[name].shape[0] if file[name].shape else 0
                for name in FIELDS
                if name in file
            }
            if len(set(rows.values())) > 1:
                name = max(rows, key=lambda key: rows[key])
                raise DatasetError(
                    f"{path}: key {name!r} declares {rows[name]:,} rows but "
                    f"'observations' declares {rows['observations']:,} (every field has one "
                    "row per transition)"
                )
            # The file's bytes, plus a float32 copy of the fields stored in another type.
            declared = {
                name: int(np.prod(file[name].shape, dtype=np.float64))
                * (file[name].dtype.itemsize + (0 if file[name].dtype == np.float32 else 4))
                for name in FIELDS
                if name in file
            }
            if sum(declared.values()) > limit:
                name = max(declared, key=lambda key: declared[key])
                raise DatasetTooLargeError(
                    f"{path}: key {name!r} declares shape {file[name].shape} "
                    f"({sum(declared.values()):,} bytes to read in all), more than the "
                    f"{limit:,} allowed ({MAX_BYTES_ENV_VAR} raises the limit)"
                )
            for name in declared:
                arrays[name] = file[name][()]
            metadata = {}
            for key in file.attrs:
                info = file.attrs.get_id(key)
                size = int(np.prod(info.shape or (), dtype=np.float64)) * info.dtype.itemsize
                if size > MAX_ATTRIBUTE_BYTES:  # checked before the attribute is read
                    raise DatasetError(
                        f"{path}: attribute {key!r} declares {size:,} bytes, more than the "
                        f"{MAX_ATTRIBUTE_BYTES:,} metadata may hold"
                    )
                metadata[key] = _decode_attribute(file.attrs[key])
    except DatasetError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, MemoryError) as error:
        # h5py raises OSError for a truncated file, RuntimeError/ValueError for a corrupt
        # chunk or filter; any of them means the file cannot be read as it is.
        raise DatasetError(
            f"{path} is not a readable HDF5 file (truncated, corrupt or not HDF5?): "
            f"{type(error).__name__}: {error}"
        ) from error
    if labels is not None:
        metadata = {**metadata, **labels}
    elif data_origin(metadata) == UNKNOWN and label_unknown is not None:
        metadata = {**metadata, **label_unknown(path)}
    try:
        return OfflineDataset.from_dict(arrays, metadata=metadata)
    except DatasetError as error:
        raise DatasetError(f"{path}: {error}") from error
