"""The pieces that make the agents faster compute what the plain versions compute.

Batched ensembles, the fast Mish and dropout, the time-embedding table, the scheduler's folded
step, cached soft updates, on-device metrics, fused optimizers kept through save/load, and files
from the other kind of device.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import envs
from safe_agents import FISOR, BaseAgent
from safe_agents.common.critics import QEnsemble, make_target, soft_update
from safe_agents.common.device import optimizer_options
from safe_agents.common.diffusion import NoiseScheduler
from safe_agents.common.logger import Logger
from safe_agents.common.networks import Dropout, Mish, NoisePredictionNet, mlp

TOY = "OfflineToyReachAvoid-v0"


@pytest.mark.parametrize("rows", [64, 20_000])  # batched; member by member (large layers)
def test_the_batched_ensemble_equals_separate_networks_and_reads_the_old_layout(rows):
    torch.manual_seed(0)
    ensemble = QEnsemble(5, 2, n=3, hidden_sizes=(32, 16))
    torch.manual_seed(0)  # the same draws, in the same order, as three separate MLPs
    members = [mlp(7, 1, (32, 16)) for _ in range(3)]
    obs, actions = torch.randn(rows, 5), torch.randn(rows, 2)
    separate = torch.stack([m(torch.cat([obs, actions], -1)).squeeze(-1) for m in members])
    assert ensemble(obs, actions).shape == (3, rows)
    torch.testing.assert_close(ensemble(obs, actions), separate, rtol=1e-5, atol=1e-6)
    # A file saved with one nn.Sequential per member loads into the batched layout.
    old = {
        f"members.{i}.{key}": value
        for i, m in enumerate(members)
        for key, value in m.state_dict().items()
    }
    fresh = QEnsemble(5, 2, n=3, hidden_sizes=(32, 16))
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh(obs, actions), separate, rtol=1e-5, atol=1e-6)
    # A member missing from an old file is an error, not a silently smaller ensemble.
    with pytest.raises(RuntimeError):
        QEnsemble(5, 2, n=4, hidden_sizes=(32, 16)).load_state_dict(old)


@pytest.mark.parametrize("size", [4001, 20_001])  # torch's kernel, then the closed form
def test_mish_matches_float64_values_and_gradients(size):
    x = torch.linspace(-60.0, 60.0, size, requires_grad=True)
    exact = torch.linspace(-60.0, 60.0, size, dtype=torch.float64, requires_grad=True)
    Mish()(x).sum().backward()
    F.mish(exact).sum().backward()
    torch.testing.assert_close(Mish()(x).double(), F.mish(exact), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), exact.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the no-gradient path (sampling) too
        torch.testing.assert_close(Mish()(x).double(), F.mish(exact), rtol=1e-6, atol=1e-6)
    # Far in the tails: no cancellation, no overflow; inf and NaN as torch's.
    tails = torch.tensor([-100.0, -30.0, -17.0, 100.0, 1e30, float("inf"), float("nan")])
    torch.testing.assert_close(
        Mish()(tails.repeat(3000)),
        F.mish(tails).repeat(3000),
        rtol=1e-5,
        atol=1e-30,
        equal_nan=True,
    )


def test_dropout_drops_at_rate_p_scales_the_rest_and_follows_the_global_seed():
    layer = Dropout(0.25).train()
    x = torch.ones(200_000)
    torch.manual_seed(3)
    out = layer(x)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.005  # 200k draws: sd 0.001
    assert torch.allclose(out[out != 0], torch.tensor(1 / 0.75))
    torch.manual_seed(3)
    assert torch.equal(layer(x), out)
    assert torch.equal(layer.eval()(x), x)
    grad = torch.ones(10, requires_grad=True)
    torch.manual_seed(3)
    kept = Dropout(0.25).train()(grad)
    kept.sum().backward()
    assert torch.equal(grad.grad, kept.detach())  # d(x * mask * scale)/dx = mask * scale


def test_the_time_table_and_one_timestep_give_the_per_row_embedding():
    torch.manual_seed(0)
    table = NoisePredictionNet(4, 2, width=16, n_blocks=1, dropout=0.0, num_timesteps=5).eval()
    per_row = NoisePredictionNet(4, 2, width=16, n_blocks=1, dropout=0.0).eval()
    per_row.load_state_dict(table.state_dict())
    noisy, obs = torch.randn(40, 2), torch.randn(40, 4)
    t = torch.randint(5, (40,))
    torch.testing.assert_close(table(noisy, t, obs), per_row(noisy, t, obs))
    three = torch.full((40,), 3)
    torch.testing.assert_close(table(noisy, torch.tensor([3]), obs), per_row(noisy, three, obs))
    with torch.no_grad():  # the cached embedding follows the weights
        first = table(noisy, torch.tensor([3]), obs)
        table.time_embedding[1].weight.add_(0.5)
        second = table(noisy, torch.tensor([3]), obs)
        per_row.load_state_dict(table.state_dict())
    assert not torch.equal(first, second)
    torch.testing.assert_close(second, per_row(noisy, three, obs))


def _step_as_written(scheduler: NoiseScheduler, eps, t, x, noise):
    """The reverse step spelled out as in its docstring: x0 first, then the posterior mean."""
    visited = scheduler.timesteps.tolist()
    index = visited.index(t)
    prev = visited[index + 1] if index + 1 < len(visited) else -1
    abar_t = float(scheduler.alphas_cumprod[t])
    abar_prev = float(scheduler.alphas_cumprod[prev]) if prev >= 0 else 1.0
    x0 = (x - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
    if scheduler.sampler == "ddim":
        sigma = scheduler.eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
        mean = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
    else:
        alpha = abar_t / abar_prev
        mean = (
            math.sqrt(abar_prev) * (1 - alpha) / (1 - abar_t) * x0
            + math.sqrt(alpha) * (1 - abar_prev) / (1 - abar_t) * x
        )
        sigma = math.sqrt(1 - alpha)
        if scheduler.variance_type == "fixed_small":
            sigma *= math.sqrt((1 - abar_prev) / (1 - abar_t))
    return mean if prev < 0 else mean + sigma * noise


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampler": "ddpm", "variance_type": "fixed_large"},
        {"sampler": "ddpm", "variance_type": "fixed_small"},
        {"sampler": "ddim", "eta": 0.5},
    ],
)
def test_the_folded_step_equals_the_step_as_written(kwargs):
    scheduler = NoiseScheduler(10, **kwargs)
    scheduler.set_timesteps(4)
    x, eps, noise = torch.randn(3, 256, 3).unbind(0)
    for t in scheduler.timesteps.tolist():
        expected = _step_as_written(scheduler, eps, t, x, noise)
        torch.testing.assert_close(scheduler.step(eps, t, x, noise=noise), expected)


def test_soft_update_follows_a_new_source_and_copies_buffers():
    source, other = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    target = make_target(source)
    with torch.no_grad():
        source.weight.fill_(3.0)
        other.weight.fill_(-1.0)
        other.running_mean.fill_(7.0)
    soft_update(target, source, 0.5)
    assert torch.allclose(target.weight, torch.full((3,), 2.0))
    soft_update(target, other, 0.5)  # another source: not the cached lists of the first
    assert torch.allclose(target.weight, torch.full((3,), 0.5))
    assert torch.equal(target.running_mean, other.running_mean)


def test_the_logger_averages_tensors_and_floats_alike():
    logger = Logger()
    for value in (1.0, 2.0, 6.0):
        logger.record("train/a", torch.tensor(value))
        logger.record("train/b", value)
    assert logger.dump(3) == {"train/a": 3.0, "train/b": 3.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    env = envs.make(TOY)
    agent = FISOR(env, seed=0, preset="cpu", n_steps=20, actor_batch_size=32, batch_size=32)
    agent.learn_offline(envs.load_dataset(TOY))
    path = agent.save(tmp_path_factory.mktemp("fisor") / "fisor.zip")
    return env, agent, path


def test_optimizers_keep_this_machines_implementation_through_load(trained):
    _, _, path = trained
    expected = optimizer_options(torch.device("cpu"))
    loaded = BaseAgent.load(path, device="cpu")
    for optimizer in loaded.optimizers.values():
        for key, value in expected.items():
            assert optimizer.param_groups[0][key] == value


def test_a_file_with_gpu_generator_states_loads_on_the_cpu(trained, tmp_path):
    from safe_agents.common import serialization

    env, agent, path = trained
    contents = serialization.read_agent_file(path)
    training = dict(contents.training)
    cuda_like = torch.zeros(16, dtype=torch.uint8)  # a CUDA (Philox) state: seed and offset
    training["train_generator"] = training["act_generator"] = cuda_like
    moved = serialization.write_agent_file(
        tmp_path / "from_gpu.zip", contents.config, contents.weights, training
    )
    loaded = BaseAgent.load(moved, device="cpu")
    obs = envs.load_dataset(TOY).observations[:8]
    torch.testing.assert_close(
        torch.as_tensor(loaded.predict(obs, deterministic=True)[0]),
        torch.as_tensor(agent.predict(obs, deterministic=True)[0]),
    )
    assert loaded.train_generator.get_state().numel() != 16  # kept its own, seeded
