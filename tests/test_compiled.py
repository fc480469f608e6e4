"""``compile=True``: a learner's whole update compiled computes what the eager update computes.

Compiling takes seconds per learner on a CPU (tens the first time on a machine, before torch's
compile cache fills), so the agent tests are marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import envs
from safe_agents import DRCORL, DSPO, FISOR, SPI, BaseAgent, BCAll
from safe_agents.common.callbacks import StopAfterSteps
from safe_agents.common.compiled import Program, Update
from safe_agents.common.critics import make_target
from safe_agents.common.diffusion import NoiseScheduler
from safe_agents.common.networks import Mish

TOY = "OfflineToyReachAvoid-v0"


def small_learner(seed: int = 0, width: int = 16) -> tuple[nn.Module, nn.Module, torch.optim.Adam]:
    torch.manual_seed(seed)
    network = nn.Sequential(nn.Linear(3, width), Mish(), nn.LayerNorm(width), nn.Linear(width, 1))
    return network, make_target(network), torch.optim.Adam(network.parameters(), lr=1e-2)


def regression(network: nn.Module):
    def loss(x: torch.Tensor, y: torch.Tensor):
        error = network(x).squeeze(-1) - y
        return (error**2).mean(), {"largest_error": error.abs().max().detach()}

    return loss


def updates(compile_from: int, steps: int = 4) -> tuple[nn.Module, nn.Module, dict]:
    """A learner trained ``steps`` updates, eagerly up to ``compile_from``, compiled after; the
    rate changes at every update, as FISOR's cosine schedule does."""
    network, target, optimizer = small_learner()
    eager = Update(regression(network), optimizer, {"net": network}, [(target, network, 0.1)])
    compiled = Update(
        regression(network), optimizer, {"net": network}, [(target, network, 0.1)], compile=True
    )
    generator = torch.Generator().manual_seed(1)
    for k in range(steps):
        optimizer.param_groups[0]["lr"] = 1e-2 / (k + 1)
        x, y = torch.randn(32, 3, generator=generator), torch.randn(32, generator=generator)
        logged = (compiled if k >= compile_from else eager)(x, y)
        assert set(logged) == {"loss", "largest_error"}
    return network, target, optimizer.state_dict()


def test_a_compiled_update_computes_adam_and_the_average_as_the_eager_one():
    graphs = counters["stats"]["unique_graphs"]
    eager_network, eager_target, eager_state = updates(compile_from=4)
    # Two eager updates, then two compiled ones on the same optimizer state.
    network, target, state = updates(compile_from=2)
    # One program, though the rate changed at every update.
    assert counters["stats"]["unique_graphs"] - graphs == 1
    for mine, theirs in ((network, eager_network), (target, eager_target)):
        for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for index, entry in state["state"].items():
        for key, value in entry.items():
            torch.testing.assert_close(value, eager_state["state"][index][key])


def test_each_learner_keeps_its_own_compiled_program_past_torchs_recompile_limit():
    # torch.compile keeps at most recompile_limit programs per function, then refuses the next
    # (fullgraph); learners (here of different sizes, so different programs) each have their own.
    graphs = counters["stats"]["unique_graphs"]
    limit = torch._dynamo.config.recompile_limit
    for seed in range(limit + 2):
        network, _, optimizer = small_learner(seed, width=8 + seed)
        update = Update(regression(network), optimizer, {"net": network}, compile=True)
        update(torch.randn(8, 3), torch.randn(8))
        assert update.compile_seconds is not None
    assert counters["stats"]["unique_graphs"] - graphs == limit + 2


