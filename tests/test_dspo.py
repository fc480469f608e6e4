"""DSPO: vCLUB, the SafetyTransformer's masks, the cost-label-free data, generation, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import envs
from envs.metrics import discriminator_report
from safe_agents import DSPO
from safe_agents.common.networks import mlp
from safe_agents.dspo import SafetyTransformer, vclub_estimate

TOY = "OfflineToyReachAvoid-v0"
SMALL = {
    "batch_size": 64,
    "discriminator_steps": 60,
    "diffusion_train_steps": 60,
    "window_len": 16,
    "embedding_dim": 32,
    "num_layers": 1,
    "num_heads": 2,
    "pooling_dim": 16,
    "discriminator_batch_size": 16,
    "segment_len": 8,
    "diffusion_timesteps": 5,
    "denoiser_width": 16,
    "denoiser_blocks": 2,
    "diffusion_batch_size": 32,
    "n_generated_segments": 32,
    "hidden_sizes": (32, 32),
}


def fitted_vclub(signal: torch.Tensor, bins: torch.Tensor, n_bins: int = 10) -> float:
    """Fit q(r | z) by maximum likelihood on half the pairs, estimate vCLUB on the other half."""
    torch.manual_seed(0)
    classifier = mlp(1, n_bins, (32, 32))
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2)
    half = len(signal) // 2
    for _ in range(300):
        loss = F.cross_entropy(classifier(signal[:half, None]), bins[:half])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        log_q = F.log_softmax(classifier(signal[half:, None]), dim=-1)
        return vclub_estimate(log_q, bins[half:]).item()


def test_vclub_is_about_zero_for_independent_pairs_and_positive_for_dependent_ones():
    generator = torch.Generator().manual_seed(1)
    signal = torch.rand(2000, generator=generator)
    independent = torch.randint(10, (2000,), generator=generator)
    dependent = (signal * 10).long().clamp(max=9)  # the return bin is a function of z
    assert abs(fitted_vclub(signal, independent)) < 0.1
    # I(z; r) = log 10 = 2.3 nats here; the bound sits near it.
    assert fitted_vclub(signal, dependent) > 1.0


def test_vclub_by_hand():
    log_q = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    bins = torch.tensor([0, 1])
    joint = (np.log(0.9) + np.log(0.8)) / 2
    marginal = (np.log(0.9) + np.log(0.1) + np.log(0.2) + np.log(0.8)) / 4
    assert vclub_estimate(log_q, bins).item() == pytest.approx(joint - marginal, rel=1e-6)


def small_transformer() -> SafetyTransformer:
    torch.manual_seed(0)
    model = SafetyTransformer(3, 2, 12, 16, 2, 2, 0.0, 8).eval()
    # GPT initialisation makes early outputs tiny; scale up so differences are visible.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(20.0)
    return model


def test_a_later_token_does_not_change_earlier_outputs():
    model = small_transformer()
    obs, actions, mask = torch.randn(2, 12, 3), torch.randn(2, 12, 2), torch.ones(2, 12)
    before = model.features(obs, actions, mask)
    changed_obs, changed_actions = obs.clone(), actions.clone()
    changed_obs[:, 7] += 5.0
    changed_actions[:, 7] -= 5.0
    after = model.features(changed_obs, changed_actions, mask)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])
    # The action at step 3 is seen by x_3 (x_t is read at the action token).
    changed_actions = actions.clone()
    changed_actions[:, 3] += 5.0
    after = model.features(obs, changed_actions, mask)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_padding_does_not_change_the_pooled_signal():
    model = small_transformer()
    obs, actions = torch.randn(1, 12, 3), torch.randn(1, 12, 2)
    mask = torch.ones(1, 12)
    mask[:, 9:] = 0.0
    signal = model(obs, actions, mask)
    obs[:, 9:], actions[:, 9:] = 100.0, -100.0
    torch.testing.assert_close(model(obs, actions, mask), signal)
    # ... and equals the signal of the unpadded 9-step window.
    torch.testing.assert_close(model(obs[:, :9], actions[:, :9], torch.ones(1, 9)), signal)


def test_strip_costs_records_where_each_episode_came_from(toy_dataset):
    limit = toy_dataset.metadata["cost_limit"]
    unlabeled, demos = toy_dataset.strip_costs(n_safe_demos=10, cost_limit=limit, seed=2)
    costs = toy_dataset.episode_costs()
    demo_ids = demos.metadata["source_episodes"]
    rest_ids = unlabeled.metadata["source_episodes"]
    assert (costs[demo_ids] <= limit).all() and len(demo_ids) == 10
    assert sorted(demo_ids + rest_ids) == list(range(toy_dataset.n_episodes))
    returns = toy_dataset.episode_returns()
    np.testing.assert_allclose(unlabeled.episode_returns(), returns[rest_ids], rtol=1e-5)
    assert unlabeled.costs is None and demos.costs is None


@pytest.fixture(scope="module")
def trained(toy_dataset):
    env = envs.make(TOY)
    unlabeled, demos = toy_dataset.strip_costs(n_safe_demos=10)
    agent = DSPO(env, seed=0, **SMALL).learn_offline(unlabeled, demos=demos, n_steps=200)
    return agent, unlabeled, demos


def test_generated_segments_have_the_shapes_and_bounds_of_the_data(trained, toy_dataset):
    agent, _, _ = trained
    obs, actions = agent.generated_segments()
    assert obs.shape == (32, 8, toy_dataset.observation_dim)
    assert actions.shape == (32, 8, toy_dataset.action_dim)
    assert np.isfinite(obs).all() and np.isfinite(actions).all()
    low, high = toy_dataset.observations.min(axis=0), toy_dataset.observations.max(axis=0)
    assert (obs >= low - 1e-4).all() and (obs <= high + 1e-4).all()
    space = envs.make(TOY).action_space
    assert (actions >= space.low - 1e-6).all() and (actions <= space.high + 1e-6).all()
    # Not a constant: the segments spread over the state space.
    assert obs.reshape(-1, obs.shape[-1]).std(axis=0).min() > 0.05


def test_safety_signals_and_the_cost_labels_are_never_read(trained, toy_dataset):
    agent, unlabeled, demos = trained
    signals = agent.safety_signals(unlabeled)
    assert signals.shape == (unlabeled.n_episodes,)
    assert ((signals > 0) & (signals < 1)).all()
    # The same data with its costs still attached trains the very same agent.
    ids = unlabeled.metadata["source_episodes"]
    labelled = toy_dataset.select_episodes(ids)
    again = DSPO(envs.make(TOY), seed=0, **SMALL)
    again.learn_offline(labelled, demos=demos, n_steps=200)
    for key, value in agent.parameters_dict().items():
        assert torch.equal(value, again.parameters_dict()[key]), key


def test_the_policy_is_evaluated_through_strip_cost(trained):
    agent, _, _ = trained
    report = envs.evaluate(agent, envs.StripCost(envs.make(TOY)), n_episodes=2, seed=0)
    assert len(report["cost"]) == 2 and np.isfinite(report["mean_normalized_cost"])


def test_the_discriminator_separates_demos_from_different_behaviour():
    """Demos push right, the unlabeled data pushes left: the signal must tell them apart."""
    rng = np.random.default_rng(0)

    def episodes(direction: float, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            obs = rng.normal(size=(20, 2)).astype(np.float32)
            actions = np.clip(direction * 0.8 + 0.1 * rng.normal(size=(20, 2)), -1, 1)
            out.append(
                {
                    "observations": obs,
                    "actions": actions.astype(np.float32),
                    "rewards": rng.normal(size=20).astype(np.float32),
                    "next_observations": obs,
                    "terminals": np.zeros(20, np.float32),
                }
            )
        return out

    demos = envs.OfflineDataset.from_episodes(episodes(1.0, 10))
    unlabeled = envs.OfflineDataset.from_episodes(episodes(-1.0, 30) + episodes(1.0, 10))
    env = envs.make(TOY)
    agent = DSPO(env, seed=0, **{**SMALL, "discriminator_steps": 150, "vclub_weight": 0.0})
    agent.learn_offline(unlabeled, demos=demos, n_steps=280)
    signals = agent.safety_signals(unlabeled)
    assert signals[30:].mean() > signals[:30].mean() + 0.3
    report = discriminator_report(signals, np.arange(40) >= 30)
    assert report["pearson"] > 0.8


def test_discriminator_report_by_hand():
    report = discriminator_report(
        np.array([0.9, 0.8, 0.2, 0.6, 0.1]), np.array([True, True, True, False, False])
    )
    assert report["recall"] == pytest.approx(2 / 3)
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["f1"] == pytest.approx(2 / 3)
    truth = np.array([1, 1, 1, 0, 0], dtype=float)
    expected = np.corrcoef([0.9, 0.8, 0.2, 0.6, 0.1], truth)[0, 1]
    assert report["pearson"] == pytest.approx(expected)
    # Safe 0.9, 0.8, 0.2 against unsafe 0.6, 0.1: 5 of the 6 pairs ranked right.
    assert report["auc"] == pytest.approx(5 / 6)
    assert report["median_signal_safe"] == pytest.approx(0.8)
    assert report["median_signal_unsafe"] == pytest.approx(0.35)
    tied = discriminator_report(np.array([0.5, 0.5]), np.array([True, False]))
    assert tied["auc"] == pytest.approx(0.5)
    assert np.isnan(discriminator_report(np.ones(3), np.array([1, 0, 1]))["pearson"])
    assert np.isnan(discriminator_report(np.ones(2), np.array([1, 1]))["auc"])
    with pytest.raises(ValueError, match="differ in length"):
        discriminator_report(np.ones(3), np.ones(2))


def test_missing_demos_and_too_few_steps_are_clear_errors(toy_dataset):
    env = envs.make(TOY)
    unlabeled, demos = toy_dataset.strip_costs(n_safe_demos=10)
    with pytest.raises(ValueError, match="demos=demos"):
        DSPO(env, seed=0, **SMALL).learn_offline(unlabeled, n_steps=200)
    with pytest.raises(ValueError, match=r"n_steps \(100\) must exceed"):
        DSPO(env, seed=0, **SMALL).learn_offline(unlabeled, demos=demos, n_steps=100)
    with pytest.raises(ValueError, match="no episode has the 500 steps"):
        DSPO(env, seed=0, **{**SMALL, "segment_len": 500}).learn_offline(
            unlabeled, demos=demos, n_steps=200
        )
    with pytest.raises(RuntimeError, match="no segments yet"):
        DSPO(env, seed=0, **SMALL).generated_segments()
    with pytest.raises(ValueError, match="divisible by num_heads"):
        DSPO(env, embedding_dim=30, num_heads=4)


def test_the_train_command_runs_dspo_in_the_cost_label_free_setting(tmp_path, capsys):
    from safe_agents.cli import main

    settings = [f"--set={key}={json.dumps(value)}" for key, value in SMALL.items()]
    argv = ["train", "dspo", "--task", TOY, "--steps", "150", "--demos", "12", "--out"]
    assert main(argv + [str(tmp_path), "--eval-episodes", "1", "--no-progress", *settings]) == 0
    out = capsys.readouterr().out
    assert "144 unlabeled episodes and 12 safe demonstrations" in out
    assert "normalized cost" in out and (tmp_path / f"dspo-{TOY}-seed0.zip").is_file()
