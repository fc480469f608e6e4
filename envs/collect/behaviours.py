"""The behaviour agents: stable-baselines3 PPO on a cost-penalized reward.

One PPO (one environment, one torch thread: it suits two cores) per behaviour, trained on
``reward - lambda * cost_scale * cost`` (:class:`CostPenalty`). ``lambda`` is fixed
(``penalty:X``, 0 for ``unconstrained``) or follows the dual ascent rule toward a cost limit
(``limit:M``, PPO-Lagrangian). Training runs in segments between checkpoints; each segment starts
from a checkpoint's weights and penalty state and is reseeded, so where it runs does not change
what it learns. stable-baselines3 is imported when an agent is made, not with the package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from envs.collect.rollouts import noisy_policy

if TYPE_CHECKING:
    from stable_baselines3 import PPO

    from envs.collect.plan import Behaviour, BuildConfig, Deadline
    from envs.collect.workdir import PolicyWeights


class CostPenalty(gym.Wrapper):
    """Trains on ``reward - penalty * cost_scale * cost``; with a cost limit, a dual variable.

    The step's unpenalized reward stays in ``info["reward"]`` and the cost in ``info["cost"]``.
    Episode costs are counted as the episodes end; :meth:`update_penalty` (called once per PPO
    rollout) moves the penalty by the dual ascent rule
    ``clip(penalty + lr * (mean_cost - limit) / max(limit, 1), 0, max_penalty)`` and forgets
    the counted episodes. Without a limit the penalty stays fixed.

    Args:
        env: an environment whose ``info`` has ``"cost"`` (e.g. from :func:`envs.make`).
        penalty: the initial (or fixed) penalty ``lambda``.
        cost_limit: the episode cost limit of the dual rule; None keeps ``penalty`` fixed.
        lr: dual step size.
        max_penalty: upper clip of the penalty.
        cost_scale: reward units per unit of cost at ``penalty = 1`` (the builder uses the
            task's reference return per step, so penalties mean the same on every task).
    """

    def __init__(
        self,
        env: gym.Env,
        penalty: float = 0.0,
        cost_limit: float | None = None,
        lr: float = 0.05,
        max_penalty: float = 10.0,
        cost_scale: float = 1.0,
    ) -> None:
        super().__init__(env)
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        self.penalty = float(penalty)
        self.cost_limit = cost_limit
        self.lr = lr
        self.max_penalty = max_penalty
        self.cost_scale = cost_scale
        self.finished_costs: list[float] = []
        self._episode_cost = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._episode_cost = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        cost = float(info["cost"])
        self._episode_cost += cost
        if terminated or truncated:
            self.finished_costs.append(self._episode_cost)
            self._episode_cost = 0.0
        info = {**info, "reward": float(reward)}
        shaped = float(reward) - self.penalty * self.cost_scale * cost
        return obs, shaped, terminated, truncated, info

    def update_penalty(self) -> float:
        """Apply the dual rule to the episodes finished since the last update; returns lambda.

        Nothing changes without a cost limit or before an episode has finished (episodes longer
        than a rollout are counted at the next update).
        """
        if self.cost_limit is None or not self.finished_costs:
            return self.penalty
        violation = (float(np.mean(self.finished_costs)) - self.cost_limit) / max(
            self.cost_limit, 1.0
        )
        self.penalty = float(np.clip(self.penalty + self.lr * violation, 0.0, self.max_penalty))
        self.finished_costs = []
        return self.penalty

    def state_dict(self) -> dict[str, Any]:
        """What a resumed training needs (JSON-ready)."""
        return {"penalty": self.penalty, "finished_costs": list(self.finished_costs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values."""
        self.penalty = float(state["penalty"])
        self.finished_costs = [float(cost) for cost in state["finished_costs"]]


@dataclass(frozen=True)
class PPOTrainer:
    """Makes, restores and trains the PPO behaviour agents of one build.

    Attributes:
        config: the build settings (PPO's and the dual rule's).
        task_cost_limit: the task's episode cost limit (``limit:M`` aims at ``M`` times it).
        cost_scale: reward units per unit of cost at ``lambda = 1`` (see :class:`CostPenalty`).
    """

    config: BuildConfig
    task_cost_limit: float
    cost_scale: float

    def new_agent(self, env: gym.Env, behaviour: Behaviour, seed: int) -> tuple[PPO, CostPenalty]:
        """An untrained agent at the behaviour's initial penalty.

        Args:
            env: the environment it trains on (wrapped here in the penalty).
            behaviour: the reward-cost trade-off it learns.
            seed: seeds Python, NumPy, torch and the environment (stable-baselines3's
                ``set_random_seed``), and so the initial weights.
        """
        penalty = self._penalty(env, behaviour)
        return self._ppo(penalty, seed), penalty

    def restore(
        self,
        env: gym.Env,
        behaviour: Behaviour,
        weights: PolicyWeights,
        penalty_state: Mapping[str, Any],
        seed: int,
    ) -> tuple[PPO, CostPenalty]:
        """An agent continuing from a checkpoint: its weights, optimizer and penalty state.

        Args:
            env: the environment it trains on.
            behaviour: the behaviour of the checkpoint.
            weights: the checkpoint's policy and optimizer state.
            penalty_state: the checkpoint's :meth:`CostPenalty.state_dict`.
            seed: reseeds everything (as in :meth:`new_agent`) before the weights are loaded.
        """
        penalty = self._penalty(env, behaviour)
        penalty.load_state_dict(penalty_state)
        model = self._ppo(penalty, seed)
        model.policy.load_state_dict(weights["policy"])
        model.policy.optimizer.load_state_dict(weights["optimizer"])
        return model, penalty

    def train(
        self,
        model: PPO,
        penalty: CostPenalty,
        steps: int,
        deadline: Deadline,
        on_rollout: Callable[[int], object],
    ) -> bool:
        """Train ``steps`` environment steps with a dual update after every PPO rollout.

        Args:
            model: the agent (from :meth:`new_agent` or :meth:`restore`).
            penalty: its penalty wrapper.
            steps: environment steps to train.
            deadline: checked at every step; training stops when it passes.
            on_rollout: called with the rollout's step count after each rollout (progress).

        Returns:
            False if the deadline cut the training (the agent is then half-trained).
        """
        from stable_baselines3.common.callbacks import BaseCallback

        n_steps = self.config.ppo_n_steps

        class SegmentCallback(BaseCallback):
            """Dual update after each rollout; stops at the deadline."""

            cut = False

            def _on_step(self) -> bool:
                self.cut = deadline.passed()
                return not self.cut

            def _on_rollout_end(self) -> None:
                penalty.update_penalty()
                on_rollout(n_steps)

        callback = SegmentCallback()
        # reset_num_timesteps=True: every segment starts from a freshly seeded env reset.
        model.learn(steps, callback=callback, reset_num_timesteps=True)
        return not callback.cut

    def measure_speed(self, env: gym.Env, seed: int) -> tuple[float, float]:
        """PPO training and policy-rollout environment steps per second, measured briefly.

        One PPO rollout of training, then one noiseless episode of the resulting policy.
        """
        model = self._ppo(CostPenalty(env), seed=seed)
        start = time.perf_counter()
        model.learn(self.config.ppo_n_steps)
        train_fps = self.config.ppo_n_steps / (time.perf_counter() - start)
        act = noisy_policy(model.policy, env.action_space, 0.0, np.random.default_rng(0))
        obs, _ = env.reset(seed=seed)
        start = time.perf_counter()
        steps, done = 0, False
        while not done:
            obs, _, terminated, truncated, _ = env.step(act(obs))
            steps += 1
            done = terminated or truncated
        rollout_fps = steps / (time.perf_counter() - start)
        return train_fps, rollout_fps

    def _ppo(self, env: gym.Env, seed: int) -> PPO:
        from stable_baselines3 import PPO
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv

        config = self.config
        vec_env = DummyVecEnv([lambda: Monitor(env)])
        return PPO(
            "MlpPolicy",
            vec_env,
            n_steps=config.ppo_n_steps,
            batch_size=config.ppo_batch_size,
            n_epochs=config.ppo_n_epochs,
            learning_rate=config.ppo_learning_rate,
            gamma=config.ppo_gamma,
            policy_kwargs={"net_arch": list(config.ppo_net_arch)},
            seed=seed,
            device="cpu",
            verbose=0,
        )

    def _penalty(self, env: gym.Env, behaviour: Behaviour) -> CostPenalty:
        return CostPenalty(
            env,
            penalty=behaviour.initial_penalty(),
            cost_limit=behaviour.cost_limit(self.task_cost_limit),
            lr=self.config.lagrangian_lr,
            max_penalty=self.config.max_penalty,
            cost_scale=self.cost_scale,
        )
