"""Every registered agent on a CUDA GPU: trains there, predicts, and saves and loads across devices.

Each agent is built at ``preset="cpu"`` on the toy task with ``device="cuda"``, and trains the
contract test's ``STEPS`` steps (``tests/test_agent_contract.py``), whose stage lengths it takes
too, so that DRCORL's pretraining and DSPO's discriminator, diffusion and policy stages all run.
Skipped where torch finds no CUDA device; ``pytest -m cuda`` runs only these.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_agent_contract import FAST_HYPERPARAMETERS, STEPS, TOY, learn

import envs
from safe_agents import get_agent_class, list_agents
from safe_agents.bench import STAGE_STEPS

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (torch.cuda.is_available() is False)",
    ),
]

DEVICE = "cuda"
# Same device: the same kernels; across devices: float32 rounding of other kernels.
ATOL = 1e-5


def stage_lengths(name: str) -> dict[str, int]:
    """The contract test's short stages for the agent's stage fields (pretraining, discriminator,
    diffusion), so that every stage runs within ``STEPS`` steps.

    Fails for an agent with a stage field the contract test does not shorten: at its ``cpu``
    length the run would end before the stage does (or be refused).
    """
    agent_class = get_agent_class(name)
    fields = {field.name for field in dataclasses.fields(agent_class.config_class)}
    contract = FAST_HYPERPARAMETERS.get(name, {})
    stages = {key: value for key, value in contract.items() if key in STAGE_STEPS}
    missing = sorted((fields & set(STAGE_STEPS)) - set(stages))
    if missing:
        pytest.fail(f"{name}: add {missing} to FAST_HYPERPARAMETERS in test_agent_contract.py")
    assert sum(stages.values()) < STEPS, f"{name}: the policy stage must run"
    return stages


@pytest.fixture(scope="module")
def env():
    return envs.make(TOY)


@pytest.fixture(scope="module")
def observations(env) -> np.ndarray:
    env.observation_space.seed(0)
    return np.asarray([env.observation_space.sample() for _ in range(16)], dtype=np.float32)


@pytest.fixture(scope="module", params=list_agents())
def trained(request, env, toy_dataset):
    """``(name, agent)``: the agent trained ``STEPS`` steps on the GPU at its cpu preset."""
    name = request.param
    agent = get_agent_class(name)(env, seed=0, device=DEVICE, preset="cpu", **stage_lengths(name))
    learn(agent, toy_dataset, n_steps=STEPS, log_interval=10)
    return name, agent


def _tensors_off(device_type: str, agent) -> list[str]:
    """Names of the agent's tensors that are not on ``device_type``: the saved modules'
    parameters and buffers, every optimized parameter and its optimizer state (Adam's moments;
    scalar step counters may stay on the CPU), and the agent's generators."""
    off = [
        key for key, tensor in agent.parameters_dict().items() if tensor.device.type != device_type
    ]
    for opt_name, optimizer in agent.optimizers.items():
        for group in optimizer.param_groups:
            for index, parameter in enumerate(group["params"]):
                if parameter.device.type != device_type:
                    off.append(f"optimizer {opt_name}: parameter {index}")
                for key, value in optimizer.state.get(parameter, {}).items():
                    is_tensor = isinstance(value, torch.Tensor) and value.dim() > 0
                    if is_tensor and value.device.type != device_type:
                        off.append(f"optimizer {opt_name}: state {key!r} of parameter {index}")
    for generator in ("train_generator", "act_generator"):
        if getattr(agent, generator).device.type != device_type:
            off.append(generator)
    return off


def _deterministic(agent, obs: np.ndarray) -> np.ndarray:
    return agent.predict(obs, deterministic=True)[0]


def test_trains_with_every_tensor_on_the_gpu(trained):
    name, agent = trained
    assert agent.device.type == DEVICE and agent.num_steps == STEPS
    losses = [
        value
        for row in agent.logger.history
        for key, value in row.items()
        if key.startswith("train/")
    ]
    assert losses and np.isfinite(losses).all(), name
    assert _tensors_off(DEVICE, agent) == [], name


def test_predicts_finite_actions_for_one_and_a_batch(trained, env, observations):
    name, agent = trained
    for deterministic in (True, False):
        single, state = agent.predict(observations[0], deterministic=deterministic)
        assert state is None
        assert single.shape == env.action_space.shape and single.dtype == np.float32, name
        batch, _ = agent.predict(observations, deterministic=deterministic)
        assert batch.shape == (len(observations), *env.action_space.shape), name
        assert batch.dtype == np.float32
        for actions in (single, batch):
            assert np.isfinite(actions).all(), name
            assert (actions >= env.action_space.low).all(), name
            assert (actions <= env.action_space.high).all(), name
    np.testing.assert_allclose(
        _deterministic(agent, observations[3]),
        _deterministic(agent, observations)[3],
        atol=ATOL,
        rtol=0,
    )


@pytest.mark.parametrize("load_device", [DEVICE, "cpu"])
def test_a_saved_agent_loads_on_either_device_and_repeats_its_actions(
    trained, tmp_path, observations, load_device
):
    name, agent = trained
    path = agent.save(tmp_path / "agent")
    loaded = type(agent).load(path, device=load_device)
    assert loaded.device.type == load_device and loaded.num_steps == STEPS
    assert _tensors_off(load_device, loaded) == [], name
    for key, tensor in agent.parameters_dict().items():
        assert torch.equal(tensor.to(load_device), loaded.parameters_dict()[key]), key
    np.testing.assert_allclose(
        _deterministic(loaded, observations),
        _deterministic(agent, observations),
        atol=ATOL,
        rtol=0,
        err_msg=name,
    )
