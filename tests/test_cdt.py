"""CDT: causal masking, returns-to-go bookkeeping in predict, relabeling, segments, a real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from safe_agents import CDT
from safe_agents.baselines.cdt import (
    CDTConfig,
    CDTContext,
    DecisionTransformer,
    SegmentSampler,
    relabel_infeasible_targets,
    returns_to_go,
)

TOY = "OfflineToyReachAvoid-v0"
TINY = {
    "batch_size": 32,
    "embedding_dim": 16,
    "num_layers": 1,
    "num_heads": 2,
    "seq_len": 4,
    "episode_len": 100,
}


@pytest.fixture(scope="module")
def env():
    return envs.make(TOY)


def _network(stochastic: bool = True) -> DecisionTransformer:
    torch.manual_seed(0)
    network = DecisionTransformer(
        obs_dim=3,
        act_dim=2,
        n_timesteps=50,
        embedding_dim=16,
        num_layers=2,
        num_heads=2,
        attention_dropout=0.0,
        residual_dropout=0.0,
        embedding_dropout=0.0,
        action_head_layers=2,
        stochastic=stochastic,
    )
    # OSRL's initialisation (std 0.02) makes every output nearly constant; larger weights make
    # a leak through the mask visible.
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    return network.eval()


def _sequence(batch: int = 2, steps: int = 5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "obs": torch.randn(batch, steps, 3, generator=generator),
        "actions": torch.randn(batch, steps, 2, generator=generator),
        "returns_to_go": torch.randn(batch, steps, generator=generator),
        "costs_to_go": torch.randn(batch, steps, generator=generator),
        "timesteps": torch.arange(steps).repeat(batch, 1),
    }


def test_causal_mask_later_tokens_never_change_earlier_outputs():
    network = _network()
    inputs = _sequence()
    base = network(**inputs)
    for name in ("obs", "actions", "returns_to_go", "costs_to_go"):
        changed = {key: value.clone() for key, value in inputs.items()}
        changed[name][:, 3:] += 5.0  # perturb steps 3 and 4 only
        out = network(**changed)
        for field in ("action_mean", "action_log_std", "cost_log_probs", "next_obs"):
            before, after = getattr(base, field), getattr(out, field)
            torch.testing.assert_close(before[:, :3], after[:, :3], rtol=0, atol=1e-6)
            assert not torch.allclose(before[:, 3:], after[:, 3:]), (name, field)
    # Within a step, a_t comes after s_t: the action at step t is predicted without seeing it,
    # while the cost prediction (read at a_t's token) does see it.
    changed = {key: value.clone() for key, value in inputs.items()}
    changed["actions"][:, 4] += 5.0
    out = network(**changed)
    torch.testing.assert_close(base.action_mean, out.action_mean, rtol=0, atol=1e-6)
    assert not torch.allclose(base.cost_log_probs[:, 4], out.cost_log_probs[:, 4])


def test_padded_steps_do_not_change_the_real_ones():
    network = _network(stochastic=False)
    inputs = _sequence(batch=1, steps=5)
    padded = {key: value.clone() for key, value in inputs.items()}
    padded["obs"][:, 3:] = 0.0
    padded["actions"][:, 3:] = 0.0
    padding = torch.tensor([[False, False, False, True, True]])
    out = network(**padded, padding_mask=padding)
    short = network(**{key: value[:, :3] for key, value in inputs.items()})
    torch.testing.assert_close(out.action_mean[:, :3], short.action_mean, rtol=0, atol=1e-6)
    assert out.action_log_std is None


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match=r"embedding_dim \(30\) must be a multiple of num_heads"):
        CDTConfig(embedding_dim=30, num_heads=8)
    with pytest.raises(ValueError, match=r"attention_dropout must be in \[0.0, 1.0\]"):
        CDTConfig(attention_dropout=1.5)
    with pytest.raises(ValueError, match=r"augment_fraction must be in \[0.0, 1.0\]"):
        CDTConfig(augment_fraction=2.0)
    with pytest.raises(ValueError, match="betas must be two numbers"):
        CDTConfig(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="target_cost must be >= 0"):
        CDTConfig(target_cost=-1.0)
    with pytest.raises(ValueError, match="stochastic must be true or false"):
        CDTConfig(stochastic="yes")
    with pytest.raises(ValueError, match="seq_len must be > 0"):
        CDTConfig(seq_len=0)
    with pytest.raises(ValueError, match="target_return must be finite"):
        CDTConfig(target_return=float("inf"))
    defaults = CDTConfig()
    assert (defaults.embedding_dim, defaults.num_layers, defaults.num_heads) == (128, 3, 8)
    assert (defaults.seq_len, defaults.batch_size, defaults.warmup_steps) == (10, 2048, 500)
    assert defaults.loss_cost_weight == 0.02 and defaults.stochastic


def _agent(env, **overrides) -> CDT:
    return CDT(env, seed=0, **{**TINY, **overrides})


def test_returns_to_go_count_down_and_episode_start_resets_one_entry(env):
    agent = _agent(env)
    agent.set_target(target_return=50.0, target_cost=5.0)
    obs = np.zeros((2, 2), dtype=np.float32)
    rewards = np.array([[1.0, 0.5], [2.0, 0.25], [3.0, 0.0], [0.5, 1.0], [1.5, 2.0], [1.0, 1.0]])
    costs = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    state = None
    for step, (reward, cost) in enumerate(zip(rewards, costs, strict=True)):
        start = np.array([step == 0, step == 0])
        _, state = agent.predict(obs + step, state=state, episode_start=start, deterministic=True)
        assert isinstance(state, CDTContext)
        state = agent.record_outcome(state, reward, cost)
        np.testing.assert_allclose(
            state.return_to_go.numpy(), 50.0 - rewards[: step + 1].sum(axis=0), rtol=1e-6
        )
        np.testing.assert_allclose(
            state.cost_to_go.numpy(), 5.0 - costs[: step + 1].sum(axis=0), rtol=1e-6
        )
        np.testing.assert_array_equal(state.timestep.numpy(), [step + 1, step + 1])
    # The window holds the last seq_len steps, each conditioned on what was left before it.
    window = TINY["seq_len"]
    expected = 50.0 - np.concatenate([np.zeros((1, 2)), np.cumsum(rewards, axis=0)[:-1]])
    np.testing.assert_allclose(state.returns_to_go.numpy(), expected[-window:].T, rtol=1e-6)
    np.testing.assert_array_equal(state.timesteps.numpy()[0], np.arange(2, 6))
    assert state.valid.all()

    # Entry 1 starts a new episode, entry 0 goes on.
    kept = state
    actions, state = agent.predict(
        obs + 6, state=state, episode_start=np.array([False, True]), deterministic=True
    )
    assert state.return_to_go[1] == 50.0 and state.cost_to_go[1] == 5.0
    assert state.return_to_go[0] == kept.return_to_go[0]
    np.testing.assert_array_equal(state.timestep.numpy(), [7, 1])
    np.testing.assert_array_equal(state.valid.sum(dim=1).numpy(), [window, 1])
    # A restarted entry acts exactly as a fresh episode does (a stateless call).
    fresh, none_state = agent.predict(obs[1] + 6, deterministic=True)
    assert none_state is None
    np.testing.assert_allclose(actions[1], fresh, atol=1e-6)
    # record_outcome returns a new context and leaves the given one alone.
    assert agent.record_outcome(state, 1.0, 0.0) is not state
    assert state.return_to_go[1] == 50.0


def test_predict_in_context_is_the_model_on_the_last_window(env, toy_dataset):
    agent = _agent(env).learn_offline(toy_dataset, n_steps=30, log_interval=30)
    window = TINY["seq_len"]
    observations = toy_dataset.observations[:7]
    state, taken = None, []
    for step, obs in enumerate(observations):
        action, state = agent.predict(
            obs, state=state, episode_start=[step == 0], deterministic=True
        )
        taken.append(action)
        state = agent.record_outcome(state, 1.0, 0.5)
    for n_seen in (3, 7):  # a partial window, then a full one
        first = max(0, n_seen - window)
        steps = np.arange(first, n_seen)
        with torch.no_grad():
            obs = agent.obs_scaler(torch.as_tensor(observations[steps]))[None]
            acts = agent.action_scaler.normalize(torch.as_tensor(np.stack(taken)[steps]))[None]
            acts[:, -1] = 0.0  # the action being chosen is not known yet
            rtg = torch.as_tensor(agent.target_return - 1.0 * steps, dtype=torch.float32)[None]
            ctg = torch.as_tensor(agent.target_cost - 0.5 * steps, dtype=torch.float32)[None]
            returns, costs = agent._conditioning(rtg, ctg)
            out = agent.model(obs, acts, returns, costs, torch.as_tensor(steps)[None])
            mean = out.action_mean[0, -1].clamp(-1, 1)
        expected = agent.action_scaler.denormalize(mean).numpy()
        np.testing.assert_allclose(taken[n_seen - 1], expected, atol=1e-5)


def test_a_batch_of_episodes_of_different_ages_acts_as_each_episode_alone(env, toy_dataset):
    # The window is cut after the oldest episode's steps: a younger one's padding after its
    # own steps must not change its action, nor an older one's history be cut.
    agent = _agent(env).learn_offline(toy_dataset, n_steps=30, log_interval=30)
    observations = toy_dataset.observations
    starts = [0, 2, 5]  # each episode's first step
    batch_state, alone_states = None, [None] * 3
    for step in range(TINY["seq_len"] + 3):
        flags = np.array([step == start for start in starts])
        rows = observations[step : step + 3]
        together, batch_state = agent.predict(
            rows, state=batch_state, episode_start=flags, deterministic=True
        )
        batch_state = agent.record_outcome(batch_state, [1.0, 2.0, 3.0], 0.5)
        for k in range(3):
            alone, alone_states[k] = agent.predict(
                rows[k], state=alone_states[k], episode_start=flags[k : k + 1], deterministic=True
            )
            alone_states[k] = agent.record_outcome(alone_states[k], float(k + 1), 0.5)
            np.testing.assert_allclose(together[k], np.reshape(alone, -1), atol=1e-5)


def test_record_outcome_and_predict_reject_bad_input(env):
    agent = _agent(env)
    with pytest.raises(ValueError, match="record_outcome needs the CDTContext"):
        agent.record_outcome(None, 1.0, 0.0)
    _, state = agent.predict(np.zeros((3, 2)), episode_start=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match=r"reward must be 3 finite value\(s\)"):
        agent.record_outcome(state, [1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match=r"state holds 3 episode\(s\) but 2 observation"):
        agent.predict(np.zeros((2, 2)), state=state)
    with pytest.raises(ValueError, match="episode_start must have one flag per observation"):
        agent.predict(np.zeros((3, 2)), state=state, episode_start=[True, False])
    with pytest.raises(ValueError, match="target_cost must be finite and >= 0"):
        agent.set_target(target_cost=-1.0)


def test_relabeling_pairs_infeasible_targets_with_the_frontier_trajectory():
    returns = np.array([10.0, 20.0, 30.0, 25.0, 40.0, 30.0])
    costs = np.array([0.0, 5.0, 10.0, 10.0, 20.0, 12.0])
    rng = np.random.default_rng(0)
    index, target_returns, target_costs = relabel_infeasible_targets(
        returns, costs, n_samples=5, min_gap=1.0, max_return=40.0, rng=rng
    )
    # Budgets 0, 5, 10, 15, 20: the best within each is 10, 20, 30, 30 (the cost-10 episode,
    # not the cost-12 one with the same return), 40; at 20 nothing lies above the frontier.
    np.testing.assert_array_equal(target_costs, [0.0, 5.0, 10.0, 15.0])
    np.testing.assert_array_equal(index, [0, 1, 2, 2])
    frontier = np.array([10.0, 20.0, 30.0, 30.0])
    assert (target_returns >= frontier + 1.0).all() and (target_returns <= 40.0).all()
    # The relabeled targets are infeasible: no episode reaches that return within that cost.
    for rho, kappa in zip(target_returns, target_costs, strict=True):
        assert not ((returns >= rho) & (costs <= kappa)).any()
    again = relabel_infeasible_targets(returns, costs, 5, 1.0, 40.0, np.random.default_rng(0))
    np.testing.assert_array_equal(again[1], target_returns)
    none = relabel_infeasible_targets(returns, costs, 0, 1.0, 40.0, rng)
    assert all(len(part) == 0 for part in none)


def _crafted_dataset() -> envs.OfflineDataset:
    rng = np.random.default_rng(0)
    episodes = []
    for length, reward, cost in ((3, 1.0, 0.0), (6, 2.0, 1.0), (5, 3.0, 1.0)):
        episodes.append(
            {
                "observations": rng.normal(size=(length + 1, 2)),
                "actions": rng.uniform(-1, 1, size=(length, 2)),
                "rewards": np.full(length, reward) * np.arange(1, length + 1),
                "costs": np.full(length, cost),
            }
        )
    return envs.OfflineDataset.from_episodes(episodes, metadata={"cost_limit": 2.0})


def test_segments_have_returns_to_go_timesteps_and_end_padding():
    dataset = _crafted_dataset()
    bounds = dataset.episode_bounds()
    rtg = returns_to_go(dataset.rewards, bounds)
    np.testing.assert_allclose(rtg[:3], [6.0, 5.0, 3.0])
    episodes = np.arange(3)
    sampler = SegmentSampler(
        dataset,
        4,
        episodes,
        np.zeros(3),
        np.zeros(3),
        np.ones(3),
        torch.device("cpu"),
        torch.Generator().manual_seed(0),
    )
    batch = sampler.sample(300)
    assert batch.obs.shape == (300, 4, 2) and batch.timesteps.dtype == torch.int64
    seen_padding = False
    for row in range(300):
        mask = batch.mask[row].numpy()
        n = int(mask.sum())
        assert n >= 1 and (mask[:n] == 1).all() and (mask[n:] == 0).all()
        seen_padding |= n < 4
        start = int(batch.timesteps[row, 0])
        np.testing.assert_array_equal(batch.timesteps[row].numpy(), np.arange(start, start + 4))
        # Locate the episode by its observations and check the conditioning against it.
        match = [
            (s, e)
            for s, e in bounds
            if e - s > start
            and np.allclose(dataset.observations[s + start], batch.obs[row, 0].numpy())
        ]
        assert len(match) == 1
        s, e = match[0]
        assert n == min(4, e - s - start)
        np.testing.assert_allclose(batch.returns_to_go[row, :n], rtg[s + start : s + start + n])
        assert (batch.returns_to_go[row, n:] == 0).all() and (batch.obs[row, n:] == 0).all()
    assert seen_padding


def test_augmented_entries_start_above_the_frontier(env, toy_dataset):
    agent = _agent(env, augment_fraction=0.2)
    agent.learn_offline(toy_dataset, n_steps=1, log_interval=1)
    sampler = agent.segment_sampler
    n_episodes = toy_dataset.n_episodes
    assert agent.n_augmented > 0 and len(sampler.entry_starts) == n_episodes + agent.n_augmented
    start_returns = (sampler.returns_to_go[sampler.entry_starts] + sampler.return_shifts).numpy()
    start_costs = (sampler.costs_to_go[sampler.entry_starts] + sampler.cost_shifts).numpy()
    returns, costs = toy_dataset.episode_returns(), toy_dataset.episode_costs()
    np.testing.assert_allclose(start_returns[:n_episodes], returns, rtol=1e-5)
    for rho, kappa in zip(start_returns[n_episodes:], start_costs[n_episodes:], strict=True):
        assert rho > returns[costs <= kappa + 1e-4].max()
    # Low-cost trajectories are drawn more often (OSRL's cost_sample).
    weights = sampler.weights.numpy()[:n_episodes]
    assert weights[np.argmin(costs)] > weights[np.argmax(costs)]
    # Without augmentation only the episodes remain.
    plain = _agent(env, augment_fraction=0.0).learn_offline(toy_dataset, n_steps=1)
    assert plain.n_augmented == 0


def test_cdt_needs_costs_and_a_long_enough_timestep_table(env, toy_dataset):
    with pytest.raises(ValueError, match="needs cost labels"):
        _agent(env).learn_offline(toy_dataset.without_costs(), n_steps=1)
    with pytest.raises(ValueError, match="set episode_len >= 100"):
        _agent(env, episode_len=50).learn_offline(toy_dataset, n_steps=1)


def test_short_training_and_evaluation_in_the_toy_env(env, toy_dataset, tmp_path):
    agent = _agent(env, batch_size=64, warmup_steps=50).learn_offline(
        toy_dataset, n_steps=200, log_interval=100
    )
    # Targets resolved from the data: the cost limit, and the best return within it.
    assert agent.target_cost == toy_dataset.metadata["cost_limit"]
    safe = toy_dataset.episode_costs() <= agent.target_cost
    assert agent.target_return == pytest.approx(toy_dataset.episode_returns()[safe].max())
    losses = [v for row in agent.logger.history for k, v in row.items() if k.startswith("train/")]
    assert losses and np.isfinite(losses).all()

    recorded = []
    original = agent.record_outcome

    def counting(state, reward, cost):
        recorded.append((reward, cost))
        return original(state, reward, cost)

    agent.record_outcome = counting  # envs.evaluate must report every step's outcome
    report = envs.evaluate(agent, env, n_episodes=2, seed=100)
    assert len(recorded) == sum(report["length"])
    assert np.isclose(sum(reward for reward, _ in recorded), sum(report["return"]))
    assert np.isclose(sum(cost for _, cost in recorded), sum(report["cost"]))
    for key in ("mean_normalized_return", "mean_normalized_cost"):
        assert np.isfinite(report[key])

    # Deployment targets travel with the saved agent.
    del agent.record_outcome
    agent.set_target(target_return=30.0, target_cost=0.0)
    loaded = CDT.load(agent.save(tmp_path / "cdt.zip"))
    assert (loaded.target_return, loaded.target_cost) == (30.0, 0.0)
    again = envs.evaluate(loaded, env, n_episodes=1, seed=100)
    assert again["return"] == envs.evaluate(agent, env, n_episodes=1, seed=100)["return"]
