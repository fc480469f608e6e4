"""SB3-style training callbacks: ``_on_step() -> bool`` (False stops training)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safe_agents.common.logger import Metrics

if TYPE_CHECKING:
    from safe_agents.common.base import BaseAgent


class BaseCallback:
    """Base class: override :meth:`_on_step` (and optionally the start/end hooks).

    Attributes:
        agent: the agent being trained (set by :meth:`init_callback`).
        n_calls: how many steps this callback has seen.
        num_steps: the agent's gradient-step counter after the current step.
    """

    def __init__(self) -> None:
        self._agent: BaseAgent | None = None
        self.n_calls = 0
        self.num_steps = 0
        self.metrics: Metrics = {}

    @property
    def agent(self) -> BaseAgent:
        if self._agent is None:
            raise RuntimeError("the callback is not attached to an agent (init_callback)")
        return self._agent

    def init_callback(self, agent: BaseAgent) -> None:
        self._agent = agent

    def on_training_start(self, n_steps: int) -> None:
        self._on_training_start(n_steps)

    def on_step(self, num_steps: int, metrics: Metrics) -> bool:
        self.n_calls += 1
        self.num_steps = num_steps
        self.metrics = metrics
        return self._on_step()

    def on_training_end(self) -> None:
        self._on_training_end()

    def _on_training_start(self, n_steps: int) -> None:
        pass

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        pass


class CallbackList(BaseCallback):
    """Runs several callbacks in order; training stops if any returns False."""

    def __init__(self, callbacks: Sequence[BaseCallback]) -> None:
        super().__init__()
        self.callbacks = list(callbacks)

    def init_callback(self, agent: BaseAgent) -> None:
        super().init_callback(agent)
        for callback in self.callbacks:
            callback.init_callback(agent)

    def _on_training_start(self, n_steps: int) -> None:
        for callback in self.callbacks:
            callback.on_training_start(n_steps)

    def on_step(self, num_steps: int, metrics: Metrics) -> bool:
        # Every callback sees every step, even after one asked to stop.
        results = [callback.on_step(num_steps, metrics) for callback in self.callbacks]
        return all(results)

    def _on_training_end(self) -> None:
        for callback in self.callbacks:
            callback.on_training_end()


class CheckpointCallback(BaseCallback):
    """Saves the agent, with everything needed to resume, every ``save_freq`` steps.

    Files are ``{save_path}/{name_prefix}_{step}_steps.zip``; pass one to
    ``learn_offline(..., resume_from=...)`` to continue.
    """

    def __init__(self, save_freq: int, save_path: str | Path, name_prefix: str = "agent") -> None:
        super().__init__()
        if save_freq < 1:
            raise ValueError(f"save_freq must be >= 1, got {save_freq}")
        self.save_freq = save_freq
        self.save_path = Path(save_path)
        self.name_prefix = name_prefix
        self.saved: list[Path] = []

    def _on_step(self) -> bool:
        if self.num_steps % self.save_freq == 0:
            path = self.save_path / f"{self.name_prefix}_{self.num_steps}_steps.zip"
            self.agent.save(path)
            self.saved.append(path)
        return True


class StopAfterSteps(BaseCallback):
    """Stops training once the agent's step counter reaches ``max_steps`` (an interruption)."""

    def __init__(self, max_steps: int) -> None:
        super().__init__()
        self.max_steps = max_steps

    def _on_step(self) -> bool:
        return self.num_steps < self.max_steps


class ProgressBarCallback(BaseCallback):
    """A tqdm progress bar over gradient steps, showing the latest losses."""

    def __init__(self, postfix_keys: int = 3) -> None:
        super().__init__()
        self.bar: Any = None
        self.postfix_keys = postfix_keys

    def _on_training_start(self, n_steps: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=n_steps, initial=self.agent.num_steps, unit="step", dynamic_ncols=True
        )

    def _on_step(self) -> bool:
        self.bar.update(1)
        if self.n_calls % 100 == 0 and self.agent.logger.latest:
            latest = self.agent.logger.latest
            items = [item for item in latest.items() if item[0].startswith("train/")]
            items = items[: self.postfix_keys]
            self.bar.set_postfix({key.split("/")[-1]: f"{value:.3g}" for key, value in items})
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


