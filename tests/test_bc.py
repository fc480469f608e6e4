"""BC-Safe against BC-All on the toy task: filtering to safe episodes must make the policy safe."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from safe_agents import BCAll, BCSafe

TOY = "OfflineToyReachAvoid-v0"


@pytest.mark.slow
def test_bc_safe_is_measurably_safer_than_bc_all(toy_dataset):
    env = envs.make(TOY)
    reports = {}
    for agent_class in (BCAll, BCSafe):
        agent = agent_class(env, seed=0).learn_offline(toy_dataset, n_steps=2000, log_interval=500)
        reports[agent_class.name] = envs.evaluate(agent, env, n_episodes=10, seed=1000)
    bc_all, bc_safe = reports["bc_all"], reports["bc_safe"]
    # The dataset mixes reckless and cautious drivers: imitating all of it crosses the hazard,
    # imitating the safe episodes goes around it.
    assert bc_all["mean_normalized_cost"] > 1.5
    assert bc_safe["mean_normalized_cost"] <= 1.0
    assert bc_all["mean_normalized_cost"] - bc_safe["mean_normalized_cost"] > 1.0
    # Still a controller, not a statue: BC-Safe reaches the goal region on most episodes.
    assert bc_safe["mean_normalized_return"] > 0.4


def test_bc_safe_uses_the_dataset_cost_limit_and_only_safe_episodes(toy_dataset):
    env = envs.make(TOY)
    agent = BCSafe(env, seed=0)
    safe = agent._prepare_dataset(toy_dataset)
    assert agent.cost_limit_used == toy_dataset.metadata["cost_limit"]
    assert (safe.episode_costs() <= agent.cost_limit_used).all()
    assert safe.n_episodes == int((toy_dataset.episode_costs() <= agent.cost_limit_used).sum())
    stricter = BCSafe(env, seed=0, cost_limit=0.0)._prepare_dataset(toy_dataset)
    assert np.all(stricter.episode_costs() == 0.0)


def test_gaussian_actor_samples_reproducibly_with_a_seed(toy_dataset):
    env = envs.make(TOY)
    obs = np.zeros((4, 2), dtype=np.float32)
    actions = []
    for _ in range(2):
        agent = BCAll(env, seed=3, actor="gaussian", batch_size=64).learn_offline(
            toy_dataset, n_steps=50, log_interval=50
        )
        actions.append(agent.predict(obs, deterministic=False)[0])
    np.testing.assert_array_equal(actions[0], actions[1])
    mode, _ = agent.predict(obs, deterministic=True)
    assert not np.allclose(actions[0], mode)