def test_a_compiled_update_refuses_what_it_does_not_implement():
    network, _, _ = small_learner()
    sgd = torch.optim.SGD(network.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="torch.optim.Adam"):
        Update(regression(network), sgd, {"net": network}, compile=True)
    decaying = torch.optim.Adam(network.parameters(), weight_decay=0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        Update(regression(network), decaying, {"net": network}, compile=True)
    other, _, _ = small_learner()
    with pytest.raises(ValueError, match="exactly its networks"):
        Update(
            regression(network),
            torch.optim.Adam(other.parameters()),
            {"net": network},
            compile=True,
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variance_type": "fixed_large"},
        {"variance_type": "fixed_small"},
        {"sampler": "ddim", "eta": 0.0},
        {"sampler": "ddim", "eta": 0.5},
    ],
)
def test_sampling_noise_is_what_sample_draws_from_the_generator(kwargs):
    scheduler = NoiseScheduler(5, **kwargs)
    weight = torch.randn(2, 2)

    def model(x, t):
        return x @ weight + 0.1 * t

    first, second = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    drawn = scheduler.sample(model, (7, 2), first)
    noise = scheduler.sampling_noise((7, 2), second)
    assert noise.shape == (6, 7, 2)
    assert torch.equal(scheduler.sample(model, (7, 2), noise=noise), drawn)  # bit for bit
    assert torch.equal(first.get_state(), second.get_state())  # the same draws, no more


def test_agents_without_a_compiled_update_refuse_compile_by_name():
    env = envs.make(TOY)
    with pytest.raises(ValueError, match="compile=True is for: .*drcorl.*dspo.*fisor.*spi"):
        BCAll(env, compile=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("agent_class", "kwargs"),
    [
        (FISOR, {"actor_dropout": 0.0}),  # dropout masks: compiled programs draw their own
        (SPI, {}),
        (DRCORL, {"pretrain_steps": 2}),  # both stages
    ],
)
def test_compiled_agents_train_as_eager_ones_and_save_and_resume(agent_class, kwargs, tmp_path):
    env, data = envs.make(TOY), envs.load_dataset(TOY)
    eager = agent_class(env, seed=0, preset="cpu", **kwargs)
    compiled = agent_class(env, seed=0, preset="cpu", compile=True, **kwargs)
    for agent in (eager, compiled):
        agent.learn_offline(data, n_steps=50, callback=StopAfterSteps(4))
    assert compiled.compile_seconds is not None and eager.compile_seconds is None
    assert_trained_alike(compiled, eager)
    # Acting: one observation through a compiled program (FISOR, SPI), a batch eagerly. The
    # program samples the candidates an eager call samples (deterministic: the seed's noise)
    # and executes one of them; which one may differ where two score within rounding, and the
    # reverse chain amplifies rounding (its first step divides by sqrt(abar_T), 0.08 at T = 5).
    if agent_class is not DRCORL:
        for obs in data.observations[:3]:
            single = compiled.predict(obs, deterministic=True)[0]
            with torch.no_grad():
                scaled = compiled.obs_scaler(torch.as_tensor(obs)[None])
                noise = compiled._candidate_noise(1, compiled.config.n_candidates, True)
                candidates = compiled._candidates_from(scaled, noise)
                candidates = compiled.action_scaler.denormalize(candidates)[0].numpy()
            assert np.abs(candidates - single).max(axis=1).min() < 1e-2
        assert compiled.programs["act"].compile_seconds is not None  # it ran compiled
    # Saved and resumed with compile=True, it continues the eager run's state.
    path = compiled.save(tmp_path / "compiled")
    resumed = BaseAgent.load(path, compile=True)
    for agent in (eager, resumed):
        agent.learn_offline(data, n_steps=50, callback=StopAfterSteps(6))
    assert_trained_alike(resumed, eager)


@pytest.mark.slow
def test_a_compiled_dspo_trains_its_denoiser_and_policy_as_the_eager_one(tmp_path):
    # Through all three stages: the discriminator (eager either way), the denoiser's compiled
    # updates, generation from the compiled denoiser's weights, the policy's compiled updates.
    env, data = envs.make(TOY), envs.load_dataset(TOY)
    unlabeled, demos = data.strip_costs(n_safe_demos=10)
    kwargs = {
        "seed": 0,
        "preset": "cpu",
        "dropout": 0.0,  # the transformer's masks come from the global generator
        "discriminator_steps": 2,
        "diffusion_train_steps": 4,
        "n_generated_segments": 8,
    }
    eager, compiled = DSPO(env, **kwargs), DSPO(env, compile=True, **kwargs)
    for agent in (eager, compiled):
        agent.learn_offline(unlabeled, demos=demos, n_steps=20, callback=StopAfterSteps(9))
    assert set(compiled.updates) == {"denoiser", "actor"}
    # Both updates ran compiled (a program records its compile time at its first call).
    assert all(update.compile_seconds is not None for update in compiled.updates.values())
    assert all(update.compile_seconds is None for update in eager.updates.values())
    assert_dspo_trained_alike(compiled, eager)
    path = compiled.save(tmp_path / "compiled")
    resumed = BaseAgent.load(path, compile=True)
    for agent in (eager, resumed):
        agent.learn_offline(unlabeled, demos=demos, n_steps=20, callback=StopAfterSteps(12))
    assert_dspo_trained_alike(resumed, eager)


