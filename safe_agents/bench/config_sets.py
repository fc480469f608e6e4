"""Config sets: a folder that says what a sweep runs, so a study is one ``safe-agents bench``.

A config set is a folder holding ``sweep.toml`` (which agents, tasks and seeds, and the settings
every run shares) and the budget files of its agents, ``<agent>.toml``
(:mod:`safe_agents.bench.budgets`)::

    # benchmarks/configs/quick/sweep.toml
    description = "Every agent on the toy task and BallRun at the quick profile."
    agents = "all"                       # or a list: ["fisor", "bc_all"]
    tasks = ["OfflineToyReachAvoid-v0", "OfflineBallRun-v0"]
    seeds = 3                            # seeds 0, 1, 2; or a list: [0, 4]
    profile = "quick"
    data_origin = "local"

Besides ``description``, ``agents``, ``tasks`` and ``seeds``, the keys are the fields of
:class:`~safe_agents.bench.settings.SweepSettings` a set may fix: ``profile``, ``episodes``,
``eval_seed``, ``n_safe_demos``, ``data_origin``, ``curve_points``, ``curve_episodes``,
``checkpoints``, ``save_agents`` and ``build_data``. Budgets live only in the ``<agent>.toml``
files.

A set with **variants** holds, besides its ``sweep.toml``, one subfolder per variant with that
variant's ``<agent>.toml`` files (and, optionally, a ``sweep.toml`` whose keys replace the
set's). Each variant is a sweep of its own, into ``<out>/<variant>``: an ablation changes a
hyperparameter of the same runs, and one sweep folder holds one budget per (agent, task). A
variant's folder given alone is a set too, with its parent's keys.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safe_agents.bench.settings import Run, SweepSettings, plan_runs
from safe_agents.common import registry

#: The file that makes a folder a config set.
SWEEP_FILE = "sweep.toml"
# The settings a set may fix: the shared ones, and how a run evaluates and keeps its work.
# ``configs`` is the set's own folder; ``overrides`` (--steps) is a smoke test, not a budget.
SET_SETTINGS = tuple(
    item.name
    for item in dataclasses.fields(SweepSettings)
    if item.name not in ("configs", "overrides")
)
_RUN_KEYS = ("description", "agents", "tasks", "seeds")


@dataclass(frozen=True)
class ConfigSet:
    """One sweep a config set names: its runs, settings and the folder of its budget files."""

    name: str  # the folder's name; ``<set>/<variant>`` for a variant
    folder: Path  # where its <agent>.toml files are
    agents: tuple[str, ...]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: dict[str, Any] = field(default_factory=dict)  # SweepSettings fields it fixes
    description: str = ""
    variant: str | None = None  # the variant's subfolder name, None for a set of its own

    def runs(self) -> list[Run]:
        """Every (agent, task, seed) of the set (:func:`~safe_agents.bench.plan_runs`)."""
        return plan_runs(self.agents, self.tasks, self.seeds)

    def sweep_settings(self, **changes: Any) -> SweepSettings:
        """The set's settings, its folder as ``configs``, with ``changes`` (the command line's)."""
        return SweepSettings(**{**self.settings, **changes, "configs": str(self.folder)})


def load_config_sets(folder: str | Path) -> list[ConfigSet]:
    """The sweeps a folder names, in order; none for a folder of budget files only.

    A folder with a ``sweep.toml`` is one set, or one per variant subfolder when it has any
    (subfolders holding ``.toml`` files). A folder whose parent has a ``sweep.toml`` is a
    variant given alone.

    Raises:
        ValueError: a malformed ``sweep.toml`` (unknown or missing keys, wrong types, unknown
            agents or tasks), or a set with variants that also holds budget files; the message
            names the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no config folder {folder}")
    own, parent = folder / SWEEP_FILE, folder.parent / SWEEP_FILE
    if parent.is_file():  # a variant given alone
        keys = {**_read(parent), **_read_optional(own)}
        name = f"{folder.parent.name}/{folder.name}"
        return [_config_set(name, folder, keys, parent, folder.name)]
    if not own.is_file():
        return []
    keys = _read(own)
    variants = sorted(
        path for path in folder.iterdir() if path.is_dir() and any(path.glob("*.toml"))
    )
    if not variants:
        return [_config_set(folder.name, folder, keys, own)]
    budgets = sorted(path.name for path in folder.glob("*.toml") if path.name != SWEEP_FILE)
    if budgets:
        raise ValueError(
            f"{folder} has variants ({', '.join(path.name for path in variants)}) and budget "
            f"files {budgets}: put each budget file in the variants it belongs to"
        )
    return [
        _config_set(
            f"{folder.name}/{path.name}",
            path,
            {**keys, **_read_optional(path / SWEEP_FILE)},
            own,
            path.name,
        )
        for path in variants
    ]


