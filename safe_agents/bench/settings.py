"""What a sweep is made of: its runs (agent, task, seed), the settings they share, and profiles."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from safe_agents.common import registry
from safe_agents.common.config import CPU, PAPER

EVAL_SEED = 1000
#: Seed of the first episode of each learning-curve point: apart from the final evaluation's.
CURVE_SEED = 5000


class SweepError(ValueError):
    """A sweep that cannot start as asked (a folder in use or swept with other settings, an
    unreachable Ray cluster): the command line prints it as one line."""


# A profile names the agents' preset it runs (``XConfig.presets``, the one place sizes live):
# quick runs the cpu presets (reduced networks, thousands of steps), full the papers' defaults.
PROFILE_PRESETS: dict[str, str] = {"quick": CPU, "full": PAPER}


@dataclass(frozen=True)
class Run:
    """One cell of a sweep for one seed."""

    agent: str
    task: str
    seed: int

    @property
    def key(self) -> str:
        """The row's file stem: ``<agent>__<task>__seed<seed>``."""
        return f"{self.agent}__{self.task}__seed{self.seed}"


@dataclass
class SweepSettings:
    """What every run of a sweep shares."""

    profile: str = "quick"
    episodes: int = 10
    eval_seed: int = EVAL_SEED
    configs: str | None = None  # folder of <agent>.toml overrides
    save_agents: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)  # {"n_steps": ...} for every run
    n_safe_demos: int = 10  # for agents that learn without cost labels (DSPO; the paper's 10-15)
    data_origin: str = "auto"  # which data a task id means (envs.load_dataset's origin)
    # A learning curve: the current iterate evaluated curve_points times per run (every
    # n_steps // curve_points steps) on curve_episodes episodes from CURVE_SEED, apart from the
    # final evaluation's seeds; 0: no curve. It changes neither training nor the final row.
    curve_points: int = 0
    curve_episodes: int = 3
    # Checkpoints per run (every n_steps // checkpoints steps) in <out>/work/<run>/: a killed
    # sweep resumes each unfinished run from its last one and ends as if never stopped.
    checkpoints: int = 10
    # Build the benchmark datasets the sweep's tasks lack, with their recipes
    # (envs.collect.recipes), before the first run; it changes no row.
    build_data: bool = False

    def __post_init__(self) -> None:
        if self.profile not in ("quick", "full"):
            raise ValueError(f"profile must be 'quick' or 'full', got {self.profile!r}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.n_safe_demos < 1:
            raise ValueError(f"n_safe_demos must be >= 1, got {self.n_safe_demos}")
        if self.data_origin not in ("auto", "local", "dsrl"):
            raise ValueError(f"data_origin must be auto, local or dsrl, got {self.data_origin!r}")
        for name in ("curve_points", "checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.curve_episodes < 1:
            raise ValueError(f"curve_episodes must be >= 1, got {self.curve_episodes}")


def plan_runs(agents: Sequence[str], tasks: Sequence[str], seeds: Iterable[int]) -> list[Run]:
    """Every (agent, task, seed), agents and tasks checked against their registries.

    In the order a sweep starts them: task by task, within a task seed by seed, every agent at
    each seed, so a sweep stopped part-way has finished mostly whole tasks, ready to compare.
    Agent names are normalized to the registered ones (``bc-safe`` -> ``bc_safe``).

    Raises:
        ValueError: an unknown agent name, listing the registered ones.
        envs.UnknownTaskError: an unknown task id.
    """
    import envs

    names = [registry.get_agent_class(name).name for name in agents]
    for task in tasks:
        envs.get_task(task)
    return [Run(a, t, int(s)) for t, s, a in itertools.product(tasks, seeds, names)]
