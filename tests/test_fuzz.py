"""Hostile and careless input, case by case: each must end in the package's own error naming the
problem (or work, where the input is valid), never a raw library traceback, a crash or a silently
wrong result.

Every case is a ``Case(category, name, run, expect)``: ``run()`` does one thing a user could do;
``expect`` is the package error type and a phrase its message must contain, or ``None`` when the
input is valid and ``run`` checks the result itself. ``python tests/test_fuzz.py`` prints the
table of the issue (category / cases / clear errors / raw tracebacks / crashes / silent wrong).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import envs
from envs import DatasetError, UnknownTaskError
from safe_agents import make_agent
from safe_agents.cli import main as cli_main
from safe_agents.common.serialization import AgentLoadError

TOY = "OfflineToyReachAvoid-v0"
#: The package's own errors: anything else escaping is a raw traceback.
OWN_ERRORS = (DatasetError, AgentLoadError, UnknownTaskError, ValueError, FileNotFoundError)


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    run: Callable[[], object]
    expect: tuple[type[BaseException], str] | None


_WORK = Path(tempfile.mkdtemp(prefix="safe-agents-fuzz-"))
_STATE: dict[str, object] = {}


def _toy() -> envs.OfflineDataset:
    if "toy" not in _STATE:
        _STATE["toy"] = envs.load_dataset(TOY)
    return _STATE["toy"]  # type: ignore[return-value]


def _small() -> dict[str, np.ndarray]:
    data = _toy().select(np.arange(200))
    return {name: values.copy() for name, values in data.to_dict().items()}


def _env():
    if "env" not in _STATE:
        _STATE["env"] = envs.make(TOY)
    return _STATE["env"]


def _saved_agent() -> Path:
    """A BC-All trained for a few steps and saved (the base of the checkpoint cases)."""
    if "agent" not in _STATE:
        agent = make_agent("bc_all", _env(), seed=0, hidden_sizes=[16, 16])
        agent.learn_offline(_toy(), n_steps=3)
        _STATE["agent"] = agent.save(_WORK / "base.zip")
    return _STATE["agent"]  # type: ignore[return-value]


def _members() -> dict[str, bytes]:
    with zipfile.ZipFile(_saved_agent()) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write_zip(name: str, members: dict[str, bytes]) -> Path:
    path = _WORK / name
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return path


def _tensor_bytes(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------- datasets
def _with_field(name: str, value: object) -> Callable[[], object]:
    def run() -> object:
        arrays: dict[str, object] = dict(_small())
        arrays[name] = value
        return envs.OfflineDataset.from_dict(arrays, metadata={"task_id": TOY})

    return run


def _poisoned(name: str, bad: float, row: int = 7) -> Callable[[], object]:
    def run() -> object:
        arrays = _small()
        values = arrays[name]
        if values.ndim == 2:
            values[row, 0] = bad
        else:
            values[row] = bad
        return envs.OfflineDataset.from_dict(arrays)

    return run


def _hdf5(name: str, build: Callable[[h5py.File], None]) -> Callable[[], object]:
    def run() -> object:
        path = _WORK / f"{name}.hdf5"
        with h5py.File(path, "w") as file:
            build(file)
        return envs.read_hdf5(path)

    return run


def _fields(file: h5py.File, skip: tuple[str, ...] = (), **replace: object) -> None:
    for name, values in _small().items():
        if name in skip:
            continue
        file.create_dataset(name, data=replace.get(name, values))


def _declared(shape: tuple[int, ...]) -> Callable[[h5py.File], None]:
    def build(file: h5py.File) -> None:
        _fields(file, skip=("observations",))
        # Chunked and never written: the file stays a few KB whatever the declared shape.
        file.create_dataset("observations", shape=shape, dtype="f4", chunks=(1024, shape[1]))

    return build


def _corrupt_chunk(field: str, chunk: int) -> Callable[[], object]:
    def run() -> object:
        path = _WORK / f"corrupt-{field}-{chunk}.hdf5"
        with h5py.File(path, "w") as file:
            for name, values in _small().items():
                chunks = (50, *values.shape[1:])
                file.create_dataset(name, data=values, compression="gzip", chunks=chunks)
            where = file[field].id.get_chunk_info(chunk)  # the chunk's bytes in the file
        raw = bytearray(path.read_bytes())
        start = where.byte_offset + 2  # past zlib's header: the deflate stream itself
        raw[start : start + where.size - 2] = np.random.default_rng(chunk).bytes(where.size - 2)
        path.write_bytes(bytes(raw))
        return envs.read_hdf5(path)

    return run


def _hdf5_all_rows(rows: int) -> Path:
    """Every field declares ``rows`` rows (consistent), none written: a file of a few KB."""
    path = _WORK / f"rows{rows}.hdf5"
    with h5py.File(path, "w") as file:
        for name, values in _small().items():
            shape = (rows, *values.shape[1:])
            file.create_dataset(name, shape=shape, dtype="f4", chunks=(1024, *values.shape[1:]))
    return path


def _file_bytes(name: str, content: bytes) -> Callable[[], object]:
    def run() -> object:
        path = _WORK / name
        path.write_bytes(content)
        return envs.read_hdf5(path)

    return run


def _truncated_hdf5(fraction: float) -> Callable[[], object]:
    def run() -> object:
        path = envs.save_dataset(envs.OfflineDataset.from_dict(_small()), _WORK / "full.hdf5")
        raw = path.read_bytes()
        cut = _WORK / f"cut{fraction}.hdf5"
        cut.write_bytes(raw[: int(len(raw) * fraction)])
        return envs.read_hdf5(cut)

    return run


def _attrs(**attrs: object) -> Callable[[], object]:
    def run() -> object:
        path = _WORK / "attrs.hdf5"
        with h5py.File(path, "w") as file:
            _fields(file)
            for key, value in attrs.items():
                file.attrs[key] = value
        data = envs.read_hdf5(path)
        json.dumps(data.metadata)  # valid files: the metadata must be plain JSON
        envs.save_dataset(data, _WORK / "attrs-again.hdf5")
        return data

    return run


def _without(name: str) -> Callable[[], object]:
    return lambda: envs.OfflineDataset.from_dict(
        {key: values for key, values in _small().items() if key != name}
    )


def _metadata(value: object) -> Callable[[], object]:
    def run() -> object:
        data = envs.OfflineDataset.from_dict(_small(), metadata={"key": value})
        json.dumps(data.metadata)
        return data

    return run


def dataset_cases() -> list[Case]:
    cases = []
    fields = ("observations", "actions", "rewards", "costs", "next_observations")
    for name in fields:
        for bad in (math.nan, math.inf, -math.inf):
            cases.append(
                Case("datasets", f"{name} {bad}", _poisoned(name, bad), (DatasetError, name))
            )
        for huge in (3e38, -1e30, 1e13):
            cases.append(
                Case(
                    "datasets",
                    f"{name} {huge:g}",
                    _poisoned(name, huge),
                    (DatasetError, "magnitude"),
                )
            )
        cases.append(
            Case(
                "datasets", f"{name} strings", _with_field(name, ["a"] * 200), (DatasetError, name)
            )
        )
        cases.append(
            Case(
                "datasets",
                f"{name} short",
                _with_field(name, _small()[name][:150]),
                (DatasetError, name),
            )
        )
        cases.append(
            Case(
                "datasets",
                f"{name} rank 3",
                _with_field(name, np.zeros((200, 2, 2))),
                (DatasetError, name),
            )
        )
        cases.append(
            Case(
                "datasets",
                f"{name} object",
                _with_field(name, object()),
                (DatasetError, name),
            )
        )
    for flag in ("terminals", "timeouts"):
        for bad in (0.5, 2.0, -1.0, math.nan):
            values = np.zeros(200)
            values[3] = bad
            cases.append(
                Case("datasets", f"{flag} {bad}", _with_field(flag, values), (DatasetError, flag))
            )
    for name in ("observations", "actions", "rewards", "next_observations", "terminals"):
        cases.append(Case("datasets", f"missing {name}", _without(name), (DatasetError, name)))
    cases += [
        Case(
            "datasets",
            "zero-length",
            lambda: envs.OfflineDataset.from_dict({k: v[:0] for k, v in _small().items()}),
            (DatasetError, "no transitions"),
        ),
        Case(
            "datasets",
            "unknown field",
            _with_field("rewardz", np.zeros(200)),
            (DatasetError, "rewardz"),
        ),
        Case(
            "datasets",
            "next_observations width",
            _with_field("next_observations", np.zeros((200, 3))),
            (DatasetError, "next_observations"),
        ),
        Case("datasets", "metadata np.int64", _metadata(np.int64(3)), None),
        Case("datasets", "metadata np.float32 array", _metadata(np.ones(3, np.float32)), None),
        Case("datasets", "metadata bytes", _metadata(b"caf\xc3\xa9"), None),
        Case("datasets", "metadata tuple", _metadata((1, 2)), None),
        Case("datasets", "metadata object", _metadata(object()), (DatasetError, "'key'")),
        Case("datasets", "metadata nan", _metadata(math.nan), (DatasetError, "'key'")),
        Case(
            "datasets",
            "metadata not a mapping",
            lambda: envs.OfflineDataset.from_dict(_small(), metadata=[1, 2]),  # type: ignore[arg-type]
            (DatasetError, "metadata"),
        ),
    ]
    # HDF5 files
    cases += [
        Case(
            "hdf5",
            "declares 2**40 rows",
            _hdf5("huge", _declared((2**40, 2))),
            (DatasetError, "declares"),
        ),
        Case(
            "hdf5",
            "declares 10**9 rows",
            _hdf5("big", _declared((10**9, 2))),
            (DatasetError, "declares"),
        ),
        Case(
            "hdf5",
            "declares 10**7 rows everywhere",
            lambda: envs.read_hdf5(_hdf5_all_rows(10**7), max_bytes=10**8),
            (DatasetError, "declares"),
        ),
        *[
            Case(
                "hdf5",
                f"corrupt {field} chunk {chunk}",
                _corrupt_chunk(field, chunk),
                (DatasetError, "corrupt"),
            )
            for field in ("observations", "rewards", "terminals")
            for chunk in (0, 3)
        ],
        Case(
            "hdf5",
            "not HDF5",
            _file_bytes("text.hdf5", b"hello, not hdf5" * 10),
            (DatasetError, "not a readable HDF5"),
        ),
        Case(
            "hdf5",
            "empty file",
            _file_bytes("empty.hdf5", b""),
            (DatasetError, "not a readable HDF5"),
        ),
        Case(
            "hdf5",
            "zip renamed",
            _file_bytes("zip.hdf5", _saved_agent().read_bytes()),
            (DatasetError, "not a readable HDF5"),
        ),
        Case(
            "hdf5",
            "group for a field",
            _hdf5("group", lambda f: (_fields(f, skip=("rewards",)), f.create_group("rewards"))),
            (DatasetError, "rewards"),
        ),
        Case(
            "hdf5",
            "string field",
            _hdf5("strings", lambda f: _fields(f, rewards=np.array(["x"] * 200, dtype="S1"))),
            (DatasetError, "rewards"),
        ),
        Case(
            "hdf5",
            "missing key",
            _hdf5("missing", lambda f: _fields(f, skip=("actions",))),
            (DatasetError, "actions"),
        ),
        Case(
            "hdf5",
            "zero rows",
            _hdf5("zero", lambda f: [f.create_dataset(k, data=v[:0]) for k, v in _small().items()]),
            (DatasetError, "no transitions"),
        ),
        Case(
            "hdf5",
            "nan reward",
            _hdf5("nan", lambda f: _fields(f, rewards=np.full(200, np.nan))),
            (DatasetError, "rewards"),
        ),
        Case(
            "hdf5",
            "(N, 1) rewards",
            _hdf5("column", lambda f: _fields(f, rewards=_small()["rewards"][:, None])),
            None,
        ),
        Case("hdf5", "byte-string array attribute", _attrs(names=np.array([b"a", b"b"])), None),
        Case("hdf5", "np.int64 attribute", _attrs(seed=np.int64(4)), None),
        Case("hdf5", "float array attribute", _attrs(limits=np.array([1.0, 2.0])), None),
        Case("hdf5", "json: attribute that is not JSON", _attrs(note="json:{not json"), None),
        Case(
            "hdf5",
            "deep json: attribute",
            _attrs(note="json:" + "[" * 100_000 + "]" * 100_000),
            None,
        ),
    ]
    for fraction in (0.0, 0.1, 0.5, 0.9, 0.99):
        cases.append(
            Case(
                "hdf5",
                f"truncated at {fraction:.0%}",
                _truncated_hdf5(fraction),
                (DatasetError, "HDF5"),
            )
        )
    cases.append(
        Case(
            "hdf5",
            "absent file",
            lambda: envs.read_hdf5(_WORK / "absent.hdf5"),
            (FileNotFoundError, "absent"),
        )
    )
    return cases


# ---------------------------------------------------------------------------------- checkpoints
def _load(path_fn: Callable[[], Path]) -> Callable[[], object]:
    def run() -> object:
        from safe_agents import load_agent

        return load_agent(path_fn())

    return run


def _tampered(name: str, change: Callable[[dict[str, bytes]], None]) -> Callable[[], Path]:
    def make() -> Path:
        members = _members()
        change(members)
        return _write_zip(name, members)

    return make


def _edit_json(member: str, edit: Callable[[dict], None]) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        content = json.loads(members[member])
        edit(content)
        members[member] = json.dumps(content).encode()

    return change


def _edit_tensors(member: str, edit: Callable[[dict], None]) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        content = torch.load(io.BytesIO(members[member]), weights_only=True)
        edit(content)
        members[member] = _tensor_bytes(content)

    return change


class _Evil:
    """Pickling this would run a command at load time, if the loader unpickled freely."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/safe-agents-fuzz-pwned",))


