"""FISOR: weights, the learned feasibility on the toy task, and the SafetyFilter built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from envs.toy import GOAL, HAZARD, scripted_policy
from safe_agents import FISOR
from safe_agents.fisor import FISORConfig, constraint_signal, policy_weights

TOY = "OfflineToyReachAvoid-v0"
# Small networks: the toy task is two-dimensional and the test must stay short on 2 cores.
SMALL = {
    "batch_size": 256,
    "actor_batch_size": 128,
    "critic_hidden_sizes": (64, 64),
    "actor_width": 32,
    "actor_blocks": 1,
    "actor_expansion": 1,
    "n_candidates": 8,
}


def test_policy_weights_follow_the_three_cases():
    config = FISORConfig()
    q_h = torch.tensor([3.0, -2.0, 1.0, 0.5])
    v_h = torch.tensor([4.0, -1.0, -1.0, 2.0])
    q_r = torch.tensor([0.0, 2.0, 5.0, 0.0])
    v_r = torch.tensor([0.0, 1.0, 0.0, 0.0])
    weights = policy_weights(q_h, v_h, q_r, v_r, config)
    # infeasible state: exp(5 (V_h - Q_h)) = exp(5); feasible state and action: exp(3 (2 - 1));
    # feasible state, infeasible action: 0; infeasible state, clipped at 150.
    torch.testing.assert_close(
        weights,
        torch.tensor([np.exp(5.0), np.exp(3.0), 0.0, min(np.exp(7.5), 150.0)], dtype=torch.float32),
    )
    # In an infeasible state an action that leads further into violation than the best one
    # (Q_h > V_h) keeps a weight below 1 (Eq. 13's clip [0, 150]): recovery is not cloning.
    low = policy_weights(torch.tensor([1.2]), torch.tensor([1.0]), q_r[:1], v_r[:1], config)
    assert low.item() == pytest.approx(np.exp(-1.0), rel=1e-5)
    worst = policy_weights(torch.tensor([9.0]), torch.tensor([1.0]), q_r[:1], v_r[:1], config)
    assert 0.0 <= worst.item() < 1e-15
    # The first commit's floor of 1 stays available as an option.
    floored = FISORConfig(min_cost_weight=1.0)
    assert policy_weights(torch.tensor([1.2]), torch.tensor([1.0]), q_r[:1], v_r[:1], floored) == 1


def test_constraint_signal():
    h = constraint_signal(torch.tensor([0.0, 1.0, 0.2]), 25.0)
    assert h.tolist() == [-1.0, 25.0, 25.0]


@pytest.fixture(scope="module")
def fisor(toy_dataset):
    env = envs.make(TOY)
    return FISOR(env, seed=0, **SMALL).learn_offline(toy_dataset, n_steps=2500, log_interval=500)


@pytest.mark.slow
def test_learned_feasibility_separates_the_hazard_from_the_goal(fisor):
    inside = [HAZARD, HAZARD + [0.15, 0.0], HAZARD - [0.0, 0.2]]
    around_goal = [GOAL, GOAL - [0.1, 0.0], GOAL - [0.0, 0.15]]
    values = fisor.feasibility_value(np.array(inside + around_goal, dtype=np.float32))
    # Inside the hazard a violation has already happened: infeasible (V_h > 0), strongly.
    assert (values[:3] > 5.0).all(), values
    # From the goal region the hazard is avoided forever: feasible (V_h <= 0).
    assert (values[3:] <= 0.0).all(), values


def test_fisor_candidates_scores_and_predict_shapes(fisor):
    obs = np.array([[-0.75, -0.75], [0.5, 0.6]], dtype=np.float32)
    candidates = fisor.candidate_actions(obs[0], n=5)
    assert candidates.shape == (5, 2) and (np.abs(candidates) <= 1).all()
    scores = fisor.action_cost(obs[0], candidates)
    assert scores.shape == (5,)
    batch_scores = fisor.action_cost(obs, np.stack([candidates, candidates]))
    assert batch_scores.shape == (2, 5)
    # Deterministic predict: same action for the same state, alone or in a batch.
    single = fisor.predict(obs[1], deterministic=True)[0]
    np.testing.assert_allclose(single, fisor.predict(obs, deterministic=True)[0][1], atol=1e-5)
    with pytest.raises(ValueError, match="actions must be"):
        fisor.action_cost(obs[0], np.zeros((5, 3)))


def test_safety_filter_passes_check_env_and_makes_a_reckless_policy_safer(fisor):
    reckless = scripted_policy(margin=-0.5)  # straight through the hazard
    plain = envs.evaluate(reckless, envs.make(TOY), n_episodes=5, seed=0)
    filtered_env = envs.SafetyFilter(
        envs.make(TOY), candidates=fisor.candidate_actions, score=fisor.action_cost, n=16
    )
    check_env(filtered_env, skip_render_check=True)
    filtered = envs.evaluate(reckless, filtered_env, n_episodes=5, seed=0)
    assert plain["mean_cost"] > 10
    assert filtered["mean_cost"] < 0.5 * plain["mean_cost"]
    assert filtered_env.interventions > 0
    obs, _ = filtered_env.reset(seed=0)
    _, _, _, _, info = filtered_env.step(reckless(obs))
    assert set(info["safety_filter"]) == {"replaced", "proposed_score", "chosen_score"}
    assert info["safety_filter"]["chosen_score"] <= info["safety_filter"]["proposed_score"]


def test_safety_filter_with_perturbations_and_a_scripted_score():
    # Any score works: here the distance into the hazard disc, perturbing the proposed action.
    def score(obs, actions):
        nxt = np.asarray(obs) + 0.05 * np.asarray(actions)
        return 0.45 - np.linalg.norm(nxt - HAZARD, axis=-1)

    env = envs.SafetyFilter(envs.make(TOY), score=score, n=32, noise_scale=0.5, seed=0)
    check_env(env, skip_render_check=True)
    reckless = scripted_policy(margin=-0.5)
    filtered = envs.evaluate(reckless, env, n_episodes=3, seed=0)
    plain = envs.evaluate(reckless, envs.make(TOY), n_episodes=3, seed=0)
    assert filtered["mean_cost"] < plain["mean_cost"]
    with pytest.raises(ValueError, match="needs score"):
        envs.SafetyFilter(envs.make(TOY))


def test_feasibility_picture_is_written(fisor, tmp_path):
    from envs.plots import plot_feasibility

    path = plot_feasibility(fisor.feasibility_value, tmp_path / "vh.png", fisor, n_rollouts=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_fisor_config_validation():
    with pytest.raises(ValueError, match="selection must be one of"):
        FISORConfig(selection="random")
    with pytest.raises(ValueError, match="feasibility_expectile must be in"):
        FISORConfig(feasibility_expectile=0.2)