def assert_dspo_trained_alike(agent: DSPO, other: DSPO) -> None:
    """The weights as :func:`assert_trained_alike`; the generated pairs, the end of a 20-step
    reverse chain in environment units, within 1e-4 of their size."""
    generated = [agent.generated_segments(), other.generated_segments()]
    for mine, theirs in zip(*generated, strict=True):
        assert np.abs(mine - theirs).max() < 1e-4 * max(1.0, np.abs(theirs).max())
    agent_weights, other_weights = agent.parameters_dict(), other.parameters_dict()
    for key in [key for key in agent_weights if key.startswith("generated.")]:
        del agent_weights[key], other_weights[key]
    assert_weights_alike(agent_weights, other_weights)


def assert_trained_alike(agent: BaseAgent, other: BaseAgent) -> None:
    """Weights equal up to rounding. Adam divides by the gradient's running scale, so where a
    gradient is near zero, rounding can move a weight by up to the learning rate per step
    (another CPU's kernels round differently): each weight within 1e-3, the mean within 1e-6."""
    assert_weights_alike(agent.parameters_dict(), other.parameters_dict())


def assert_weights_alike(mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert mine.keys() == theirs.keys()
    for key, value in mine.items():
        difference = (value.double() - theirs[key].double()).abs()
        assert difference.max() < 1e-3 and difference.mean() < 1e-6, key


@pytest.mark.slow
def test_a_compiled_fisor_with_dropout_is_reproducible_from_its_seed():
    env, data = envs.make(TOY), envs.load_dataset(TOY)
    runs = []
    for _ in range(2):
        agent = FISOR(env, seed=5, preset="cpu", compile=True)
        agent.learn_offline(data, n_steps=50, callback=StopAfterSteps(3))
        runs.append(agent.parameters_dict())
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), key


def test_a_function_that_cannot_compile_is_named_in_a_clear_error():
    def breaks(x: torch.Tensor) -> torch.Tensor:
        torch._dynamo.graph_break()  # not one program: refused, as a missing C++ compiler is
        return x + 1

    program = Program(breaks)
    with pytest.raises(RuntimeError, match="compile=True: torch.compile failed on breaks"):
        program(torch.ones(3))
    assert program.compile_seconds is None


def test_a_program_follows_a_change_of_the_state_it_reads():
    config = {"scale": 2.0}
    program = Program(lambda x: x * config["scale"], state=lambda: config["scale"])
    x = torch.ones(3)
    assert torch.equal(program(x), 2 * x)
    assert torch.equal(program(x), 2 * x)  # like the first call: no guard checks
    config["scale"] = 3.0  # a changed hyperparameter: the guards see it
    assert torch.equal(program(x), 3 * x)


@pytest.mark.slow
def test_eager_sampling_after_compiled_updates_uses_the_new_weights(tmp_path):
    # Compiled updates write the weights through their vectors; the eager sampler (a batch's
    # predict, SPI's next actions) keys its cached timestep embedding on the weights' versions.
    env, data = envs.make(TOY), envs.load_dataset(TOY)
    agent = FISOR(env, seed=1, preset="cpu", compile=True, ema_tau=0.5)  # the EMA moves fast
    observations = data.observations[:4]
    for steps in (3, 6):
        agent.learn_offline(data, n_steps=50, callback=StopAfterSteps(steps))
        batch = agent.predict(observations, deterministic=True)[0]  # eager, cached embedding
        plain = BaseAgent.load(agent.save(tmp_path / f"at{steps}"))  # eager, nothing cached
        assert np.array_equal(batch, plain.predict(observations, deterministic=True)[0])
