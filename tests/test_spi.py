"""SPI: cost remap, guidance-weight validation, the pure-BC limit, and argmax extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from safe_agents import SPI
from safe_agents.spi import SPIConfig, remap_costs

TOY = "OfflineToyReachAvoid-v0"


def test_cost_remap_on_crafted_costs():
    costs = torch.tensor([0.0, 0.5, 1.0, 3.0])
    assert remap_costs(costs, "indicator").tolist() == [1.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(
        remap_costs(costs, "clip", cost_max=2.0), torch.tensor([1.0, 0.75, 0.5, 0.0])
    )
    with pytest.raises(ValueError, match="cost remap"):
        remap_costs(costs, "log")


def test_guidance_weights_must_sum_to_one():
    SPIConfig(eta=0.2, mu=0.3, phi=0.5)
    with pytest.raises(ValueError, match="eta \\+ mu \\+ phi must equal 1"):
        SPIConfig(eta=0.5, mu=0.5, phi=0.5)
    with pytest.raises(ValueError, match="eta must be in"):
        SPIConfig(eta=1.2, mu=0.0, phi=-0.2)


def _bimodal_dataset(n=4000, seed=0):
    """One state, actions from two clusters at (+0.6, +0.6) and (-0.6, -0.6)."""
    rng = np.random.default_rng(seed)
    centres = np.where(rng.random((n, 1)) < 0.5, 0.6, -0.6)
    actions = np.clip(centres + 0.05 * rng.standard_normal((n, 2)), -1, 1)
    obs = np.zeros((n, 2))
    flags = np.zeros(n)
    flags[99::100] = 1.0
    return envs.OfflineDataset.from_arrays(
        observations=obs,
        actions=actions,
        rewards=np.zeros(n),
        costs=np.zeros(n),
        next_observations=obs,
        terminals=np.zeros(n),
        timeouts=flags,
    )


@pytest.mark.slow
def test_without_critic_guidance_spi_is_a_behaviour_cloning_diffusion_model():
    env = envs.make(TOY)
    data = _bimodal_dataset()
    agent = SPI(
        env,
        seed=0,
        eta=1.0,
        mu=0.0,
        phi=0.0,
        actor_width=64,
        critic_hidden_sizes=(16,),
        batch_size=256,
        normalize_observations=False,
        next_action="dataset",
    ).learn_offline(data, n_steps=1500, log_interval=500)
    samples = agent.candidate_actions(np.zeros(2, dtype=np.float32), n=400)
    # The samples reproduce both modes of the data. A Gaussian fitted to the same data
    # (mean 0, std 0.6) puts only about 9% of its samples this close to the two modes.
    near_positive = np.linalg.norm(samples - 0.6, axis=1) < 0.3
    near_negative = np.linalg.norm(samples + 0.6, axis=1) < 0.3
    assert near_positive.mean() > 0.25 and near_negative.mean() > 0.25
    assert (near_positive | near_negative).mean() > 0.6


def test_argmax_extraction_picks_the_highest_reward_q_candidate():
    env = envs.make(TOY)
    agent = SPI(env, seed=0, actor_width=16, critic_hidden_sizes=(16,), n_candidates=8)
    obs = np.array([[0.1, -0.2], [0.5, 0.5]], dtype=np.float32)
    with torch.no_grad():
        tensor = agent.obs_scaler(torch.as_tensor(obs))
        candidates = agent._candidates(tensor, 8, deterministic=True)
        reward_q, _ = agent._scores(tensor, candidates)
        best = candidates[torch.arange(2), reward_q.argmax(dim=1)]
        chosen = agent._act(tensor, deterministic=True)
    torch.testing.assert_close(chosen, best)
    # The safety-aware option restricts the argmax to the safest half.
    agent.config.selection = "safety_aware"
    with torch.no_grad():
        _, safety_q = agent._scores(tensor, candidates)
        safe_choice = agent._act(tensor, deterministic=True)
        picked = (candidates == safe_choice[:, None]).all(dim=-1)  # (B, N)
        rank = safety_q.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = safest
    assert (rank[picked] < 4).all()


def test_action_cost_shapes():
    env = envs.make(TOY)
    agent = SPI(env, seed=0, actor_width=16, critic_hidden_sizes=(16,), n_candidates=4)
    candidates = agent.candidate_actions(np.zeros(2, dtype=np.float32), n=5)
    assert candidates.shape == (5, 2)
    assert agent.action_cost(np.zeros(2, dtype=np.float32), candidates).shape == (5,)
