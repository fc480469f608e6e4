"""FISOR and DRCORL as their authors ran them; presets, threads and cost_limit on the contract."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
import torch

import envs
import safe_agents.common.compiled as update_module
from safe_agents import DRCORL, FISOR, BCAll, BCSafe, get_agent_class, list_agents, make_agent
from safe_agents.cli import main
from safe_agents.common.callbacks import EvalCallback, RemainingTimeCallback, format_duration
from safe_agents.common.data import TransitionBatch, done_mask
from safe_agents.common.diffusion import NoiseScheduler
from safe_agents.fisor import FISORConfig, cosine_learning_rate, reward_scale

TOY = "OfflineToyReachAvoid-v0"
TINY_FISOR = {
    "batch_size": 32,
    "actor_batch_size": 16,
    "critic_hidden_sizes": (16, 16),
    "actor_width": 16,
    "actor_blocks": 1,
    "actor_expansion": 1,
    "n_candidates": 4,
    "time_embedding_dim": 8,
}


def _episodes(returns: list[float], length: int = 5, metadata: dict | None = None):
    episodes = []
    for total in returns:
        rewards = np.full(length, total / length, dtype=np.float32)
        episodes.append(
            {
                "observations": np.zeros((length + 1, 2), dtype=np.float32),
                "actions": np.zeros((length, 2), dtype=np.float32),
                "rewards": rewards,
                "costs": np.zeros(length, dtype=np.float32),
            }
        )
    return envs.OfflineDataset.from_episodes(episodes, metadata=metadata or {})


# ---------------------------------------------------------------------- FISOR
def test_reward_scale_is_the_episode_length_over_the_return_spread():
    data = _episodes([10.0, 30.0, 50.0], length=5)
    # No recorded episode length: the longest episode (5 steps); spread 40.
    assert reward_scale(data) == pytest.approx(5 / 40)
    recorded = _episodes([10.0, 30.0, 50.0], metadata={"max_episode_steps": 1000})
    assert reward_scale(recorded) == pytest.approx(1000 / 40)
    assert reward_scale(recorded, episode_length=300) == pytest.approx(300 / 40)
    with pytest.raises(ValueError, match="1 episode"):
        reward_scale(_episodes([10.0]))
    with pytest.raises(ValueError, match="every episode returns 7"):
        reward_scale(_episodes([7.0, 7.0]))


def test_fisor_defaults_are_the_authors():
    config = FISORConfig()
    assert (config.actor_batch_size, config.actor_updates_per_step) == (1024, 2)
    assert (config.min_cost_weight, config.max_cost_weight, config.max_reward_weight) == (
        0.0,
        150.0,
        100.0,
    )
    assert config.variance_type == "fixed_large" and config.time_embedding_dim == 64
    assert config.episode_length is None and config.ema_tau == 0.001
    agent = FISOR(observation_space=_box(2), action_space=_box(2), seed=0)
    # The authors' time embedding: 64 Fourier features -> 128 -> 128.
    assert agent.actor.time_embedding[0].weight.shape == (1, 32)
    assert agent.actor.time_embedding[-1].out_features == 128


def _box(dim: int):
    import gymnasium as gym

    return gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)


def test_each_step_takes_two_actor_updates_with_their_ema_and_learning_rate(
    toy_dataset, monkeypatch
):
    ema_updates = []
    original = update_module.soft_update  # the averages after each (uncompiled) update

    def counting(target, source, tau):
        if tau == 0.5:  # the actor's EMA (the critics' targets use tau=0.005)
            ema_updates.append(1)
        original(target, source, tau)

    monkeypatch.setattr(update_module, "soft_update", counting)
    agent = FISOR(
        envs.make(TOY), seed=0, ema_tau=0.5, actor_lr_decay_steps=8, **TINY_FISOR
    ).learn_offline(toy_dataset, n_steps=3)
    actor_state = agent.optimizers["actor"].state_dict()["state"]
    critic_state = agent.optimizers["critic"].state_dict()["state"]
    assert {int(s["step"]) for s in actor_state.values()} == {6}
    assert {int(s["step"]) for s in critic_state.values()} == {3}
    assert len(ema_updates) == 6
    # The cosine decay counts actor updates: the 6th update (index 5) of 8.
    assert agent.optimizers["actor"].param_groups[0]["lr"] == pytest.approx(
        cosine_learning_rate(3e-4, 5, 8)
    )
    assert cosine_learning_rate(1.0, 8, 8) == pytest.approx(0.0)
    assert cosine_learning_rate(1.0, 20, 8) == 0.0


def test_one_actor_update_per_step_is_an_option(toy_dataset):
    agent = FISOR(envs.make(TOY), seed=0, actor_updates_per_step=1, **TINY_FISOR)
    agent.learn_offline(toy_dataset, n_steps=2)
    actor_state = agent.optimizers["actor"].state_dict()["state"]
    assert {int(s["step"]) for s in actor_state.values()} == {2}


def test_uniform_weighting_is_plain_diffusion_behaviour_cloning(toy_dataset):
    agent = FISOR(envs.make(TOY), seed=0, actor_weighting="uniform", **TINY_FISOR)
    agent.learn_offline(toy_dataset, n_steps=2)
    assert agent.logger.latest["train/mean_weight"] == 1.0
    with pytest.raises(ValueError, match="actor_weighting"):
        FISORConfig(actor_weighting="none")


def test_fixed_large_noise_is_sqrt_beta_and_fixed_small_the_posterior():
    zero_model_output = torch.zeros(1, 1)
    sample = torch.zeros(1, 1)
    noise = torch.ones(1, 1)
    for variance_type in ("fixed_large", "fixed_small"):
        scheduler = NoiseScheduler(5, "vp", "ddpm", variance_type=variance_type)
        t = 3
        beta = float(scheduler.betas[t])
        abar_t, abar_prev = (float(scheduler.alphas_cumprod[i]) for i in (t, t - 1))
        mean = scheduler.step(zero_model_output, t, sample, noise=torch.zeros(1, 1))
        stepped = scheduler.step(zero_model_output, t, sample, noise=noise)
        expected = (
            math.sqrt(beta)
            if variance_type == "fixed_large"
            else math.sqrt(beta * (1 - abar_prev) / (1 - abar_t))
        )
        assert float(stepped - mean) == pytest.approx(expected, rel=1e-5)
    # The last step adds no noise, whatever the variance type.
    scheduler = NoiseScheduler(5, "vp", "ddpm", variance_type="fixed_large")
    assert float(scheduler.step(zero_model_output, 0, sample, noise=noise)) == 0.0
    with pytest.raises(ValueError, match="variance_type"):
        NoiseScheduler(5, variance_type="large")


def test_ddim_eta_reaches_the_sampler():
    config = FISORConfig(sampler="ddim", ddim_eta=1.0)
    scheduler = config.make_scheduler()
    assert scheduler.eta == 1.0 and scheduler.sampler == "ddim"
    sample, output = torch.zeros(1, 1), torch.zeros(1, 1)
    stochastic = scheduler.step(output, 3, sample, noise=torch.ones(1, 1))
    assert float(stochastic) != float(scheduler.step(output, 3, sample, noise=torch.zeros(1, 1)))
    with pytest.raises(ValueError, match="ddim_eta"):
        FISORConfig(ddim_eta=2.0)


def test_done_mask_cuts_at_time_outs_or_bootstraps_through_them():
    zeros = torch.zeros(3)
    batch = TransitionBatch(
        zeros, zeros, zeros, zeros, zeros, torch.tensor([0.0, 1.0, 0.0]),
        torch.tensor([0.0, 0.0, 1.0]), zeros,
    )  # fmt: skip
    assert done_mask(batch, through_timeouts=False).tolist() == [0.0, 1.0, 1.0]
    assert done_mask(batch, through_timeouts=True).tolist() == [0.0, 1.0, 0.0]


# ---------------------------------------------------------------------- DRCORL
TINY_DRCORL = {
    "batch_size": 64,
    "actor_hidden_sizes": (16, 16),
    "critic_hidden_sizes": (16, 16),
    "behaviour_width": 16,
    "behaviour_blocks": 1,
    "diffusion_steps": 10,
}


def test_drcorl_refuses_a_run_that_would_never_extract_a_policy(toy_dataset):
    agent = DRCORL(envs.make(TOY), seed=0, pretrain_steps=50, **TINY_DRCORL)
    with pytest.raises(ValueError, match="n_steps > pretrain_steps"):
        agent.learn_offline(toy_dataset, n_steps=50)
    assert agent.num_steps == 0


def test_drcorl_warm_start_follows_the_diffusion_model():
    """The warm start sees no dataset action, only the diffusion model's score: the policy
    still moves to where the data's actions are (-0.6), because the model learned them."""
    generator = np.random.default_rng(0)
    episodes = [
        {
            "observations": np.zeros((26, 1), dtype=np.float32),
            "actions": (-0.6 + 0.05 * generator.normal(size=(25, 1))).astype(np.float32),
            "rewards": np.zeros(25, dtype=np.float32),
            "costs": np.zeros(25, dtype=np.float32),
        }
        for _ in range(20)
    ]
    data = envs.OfflineDataset.from_episodes(episodes, metadata={"cost_limit": 1.0})
    agent = DRCORL(
        observation_space=_box(1), action_space=_box(1), seed=0, pretrain_steps=600, **TINY_DRCORL
    )
    start = float(agent.policy_distribution(np.zeros(1))[0][0])
    agent.learn_offline(data, n_steps=601, log_interval=600)
    mean = float(agent.policy_distribution(np.zeros(1))[0][0])
    assert start > 0.0 and mean < -0.4
    with pytest.raises(ValueError, match="warm_start"):
        DRCORL(observation_space=_box(1), action_space=_box(1), warm_start="bc")