class EvalCallback(BaseCallback):
    """Evaluates the current iterate every ``eval_every`` steps: a learning curve.

    Args:
        evaluate: ``evaluate(agent) -> dict of numbers`` (e.g. a closure over
            ``envs.evaluate`` with its own evaluation seeds, apart from the final evaluation's).
        eval_every: steps between evaluations (and one at the last step).
        train_metrics: also store the step's training metrics beside each point.

    Attributes:
        history: one dict per evaluation, ``{"step": ..., **evaluate(agent)}``.

    The agent's networks are put in eval mode for the evaluation and back in train mode after;
    evaluation draws no randomness from the agent's training generators, and the state of its
    action generator is restored after each evaluation, so a run with this callback trains and
    acts exactly as one without.
    """

    def __init__(
        self,
        evaluate: Callable[[BaseAgent], dict[str, Any]],
        eval_every: int,
        train_metrics: bool = True,
    ) -> None:
        super().__init__()
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {eval_every}")
        self.evaluate = evaluate
        self.eval_every = eval_every
        self.train_metrics = train_metrics
        self.history: list[dict[str, Any]] = []
        self._total = 0

    def _on_training_start(self, n_steps: int) -> None:
        self._total = n_steps

    def _on_step(self) -> bool:
        if self.num_steps % self.eval_every and self.num_steps != self._total:
            return True
        modules = self.agent._saved_modules().values()
        for module in modules:
            module.eval()
        act_state = self.agent.act_generator.get_state()
        try:
            point: dict[str, Any] = {"step": self.num_steps, **self.evaluate(self.agent)}
        finally:
            self.agent.act_generator.set_state(act_state)
            for module in modules:
                module.train()
        if self.train_metrics:
            point["train"] = {key: float(value) for key, value in self.metrics.items()}
        self.history.append(point)
        return True


class RemainingTimeCallback(BaseCallback):
    """Estimates the time left once, after the first steps, and reports it.

    After ``min_seconds`` (and at least ``min_steps`` steps) it calls ``report(message)`` with
    the measured rate and the estimated time to ``n_steps``, adding a warning when that exceeds
    ``warn_above_seconds`` (an hour): the paper presets plan days of CPU training.
    """

    def __init__(
        self,
        report: Callable[[str], None],
        min_seconds: float = 5.0,
        min_steps: int = 20,
        warn_above_seconds: float = 3600.0,
    ) -> None:
        super().__init__()
        self.report = report
        self.min_seconds = min_seconds
        self.min_steps = min_steps
        self.warn_above_seconds = warn_above_seconds
        self.estimate_seconds: float | None = None
        self._start = 0.0
        self._start_step = 0
        self._total = 0

    def _on_training_start(self, n_steps: int) -> None:
        self._start = time.perf_counter()
        self._start_step = self.agent.num_steps
        self._total = n_steps

    def _on_step(self) -> bool:
        if self.estimate_seconds is not None:
            return True
        elapsed = time.perf_counter() - self._start
        done = self.num_steps - self._start_step
        left = self._total - self.num_steps
        if left <= 0 or done < self.min_steps or elapsed < self.min_seconds:
            return True
        rate = done / elapsed
        self.estimate_seconds = left / rate
        message = (
            f"{rate:.1f} steps/s: about {format_duration(self.estimate_seconds)} left for "
            f"{left} more steps"
        )
        if self.estimate_seconds > self.warn_above_seconds:
            message += (
                f" (over {format_duration(self.warn_above_seconds)}: the cpu preset or fewer "
                "steps train in minutes)"
            )
        self.report(message)
        return True


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"12 min"`` or ``"3.5 h"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def as_callback(callback: BaseCallback | Sequence[BaseCallback] | None) -> BaseCallback | None:
    """A single callback from None, one callback or a list of them."""
    if callback is None or isinstance(callback, BaseCallback):
        return callback
    return CallbackList(list(callback))
