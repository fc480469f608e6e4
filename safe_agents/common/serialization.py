"""Saved-agent files: a zip of JSON and tensor files, read without unpickling arbitrary objects.

Members:

- ``config.json``: algorithm name, seed, spaces and hyperparameters;
- ``weights.pt``: a flat ``{name: tensor}`` dict;
- ``training.pt``: step counter, generator states and optimizer states (for resuming);
- ``metadata.json``: package, torch and Python versions, and the time of writing.

Both ``.pt`` members are read with ``torch.load(weights_only=True)``, which accepts tensors and
plain containers only: a file carrying any other pickled object is rejected, never executed.
"""

from __future__ import annotations

import io
import json
import platform
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from safe_agents._version import __version__
from safe_agents.common.fileio import atomic_path

FORMAT_VERSION = 1
MEMBERS = ("config.json", "weights.pt", "training.pt", "metadata.json")
#: Largest uncompressed size read from a member: the zip's declared sizes are checked before a
#: byte is inflated, so a small file cannot make the reader allocate more. JSON members are
#: small; the weights of the papers' networks are tens of MB.
MAX_JSON_BYTES = 16 * 2**20
MAX_TENSOR_BYTES = 4 * 2**30
#: Trained weights are noise-like floats that deflate by about 1.1x; a large member declaring
#: far more than that is a decompression bomb, refused before it is inflated.
MAX_TENSOR_RATIO, RATIO_CHECKED_ABOVE = 50, 16 * 2**20
#: Deepest nesting accepted in a JSON member (a config is 3 levels deep).
MAX_JSON_DEPTH = 32


class AgentLoadError(ValueError):
    """A file that is not a loadable saved agent; the message says why."""


@dataclass
class AgentFile:
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    training: dict[str, Any]
    metadata: dict[str, Any]


def box_to_dict(space: gym.spaces.Box) -> dict[str, Any]:
    return {
        "type": "Box",
        "low": space.low.tolist(),
        "high": space.high.tolist(),
        "shape": list(space.shape),
        "dtype": str(space.dtype),
    }


def box_from_dict(data: dict[str, Any]) -> gym.spaces.Box:
    if data.get("type") != "Box":
        raise AgentLoadError(f"unsupported space {data.get('type')!r} (only Box)")
    return gym.spaces.Box(
        low=np.asarray(data["low"], dtype=data["dtype"]),
        high=np.asarray(data["high"], dtype=data["dtype"]),
        shape=tuple(data["shape"]),
        dtype=data["dtype"],
    )


def _tensor_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def agent_path(path: str | Path) -> Path:
    """The file ``save(path)`` writes and ``load(path)`` reads: ``.zip`` appended when missing."""
    path = Path(path)
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")


def write_agent_file(
    path: str | Path,
    config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    training: dict[str, Any],
) -> Path:
    """Write the four members to ``path`` (``.zip`` appended) via a temp file and a rename."""

    path = agent_path(path)
    metadata = {
        "format_version": FORMAT_VERSION,
        "safe_agents_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_path(path) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            # Infinity stays allowed: unbounded observation spaces (Safety-Gymnasium's) have
            # infinite bounds; hyperparameters are finite by their own check.
            archive.writestr("config.json", json.dumps(config, indent=2))
            archive.writestr("weights.pt", _tensor_bytes(weights))
            archive.writestr("training.pt", _tensor_bytes(training))
            archive.writestr("metadata.json", json.dumps(metadata, indent=2))
    return path


def read_agent_file(path: str | Path) -> AgentFile:
    """Read and check a saved agent.

    Raises:
        FileNotFoundError: no such file.
        AgentLoadError: not a zip, truncated, members missing or corrupt, or a tensor member
            that holds anything but tensors and plain containers.
    """
    given = Path(path)
    path = given if given.is_file() else agent_path(given)
    if not path.is_file():
        raise FileNotFoundError(f"no saved agent at {given}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [name for name in MEMBERS if name not in names]
            if missing:
                raise AgentLoadError(
                    f"{path} is not a safe-agents file: missing {missing} (has {sorted(names)})"
                )
            for name in MEMBERS:  # declared sizes, checked before a byte is inflated
                info = archive.getinfo(name)
                limit = MAX_TENSOR_BYTES if name.endswith(".pt") else MAX_JSON_BYTES
                bomb = (
                    name.endswith(".pt")
                    and info.file_size > RATIO_CHECKED_ABOVE
                    and info.file_size > MAX_TENSOR_RATIO * max(info.compress_size, 1)
                )
                if info.file_size > limit or bomb:
                    raise AgentLoadError(
                        f"{path}: member {name} declares {info.file_size:,} bytes from "
                        f"{info.compress_size:,} compressed, more than a saved agent holds"
                    )
            raw = {name: archive.read(name) for name in MEMBERS}
    except AgentLoadError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,  # a damaged deflate stream inside a member
        RuntimeError,  # an encrypted member
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,
    ) as error:
        raise AgentLoadError(
            f"{path} is not a readable zip (truncated or corrupt?): {error}"
        ) from error
    try:
        config = json.loads(raw["config.json"])
        metadata = json.loads(raw["metadata.json"])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise AgentLoadError(
            f"{path}: config.json or metadata.json is not valid JSON: {type(error).__name__}"
        ) from None
    required = ("algorithm", "seed", "observation_space", "action_space", "hyperparameters")
    if not isinstance(config, dict) or any(key not in config for key in required):
        raise AgentLoadError(f"{path}: config.json lacks one of {required}")
    if not isinstance(metadata, dict):
        raise AgentLoadError(f"{path}: metadata.json must be an object")
    if _depth(config) > MAX_JSON_DEPTH:
        raise AgentLoadError(f"{path}: config.json is nested deeper than a config can be")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise AgentLoadError(
            f"{path}: file format version {version!r}, this package reads version "
            f"{FORMAT_VERSION}; save the agent again with a matching safe-agents version"
        )
    if not isinstance(config["algorithm"], str) or not isinstance(config["hyperparameters"], dict):
        raise AgentLoadError(f"{path}: config.json's algorithm or hyperparameters are malformed")
    if isinstance(config["seed"], bool) or not isinstance(config["seed"], int):
        raise AgentLoadError(f"{path}: config.json's seed must be an integer")
    for key in ("observation_space", "action_space"):
        if not isinstance(config[key], dict):
            raise AgentLoadError(f"{path}: config.json's {key} must be an object")
    tensors = {}
    for member in ("weights.pt", "training.pt"):
        try:
            tensors[member] = torch.load(
                io.BytesIO(raw[member]), weights_only=True, map_location="cpu"
            )
        except Exception as error:  # noqa: BLE001 - any failure here means a bad member
            raise AgentLoadError(
                f"{path}: {member} is not a plain tensor file (corrupt or tampered; loading "
                f"refuses arbitrary pickled objects): {type(error).__name__}: {error}"
            ) from error
    weights = tensors["weights.pt"]
    if not isinstance(weights, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in weights.items()
    ):
        raise AgentLoadError(f"{path}: weights.pt must map names to tensors")
    bad = [name for name, value in weights.items() if not bool(torch.isfinite(value).all())]
    if bad:
        raise AgentLoadError(f"{path}: weights {bad[:3]} hold non-finite values (NaN or inf)")
    if not isinstance(tensors["training.pt"], dict):
        raise AgentLoadError(f"{path}: training.pt must be a dict")
    return AgentFile(config, weights, tensors["training.pt"], metadata)


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (iterative: a deep file cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest
