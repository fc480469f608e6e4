"""The agent contract, checked for every registered agent (later agents are covered automatically).

Each agent learns a few steps on the shipped toy dataset; the checks are SB3's test_save_load /
test_deterministic plus resuming and bad-input errors.
"""

from __future__ import annotations

import io
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
import safe_agents
from safe_agents import AgentLoadError, BaseAgent, CheckpointCallback, list_agents
from safe_agents.common import StopAfterSteps

TOY = "OfflineToyReachAvoid-v0"
STEPS = 40
# Small networks and batches keep every agent's contract test to seconds on two CPU cores.
FAST_HYPERPARAMETERS: dict[str, dict] = {
    "bc_all": {"batch_size": 64, "hidden_sizes": (64, 64)},
    "bc_safe": {"batch_size": 64, "hidden_sizes": (64, 64)},
    "bcq_lag": {
        "batch_size": 64,
        "actor_hidden_sizes": (32, 32),
        "critic_hidden_sizes": (32, 32),
        "vae_hidden_sizes": (32, 32),
        "n_sampled_actions": 4,
    },
    "cdt": {
        "batch_size": 16,
        "embedding_dim": 16,
        "num_layers": 1,
        "num_heads": 2,
        "seq_len": 4,
        "episode_len": 100,
    },
    "cpq": {
        "batch_size": 64,
        "actor_hidden_sizes": (32, 32),
        "critic_hidden_sizes": (32, 32),
        "vae_hidden_sizes": (32, 32),
        "n_sampled_actions": 4,
    },
    "fisor": {
        "batch_size": 64,
        "actor_batch_size": 64,
        "critic_hidden_sizes": (32, 32),
        "actor_width": 32,
        "actor_blocks": 1,
        "n_candidates": 4,
    },
    "drcorl": {
        "batch_size": 64,
        "pretrain_steps": STEPS // 2,
        "actor_hidden_sizes": (32, 32),
        "critic_hidden_sizes": (32, 32),
        "behaviour_width": 32,
        "behaviour_blocks": 1,
        "temperature_epoch_steps": 5,
    },
    "spi": {
        "batch_size": 64,
        "critic_hidden_sizes": (32, 32),
        "actor_width": 32,
        "actor_blocks": 1,
        "n_candidates": 4,
    },
    "coptidice": {
        "batch_size": 64,
        "actor_hidden_sizes": (32, 32),
        "critic_hidden_sizes": (32, 32),
    },
    # Stages of 10 + 15 steps: the half-way checkpoint falls in the diffusion stage, so the
    # resume test also covers the recomputed safety signals and the generation after it.
    "dspo": {
        "batch_size": 64,
        "discriminator_steps": 10,
        "diffusion_train_steps": 15,
        "window_len": 16,
        "embedding_dim": 16,
        "num_layers": 1,
        "num_heads": 2,
        "pooling_dim": 8,
        "discriminator_batch_size": 8,
        "segment_len": 8,
        "diffusion_timesteps": 5,
        "denoiser_width": 16,
        "denoiser_blocks": 2,
        "diffusion_batch_size": 16,
        "n_generated_segments": 16,
        "hidden_sizes": (32, 32),
    },
}


@pytest.fixture(scope="module")
def env():
    return envs.make(TOY)


def make(name, env, seed=0, **overrides):
    return safe_agents.make_agent(
        name, env, seed=seed, **FAST_HYPERPARAMETERS.get(name, {}), **overrides
    )


def learn(agent, dataset, **kwargs):
    """``learn_offline``, in the cost-label-free setting for agents that need demonstrations."""
    if agent.needs_demos:
        dataset, kwargs["demos"] = dataset.strip_costs(n_safe_demos=10)
    return agent.learn_offline(dataset, **kwargs)


def _loss_rows(agent):
    return [
        {k: v for k, v in row.items() if not k.startswith("time/")} for row in agent.logger.history
    ]


@pytest.fixture(scope="module", params=list_agents())
def trained(request, env, toy_dataset):
    agent = learn(make(request.param, env), toy_dataset, n_steps=STEPS, log_interval=10)
    return request.param, agent


def test_registry_lists_the_baselines():
    assert {"bc_all", "bc_safe"} <= set(list_agents())
    with pytest.raises(ValueError, match="Registered: .*bc_safe"):
        safe_agents.make_agent("bc_sfe")