# ---------------------------------------------------------------------- presets and cost_limit
@pytest.mark.parametrize("name", list_agents())
def test_every_agent_takes_a_preset_and_a_cost_limit(name):
    agent_class = get_agent_class(name)
    assert {"paper", "cpu"} <= set(agent_class.config_class.presets)
    cpu = make_agent(name, envs.make(TOY), seed=0, preset="cpu", cost_limit=3.0)
    assert cpu.config.cost_limit == 3.0 and cpu.preset == "cpu"
    assert cpu.config.n_steps == agent_class.config_class.presets["cpu"]["n_steps"]
    assert cpu.config.n_steps < agent_class.config_class().n_steps
    assert cpu.torch_threads == 1
    # Keywords beside a preset override it.
    assert make_agent(name, envs.make(TOY), preset="cpu", n_steps=7).config.n_steps == 7
    with pytest.raises(ValueError, match="unknown preset 'gpu'"):
        make_agent(name, envs.make(TOY), preset="gpu")


def test_a_cost_limit_is_never_guessed(toy_dataset):
    data = envs.OfflineDataset.from_dict(
        {key: getattr(toy_dataset, key) for key in envs.datasets.FIELDS}
    )
    assert "cost_limit" not in data.metadata
    with pytest.raises(ValueError, match="pass cost_limit="):
        BCSafe(envs.make(TOY), seed=0).learn_offline(data, n_steps=1)
    agent = BCSafe(envs.make(TOY), seed=0, cost_limit=5.0).learn_offline(data, n_steps=1)
    assert agent.cost_limit_used == 5.0
    # Agents that do not use a limit train without one, and record the one given.
    BCAll(envs.make(TOY), seed=0).learn_offline(data, n_steps=1)
    assert BCAll(envs.make(TOY), cost_limit=2.0).config.cost_limit == 2.0


