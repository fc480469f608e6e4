"""Each run's budget: the agent's preset for the profile, then its ``<agent>.toml`` file.

The presets live with each agent's config (``XConfig.presets``); a profile names the preset it
runs (:data:`~safe_agents.bench.settings.PROFILE_PRESETS`). A TOML file per agent in the sweep's
configs folder, ``<configs>/<agent>.toml``, overrides the preset: for every profile, per profile
and per task within a profile; later layers win::

    [hyperparameters]          # every profile: a variant of the agent (an ablation)
    cost_limit = 10.0

    [quick]
    n_steps = 5000

    [quick.hyperparameters]
    batch_size = 128

    [tasks."OfflineBallRun-v0".quick.hyperparameters]
    gamma = 0.99
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from safe_agents.bench.settings import PROFILE_PRESETS, SweepSettings
from safe_agents.common import registry

#: Hyperparameters that are the lengths of an agent's training stages before its policy stage.
STAGE_STEPS = ("pretrain_steps", "discriminator_steps", "diffusion_train_steps")

# The tables an <agent>.toml may hold at its top, and within a task.
_FILE_KEYS = ("hyperparameters", *PROFILE_PRESETS, "tasks")


def budget(agent: str, task: str, settings: SweepSettings) -> tuple[int, dict[str, Any]]:
    """``(n_steps, hyperparameters)`` of ``agent`` on ``task`` under the sweep's profile.

    The agent's preset for the profile first (:data:`PROFILE_PRESETS`; the full profile is the
    agent's defaults, ``n_steps`` included), then ``[hyperparameters]`` of
    ``<configs>/<agent>.toml`` (every profile), its ``[<profile>]``, then its
    ``[tasks."<task>".<profile>]``; later ones override earlier keys.

    Raises:
        ValueError: a malformed file, or keys or tables it may not hold, naming the file.
    """
    preset = dict(
        registry.get_agent_class(agent).config_class.presets.get(
            PROFILE_PRESETS[settings.profile], {}
        )
    )
    layers = [{"n_steps": preset.pop("n_steps", None), "hyperparameters": preset}]
    if settings.configs is not None:
        path = Path(settings.configs) / f"{agent}.toml"
        if path.is_file():
            document = _read_agent_file(path)
            layers.append({"hyperparameters": document.get("hyperparameters", {})})
            layers.append(document.get(settings.profile, {}))
            layers.append(document.get("tasks", {}).get(task, {}).get(settings.profile, {}))
    n_steps = None
    hyperparameters: dict[str, Any] = {}
    for layer in layers:
        unknown = set(layer) - {"n_steps", "hyperparameters"}
        if unknown:
            raise ValueError(f"{agent} budget: unknown keys {sorted(unknown)}")
        n_steps = layer.get("n_steps") or n_steps
        hyperparameters.update(layer.get("hyperparameters", {}))
    if agent == "drcorl" and "gamma" not in hyperparameters and settings.profile == "quick":
        # DRCORL's episode-cost estimate needs 1 / (1 - gamma) well under the episode length
        # (see its docstring): 0.95 on short episodes, the paper's 0.99 on long ones.
        import envs

        long_episodes = envs.get_task(task).max_episode_steps > 100
        hyperparameters["gamma"] = 0.99 if long_episodes else 0.95
    defaults = registry.get_agent_class(agent).config_class()
    if n_steps is None:
        n_steps = defaults.n_steps
    if "n_steps" in settings.overrides:
        planned, n_steps = int(n_steps), int(settings.overrides["n_steps"])
        # A staged agent (DRCORL's pretraining; DSPO's discriminator and generator) keeps each
        # stage's share of a shortened run, so the run still reaches its policy stage.
        stages = {
            name: int(hyperparameters.get(name, getattr(defaults, name)))
            for name in STAGE_STEPS
            if hasattr(defaults, name)
        }
        if stages and n_steps <= len(stages):
            names = ", ".join(stages)
            raise ValueError(
                f"{agent} trains in {len(stages) + 1} stages ({names}, then the policy): "
                f"n_steps={n_steps} is too short, give at least {len(stages) + 1}"
            )
        for name, steps in stages.items():
            hyperparameters[name] = max(1, n_steps * steps // planned) if steps else 0
    return int(n_steps), hyperparameters


def _read_agent_file(path: Path) -> dict[str, Any]:
    """An ``<agent>.toml``, its tables checked (their contents are checked layer by layer)."""
    with path.open("rb") as handle:
        try:
            document = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: {error}") from error
    allowed = ", ".join(_FILE_KEYS)
    unknown = sorted(set(document) - set(_FILE_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown} (allowed: {allowed})")
    for key in _FILE_KEYS:
        if key in document and not isinstance(document[key], dict):
            raise ValueError(f"{path}: {key} must be a table, got {document[key]!r}")
    for task, tables in document.get("tasks", {}).items():
        extra = sorted(set(tables) - set(PROFILE_PRESETS)) if isinstance(tables, dict) else None
        if extra is None or extra:
            raise ValueError(
                f"{path}: [tasks.{task!r}] may hold only profile tables "
                f"({', '.join(PROFILE_PRESETS)}), got {extra if extra else tables!r}"
            )
    return document