def _read(path: Path) -> dict[str, tuple[Any, Path]]:
    """``{key: (value, path)}`` of a ``sweep.toml``: where each key came from, for errors."""
    with path.open("rb") as handle:
        try:
            document = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: {error}") from error
    unknown = sorted(set(document) - {*_RUN_KEYS, *SET_SETTINGS})
    if unknown:
        allowed = ", ".join((*_RUN_KEYS, *SET_SETTINGS))
        raise ValueError(f"{path}: unknown keys {unknown} (allowed: {allowed})")
    return {key: (value, path) for key, value in document.items()}


def _read_optional(path: Path) -> dict[str, tuple[Any, Path]]:
    return _read(path) if path.is_file() else {}


def _config_set(
    name: str,
    folder: Path,
    keys: dict[str, tuple[Any, Path]],
    path: Path,
    variant: str | None = None,
) -> ConfigSet:
    """A set from ``{key: (value, file it came from)}``, every value checked; ``path`` is the
    set's own ``sweep.toml`` (its parent's for a variant), named by errors of missing keys."""

    def fail(key: str, message: str) -> ValueError:
        where = keys[key][1] if key in keys else path
        return ValueError(f"{where}: {message}")

    values = {key: value for key, (value, _) in keys.items()}
    if "tasks" not in values:
        raise fail("tasks", 'no tasks: give tasks = ["TASK_ID", ...]')
    agents = values.get("agents", "all")
    if agents == "all":
        agents = registry.list_agents()
    if not _strings(agents):
        raise fail("agents", f'agents must be "all" or a non-empty list of names, got {agents!r}')
    if not _strings(values["tasks"]):
        raise fail("tasks", f"tasks must be a non-empty list of task ids, got {values['tasks']!r}")
    seeds = values.get("seeds", 3)
    if _is_int(seeds) and seeds >= 1:
        seeds = list(range(seeds))
    elif not (
        isinstance(seeds, list)
        and seeds
        and all(_is_int(seed) and seed >= 0 for seed in seeds)
        and len(set(seeds)) == len(seeds)
    ):
        raise fail("seeds", f"seeds must be N >= 1 or a list of distinct seeds >= 0, got {seeds!r}")
    if not isinstance(values.get("description", ""), str):
        raise fail("description", "description must be a string")
    defaults = SweepSettings()
    settings = {key: values[key] for key in SET_SETTINGS if key in values}
    for key, value in settings.items():
        expected = type(getattr(defaults, key))
        if type(value) is not expected:
            raise fail(key, f"{key} must be of type {expected.__name__}, got {value!r}")
        try:
            SweepSettings(**{key: value})
        except ValueError as error:
            raise fail(key, str(error)) from error
    try:
        agents = [registry.get_agent_class(agent).name for agent in agents]
    except ValueError as error:
        raise fail("agents", str(error)) from error
    import envs

    for task in values["tasks"]:
        try:
            envs.get_task(task)
        except envs.UnknownTaskError as error:
            raise fail("tasks", str(error)) from error
    return ConfigSet(
        name=name,
        folder=folder,
        agents=tuple(dict.fromkeys(agents)),
        tasks=tuple(values["tasks"]),
        seeds=tuple(int(seed) for seed in seeds),
        settings=settings,
        description=values.get("description", ""),
        variant=variant,
    )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
