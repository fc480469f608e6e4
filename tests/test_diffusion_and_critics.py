"""Shared diffusion and critic pieces against hand-checkable values."""

from __future__ import annotations

import math

import pytest
import torch

from safe_agents.common.candidates import select_candidates
from safe_agents.common.critics import (
    QEnsemble,
    expectile_loss,
    make_target,
    reachability_target,
    reversed_expectile_loss,
    soft_update,
)
from safe_agents.common.diffusion import NoiseScheduler, vp_beta_schedule


def test_vp_schedule_matches_its_closed_form():
    T = 5
    betas = vp_beta_schedule(T)
    for t in range(1, T + 1):
        alpha = math.exp(-0.1 / T - 0.5 * (10.0 - 0.1) * (2 * t - 1) / T**2)
        assert betas[t - 1].item() == pytest.approx(1 - alpha, rel=1e-6)
    scheduler = NoiseScheduler(T)
    expected = torch.cumprod(1 - betas.double(), 0).float()
    torch.testing.assert_close(scheduler.alphas_cumprod, expected)


@pytest.mark.parametrize("schedule", ["vp", "linear", "cosine"])
def test_add_noise_is_the_forward_marginal(schedule):
    scheduler = NoiseScheduler(10, beta_schedule=schedule)
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor([0, 3, 6, 9])
    abar = scheduler.alphas_cumprod[t].unsqueeze(1)
    torch.testing.assert_close(
        scheduler.add_noise(x0, noise, t), abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    )
    assert (scheduler.betas > 0).all() and (scheduler.betas < 1).all()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("steps", [10, 4, 1])
def test_an_exact_noise_model_recovers_the_data_point(sampler, steps):
    # With the noise that really separates x_t from x0, every reverse chain lands on x0:
    # DDIM exactly, DDPM because its last step's posterior mean is x0 itself.
    scheduler = NoiseScheduler(10, sampler=sampler)
    scheduler.set_timesteps(steps)
    x0 = torch.tensor([[0.3, -0.7]])

    def oracle(x, t):
        abar = scheduler.alphas_cumprod[t].unsqueeze(1)
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    sample = scheduler.sample(oracle, (1, 2), torch.Generator().manual_seed(0), clip=None)
    torch.testing.assert_close(sample, x0, atol=1e-4, rtol=0)


def test_ddpm_step_is_the_posterior_mean_plus_posterior_noise():
    scheduler = NoiseScheduler(5)
    x_t, eps, t = torch.randn(1, 2), torch.randn(1, 2), 3
    abar, abar_prev = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[t - 1]
    beta = scheduler.betas[t]
    x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    x0_coefficient = abar_prev.sqrt() * beta / (1 - abar)
    xt_coefficient = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
    mean = x0_coefficient * x0 + xt_coefficient * x_t
    zero = torch.zeros_like(x_t)
    torch.testing.assert_close(scheduler.step(eps, t, x_t, noise=zero), mean)
    variance = beta * (1 - abar_prev) / (1 - abar)
    one = torch.ones_like(x_t)
    torch.testing.assert_close(scheduler.step(eps, t, x_t, noise=one), mean + variance.sqrt())


def test_set_timesteps_validates_and_ends_at_zero():
    scheduler = NoiseScheduler(10)
    assert scheduler.set_timesteps(4).tolist() == [9, 6, 3, 0]
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler.set_timesteps(11)
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseScheduler(5, beta_schedule="quadratic")


def test_expectile_losses_pull_toward_max_and_min():
    # Fit one scalar V to Q values {0, 1, 2, 10}: IQL's expectile goes up, FISOR's reversed down.
    q = torch.tensor([0.0, 1.0, 2.0, 10.0])
    fitted = {}
    for name, loss_fn in (("expectile", expectile_loss), ("reversed", reversed_expectile_loss)):
        v = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.Adam([v], lr=0.05)
        for _ in range(3000):
            optimizer.zero_grad()
            loss_fn(q - v, 0.9).backward()
            optimizer.step()
        fitted[name] = v.item()
    # Closed forms: 0.1 (3v - 3) = 0.9 (10 - v) -> 7.75; 0.9 (2v - 1) = 0.1 (12 - 2v) -> 1.05.
    assert fitted["expectile"] == pytest.approx(7.75, abs=0.05)
    assert fitted["reversed"] == pytest.approx(1.05, abs=0.05)
    diff = torch.tensor([-2.0, 3.0])
    assert reversed_expectile_loss(diff, 0.9).item() == pytest.approx((0.9 * 4 + 0.1 * 9) / 2)
    assert expectile_loss(diff, 0.9).item() == pytest.approx((0.1 * 4 + 0.9 * 9) / 2)


def test_reachability_target_by_hand():
    h = torch.tensor([-1.0, -1.0, 25.0, 25.0])
    next_v = torch.tensor([-1.0, 5.0, -1.0, 5.0])
    done = torch.tensor([0.0, 0.0, 0.0, 1.0])
    target = reachability_target(h, next_v, done, gamma=0.9)
    expected = [0.1 * -1 + 0.9 * -1, 0.1 * -1 + 0.9 * 5, 0.1 * 25 + 0.9 * 25, 25.0]
    torch.testing.assert_close(target, torch.tensor(expected))


def test_soft_update_and_ensemble_shapes():
    ensemble = QEnsemble(3, 2, n=4, hidden_sizes=(8,))
    assert ensemble(torch.zeros(5, 3), torch.zeros(5, 2)).shape == (4, 5)
    target = make_target(ensemble)
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in ensemble.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    soft_update(target, ensemble, 0.25)
    for old, new, source in zip(before, target.parameters(), ensemble.parameters(), strict=True):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * source)


def test_select_candidates_on_crafted_scores():
    candidates = torch.arange(2 * 3 * 1, dtype=torch.float32).reshape(2, 3, 1)
    cost = torch.tensor([[0.5, -1.0, -0.2], [3.0, 2.0, 1.0]])
    reward = torch.tensor([[9.0, 1.0, 5.0], [9.0, 8.0, 7.0]])
    actions, index = select_candidates(candidates, cost)
    assert index.tolist() == [1, 2] and actions.squeeze(-1).tolist() == [1.0, 5.0]
    # Highest reward among safe candidates (cost <= 0); none safe in row 2 -> the safest.
    _, index = select_candidates(candidates, cost, reward, 0.0, "reward_within_threshold")
    assert index.tolist() == [2, 2]
    with pytest.raises(ValueError, match="needs reward_scores"):
        select_candidates(candidates, cost, mode="reward_within_threshold")
    with pytest.raises(ValueError, match="mode must be one of"):
        select_candidates(candidates, cost, mode="random")
