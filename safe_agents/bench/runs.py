"""One run: train an agent on a task's data, evaluate its final iterate, return its row.

:func:`execute` serves a local worker process and a Ray worker alike: it writes nothing the
caller sees except the run's checkpoints in its work folder, from which a killed run resumes,
and the learning curve it records on the way (:class:`_RunStages`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safe_agents.bench.budgets import budget
from safe_agents.bench.folder import SHARED_SETTINGS, _as_json, _budget_record
from safe_agents.bench.rows import _write_json_atomically
from safe_agents.bench.settings import CURVE_SEED, PROFILE_PRESETS, Run, SweepSettings
from safe_agents.common import registry
from safe_agents.common.callbacks import BaseCallback

logger = logging.getLogger(__name__)

_PER_EPISODE = ("return", "cost", "length", "normalized_return", "normalized_cost")


class _RunStages:
    """One run's learning curve and checkpoints, and where a killed run resumes.

    ``<work_dir>/checkpoint.zip`` is the agent at its last checkpoint; ``<work_dir>/run.json``
    holds the budget and shared settings it was trained under, the curve so far and the
    training seconds spent. A checkpoint of another budget or other settings is discarded.
    """

    def __init__(
        self, run: Run, settings: SweepSettings, n_steps: int, work_dir: str | Path | None
    ) -> None:
        import envs
        from safe_agents.common.callbacks import EvalCallback

        self.run, self.settings, self.n_steps = run, settings, n_steps
        self.work_dir = Path(work_dir) if work_dir is not None and settings.checkpoints else None
        self.resume_from: Path | None = None
        self.resumed_step = 0
        self.seconds_before = 0.0
        self.curve: EvalCallback | None = None
        self._curve_env: Any = None
        self._started = time.perf_counter()
        self._identity = {
            "budget": _budget_record(run, settings),
            "settings": {name: _as_json(getattr(settings, name)) for name in SHARED_SETTINGS},
            "curve_episodes": settings.curve_episodes,
        }
        if settings.curve_points:
            self._curve_env = envs.make(run.task)
            self.curve = EvalCallback(self._curve_point, max(1, n_steps // settings.curve_points))
        if self.work_dir is not None:
            self._find_checkpoint()

    def _curve_point(self, agent: Any) -> dict[str, float]:
        import envs

        report = envs.evaluate(agent, self._curve_env, self.settings.curve_episodes, CURVE_SEED)
        keys = ("return", "cost", "normalized_return", "normalized_cost")
        return {key: report[f"mean_{key}"] for key in keys if f"mean_{key}" in report}

    def _find_checkpoint(self) -> None:
        from safe_agents.common import serialization

        assert self.work_dir is not None
        checkpoint, record_path = self.work_dir / "checkpoint.zip", self.work_dir / "run.json"
        if not checkpoint.is_file():
            return
        try:
            record = json.loads(record_path.read_text())
            step = int(serialization.read_agent_file(checkpoint).training["num_steps"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("%s: unreadable checkpoint (%s); it starts over", self.run.key, error)
            return
        if {key: record.get(key) for key in self._identity} != self._identity:
            logger.warning("%s: checkpoint of another budget; the run starts over", self.run.key)
            return
        if not 0 < step < self.n_steps:
            return
        self.resume_from, self.resumed_step = checkpoint, step
        self.seconds_before = float(record.get("train_seconds", 0.0))
        if self.curve is not None:
            # Points past the checkpoint were left by the killed run after it: made again.
            self.curve.history = [p for p in record.get("curve", []) if p["step"] <= step]
        logger.info("%s: resuming from its checkpoint at step %d", self.run.key, step)

    def callbacks(self) -> list[Any]:
        """The curve first, then the checkpoint: a checkpoint holds the point of its step."""
        callbacks: list[Any] = [self.curve] if self.curve is not None else []
        if self.work_dir is not None:
            every = max(1, self.n_steps // self.settings.checkpoints)
            callbacks.append(_SaveWork(self, every))
        return callbacks

    def save(self, agent: Any) -> None:
        """The record first, then the agent: a record newer than its checkpoint is harmless
        (points past the checkpoint's step are dropped), a checkpoint without one is not."""
        assert self.work_dir is not None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        record = {
            **self._identity,
            "step": agent.num_steps,
            "curve": self.curve.history if self.curve is not None else [],
            "train_seconds": self.seconds_before + time.perf_counter() - self._started,
        }
        _write_json_atomically(self.work_dir / "run.json", record)
        agent.save(self.work_dir / "checkpoint.zip")

    def close(self) -> None:
        """Close the curve's environment (again: harmless)."""
        if self._curve_env is not None:
            self._curve_env.close()
            self._curve_env = None


class _SaveWork(BaseCallback):
    """Saves the run's checkpoint every ``every`` steps, the last step excepted (the row is)."""

    def __init__(self, stages: _RunStages, every: int) -> None:
        super().__init__()
        self.stages, self.every = stages, every

    def _on_step(self) -> bool:
        if self.num_steps % self.every == 0 and self.num_steps < self.stages.n_steps:
            self.stages.save(self.agent)
        return True


def execute(
    run: Run, settings: SweepSettings, work_dir: str | Path | None = None
) -> tuple[dict[str, Any], bytes | None]:
    """Train and evaluate one run: its result row, and the saved agent's bytes.

    Nothing is written where the caller can see it, except the run's checkpoints in
    ``work_dir`` (with ``settings.checkpoints``), so the same function serves a local process
    and a Ray worker on another machine; the driver records the result. A ``work_dir`` holding
    a checkpoint of the same budget resumes the run from it (a Ray worker sees it when the
    sweep folder is on a file system the cluster shares; otherwise the run starts over).
    """
    import tempfile

    import torch

    import envs
    from safe_agents import __version__

    # Workers share the machine's cores: one torch thread each.
    torch.set_num_threads(1)
    n_steps, hyperparameters = budget(run.agent, run.task, settings)
    env = envs.make(run.task)
    stages: _RunStages | None = None
    try:
        data = envs.load_dataset(run.task, origin=settings.data_origin, progress_bar=False)
        agent_class = registry.get_agent_class(run.agent)
        learn_kwargs: dict[str, Any] = {}
        if agent_class.needs_demos:
            # The cost-label-free setting: the agent gets the unlabeled rest and safe demos,
            # drawn with the run's seed; evaluation still counts costs.
            data, learn_kwargs["demos"] = data.strip_costs(settings.n_safe_demos, seed=run.seed)
        start = time.perf_counter()
        preset = PROFILE_PRESETS[settings.profile]
        agent = agent_class(env, seed=run.seed, preset=preset, **hyperparameters)
        stages = _RunStages(run, settings, n_steps, work_dir)
        agent.learn_offline(
            data,
            n_steps=n_steps,
            callback=stages.callbacks(),
            resume_from=stages.resume_from,
            **learn_kwargs,
        )
        train_seconds = time.perf_counter() - start + stages.seconds_before
        agent_bytes = None
        if settings.save_agents:
            with tempfile.TemporaryDirectory() as folder:
                agent_bytes = agent.save(Path(folder) / "agent.zip").read_bytes()
        # The curve's environment is done: MetaDrive runs one environment per process.
        stages.close()
        start = time.perf_counter()
        report = envs.evaluate(agent, env, settings.episodes, settings.eval_seed)
        eval_seconds = time.perf_counter() - start
    finally:
        env.close()
        if stages is not None:
            stages.close()
    spec = envs.get_task(run.task)
    row: dict[str, Any] = {
        **asdict(run),
        "profile": settings.profile,
        "preset": preset,
        "n_steps": n_steps,
        "hyperparameters": agent.config.to_dict(),
        "episodes": {key: report[key] for key in _PER_EPISODE if key in report},
        **{key: report[key] for key in report if key.startswith("mean_")},
        **{key: report[key] for key in ("normalization", "reward_range") if key in report},
        "cost_limit": spec.cost_limit,
        "simulator": spec.simulator,
        "data_origin": data.origin,
        "data_provenance": data.provenance,
        "setting": (
            f"cost-label-free, {settings.n_safe_demos} safe demos" if learn_kwargs else "costs"
        ),
        "eval_seed": settings.eval_seed,
        **({"curve": stages.curve.history} if stages.curve is not None else {}),
        **({"resumed_from_step": stages.resumed_step} if stages.resumed_step else {}),
        "train_seconds": round(train_seconds, 2),
        # Agents with stages of very different cost (DSPO) time each of them.
        **(
            {"stage_seconds": {k: round(v, 2) for k, v in agent.stage_seconds.items()}}
            if hasattr(agent, "stage_seconds")
            else {}
        ),
        "eval_seconds": round(eval_seconds, 2),
        "package_version": __version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_description(),
    }
    return row, agent_bytes


def machine_description() -> str:
    """The machine a run trained on, for the report: system, CPUs and the vector instructions
    torch's CPU kernels use (runs on AVX2 and AVX512 differ in the last bits, which training
    amplifies: a row repeats exactly only where they match), torch, the GPU if one is used."""
    import torch

    system = f"{platform.system()} {platform.machine()}"
    capability = torch.backends.cpu.get_cpu_capability()
    text = f"{system}, {os.cpu_count()} CPUs ({capability}), torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text
