"""SB3-style training callbacks: ``_on_step() -> bool`` (False stops training)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        self.metrics: dict[str, float] = {}

    @property
    def agent(self) -> BaseAgent:
        if self._agent is None:
            raise RuntimeError("the callback is not attached to an agent (init_callback)")
        return self._agent

    def init_callback(self, agent: BaseAgent) -> None:
        self._agent = agent

    def on_training_start(self, n_steps: int) -> None:
        self._on_training_start(n_steps)

    def on_step(self, num_steps: int, metrics: dict[str, float]) -> bool:
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

    def on_step(self, num_steps: int, metrics: dict[str, float]) -> bool:
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


def as_callback(callback: BaseCallback | Sequence[BaseCallback] | None) -> BaseCallback | None:
    """A single callback from None, one callback or a list of them."""
    if callback is None or isinstance(callback, BaseCallback):
        return callback
    return CallbackList(list(callback))
