"""BCQ-Lag and CPQ: the Q-unit threshold, BCQ's targets and perturbation, the PID multiplier's
direction, CPQ's OOD detection, dual variable and penalized operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from safe_agents import CPQ, BCQLag
from safe_agents.baselines.bcq_lag import PerturbationActor, bcq_target, soft_clipped_double_q
from safe_agents.baselines.cpq import alpha_step, latent_kl, ood_mask, safe_indicator
from safe_agents.common.lagrangian import cost_limit_in_q_units

TOY = "OfflineToyReachAvoid-v0"
SMALL = {
    "batch_size": 128,
    "actor_hidden_sizes": (32, 32),
    "critic_hidden_sizes": (32, 32),
    "vae_hidden_sizes": (32, 32),
    "n_sampled_actions": 4,
}


def test_cost_limit_in_q_units_is_the_discounted_value_of_an_even_spend():
    limit, gamma, length = 10.0, 0.99, 300
    spend = limit / length  # per step, for the whole episode
    discounted = sum(spend * gamma**t for t in range(length))
    assert cost_limit_in_q_units(limit, gamma, length) == pytest.approx(discounted)
    # DSRL's 1000-step tasks at gamma 0.99: limit / ((1 - gamma) L) = limit / 10, all but.
    assert cost_limit_in_q_units(10.0, 0.99, 1000) == pytest.approx(1 - 0.99**1000)
    with pytest.raises(ValueError, match="gamma"):
        cost_limit_in_q_units(10.0, 1.0, 100)
    with pytest.raises(ValueError, match="cost_limit"):
        cost_limit_in_q_units(-1.0, 0.99, 100)


def test_soft_clipped_double_q_and_the_max_over_sampled_actions():
    values = torch.tensor([[1.0, 4.0, 0.0, 2.0], [3.0, 2.0, 1.0, 2.0]])  # (2 members, B*n = 4)
    torch.testing.assert_close(
        soft_clipped_double_q(values, 0.75), torch.tensor([1.5, 2.5, 0.25, 2.0])
    )
    # Two next states with n = 2 actions each: max of (1.5, 2.5) and of (0.25, 2.0).
    target = bcq_target(
        torch.tensor([1.0, 0.0]), values, torch.tensor([0.0, 1.0]), 0.9, 0.75, n_sampled=2
    )
    torch.testing.assert_close(target, torch.tensor([1.0 + 0.9 * 2.5, 0.0]))


def test_perturbation_stays_within_phi_and_the_action_box():
    torch.manual_seed(0)
    actor = PerturbationActor(3, 2, (16,), phi=0.05)
    obs, actions = torch.randn(500, 3), torch.rand(500, 2) * 2 - 1
    perturbed = actor(obs, actions)
    assert (perturbed - actions).abs().max() <= 0.05 + 1e-6
    assert perturbed.abs().max() <= 1.0


@pytest.mark.parametrize(("cost_limit", "over"), [(0.0, True), (1000.0, False)])
def test_bcq_lag_multiplier_accumulates_only_when_the_cost_value_is_over_the_limit(
    toy_dataset, cost_limit, over
):
    env = envs.make(TOY)
    agent = BCQLag(env, seed=0, cost_limit=cost_limit, **SMALL)
    agent.learn_offline(toy_dataset, n_steps=300, log_interval=100)
    policy_cost_q = agent.logger.history[-1]["train/policy_cost_q"]
    assert policy_cost_q > 0.0  # the toy data has costs, so the cost value is positive
    integral, multiplier = float(agent.lagrangian.integral), float(agent.lagrangian.multiplier)
    if over:
        assert integral > 1.0 and multiplier > 0.01
    else:
        # Under the limit only the derivative term (a rising cost) can be non-zero: K_D * rise.
        assert integral == 0.0 and multiplier < 1e-3


def test_cpq_ood_mask_takes_the_top_quantile_of_the_latent_kl():
    mean = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 1.0], [3.0, 0.0]])
    std = torch.ones(4, 2)
    kl = latent_kl(mean, std)
    torch.testing.assert_close(kl, torch.tensor([0.0, 0.0625, 0.5, 2.25]))
    torch.testing.assert_close(ood_mask(kl, 0.75), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(safe_indicator(kl, 0.5), torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_cpq_dual_variable_grows_while_ood_actions_look_cheap_and_is_capped():
    assert alpha_step(0.2, ood_cost_q=0.0, target=1.5, lr=0.1, cap=1.0) == pytest.approx(0.35)
    assert alpha_step(0.2, ood_cost_q=3.5, target=1.5, lr=0.1, cap=1.0) == pytest.approx(0.0)
    assert alpha_step(0.95, ood_cost_q=0.0, target=1.5, lr=0.1, cap=1.0) == 1.0


def test_cpq_makes_unfamiliar_actions_look_costlier_than_the_data(toy_dataset):
    env = envs.make(TOY)
    agent = CPQ(env, seed=0, **SMALL).learn_offline(toy_dataset, n_steps=600, log_interval=200)
    rows = agent.logger.history
    assert all(np.isfinite(v) for row in rows for v in row.values())
    rng = np.random.default_rng(0)
    index = rng.choice(len(toy_dataset.observations), 512, replace=False)
    obs = agent.obs_scaler(torch.as_tensor(toy_dataset.observations[index]))
    data_actions = agent.action_scaler.normalize(torch.as_tensor(toy_dataset.actions[index]))
    with torch.no_grad():
        mean, std = agent.vae.encode(obs, data_actions)
        # The unfamiliar action per state: the data's action mirrored through the origin.
        far_mean, far_std = agent.vae.encode(obs, -data_actions)
        data_q = agent.cost_q(obs, data_actions).min(dim=0).values.mean()
        far_q = agent.cost_q(obs, -data_actions).min(dim=0).values.mean()
    assert latent_kl(far_mean, far_std).mean() > latent_kl(mean, std).mean()
    assert far_q > data_q


def test_q_cost_methods_refuse_data_without_costs(toy_dataset):
    unlabeled, _ = toy_dataset.strip_costs(n_safe_demos=5)
    env = envs.make(TOY)
    for agent_class in (BCQLag, CPQ):
        with pytest.raises(ValueError, match="cost labels"):
            agent_class(env, seed=0, **SMALL).learn_offline(unlabeled, n_steps=2)


def test_configs_name_the_bad_value():
    env = envs.make(TOY)
    with pytest.raises(ValueError, match="clipped_double_q_weight"):
        BCQLag(env, clipped_double_q_weight=1.5)
    with pytest.raises(ValueError, match="ood_quantile"):
        CPQ(env, ood_quantile=2.0)