def test_saved_agents_record_the_preset_and_the_steps_trained(toy_dataset, tmp_path):
    agent = BCAll(envs.make(TOY), seed=0, preset="cpu").learn_offline(toy_dataset, n_steps=7)
    path = agent.save(tmp_path / "agent.zip")
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    assert config["preset"] == "cpu" and config["trained_steps"] == 7
    loaded = BCAll.load(path)
    assert loaded.preset == "cpu" and loaded.torch_threads == 1


def test_torch_threads_apply_inside_training_and_predict_only(toy_dataset):
    before = torch.get_num_threads()
    seen = []

    class Spy(EvalCallback):
        def _on_step(self) -> bool:
            seen.append(torch.get_num_threads())
            return True

    agent = BCAll(envs.make(TOY), seed=0, torch_threads=1)
    agent.learn_offline(toy_dataset, n_steps=2, callback=Spy(lambda a: {}, 1))
    agent.predict(np.zeros(2, dtype=np.float32))
    assert seen == [1, 1] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="torch_threads"):
        BCAll(envs.make(TOY), torch_threads=0)


# ---------------------------------------------------------------------- callbacks
def test_an_evaluation_curve_leaves_training_unchanged(toy_dataset):
    plain = BCAll(envs.make(TOY), seed=0).learn_offline(toy_dataset, n_steps=25)
    env = envs.make(TOY)
    curve = EvalCallback(lambda agent: envs.evaluate(agent, env, 1, seed=5), eval_every=10)
    watched = BCAll(envs.make(TOY), seed=0).learn_offline(toy_dataset, n_steps=25, callback=curve)
    assert [point["step"] for point in curve.history] == [10, 20, 25]
    assert "mean_return" in curve.history[0] and "actor_loss" in curve.history[0]["train"]
    for key, tensor in plain.parameters_dict().items():
        torch.testing.assert_close(tensor, watched.parameters_dict()[key], rtol=0, atol=0)


def test_the_remaining_time_is_reported_once_with_a_warning_when_long(toy_dataset):
    messages: list[str] = []
    callback = RemainingTimeCallback(
        messages.append, min_seconds=0.0, min_steps=2, warn_above_seconds=1e-9
    )
    BCAll(envs.make(TOY), seed=0).learn_offline(toy_dataset, n_steps=10, callback=callback)
    assert len(messages) == 1 and "steps/s" in messages[0] and "cpu preset" in messages[0]
    assert (format_duration(30), format_duration(600), format_duration(36000)) == (
        "30 s",
        "10 min",
        "10.0 h",
    )


# ---------------------------------------------------------------------- the CLI
def test_train_with_the_cpu_preset(tmp_path, capsys):
    argv = ["train", "bc_all", "--task", TOY, "--preset", "cpu", "--steps", "30"]
    argv += ["--eval-episodes", "0", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "preset cpu, 30 steps, 1 torch thread(s)" in out
    with zipfile.ZipFile(tmp_path / f"bc_all-{TOY}-seed0.zip") as archive:
        assert json.loads(archive.read("config.json"))["preset"] == "cpu"
    assert main(["train", "bc_all", "--task", TOY, "--preset", "gpu"]) == 2
    assert "unknown preset 'gpu'" in capsys.readouterr().err
