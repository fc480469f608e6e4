"""Behaviour cloning baselines: BC-All and BC-Safe (as in OSRL / the DSRL benchmark).

- **BC-All** clones every transition of the dataset.
- **BC-Safe** clones only the episodes whose total cost is within the cost limit, the classic
  "filter, then imitate" baseline of safe offline RL.

Loss: mean squared error of a tanh-bounded deterministic actor (OSRL's ``MLPActor``), or the
negative log-likelihood of a Gaussian actor (``actor="gaussian"``), on actions rescaled to
``[-1, 1]``.

Defaults (OSRL ``examples/configs/bc_configs.py``): actor learning rate 1e-3, hidden sizes
(256, 256), batch size 512, 300k update steps, cost limit 10.

**Deviations**: observations are standardized with the dataset's statistics by default
(``normalize_observations``; OSRL feeds raw observations); BC-Safe's cost limit defaults to the
dataset's own (its metadata), and a dataset without one is an error rather than a guessed 10;
OSRL evaluates during training and we never select checkpoints by evaluation (design: the
final iterate is reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from safe_agents.common.base import BaseAgent
from safe_agents.common.config import AgentConfig, check_choice, check_positive
from safe_agents.common.data import TransitionBatch, resolve_cost_limit
from safe_agents.common.dataset import OfflineDataset
from safe_agents.common.device import optimizer_options
from safe_agents.common.imitation import gaussian_bc_loss, mse_bc_loss
from safe_agents.common.logger import Metrics
from safe_agents.common.networks import DeterministicActor, GaussianActor


@dataclass(kw_only=True)
class BCConfig(AgentConfig):
    """BC hyperparameters (OSRL defaults).

    Attributes:
        actor: ``"deterministic"`` (OSRL, MSE loss) or ``"gaussian"`` (log-likelihood loss).
        hidden_sizes: actor MLP widths; OSRL (256, 256).
        learning_rate: Adam learning rate; OSRL 1e-3.
        batch_size: OSRL 512.
        n_steps: OSRL trains 300k update steps.
    """

    # cpu: the same network, 2k steps (behaviour cloning levels off quickly on small data).
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "cpu": {"n_steps": 2_000}}

    n_steps: int = 300_000
    batch_size: int = 512
    actor: str = "deterministic"
    hidden_sizes: tuple[int, ...] = (256, 256)
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("actor", self.actor, ("deterministic", "gaussian"))
        check_positive("learning_rate", self.learning_rate)
        if not self.hidden_sizes or any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive widths, got {self.hidden_sizes}")


@dataclass(kw_only=True)
class BCSafeConfig(BCConfig):
    """BC-Safe hyperparameters.

    Attributes:
        cost_limit: episodes with total cost <= this are imitated; None takes the dataset's
            ``cost_limit`` metadata (an error if it has none).
    """


class BCAll(BaseAgent):
    """Behaviour cloning on every transition of the dataset (OSRL's ``bc_mode="all"``).

    ``cost_limit`` is accepted and recorded but unused: BC-All imitates every episode.
    """

    name = "bc_all"
    config_class = BCConfig
    needs_costs = False
    config: BCConfig
    actor: DeterministicActor | GaussianActor

    def _build(self) -> None:
        if self.config.actor == "gaussian":
            self.actor = GaussianActor(self.obs_dim, self.act_dim, self.config.hidden_sizes)
        else:
            self.actor = DeterministicActor(self.obs_dim, self.act_dim, self.config.hidden_sizes)
        self.optimizers = {
            "actor": torch.optim.Adam(
                self.actor.parameters(),
                lr=self.config.learning_rate,
                **optimizer_options(self.device),
            )
        }

    def _train_step(self, batch: TransitionBatch) -> Metrics:
        obs = self.obs_scaler(batch.obs)
        actions = self.action_scaler.normalize(batch.actions)  # the tanh actor's [-1, 1] range
        if isinstance(self.actor, GaussianActor):
            loss = gaussian_bc_loss(self.actor.distribution(obs), actions)
        else:
            loss = mse_bc_loss(self.actor(obs), actions)
        optimizer = self.optimizers["actor"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"actor_loss": loss.detach()}

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if isinstance(self.actor, DeterministicActor) or deterministic:
            actions: torch.Tensor = self.actor(obs)
            return actions
        return self.actor.sample(obs, self.act_generator)

    def _saved_modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor}


class BCSafe(BCAll):
    """Behaviour cloning on the episodes whose cost is within the cost limit (OSRL's "safe")."""

    name = "bc_safe"
    config_class = BCSafeConfig
    needs_costs = True  # picks the episodes within the cost limit
    config: BCSafeConfig

    def _prepare_dataset(self, dataset: OfflineDataset) -> OfflineDataset:
        limit = resolve_cost_limit(dataset, self.config.cost_limit)
        self.cost_limit_used = limit
        return dataset.filter_episodes(max_cost=limit)