def test_learns_with_finite_logged_losses(trained):
    _, agent = trained
    assert agent.num_steps == STEPS
    rows = _loss_rows(agent)
    assert [row["step"] for row in rows] == [10, 20, 30, 40]
    losses = [value for row in rows for key, value in row.items() if key.startswith("train/")]
    assert losses and np.isfinite(losses).all()


def test_predict_single_and_batched_within_bounds(trained, env):
    _, agent = trained
    obs = np.asarray([env.observation_space.sample() for _ in range(7)])
    for deterministic in (True, False):
        single, state = agent.predict(obs[0], deterministic=deterministic)
        assert state is None
        assert single.shape == env.action_space.shape and single.dtype == np.float32
        batch, _ = agent.predict(obs, deterministic=deterministic)
        assert batch.shape == (7, *env.action_space.shape) and batch.dtype == np.float32
        assert (batch >= env.action_space.low).all() and (batch <= env.action_space.high).all()
    deterministic_batch, _ = agent.predict(obs, deterministic=True)
    # Batched and single forward passes agree up to float32 rounding of the matrix products.
    np.testing.assert_allclose(
        agent.predict(obs[3], deterministic=True)[0], deterministic_batch[3], atol=1e-6
    )


def test_predict_rejects_bad_observations(trained):
    _, agent = trained
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        agent.predict(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite values \\(row 1\\)"):
        agent.predict(np.array([[0.0, 0.0], [np.nan, 0.0]]))


def test_save_load_gives_identical_parameters_and_actions(trained, tmp_path, env):
    name, agent = trained
    path = agent.save(tmp_path / "agent")
    assert path.suffix == ".zip"
    obs = np.asarray([env.observation_space.sample() for _ in range(16)])
    for loaded in (type(agent).load(path), safe_agents.load_agent(path)):
        assert type(loaded) is type(agent) and loaded.num_steps == STEPS
        original, restored = agent.parameters_dict(), loaded.parameters_dict()
        assert original.keys() == restored.keys()
        for key in original:
            assert torch.equal(original[key], restored[key]), key
        np.testing.assert_array_equal(
            agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
        )
    with zipfile.ZipFile(path) as archive:
        assert set(archive.namelist()) == {
            "config.json",
            "weights.pt",
            "training.pt",
            "metadata.json",
        }


def test_two_seeded_runs_are_identical(trained, env, toy_dataset):
    name, agent = trained
    again = learn(make(name, env), toy_dataset, n_steps=STEPS, log_interval=10)
    assert _loss_rows(again) == _loss_rows(agent)
    obs = np.asarray([env.observation_space.sample() for _ in range(8)])
    np.testing.assert_array_equal(
        agent.predict(obs, deterministic=True)[0], again.predict(obs, deterministic=True)[0]
    )
    other = learn(make(name, env, seed=1), toy_dataset, n_steps=STEPS, log_interval=10)
    assert _loss_rows(other) != _loss_rows(agent)


def test_resume_from_checkpoint_equals_uninterrupted_run(trained, env, toy_dataset, tmp_path):
    name, agent = trained
    checkpoints = CheckpointCallback(save_freq=STEPS // 2, save_path=tmp_path)
    interrupted = make(name, env)
    learn(
        interrupted,
        toy_dataset,
        n_steps=STEPS,
        callback=[checkpoints, StopAfterSteps(STEPS // 2)],
        log_interval=10,
    )
    assert interrupted.num_steps == STEPS // 2 and checkpoints.saved
    resumed = learn(
        make(name, env),
        toy_dataset,
        n_steps=STEPS,
        log_interval=10,
        resume_from=checkpoints.saved[-1],
    )
    assert resumed.num_steps == STEPS
    for key, value in agent.parameters_dict().items():
        assert torch.equal(value, resumed.parameters_dict()[key]), key
    assert _loss_rows(resumed)[-1] == _loss_rows(agent)[-1]


def test_unknown_hyperparameter_lists_the_valid_ones(env):
    with pytest.raises(
        ValueError, match=r"unknown hyperparameter\(s\) \['learning_rat'\].*learning_rate"
    ):
        safe_agents.BCAll(env, learning_rat=1e-3)
    with pytest.raises(ValueError, match="actor must be one of"):
        safe_agents.BCAll(env, actor="transformer")


def test_loading_bad_files_gives_clear_errors(trained, tmp_path):
    name, agent = trained
    path = agent.save(tmp_path / "agent.zip")
    data = path.read_bytes()

    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(AgentLoadError, match="not a readable zip"):
        BaseAgent.load(truncated)

    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("model.pkl", b"not ours")
    with pytest.raises(AgentLoadError, match="not a safe-agents file"):
        BaseAgent.load(foreign)

    other_class = safe_agents.BCSafe if name != "bc_safe" else safe_agents.BCAll
    with pytest.raises(AgentLoadError, match=f"holds a '{name}' agent"):
        other_class.load(path)


class _Exploit:
    """Pickling this object would run a command at load time if the loader unpickled freely."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_tampered_weights_are_refused_without_running_code(trained, tmp_path):
    _, agent = trained
    path = agent.save(tmp_path / "agent.zip")
    marker = tmp_path / "exploited"
    buffer = io.BytesIO()
    torch.save({"actor.net.0.weight": _Exploit(marker)}, buffer)
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.namelist():
            payload = buffer.getvalue() if item == "weights.pt" else source.read(item)
            target.writestr(item, payload)
    with pytest.raises(AgentLoadError, match="weights.pt is not a plain tensor file"):
        BaseAgent.load(tampered)
    assert not marker.exists()


def test_learn_offline_accepts_every_dataset_form(env, toy_dataset, tmp_path):
    path = envs.save_dataset(toy_dataset, tmp_path / "toy.hdf5")
    results = []
    for source in (toy_dataset, TOY, str(path), toy_dataset.to_dict()):
        agent = make("bc_all", env).learn_offline(source, n_steps=5, log_interval=5)
        results.append(agent.parameters_dict()["actor.net.0.weight"])
    assert all(torch.equal(results[0], other) for other in results[1:])
    with pytest.raises(TypeError, match="dataset must be"):
        make("bc_all", env).learn_offline(42, n_steps=1)
    wider = gym.spaces.Box(-np.inf, np.inf, (7,), dtype=np.float32)  # BallRun's observations
    agent = safe_agents.make_agent(
        "bc_all", observation_space=wider, action_space=env.action_space, seed=0
    )
    with pytest.raises(envs.DatasetError, match="'observations' has 2 columns"):
        agent.learn_offline(toy_dataset, n_steps=1)


def test_logs_are_written_to_csv_and_jsonl(env, toy_dataset, tmp_path):
    make("bc_all", env).learn_offline(toy_dataset, n_steps=20, log_interval=10, log_dir=tmp_path)
    csv_lines = (tmp_path / "progress.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,") and "train/actor_loss" in csv_lines[0]
    assert len(csv_lines) == 3
    assert len((tmp_path / "progress.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("name", list_agents())
def test_an_agent_that_reads_costs_refuses_data_without_them(name, env, toy_dataset):
    agent = make(name, env)
    unlabeled, demos = toy_dataset.strip_costs(n_safe_demos=10)
    kwargs = {"demos": demos} if agent.needs_demos else {}
    if not agent.needs_costs:
        agent.learn_offline(unlabeled, n_steps=STEPS, **kwargs)  # learns without cost labels
        assert agent.num_steps == STEPS
        return
    with pytest.raises(ValueError, match=f"{name} needs cost labels") as raised:
        agent.learn_offline(unlabeled, n_steps=2, **kwargs)
    assert "bc_all, dspo" in str(raised.value) and agent.num_steps == 0


@pytest.mark.parametrize("name", list_agents())
def test_demos_go_to_the_agents_that_learn_from_them_and_only_to_them(name, env, toy_dataset):
    # learn_offline(..., demos=) is BaseAgent's for every agent: refused, before anything
    # changes, by an agent without needs_demos, and required by one with it.
    agent = make(name, env)
    unlabeled, demos = toy_dataset.strip_costs(n_safe_demos=10)
    if agent.needs_demos:
        with pytest.raises(ValueError, match="plus safe demonstrations"):
            agent.learn_offline(unlabeled, n_steps=STEPS)
        agent.learn_offline(unlabeled, n_steps=STEPS, demos=demos)
        assert agent.num_steps == STEPS and agent.demos is not None
        assert len(agent.demos) == len(demos)
    else:
        with pytest.raises(ValueError, match=f"{name} does not learn from demonstrations.*dspo"):
            agent.learn_offline(toy_dataset, n_steps=2, demos=demos)
        assert agent.num_steps == 0 and agent.demos is None