def _set(key: str, value: object) -> Callable[[dict], None]:
    def edit(content: dict) -> None:
        content[key] = value

    return edit


def _set_hyper(key: str, value: object) -> Callable[[dict], None]:
    def edit(content: dict) -> None:
        content["hyperparameters"][key] = value

    return edit


def _first_weight(edit: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    def change(weights: dict) -> None:
        key = next(k for k in weights if "weight" in k and not k.startswith("obs_scaler"))
        weights[key] = edit(weights[key])

    return change


def _adam_state(edit: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    def change(training: dict) -> None:
        for optimizer in training["optimizers"].values():
            for state in optimizer["state"].values():
                state["exp_avg"] = edit(state["exp_avg"])
                return

    return change


def _resume_from(path_fn: Callable[[], Path], n_steps: int) -> Callable[[], object]:
    def run() -> object:
        agent = make_agent("bc_all", _env(), seed=0, hidden_sizes=[16, 16])
        return agent.learn_offline(_toy(), n_steps=n_steps, resume_from=path_fn())

    return run


def _zip_bomb() -> Path:
    members = _members()
    path = _WORK / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, content in members.items():
            if member == "weights.pt":
                with archive.open(member, "w", force_zip64=True) as handle:
                    block = bytes(2**20)
                    for _ in range(64):  # 64 MiB of zeros: a few KB compressed
                        handle.write(block)
            else:
                archive.writestr(member, content)
    return path


def _big_config() -> Path:
    members = _members()
    config = json.loads(members["config.json"])
    config["padding"] = " " * (20 * 2**20)  # 20 MiB of spaces: about 20 KB compressed
    members["config.json"] = json.dumps(config).encode()
    return _write_zip("big-config.zip", members)


def _json_bomb() -> Path:
    members = _members()
    members["config.json"] = b"[" * 200_000 + b"]" * 200_000
    return _write_zip("deep.zip", members)


def checkpoint_cases() -> list[Case]:
    nested = {"a": 1}
    for _ in range(100):
        nested = {"a": nested}
    cases = [
        Case(
            "checkpoints",
            "format_version 999",
            _load(_tampered("v999.zip", _edit_json("metadata.json", _set("format_version", 999)))),
            (AgentLoadError, "format version"),
        ),
        Case(
            "checkpoints",
            "format_version missing",
            _load(
                _tampered(
                    "v-none.zip", _edit_json("metadata.json", lambda c: c.pop("format_version"))
                )
            ),
            (AgentLoadError, "format version"),
        ),
        Case(
            "checkpoints",
            "metadata is a list",
            _load(_tampered("meta-list.zip", lambda m: m.__setitem__("metadata.json", b"[1]"))),
            (AgentLoadError, "metadata.json"),
        ),
        Case(
            "checkpoints",
            "config is a list",
            _load(_tampered("config-list.zip", lambda m: m.__setitem__("config.json", b"[1]"))),
            (AgentLoadError, "config.json"),
        ),
        Case(
            "checkpoints",
            "config not JSON",
            _load(_tampered("config-bad.zip", lambda m: m.__setitem__("config.json", b"{nope"))),
            (AgentLoadError, "JSON"),
        ),
        Case(
            "checkpoints",
            "config not UTF-8",
            _load(
                _tampered("config-bin.zip", lambda m: m.__setitem__("config.json", b"\xff\xfe\x00"))
            ),
            (AgentLoadError, "JSON"),
        ),
        Case("checkpoints", "config 200k deep", _load(_json_bomb), (AgentLoadError, "JSON")),
        Case(
            "checkpoints",
            "config nested 100 deep",
            _load(_tampered("nested.zip", _edit_json("config.json", _set("extra", nested)))),
            (AgentLoadError, "nested"),
        ),
        Case(
            "checkpoints",
            "algorithm unknown",
            _load(_tampered("algo.zip", _edit_json("config.json", _set("algorithm", "nope")))),
            (ValueError, "nope"),
        ),
        Case(
            "checkpoints",
            "algorithm a number",
            _load(_tampered("algo-num.zip", _edit_json("config.json", _set("algorithm", 3)))),
            (AgentLoadError, "algorithm"),
        ),
        Case(
            "checkpoints",
            "seed a string",
            _load(_tampered("seed.zip", _edit_json("config.json", _set("seed", "zero")))),
            (AgentLoadError, "seed"),
        ),
        Case(
            "checkpoints",
            "hyperparameters a list",
            _load(
                _tampered("hyper-list.zip", _edit_json("config.json", _set("hyperparameters", [1])))
            ),
            (AgentLoadError, "hyperparameters"),
        ),
        Case(
            "checkpoints",
            "space a string",
            _load(
                _tampered("space.zip", _edit_json("config.json", _set("observation_space", "Box")))
            ),
            (AgentLoadError, "observation_space"),
        ),
        Case(
            "checkpoints",
            "space of another type",
            _load(
                _tampered(
                    "space-type.zip",
                    _edit_json("config.json", _set("action_space", {"type": "Discrete"})),
                )
            ),
            (AgentLoadError, "Box"),
        ),
        Case(
            "checkpoints",
            "training_data tampered",
            _load(
                _tampered("td.zip", _edit_json("config.json", _set("training_data", {"origin": 1})))
            ),
            (AgentLoadError, "training_data"),
        ),
        Case(
            "checkpoints",
            "num_steps -1000",
            _load(
                _tampered(
                    "steps.zip",
                    _edit_tensors("training.pt", _set("num_steps", torch.tensor(-1000))),
                )
            ),
            (AgentLoadError, "num_steps"),
        ),
        Case(
            "checkpoints",
            "num_steps a float tensor",
            _load(
                _tampered(
                    "steps-f.zip",
                    _edit_tensors("training.pt", _set("num_steps", torch.tensor(2.5))),
                )
            ),
            (AgentLoadError, "num_steps"),
        ),
        Case(
            "checkpoints",
            "NaN weight",
            _load(
                _tampered(
                    "nan.zip",
                    _edit_tensors("weights.pt", _first_weight(lambda t: t * float("nan"))),
                )
            ),
            (AgentLoadError, "non-finite"),
        ),
        Case(
            "checkpoints",
            "inf weight",
            _load(
                _tampered(
                    "inf.zip",
                    _edit_tensors("weights.pt", _first_weight(lambda t: t + float("inf"))),
                )
            ),
            (AgentLoadError, "non-finite"),
        ),
        Case(
            "checkpoints",
            "weight of another shape",
            _load(
                _tampered("shape.zip", _edit_tensors("weights.pt", _first_weight(lambda t: t[:1])))
            ),
            (AgentLoadError, "do not match"),
        ),
        Case(
            "checkpoints",
            "unknown weight",
            _load(
                _tampered(
                    "extra-w.zip", _edit_tensors("weights.pt", _set("ghost.weight", torch.zeros(2)))
                )
            ),
            (AgentLoadError, "ghost"),
        ),
        Case(
            "checkpoints",
            "weights not a dict",
            _load(
                _tampered(
                    "w-list.zip",
                    lambda m: m.__setitem__("weights.pt", _tensor_bytes([torch.zeros(2)])),
                )
            ),
            (AgentLoadError, "weights.pt"),
        ),
        Case(
            "checkpoints",
            "Adam state of another shape",
            _load(
                _tampered(
                    "adam.zip",
                    _edit_tensors("training.pt", _adam_state(lambda t: torch.zeros(3, 3, 3))),
                )
            ),
            (AgentLoadError, "optimizer"),
        ),
        Case(
            "checkpoints",
            "Adam state NaN",
            _load(
                _tampered(
                    "adam-nan.zip",
                    _edit_tensors("training.pt", _adam_state(lambda t: t * float("nan"))),
                )
            ),
            (AgentLoadError, "optimizer"),
        ),
        Case(
            "checkpoints",
            "generator state garbage",
            _load(
                _tampered(
                    "gen.zip",
                    _edit_tensors(
                        "training.pt", _set("train_generator", torch.zeros(3, dtype=torch.uint8))
                    ),
                )
            ),
            (AgentLoadError, "training state"),
        ),
        Case(
            "checkpoints",
            "optimizers missing",
            _load(_tampered("opt.zip", _edit_tensors("training.pt", _set("optimizers", {})))),
            (AgentLoadError, "optimizers"),
        ),
        Case(
            "checkpoints",
            "pickled object in weights",
            _load(
                _tampered(
                    "evil-w.zip",
                    lambda m: m.__setitem__("weights.pt", _tensor_bytes({"x": _Evil()})),
                )
            ),
            (AgentLoadError, "refuses"),
        ),
        Case(
            "checkpoints",
            "pickled object in training",
            _load(
                _tampered(
                    "evil-t.zip",
                    lambda m: m.__setitem__("training.pt", _tensor_bytes({"x": _Evil()})),
                )
            ),
            (AgentLoadError, "refuses"),
        ),
        Case(
            "checkpoints",
            "weights.pt garbage",
            _load(_tampered("garbage.zip", lambda m: m.__setitem__("weights.pt", os.urandom(500)))),
            (AgentLoadError, "weights.pt"),
        ),
        Case(
            "checkpoints",
            "64 MiB weights in a small zip",
            _load(_zip_bomb),
            (AgentLoadError, "declares"),
        ),
        Case("checkpoints", "20 MiB config.json", _load(_big_config), (AgentLoadError, "declares")),
        Case(
            "checkpoints",
            "missing member",
            _load(_tampered("missing.zip", lambda m: m.pop("training.pt"))),
            (AgentLoadError, "missing"),
        ),
        Case(
            "checkpoints",
            "not a zip",
            _load(lambda: (_WORK / "text.zip").write_bytes(b"plain text") and _WORK / "text.zip"),
            (AgentLoadError, "zip"),
        ),
        Case(
            "checkpoints",
            "truncated zip",
            _load(
                lambda: (
                    (_WORK / "cut.zip").write_bytes(_saved_agent().read_bytes()[:300])
                    and _WORK / "cut.zip"
                )
            ),
            (AgentLoadError, "zip"),
        ),
        Case(
            "checkpoints",
            "absent",
            _load(lambda: _WORK / "absent.zip"),
            (FileNotFoundError, "absent"),
        ),
        Case(
            "checkpoints",
            "load('x') of save('x')",
            _load(
                lambda: (
                    make_agent("bc_all", _env(), seed=0).save(_WORK / "named") and _WORK / "named"
                )
            ),
            None,
        ),
        Case(
            "checkpoints",
            "resume past n_steps",
            _resume_from(_saved_agent, 2),
            (ValueError, "past n_steps"),
        ),
        Case(
            "checkpoints",
            "resume with n_steps 2.5",
            _resume_from(_saved_agent, 2.5),
            (ValueError, "n_steps"),
        ),  # type: ignore[arg-type]
        Case(
            "checkpoints",
            "resume from a text file",
            _resume_from(lambda: (_WORK / "t.zip").write_bytes(b"x") and _WORK / "t.zip", 10),
            (AgentLoadError, "zip"),
        ),
        Case(
            "checkpoints",
            "hyperparameter of the wrong type",
            _load(
                _tampered("h-type.zip", _edit_json("config.json", _set_hyper("batch_size", "big")))
            ),
            (AgentLoadError, "batch_size"),
        ),
        Case(
            "checkpoints",
            "hyperparameter NaN",
            _load(
                _tampered(
                    "h-nan.zip",
                    lambda m: m.__setitem__(
                        "config.json",
                        m["config.json"].replace(
                            b'"learning_rate": 0.001', b'"learning_rate": NaN'
                        ),
                    ),
                )
            ),
            (AgentLoadError, "learning_rate"),
        ),
        Case(
            "checkpoints",
            "unknown hyperparameter",
            _load(_tampered("h-unknown.zip", _edit_json("config.json", _set_hyper("ghost", 1)))),
            (AgentLoadError, "ghost"),
        ),
    ]
    return cases


# ----------------------------------------------------------------------------- configurations
BAD_VALUES: list[tuple[str, object, str]] = [
    ("learning_rate", math.inf, "finite"),
    ("learning_rate", math.nan, "finite"),
    ("learning_rate", -1.0, "learning_rate"),
    ("learning_rate", "fast", "number"),
    ("batch_size", 2.5, "integer"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", "64", "integer"),
    ("batch_size", True, "integer"),
    ("n_steps", -5, "n_steps"),
    ("n_steps", math.inf, "integer"),
    ("normalize_observations", "maybe", "true or false"),
    ("normalize_observations", 1, "true or false"),
    ("cost_limit", math.nan, "finite"),
    ("cost_limit", -1.0, "cost_limit"),
    ("cost_limit", "ten", "number"),
]
AGENT_FIELDS: dict[str, list[tuple[str, object, str]]] = {
    "bc_all": [
        ("hidden_sizes", "64,64", "list"),
        ("hidden_sizes", [64, 2.5], "hidden_sizes[1]"),
        ("hidden_sizes", [[64]], "hidden_sizes[0]"),
    ],
    "fisor": [
        ("gamma", math.nan, "finite"),
        ("gamma", 1.5, "gamma"),
        ("critic_hidden_sizes", "wide", "list"),
        ("diffusion_steps", 0.5, "integer"),
        ("sampler", 3, "string"),
        ("actor_lr_decay_steps", 2.5, "integer"),
    ],
    "cdt": [("embedding_dim", "big", "integer"), ("target_return", "high", "number")],
    "coptidice": [("alpha", math.inf, "finite")],
}


def _configure(agent: str, key: str, value: object) -> Callable[[], object]:
    return lambda: make_agent(agent, _env(), seed=0, **{key: value})


def _cli_set(key: str, text: str) -> Callable[[], object]:
    def run() -> object:
        import contextlib

        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            code = cli_main(
                [
                    "train",
                    "bc_all",
                    "--task",
                    TOY,
                    "--steps",
                    "1",
                    "--set",
                    f"{key}={text}",
                    "--eval-episodes",
                    "0",
                    "--no-progress",
                    "--out",
                    str(_WORK / "cli"),
                ]
            )
        lines = errors.getvalue().strip().splitlines()
        if code != 2 or len(lines) != 1 or key not in lines[0]:
            raise AssertionError(f"exit code {code}, stderr {lines}: not one line naming {key}")
        raise ValueError(f"cli refused {key}={text}")

    return run


def config_cases() -> list[Case]:
    cases = []
    for agent in ("bc_all", "bc_safe", "fisor", "cpq", "drcorl"):
        for key, value, phrase in BAD_VALUES:
            lr_key = {
                "fisor": "actor_learning_rate",
                "cpq": "actor_learning_rate",
                "drcorl": "actor_learning_rate",
            }.get(agent, "learning_rate")
            field = lr_key if key == "learning_rate" else key
            shown = phrase if phrase != "learning_rate" else field
            cases.append(
                Case(
                    "configs",
                    f"{agent} {field}={value!r}",
                    _configure(agent, field, value),
                    (ValueError, shown),
                )
            )
    for agent, fields in AGENT_FIELDS.items():
        for key, value, phrase in fields:
            cases.append(
                Case(
                    "configs",
                    f"{agent} {key}={value!r}",
                    _configure(agent, key, value),
                    (ValueError, phrase),
                )
            )
    cases.append(
        Case(
            "configs",
            "unknown preset",
            lambda: make_agent("fisor", _env(), preset="gpu"),
            (ValueError, "preset"),
        )
    )
    cases.append(
        Case(
            "configs",
            "unknown key",
            lambda: make_agent("fisor", _env(), colour=1),
            (ValueError, "colour"),
        )
    )
    cases.append(
        Case(
            "configs",
            "integral float n_steps",
            lambda: make_agent("bc_all", _env(), n_steps=1e3),
            None,
        )
    )
    for key, text in (
        ("hidden_sizes", "64,64"),
        ("batch_size", "2.5"),
        ("normalize_observations", "maybe"),
        ("learning_rate", "Infinity"),
        ("learning_rate", "NaN"),
        ("n_steps", "-3"),
        ("hidden_sizes", '[64,"a"]'),
        ("cost_limit", "[1]"),
    ):
        cases.append(
            Case(
                "configs",
                f"cli --set {key}={text}",
                _cli_set(key, text),
                (ValueError, "cli refused"),
            )
        )
    return cases


# ------------------------------------------------------------------------------ runtime inputs
def _trained(name: str) -> object:
    key = f"trained-{name}"
    if key not in _STATE:
        hyper: dict[str, object] = {"hidden_sizes": [16, 16]} if name.startswith("bc") else {}
        if name == "drcorl":
            hyper["pretrain_steps"] = 1  # it extracts its policy after pretraining
        agent = make_agent(name, _env(), seed=0, preset="cpu", **hyper)
        agent.learn_offline(_toy(), n_steps=2)
        _STATE[key] = agent
    return _STATE[key]


def _predict(agent: str, obs: object) -> Callable[[], object]:
    return lambda: _trained(agent).predict(obs, deterministic=True)


def _nan_policy_evaluation() -> object:
    report = envs.evaluate(lambda obs: np.array([np.nan, np.nan]), _env(), n_episodes=1)
    return report


def _diverged_agent_prediction() -> object:
    agent = make_agent("bc_all", _env(), seed=0, hidden_sizes=[8, 8])
    agent.learn_offline(_toy(), n_steps=1)
    with torch.no_grad():
        for parameter in agent.parameters_dict().values():
            if parameter.is_floating_point() and parameter.dim() == 2:
                parameter.fill_(float("nan"))
    return agent.predict(np.zeros(2, np.float32), deterministic=True)


def _filter(
    score: Callable, candidates: Callable | None = None, n: int = 4
) -> Callable[[], object]:
    def run() -> object:
        shielded = envs.SafetyFilter(
            envs.make(TOY), candidates=candidates, score=score, n=n, seed=0
        )
        shielded.reset(seed=0)
        _, _, _, _, info = shielded.step(np.zeros(2, np.float32))
        chosen = info["safety_filter"]["chosen_score"]
        if not math.isfinite(chosen):
            raise AssertionError(f"executed a candidate of unknown safety ({chosen})")
        return info

    return run


def _make(**kwargs: object) -> Callable[[], object]:
    return lambda: envs.make(TOY, **kwargs)


def runtime_cases() -> list[Case]:
    cases = []
    for agent in ("bc_all", "fisor", "drcorl", "cdt"):
        for name, obs, phrase in (
            ("NaN", np.array([np.nan, 0.0]), "finite"),
            ("inf", np.array([np.inf, 0.0]), "finite"),
            ("wrong width", np.zeros(3), "shape"),
            ("wrong rank", np.zeros((2, 2, 2)), "shape"),
            ("strings", np.array(["a", "b"]), "numeric"),
            ("empty", np.zeros((0, 2)), "empty"),
            ("1e30", np.array([1e30, -1e30]), "magnitude"),
            ("a dict", {"x": 1}, "numeric"),
        ):
            cases.append(
                Case(
                    "runtime", f"{agent} predict {name}", _predict(agent, obs), (ValueError, phrase)
                )
            )
    cases += [
        Case(
            "runtime",
            "evaluate a NaN policy",
            _nan_policy_evaluation,
            (ValueError, "non-finite action"),
        ),
        Case(
            "runtime",
            "evaluate a policy of the wrong width",
            lambda: envs.evaluate(lambda o: np.zeros(5), _env(), 1),
            (ValueError, "shape"),
        ),
        Case(
            "runtime",
            "evaluate 0 episodes",
            lambda: envs.evaluate(lambda o: np.zeros(2), _env(), 0),
            (ValueError, "n_episodes"),
        ),
        Case(
            "runtime",
            "predict of diverged weights",
            _diverged_agent_prediction,
            (ValueError, "non-finite action"),
        ),
        Case(
            "runtime",
            "filter NaN proposed score",
            _filter(lambda o, a: np.array([np.nan, 1.0, 2.0, 3.0])),
            None,
        ),
        Case(
            "runtime",
            "filter all scores NaN",
            _filter(lambda o, a: np.full(4, np.nan)),
            (ValueError, "non-finite"),
        ),
        Case(
            "runtime",
            "filter NaN candidate",
            _filter(
                lambda o, a: np.where(np.isnan(a).any(1), -9.0, 1.0),
                candidates=lambda o, n: np.full((n, 2), np.nan),
            ),
            None,
        ),
        Case(
            "runtime",
            "filter score of the wrong shape",
            _filter(lambda o, a: np.zeros(3)),
            (ValueError, "one score per candidate"),
        ),
        Case(
            "runtime",
            "filter sampler of the wrong shape",
            _filter(lambda o, a: np.zeros(4), candidates=lambda o, n: np.zeros((n, 5))),
            (ValueError, "sampler"),
        ),
        Case(
            "runtime",
            "filter n=1",
            lambda: envs.SafetyFilter(envs.make(TOY), score=lambda o, a: a[:, 0], n=1),
            (ValueError, "n must"),
        ),
        Case(
            "runtime",
            "filter NaN threshold",
            lambda: envs.SafetyFilter(
                envs.make(TOY), score=lambda o, a: a[:, 0], threshold=math.nan
            ),
            (ValueError, "threshold"),
        ),
        Case(
            "runtime",
            "filter NaN action",
            lambda: (lambda f: (f.reset(seed=0), f.step(np.array([np.nan, 0.0]))))(
                envs.SafetyFilter(envs.make(TOY), score=lambda o, a: a[:, 0])
            ),
            (ValueError, "finite action"),
        ),
        Case(
            "runtime",
            "max_episode_steps 0",
            _make(max_episode_steps=0),
            (ValueError, "max_episode_steps"),
        ),
        Case(
            "runtime",
            "max_episode_steps -5",
            _make(max_episode_steps=-5),
            (ValueError, "max_episode_steps"),
        ),
        Case(
            "runtime",
            "max_episode_steps 2.7",
            _make(max_episode_steps=2.7),
            (ValueError, "max_episode_steps"),
        ),
        Case(
            "runtime",
            "max_episode_steps True",
            _make(max_episode_steps=True),
            (ValueError, "max_episode_steps"),
        ),
        Case(
            "runtime",
            "max_episode_steps '5'",
            _make(max_episode_steps="5"),
            (ValueError, "max_episode_steps"),
        ),
        Case(
            "runtime",
            "unknown task",
            lambda: envs.make("OfflineBallRn-v0"),
            (UnknownTaskError, "Did you mean"),
        ),
        Case(
            "runtime",
            "unknown origin",
            lambda: envs.load_dataset(TOY, origin="web"),
            (ValueError, "origin"),
        ),
        Case(
            "runtime",
            "learn_offline n_steps 0",
            lambda: make_agent("bc_all", _env(), seed=0).learn_offline(_toy(), n_steps=0),
            (ValueError, "n_steps"),
        ),
        Case(
            "runtime",
            "learn_offline n_steps 2.5",
            lambda: make_agent("bc_all", _env(), seed=0).learn_offline(_toy(), n_steps=2.5),
            (ValueError, "n_steps"),
        ),
        Case(
            "runtime",
            "learn_offline on a list",
            lambda: make_agent("bc_all", _env(), seed=0).learn_offline([1, 2], n_steps=1),
            (TypeError, "dataset"),
        ),
        Case(
            "runtime",
            "learn_offline on data of another width",
            lambda: make_agent("bc_all", _env(), seed=0).learn_offline(
                envs.load_dataset("OfflineBallRun-v0"), n_steps=1
            ),
            (DatasetError, "columns"),
        ),
        Case(
            "runtime",
            "learn_offline on huge observations",
            lambda: make_agent("bc_all", _env(), seed=0).learn_offline(
                {
                    **_small(),
                    "observations": _small()["observations"] * 1e11,
                    "next_observations": _small()["next_observations"] * 1e11,
                },
                n_steps=1,
            ),
            None,
        ),
    ]
    return cases


def _unbounded_agent_round_trip() -> object:
    """Safety-Gymnasium's observation spaces are Box(-inf, inf): such an agent must save."""
    import gymnasium as gym

    from safe_agents import load_agent

    space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    agent = make_agent("bc_all", observation_space=space, action_space=_env().action_space, seed=0)
    agent.learn_offline(_toy(), n_steps=1)
    loaded = load_agent(agent.save(_WORK / "unbounded.zip"))
    if not np.isinf(loaded.observation_space.high).all():
        raise AssertionError("the infinite bounds did not survive the round trip")
    return loaded


def _bit_flipped(member: str) -> Path:
    path = _WORK / f"flipped-{member}.zip"
    path.write_bytes(_saved_agent().read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for offset in range(start + 5, start + min(info.compress_size, 60)):
        raw[offset] ^= 0xFF  # inside the member's compressed bytes
    path.write_bytes(bytes(raw))
    return path


def _resume_refused_leaves_agent() -> object:
    agent = make_agent("bc_all", _env(), seed=5, hidden_sizes=[16, 16])
    before = {k: v.clone() for k, v in agent.parameters_dict().items()}
    try:
        agent.learn_offline(_toy(), n_steps=2, resume_from=_saved_agent())
    except ValueError as error:
        after = agent.parameters_dict()
        if agent.num_steps != 0 or any(not torch.equal(before[k], after[k]) for k in before):
            raise AssertionError("a refused resume changed the agent") from error
        raise
    return agent


def _limit_variable(value: str) -> Callable[[], object]:
    def run() -> object:
        saved = os.environ.get("SAFE_AGENTS_MAX_DATASET_BYTES")
        os.environ["SAFE_AGENTS_MAX_DATASET_BYTES"] = value
        try:
            return envs.load_dataset(TOY)
        finally:
            if saved is None:
                del os.environ["SAFE_AGENTS_MAX_DATASET_BYTES"]
            else:
                os.environ["SAFE_AGENTS_MAX_DATASET_BYTES"] = saved

    return run


def _big_attribute() -> object:
    path = _WORK / "attribute.hdf5"
    with h5py.File(path, "w", libver="latest") as file:  # dense storage: attributes > 64 KB
        _fields(file)
        file.attrs["blob"] = np.zeros(5 * 2**20)  # 40 MiB of metadata
    return envs.read_hdf5(path)


def review_cases() -> list[Case]:
    return [
        Case("checkpoints", "unbounded observation space", _unbounded_agent_round_trip, None),
        Case(
            "checkpoints",
            "bit flips in weights.pt",
            _load(lambda: _bit_flipped("weights.pt")),
            (AgentLoadError, "flipped"),
        ),
        Case(
            "checkpoints",
            "bit flips in config.json",
            _load(lambda: _bit_flipped("config.json")),
            (AgentLoadError, "flipped"),
        ),
        Case(
            "checkpoints",
            "Adam step NaN",
            _load(
                _tampered("step-nan.zip", _edit_tensors("training.pt", _adam_key("step", math.nan)))
            ),
            (AgentLoadError, "optimizer"),
        ),
        Case(
            "checkpoints",
            "Adam step -5",
            _load(_tampered("step-neg.zip", _edit_tensors("training.pt", _adam_key("step", -5.0)))),
            (AgentLoadError, "optimizer"),
        ),
        Case(
            "checkpoints",
            "learning rate NaN in the optimizer",
            _load(
                _tampered(
                    "lr-nan.zip", _edit_tensors("training.pt", _group_setting("lr", math.nan))
                )
            ),
            (AgentLoadError, "optimizer"),
        ),
        Case(
            "checkpoints",
            "a refused resume leaves the agent as it was",
            _resume_refused_leaves_agent,
            (ValueError, "past n_steps"),
        ),
        Case(
            "configs",
            "np.int64 batch_size",
            lambda: make_agent("bc_all", _env(), batch_size=np.int64(64)),
            None,
        ),
        Case(
            "configs",
            "np.float32 learning_rate",
            lambda: make_agent("bc_all", _env(), learning_rate=np.float32(1e-3)),
            None,
        ),
        Case(
            "configs",
            "10**400 learning_rate",
            lambda: make_agent("bc_all", _env(), learning_rate=10**400),
            (ValueError, "finite"),
        ),
        Case(
            "hdf5",
            "40 MiB attribute",
            _big_attribute,
            (DatasetError, "attribute"),
        ),
        Case(
            "hdf5",
            "limit variable 'inf'",
            _limit_variable("inf"),
            (ValueError, "SAFE_AGENTS_MAX_DATASET_BYTES"),
        ),
        Case(
            "hdf5",
            "limit variable '0'",
            _limit_variable("0"),
            (ValueError, "SAFE_AGENTS_MAX_DATASET_BYTES"),
        ),
        Case(
            "hdf5",
            "limit variable 'lots'",
            _limit_variable("lots"),
            (ValueError, "SAFE_AGENTS_MAX_DATASET_BYTES"),
        ),
        Case(
            "hdf5",
            "limit variable below the file",
            _limit_variable("1000"),
            (DatasetError, "declares"),
        ),
    ]


def _adam_key(key: str, value: float) -> Callable[[dict], None]:
    def change(training: dict) -> None:
        for optimizer in training["optimizers"].values():
            for state in optimizer["state"].values():
                state[key] = torch.tensor(value)
                return

    return change


def _group_setting(key: str, value: float) -> Callable[[dict], None]:
    def change(training: dict) -> None:
        for optimizer in training["optimizers"].values():
            optimizer["param_groups"][0][key] = value
            return

    return change


ALL_CASES = dataset_cases() + checkpoint_cases() + config_cases() + runtime_cases() + review_cases()


def outcome(case: Case) -> tuple[str, str]:
    """``(kind, detail)``: kind is ``clear``, ``ok``, ``raw traceback`` or ``silent wrong``."""
    try:
        case.run()
    except AssertionError as error:
        return "silent wrong", str(error)
    except BaseException as error:  # noqa: BLE001 - classifying is the point
        if case.expect is None:
            return "raw traceback", f"{type(error).__name__}: {error}"[:300]
        kind, phrase = case.expect
        own = isinstance(error, kind) and (isinstance(error, OWN_ERRORS) or kind is TypeError)
        if own and phrase.lower() in str(error).lower():
            return "clear", f"{type(error).__name__}: {error}"[:300]
        return "raw traceback", f"{type(error).__name__}: {error}"[:300]
    if case.expect is not None:
        return "silent wrong", "no error"
    return "ok", ""


@pytest.mark.parametrize("case", ALL_CASES, ids=[f"{c.category}:{c.name}" for c in ALL_CASES])
def test_case(case: Case) -> None:
    kind, detail = outcome(case)
    assert kind in ("clear", "ok"), f"{kind}: {detail}"


def test_nothing_ran_code_from_a_file() -> None:
    assert not Path("/tmp/safe-agents-fuzz-pwned").exists()


def table() -> str:
    """The issue's table, measured now."""
    rows: dict[str, dict[str, int]] = {}
    failures = []
    for case in ALL_CASES:
        kind, detail = outcome(case)
        counts = rows.setdefault(
            case.category,
            {"cases": 0, "clear": 0, "ok": 0, "raw traceback": 0, "crash": 0, "silent wrong": 0},
        )
        counts["cases"] += 1
        counts[kind] += 1
        if kind not in ("clear", "ok"):
            failures.append(f"- {case.category}: {case.name}: {kind}: {detail}")
    columns = ("cases", "clear", "ok", "raw traceback", "crash", "silent wrong")
    lines = [
        "| category | cases | clear errors | valid input handled | raw tracebacks | crashes "
        "| silent wrong |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows["all"] = {key: sum(counts[key] for counts in rows.values()) for key in columns}
    for category, counts in rows.items():
        lines.append(f"| {category} | " + " | ".join(str(counts[k]) for k in columns) + " |")
    return "\n".join(lines + [""] + failures)


if __name__ == "__main__":
    print(table())
    sys.exit(0)


# ------------------------------------------------------------------------------ kill and resume
_TRAIN = """
import sys
import envs
from safe_agents import BCAll, CheckpointCallback
checkpoints, logs = sys.argv[1], sys.argv[2]
BCAll(envs.make("{task}"), seed=0, hidden_sizes=[16, 16]).learn_offline(
    envs.load_dataset("{task}"), n_steps=1_000_000, log_dir=logs, log_interval=50,
    callback=CheckpointCallback(100, checkpoints),
)
"""


def test_a_training_killed_with_sigkill_resumes_bit_identically_with_whole_logs(tmp_path):
    import signal
    import subprocess
    import time

    from safe_agents import BCAll

    checkpoints, logs = tmp_path / "checkpoints", tmp_path / "logs"
    script = tmp_path / "train.py"
    script.write_text(_TRAIN.format(task=TOY))
    process = subprocess.Popen([sys.executable, str(script), str(checkpoints), str(logs)])
    try:
        deadline = time.monotonic() + 240
        while len(list(checkpoints.glob("*.zip"))) < 3 and time.monotonic() < deadline:
            assert process.poll() is None, "the training process ended early"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert len(list(checkpoints.glob("*.zip"))) >= 3, "no checkpoints within the wait"
    steps = sorted(int(path.stem.split("_")[1]) for path in checkpoints.glob("agent_*_steps.zip"))
    last = steps[-1]
    target = last + 150
    resumed = BCAll(_env(), seed=0, hidden_sizes=[16, 16]).learn_offline(
        _toy(),
        n_steps=target,
        resume_from=checkpoints / f"agent_{last}_steps.zip",
        log_dir=logs,
        log_interval=50,
    )
    straight = BCAll(_env(), seed=0, hidden_sizes=[16, 16]).learn_offline(_toy(), n_steps=target)
    for name, tensor in straight.parameters_dict().items():
        assert torch.equal(tensor, resumed.parameters_dict()[name]), name
    # The logs hold every logged step exactly once: the killed run's up to the checkpoint
    # (rows past it dropped), then the resumed run's.
    import csv

    with open(logs / "progress.csv", newline="") as handle:
        logged = [int(float(row["step"])) for row in csv.DictReader(handle)]
    assert logged == list(range(50, target + 1, 50)), logged
    jsonl = [
        json.loads(line)["step"] for line in (logs / "progress.jsonl").read_text().splitlines()
    ]
    assert jsonl == list(range(50, target + 1, 50))


def test_a_negative_first_moment_of_a_scalar_parameter_resumes_and_a_negative_second_is_refused(
    tmp_path,
):
    # COptiDICE's dual variable is a scalar, and its Adam first moment may be negative: the
    # suite's MetaDrive run of COptiDICE was once refused on resume for it.
    agent = make_agent("coptidice", _env(), seed=0, preset="cpu")
    agent.learn_offline(_toy(), n_steps=4)
    state = agent.optimizers["duals"].state
    assert state and all(moments["exp_avg"].dim() == 0 for moments in state.values())
    for moments in state.values():
        moments["exp_avg"].fill_(-0.5)
    resumed = make_agent("coptidice", _env(), seed=0, preset="cpu")
    resumed.learn_offline(_toy(), n_steps=6, resume_from=agent.save(tmp_path / "negative.zip"))
    assert resumed.num_steps == 6
    for moments in state.values():
        moments["exp_avg_sq"].fill_(-0.5)
    refused = make_agent("coptidice", _env(), seed=0, preset="cpu")
    with pytest.raises(AgentLoadError, match="'exp_avg_sq' is negative"):
        refused.learn_offline(_toy(), n_steps=6, resume_from=agent.save(tmp_path / "bad.zip"))
