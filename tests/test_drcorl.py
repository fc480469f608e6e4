"""DRCORL: gradient manipulation, the UCB, the adaptation rules, the PID multiplier, the KL pull."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from safe_agents import DRCORL
from safe_agents.common.callbacks import StopAfterSteps
from safe_agents.common.critics import upper_confidence_bound
from safe_agents.common.lagrangian import PIDLagrangian
from safe_agents.drcorl import (
    COST,
    MANIPULATED,
    REWARD,
    adaptation_branch,
    combine_gradients,
    episode_cost_estimate,
    temperature_at,
)

SMALL = {
    "batch_size": 128,
    "actor_hidden_sizes": (32, 32),
    "critic_hidden_sizes": (32, 32),
    "behaviour_width": 64,
    "behaviour_blocks": 2,
}


def test_aligned_gradients_are_averaged():
    reward_grad, cost_grad = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    combined, angle = combine_gradients(reward_grad, cost_grad)
    torch.testing.assert_close(combined, torch.tensor([1.0, 0.5]))
    assert angle == pytest.approx(45.0)


def test_conflicting_gradients_are_projected_onto_each_others_normal_plane():
    reward_grad, cost_grad = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    combined, angle = combine_gradients(reward_grad, cost_grad)
    assert angle == pytest.approx(135.0)
    # g_r+ = g_r - (g_r.g_c / |g_c|^2) g_c = (0.5, 0.5); g_c+ = g_c - (g_c.g_r / |g_r|^2) g_r
    # = (0, 1); Eq. 12 averages them.
    torch.testing.assert_close(combined, torch.tensor([0.25, 0.75]))
    # The step hurts neither objective to first order.
    assert combined @ reward_grad >= 0 and combined @ cost_grad >= 0


def test_opposite_gradients_cancel():
    combined, angle = combine_gradients(torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 0.0]))
    assert angle == pytest.approx(180.0)
    torch.testing.assert_close(combined, torch.zeros(2))


def test_upper_confidence_bound_of_a_crafted_ensemble():
    values = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0], [7.0, 2.0]])  # (E=4, B=2)
    ucb = upper_confidence_bound(values, k=2.0)
    # column 0: mean 4, sample std sqrt(20 / 3); column 1: the members agree, no bonus.
    torch.testing.assert_close(ucb, torch.tensor([4.0 + 2.0 * math.sqrt(20.0 / 3.0), 2.0]))
    with pytest.raises(ValueError, match="at least 2"):
        upper_confidence_bound(values[:1], k=2.0)


@pytest.mark.parametrize(
    ("normalized_cost", "expected"),
    [(0.5, REWARD), (0.8, REWARD), (0.9, MANIPULATED), (1.2, MANIPULATED), (1.3, COST)],
)
def test_gradient_manipulation_branch_follows_the_slacks(normalized_cost, expected):
    assert adaptation_branch(normalized_cost, 0.2, 0.2, "gradient") == expected


def test_branches_once_the_slacks_have_shrunk_and_for_crpo():
    assert adaptation_branch(1.0, 0.0, 0.0) == REWARD
    assert adaptation_branch(1.001, 0.0, 0.0) == COST
    assert adaptation_branch(1.1, 0.2, 0.2, "crpo") == REWARD
    assert adaptation_branch(1.3, 0.2, 0.2, "crpo") == COST
    with pytest.raises(ValueError, match="adaptation"):
        adaptation_branch(1.0, 0.2, 0.2, "lagrangian")


def test_pid_multiplier_rises_over_the_limit_and_falls_back_under_it():
    pid = PIDLagrangian(kp=0.1, ki=0.003, kd=0.001)
    rising = [pid.update(cost=15.0, limit=10.0) for _ in range(50)]
    assert rising[0] > 0 and all(b >= a for a, b in zip(rising, rising[1:], strict=False))
    falling = [pid.update(cost=5.0, limit=10.0) for _ in range(200)]
    assert falling[0] < rising[-1]
    assert all(b <= a for a, b in zip(falling, falling[1:], strict=False))
    assert falling[-1] == 0.0
    with pytest.raises(ValueError, match="gains"):
        PIDLagrangian(kp=-1.0)


def test_temperature_schedules_and_episode_cost():
    assert [temperature_at("constant", 0.5, e) for e in (1, 4)] == [0.5, 0.5]
    assert [temperature_at("sqrt", 0.5, e) for e in (1, 4)] == [0.5, 1.0]
    assert [temperature_at("linear", 0.5, e) for e in (1, 4)] == [0.5, 2.0]
    # A per-step cost of 0.1 under gamma=0.99 is worth 10 in Q; over 100 steps that is 10.
    assert episode_cost_estimate(10.0, 0.99, 100) == pytest.approx(10.0)


def _unimodal_dataset(n_episodes: int = 40, length: int = 50, seed: int = 0):
    """Behaviour ``a = 0.5 tanh(s_0) + N(0, 0.05)``; the reward pays for larger actions."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1.0, 1.0, size=(n_episodes * length, 2)).astype(np.float32)
    actions = (0.5 * np.tanh(obs[:, :1]) + 0.05 * rng.standard_normal((len(obs), 1))).astype(
        np.float32
    )
    rewards = (1.0 + actions[:, 0]).astype(np.float32)
    timeouts = np.zeros(len(obs), dtype=np.float32)
    timeouts[length - 1 :: length] = 1.0
    next_obs = np.roll(obs, -1, axis=0)
    data = envs.OfflineDataset.from_arrays(
        obs,
        actions,
        rewards,
        np.zeros(len(obs), dtype=np.float32),
        next_obs,
        np.zeros(len(obs), dtype=np.float32),
        timeouts,
        metadata={"cost_limit": 1.0},
    )
    spaces = {
        "observation_space": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        "action_space": gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
    }
    return data, spaces


