"""COptiDICE: f-divergence pieces, stationary weights, dual updates and a short real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import envs
from safe_agents import COptiDICE
from safe_agents.baselines.coptidice import (
    COptiDICEConfig,
    DualVariables,
    cost_upper_bound,
    dice_advantage,
    f_divergence,
    f_prime_inverse,
    lambda_loss,
    normalize_weights,
    nu_loss,
    weights_from_advantage,
)
from safe_agents.common.imitation import weighted_bc_loss
from safe_agents.common.lagrangian import cost_limit_in_q_units

TOY = "OfflineToyReachAvoid-v0"
SMALL = {"batch_size": 64, "actor_hidden_sizes": (32, 32), "critic_hidden_sizes": (32, 32)}


# ---------------------------------------------------------------------- f-divergences
def test_softchi_f_prime_inverse_on_hand_values():
    y = torch.tensor([-1.0, 0.0, 2.0])
    expected = torch.tensor([math.exp(-1.0), 1.0, 3.0])
    torch.testing.assert_close(f_prime_inverse(y, "softchi"), expected)
    torch.testing.assert_close(f_prime_inverse(torch.tensor([-2.0]), "chi2"), torch.tensor([-1.0]))
    torch.testing.assert_close(f_prime_inverse(torch.tensor([1.0]), "kl"), torch.tensor([1.0]))


def test_f_values_on_hand_values():
    for f_type in ("softchi", "chi2", "kl"):
        torch.testing.assert_close(f_divergence(torch.tensor([1.0]), f_type), torch.tensor([0.0]))
    x = torch.tensor([math.exp(-1.0), 3.0])
    torch.testing.assert_close(f_divergence(x, "softchi"), torch.tensor([1 - 2 / math.e, 2.0]))


@pytest.mark.parametrize("f_type", ["softchi", "chi2", "kl"])
def test_f_prime_inverse_inverts_the_derivative_of_f(f_type):
    y = torch.linspace(-3.0, 3.0, 13)
    x = f_prime_inverse(y, f_type).requires_grad_(True)
    (derivative,) = torch.autograd.grad(f_divergence(x, f_type).sum(), x)
    torch.testing.assert_close(derivative, y, atol=1e-4, rtol=1e-4)


def test_unknown_f_divergence_is_refused():
    with pytest.raises(ValueError, match="f_type must be one of"):
        f_divergence(torch.ones(1), "js")
    with pytest.raises(ValueError, match="f_type must be one of"):
        f_prime_inverse(torch.ones(1), "js")


# ---------------------------------------------------------------------- weights and losses
def test_advantage_on_hand_values():
    advantage = dice_advantage(
        rewards=torch.tensor([1.0, 1.0]),
        costs=torch.tensor([0.0, 1.0]),
        nu=torch.tensor([2.0, 2.0]),
        next_nu=torch.tensor([3.0, 3.0]),
        done=torch.tensor([0.0, 1.0]),
        lmbda=0.5,
        gamma=0.9,
    )
    # 1 + 0.9 * 3 - 2 = 1.7; the second ends the episode: 1 - 0.5 - 2 = -1.5.
    torch.testing.assert_close(advantage, torch.tensor([1.7, -1.5]))


def test_weights_are_non_negative_and_normalized_on_crafted_advantages():
    advantage = torch.tensor([-1.0, 0.0, 1.0, -100.0])
    weights = weights_from_advantage(advantage, alpha=0.5, f_type="softchi")
    torch.testing.assert_close(weights[:3], torch.tensor([math.exp(-2.0), 1.0, 3.0]))
    assert (weights >= 0).all() and weights[3] < 1e-40
    # chi2's (f')^{-1}(y) = y + 1 goes negative: the ratio is clipped at 0.
    clipped = weights_from_advantage(advantage, alpha=0.5, f_type="chi2")
    torch.testing.assert_close(clipped, torch.tensor([0.0, 1.0, 3.0, 0.0]))
    for w in (weights, clipped):
        normalized = normalize_weights(w)
        assert (normalized >= 0).all()
        torch.testing.assert_close(normalized.mean(), torch.tensor(1.0))
    torch.testing.assert_close(normalize_weights(torch.zeros(3)), torch.ones(3))


def test_nu_loss_on_hand_values():
    advantage = torch.tensor([0.0, 1.0])
    weights = weights_from_advantage(advantage, 1.0, "chi2")  # [1, 2]
    loss = nu_loss(torch.tensor([1.0, 3.0]), advantage, weights, 1.0, 0.9, "chi2")
    # 0.1 * 2 + mean([1 * 0 - 0, 2 * 1 - 0.5]) = 0.2 + 0.75
    torch.testing.assert_close(loss, torch.tensor(0.95))


def test_cost_upper_bound_tilts_toward_costly_samples():
    costs = torch.tensor([0.0, 0.0, 0.0, 1.0])
    weights = torch.ones(4)
    zeros = torch.zeros(4)
    plain = cost_upper_bound(zeros, zeros, zeros, costs, zeros, weights, torch.tensor(1.0), 0.9, 0)
    assert plain.cost_ub.item() == pytest.approx(0.25) and plain.chi_loss.item() == 0.0
    bound = cost_upper_bound(
        zeros, zeros, zeros, costs, zeros, weights, torch.tensor(0.5), 0.9, 0.01
    )
    # ell = c, so w~ = 4 softmax(2 c): the costly sample gets e^2 times the others' weight.
    tilt = 4 * torch.tensor([1.0, 1.0, 1.0, math.e**2]) / (3 + math.e**2)
    torch.testing.assert_close(bound.tilt, tilt)
    torch.testing.assert_close(bound.tilt.mean(), torch.tensor(1.0))
    assert bound.cost_ub.item() == pytest.approx(tilt[3].item() / 4)
    assert bound.cost_ub.item() > plain.cost_ub.item()
    assert bound.kl.item() > 0.01
    # chi_loss is tau log mean exp(ell / tau).
    expected = 0.5 * math.log((3 + math.e**2) / 4)
    assert bound.chi_loss.item() == pytest.approx(expected, rel=1e-5)


def test_chi_gradient_is_the_tilted_mean_of_the_gradient_of_ell():
    chi = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    costs, weights = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.5, 1.0, 2.0])
    zeros = torch.zeros(3)
    tau = torch.tensor(0.7)
    bound = cost_upper_bound(zeros, chi, zeros, costs, zeros, weights, tau, 0.9, 0.01)
    (gradient,) = torch.autograd.grad(bound.chi_loss, chi)
    # d ell_i / d chi_i = -w_i, so the gradient is -w~_i w_i / B.
    torch.testing.assert_close(gradient, -bound.tilt * weights / 3)


def test_tau_grows_when_the_tilt_is_further_than_epsilon():
    duals = DualVariables()
    optimizer = torch.optim.Adam(duals.parameters(), lr=0.1)
    before = duals.tau.item()
    costs, zeros = torch.tensor([0.0, 0.0, 0.0, 5.0]), torch.zeros(4)
    bound = cost_upper_bound(zeros, zeros, zeros, costs, zeros, torch.ones(4), duals.tau, 0.9, 0.01)
    assert bound.kl.item() > 0.01
    bound.tau_loss.backward()
    optimizer.step()
    assert duals.tau.item() > before


@pytest.mark.parametrize(("cost_ub", "grows"), [(0.5, True), (0.01, False)])
def test_lambda_grows_iff_the_cost_bound_exceeds_the_threshold(cost_ub, grows):
    duals = DualVariables()
    optimizer = torch.optim.Adam(duals.parameters(), lr=0.1)
    before = duals.lmbda.item()
    lambda_loss(duals.lmbda, torch.tensor(cost_ub), threshold=0.1).backward()
    optimizer.step()
    assert (duals.lmbda.item() > before) is grows


def test_weighted_bc_loss_ignores_zero_weight_samples():
    distribution = torch.distributions.Normal(torch.zeros(2, 1), torch.ones(2, 1))
    actions = torch.tensor([[0.0], [100.0]])
    loss = weighted_bc_loss(distribution, actions, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(loss, torch.tensor(0.5 * math.log(2 * math.pi)))


# ---------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"f_divergence": "js"}, "f_divergence must be one of"),
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"gamma": 1.0}, "gamma must be in"),
        ({"cost_ub_epsilon": -0.1}, "cost_ub_epsilon must be >= 0"),
        ({"cost_limit": -1.0}, "cost_limit must be >= 0"),
        ({"episode_length": 0}, "episode_length must be > 0"),
        ({"critic_hidden_sizes": ()}, "critic_hidden_sizes must be positive widths"),
        ({"augmentation_noise": -1.0}, "augmentation_noise must be >= 0"),
    ],
)
def test_config_validation_names_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        COptiDICEConfig(**overrides)


def test_defaults_are_osrls():
    config = COptiDICEConfig()
    assert (config.gamma, config.alpha, config.f_divergence) == (0.99, 0.5, "softchi")
    assert (config.cost_ub_epsilon, config.batch_size, config.reward_scale) == (0.01, 512, 0.1)
    assert config.actor_learning_rate == config.critic_learning_rate == 1e-4


# ---------------------------------------------------------------------- the agent
@pytest.fixture(scope="module")
def trained(toy_dataset):
    env = envs.make(TOY)
    agent = COptiDICE(env, seed=0, **SMALL).learn_offline(toy_dataset, n_steps=200, log_interval=50)
    return env, agent


def test_threshold_is_the_shared_conversion_in_normalized_units(trained, toy_dataset):
    _, agent = trained
    limit = toy_dataset.metadata["cost_limit"]
    expected = (1 - 0.99) * cost_limit_in_q_units(limit, 0.99, 100)
    assert float(agent.cost_threshold.value) == pytest.approx(expected)
    assert agent.initial_obs.shape == (toy_dataset.n_episodes, 2)


def test_weights_on_a_real_minibatch_are_non_negative_and_normalized(trained):
    _, agent = trained
    weights, normalized = agent.stationary_weights(agent.sampler.sample(256))
    assert weights.shape == normalized.shape == (256,)
    assert (weights >= 0).all() and torch.isfinite(weights).all()
    torch.testing.assert_close(normalized.mean(), torch.tensor(1.0))
    assert weights.std() > 0  # the correction discriminates between transitions


def test_short_training_logs_finite_metrics_and_evaluates(trained):
    env, agent = trained
    last = agent.logger.history[-1]
    for key in ("nu_loss", "chi_loss", "lambda", "tau", "actor_loss", "weight_mean", "weight_max"):
        assert np.isfinite(last[f"train/{key}"]), key
    assert last["train/weight_max"] >= last["train/weight_mean"] >= 0
    report = envs.evaluate(agent, env, n_episodes=2)
    assert np.isfinite(report["mean_normalized_return"])
    assert np.isfinite(report["mean_normalized_cost"])


@pytest.mark.parametrize(("cost_limit", "grows"), [(0.0, True), (100.0, False)])
def test_lambda_follows_the_constraint_in_training(toy_dataset, cost_limit, grows):
    env = envs.make(TOY)
    agent = COptiDICE(env, seed=0, cost_limit=cost_limit, scalar_learning_rate=1e-2, **SMALL)
    before = agent.duals.lmbda.item()
    agent.learn_offline(toy_dataset, n_steps=20, log_interval=20)
    assert (agent.duals.lmbda.item() > before) is grows


def test_dataset_without_costs_is_refused(toy_dataset):
    agent = COptiDICE(envs.make(TOY), seed=0, **SMALL)
    with pytest.raises(ValueError, match="needs cost labels"):
        agent.learn_offline(toy_dataset.without_costs(), n_steps=1)
