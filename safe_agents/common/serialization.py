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
import os
import platform
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

FORMAT_VERSION = 1
MEMBERS = ("config.json", "weights.pt", "training.pt", "metadata.json")


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


def write_agent_file(
    path: str | Path,
    config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    training: dict[str, Any],
) -> Path:
    """Write the four members to ``path`` (``.zip`` appended) via a temp file and a rename."""
    from safe_agents import __version__

    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_name(path.name + ".zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format_version": FORMAT_VERSION,
        "safe_agents_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(temp_name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("config.json", json.dumps(config, indent=2))
            archive.writestr("weights.pt", _tensor_bytes(weights))
            archive.writestr("training.pt", _tensor_bytes(training))
            archive.writestr("metadata.json", json.dumps(metadata, indent=2))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def read_agent_file(path: str | Path) -> AgentFile:
    """Read and check a saved agent.

    Raises:
        FileNotFoundError: no such file.
        AgentLoadError: not a zip, truncated, members missing or corrupt, or a tensor member
            that holds anything but tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved agent at {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [name for name in MEMBERS if name not in names]
            if missing:
                raise AgentLoadError(
                    f"{path} is not a safe-agents file: missing {missing} (has {sorted(names)})"
                )
            raw = {name: archive.read(name) for name in MEMBERS}
    except AgentLoadError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise AgentLoadError(
            f"{path} is not a readable zip (truncated or corrupt?): {error}"
        ) from error
    try:
        config = json.loads(raw["config.json"])
        metadata = json.loads(raw["metadata.json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AgentLoadError(
            f"{path}: config.json or metadata.json is not valid JSON: {error}"
        ) from error
    required = ("algorithm", "seed", "observation_space", "action_space", "hyperparameters")
    if not isinstance(config, dict) or any(key not in config for key in required):
        raise AgentLoadError(f"{path}: config.json lacks one of {required}")
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
    if not isinstance(tensors["training.pt"], dict):
        raise AgentLoadError(f"{path}: training.pt must be a dict")
    return AgentFile(config, weights, tensors["training.pt"], metadata)