@pytest.fixture(scope="module")
def unimodal():
    return _unimodal_dataset()


def _mean_action_gap(agent, data) -> float:
    mean, _ = agent.policy_distribution(data.observations)
    behaviour = 0.5 * np.tanh(data.observations[:, :1])
    return float(np.abs(mean - behaviour).mean())


@pytest.mark.slow
def test_kl_keeps_the_policy_near_the_unimodal_behaviour(unimodal):
    data, spaces = unimodal
    gaps = {}
    for temperature in (0.02, 50.0):
        agent = DRCORL(
            **spaces,
            seed=0,
            pretrain_steps=600,
            temperature=temperature,
            temperature_schedule="constant",
            **SMALL,
        )
        # Planned to 1000 steps, stopped after the warm start to measure it.
        agent.learn_offline(data, n_steps=1000, log_interval=100, callback=StopAfterSteps(600))
        warm_start_gap = _mean_action_gap(agent, data)
        agent.learn_offline(data, n_steps=1000, log_interval=100)
        gaps[temperature] = _mean_action_gap(agent, data)
        logged = agent.logger.history[-1]
        assert logged["train/branch_reward"] == 1.0  # no cost in the data: reward only
    # The warm start follows the diffusion model to the behaviour; a strong KL (small beta)
    # keeps the policy there while the reward critic pays for larger actions; a weak KL lets
    # the critic pull it away.
    assert warm_start_gap < 0.1
    assert gaps[0.02] < 0.1
    assert gaps[50.0] > 3 * gaps[0.02]


def test_refuses_data_without_costs_and_a_zero_limit(unimodal):
    data, spaces = unimodal
    with pytest.raises(ValueError, match="needs cost labels"):
        DRCORL(**spaces, seed=0, **SMALL).learn_offline(data.without_costs(), n_steps=2)
    with pytest.raises(ValueError, match="cost limit must be > 0"):
        DRCORL(**spaces, seed=0, **SMALL).learn_offline(
            dataclasses.replace(data, metadata={"cost_limit": 0.0}), n_steps=2
        )
    with pytest.raises(ValueError, match="n_cost_critics"):
        DRCORL(**spaces, n_cost_critics=1)


def test_predict_is_one_mlp_pass(unimodal):
    data, spaces = unimodal
    agent = DRCORL(**spaces, seed=0, pretrain_steps=5, **SMALL).learn_offline(data, n_steps=10)
    calls = []
    hooks = [
        module.register_forward_hook(lambda *_: calls.append(1))
        for module in (agent.behaviour, agent.reward_q, agent.cost_q)
    ]
    agent.predict(data.observations[:5], deterministic=True)
    agent.predict(data.observations[0])
    for hook in hooks:
        hook.remove()
    assert calls == []  # neither the diffusion model nor a critic runs at inference
