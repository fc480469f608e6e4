"""Timings the benchmark scripts measure beside the sweeps: training rate and predict latency."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def steps_per_second(
    agent_class: Any,
    env: Any,
    data: Any,
    steps: int,
    planned_steps: int | None = None,
    **kwargs: Any,
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


def latency_ms(agent: Any, batch: int, repeats: int = 20) -> float:
    """Milliseconds per deterministic ``predict`` of ``batch`` observations (1: a single one)."""
    shape = (batch, agent.obs_dim) if batch > 1 else (agent.obs_dim,)
    obs = np.zeros(shape, dtype=np.float32)
    agent.predict(obs, deterministic=True)
    start = time.perf_counter()
    for _ in range(repeats):
        agent.predict(obs, deterministic=True)
    return 1000 * (time.perf_counter() - start) / repeats
