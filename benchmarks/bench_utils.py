"""Helpers shared by the benchmark scripts: report rows, training speed, predict latency."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from safe_agents.common.fileio import atomic_write


def cpu_budget(name: str) -> tuple[int, dict]:
    """``(n_steps, hyperparameters)`` of an agent's ``cpu`` preset (the one place sizes live)."""
    from safe_agents import get_agent_class

    preset = dict(get_agent_class(name).config_class.presets["cpu"])
    return int(preset.pop("n_steps")), preset


SUMMARY_KEYS = ("mean_return", "mean_cost", "mean_normalized_return", "mean_normalized_cost")


def summary(report: dict) -> dict:
    """The means of an ``envs.evaluate`` report, rounded."""
    return {key: round(report[key], 4) for key in SUMMARY_KEYS}


def mean_std_over_seeds(rows: dict[str, list[dict]]) -> dict:
    """``{agent: {metric: [mean, std]}}`` over the per-seed rows."""
    return {
        name: {
            key: [
                float(np.mean([row[key] for row in values])),
                float(np.std([row[key] for row in values])),
            ]
            for key in values[0]
        }
        for name, values in rows.items()
        if values
    }


def steps_per_second(
    agent_class, env, data, steps: int, planned_steps: int | None = None, **kwargs
) -> float:
    """Gradient steps per second after a 5-step warm-up.

    ``planned_steps`` is the run's length as the agent plans it (default: warm-up + ``steps``);
    the timed part stops after ``steps`` (DRCORL refuses a run that ends inside pretraining, so
    its pretraining is timed as the first steps of a longer planned run).
    """
    from safe_agents.common.callbacks import StopAfterSteps

    total = max(planned_steps or 0, 5 + steps)
    agent = agent_class(env, seed=0, **kwargs)
    agent.learn_offline(data, n_steps=total, callback=StopAfterSteps(5), log_interval=5)
    start = time.perf_counter()
    agent.learn_offline(data, n_steps=total, callback=StopAfterSteps(5 + steps), log_interval=steps)
    return steps / (time.perf_counter() - start)


def latency_ms(agent, batch: int, repeats: int = 20) -> float:
    """Milliseconds per deterministic ``predict`` of ``batch`` observations (1: a single one)."""
    shape = (batch, agent.obs_dim) if batch > 1 else (agent.obs_dim,)
    obs = np.zeros(shape, dtype=np.float32)
    agent.predict(obs, deterministic=True)
    start = time.perf_counter()
    for _ in range(repeats):
        agent.predict(obs, deterministic=True)
    return 1000 * (time.perf_counter() - start) / repeats


def write_result(path: str | Path, result: dict) -> Path:
    """Write a benchmark's JSON result (creating the folder, atomically) and return its path."""
    return atomic_write(path, json.dumps(result, indent=2))
