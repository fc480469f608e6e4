"""NormalizedMetrics, StripCost, evaluate and collect_episodes on real environments."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.toy import scripted_policy

TOY = "OfflineToyReachAvoid-v0"


@pytest.mark.parametrize(
    "task_id", [TOY, pytest.param("OfflineBallRun-v0", marks=pytest.mark.simulator)]
)
@pytest.mark.parametrize("wrap", ["metrics", "strip", "strip_then_metrics"])
def test_wrappers_pass_check_env(task_id, wrap):
    env = envs.make(task_id)
    if wrap in ("strip", "strip_then_metrics"):
        env = envs.StripCost(env)
    if wrap in ("metrics", "strip_then_metrics"):
        env = envs.NormalizedMetrics(env)
    check_env(env, skip_render_check=True)


def test_normalized_metrics_match_the_protocol_formulas():
    spec = envs.get_task(TOY)
    env = envs.NormalizedMetrics(envs.make(TOY))
    policy = scripted_policy(margin=-0.5)  # straight through the hazard
    obs, _ = env.reset(seed=0)
    total_reward = total_cost = 0.0
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        total_reward += reward
        total_cost += info["cost"]
        done = terminated or truncated
    episode = info["normalized_metrics"]
    assert episode["length"] == 100 and total_cost > spec.cost_limit
    assert episode["return"] == pytest.approx(total_reward)
    assert episode["normalized_return"] == pytest.approx(
        (total_reward - spec.reward_min) / (spec.reward_max - spec.reward_min)
    )
    assert episode["normalized_cost"] == pytest.approx(total_cost / spec.cost_limit)


@pytest.mark.parametrize("order", ["metrics inside", "metrics outside"])
def test_normalized_metrics_stack_with_gymnasium_and_sb3_episode_statistics(order):
    from gymnasium.wrappers import RecordEpisodeStatistics
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    for statistics in (RecordEpisodeStatistics, Monitor):
        if order == "metrics inside":
            env = statistics(envs.NormalizedMetrics(envs.make(TOY)))
        else:
            env = envs.NormalizedMetrics(statistics(envs.make(TOY)))
        env.reset(seed=0)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            done = terminated or truncated
        both = info["normalized_metrics"], info["episode"]
        assert both[0]["length"] == 100 and both[0]["return"] == pytest.approx(both[1]["r"])
        env.close()
    # SB3's evaluate_policy reads Monitor's info["episode"]; the metrics stay beside it.
    env = envs.NormalizedMetrics(Monitor(envs.make(TOY)))
    mean, _ = evaluate_policy(
        _ZeroModel(env.action_space), env, n_eval_episodes=2, return_episode_rewards=False
    )
    assert np.isfinite(mean)


class _ZeroModel:
    """The least an SB3 ``evaluate_policy`` model needs: ``predict``."""

    def __init__(self, space) -> None:
        self.space = space

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.zeros((len(obs), *self.space.shape), np.float32), state


def test_plain_function_policies_can_receive_the_episode_start():
    starts: list[bool] = []

    def policy(obs, episode_start):
        starts.append(bool(episode_start))
        return np.zeros(2, np.float32)

    env = envs.make(TOY, max_episode_steps=3)
    envs.evaluate(policy, env, n_episodes=2)
    assert starts == [True, False, False, True, False, False]
    assert envs.evaluate(lambda obs: np.zeros(2), env, n_episodes=1)["mean_length"] == 3


def test_normalized_cost_with_zero_limit_uses_eps_one():
    normalizer = envs.Normalizer(reward_min=0.0, reward_max=10.0, cost_limit=0.0)
    assert normalizer.normalized_cost(0.0) == 1.0
    assert normalizer.normalized_cost(3.0) == 4.0
    with pytest.raises(ValueError, match="reward_max"):
        envs.Normalizer(reward_min=1.0, reward_max=1.0, cost_limit=1.0)


def test_custom_env_needs_explicit_references():
    from envs.toy import ToyReachAvoidEnv

    raw = ToyReachAvoidEnv()
    with pytest.raises(ValueError, match="reward_range and cost_limit"):
        envs.NormalizedMetrics(raw)
    wrapped = envs.NormalizedMetrics(raw, reward_range=(0.0, 100.0), cost_limit=2.0)
    assert wrapped.normalizer.cost_limit == 2.0


def test_strip_cost_hides_costs_but_evaluation_still_counts_them():
    policy = scripted_policy(margin=-0.5)
    plain = envs.evaluate(policy, envs.make(TOY), n_episodes=2, seed=1)
    stripped_env = envs.StripCost(envs.make(TOY))
    obs, info = stripped_env.reset(seed=1)
    _, _, _, _, info = stripped_env.step(policy(obs))
    assert not any("cost" in key for key in info)
    stripped = envs.evaluate(policy, stripped_env, n_episodes=2, seed=1)
    assert stripped["cost"] == plain["cost"] and plain["mean_cost"] > 0
    assert stripped["normalized_cost"] == plain["normalized_cost"]


def test_evaluate_is_reproducible_and_separates_safe_from_reckless():
    env = envs.make(TOY)
    reckless = envs.evaluate(scripted_policy(margin=-0.5), env, n_episodes=3, seed=0)
    cautious = envs.evaluate(scripted_policy(margin=0.05), env, n_episodes=3, seed=0)
    again = envs.evaluate(scripted_policy(margin=0.05), env, n_episodes=3, seed=0)
    assert cautious == again
    assert len(reckless["return"]) == 3 and reckless["length"] == [100, 100, 100]
    assert reckless["mean_normalized_cost"] > 1.0 >= cautious["mean_normalized_cost"]
    assert reckless["mean_return"] > cautious["mean_return"]


def test_evaluate_accepts_an_sb3_style_predict():
    class Agent:
        def predict(self, obs, state=None, episode_start=None, deterministic=False):
            return np.zeros(2, dtype=np.float32), None

    report = envs.evaluate(Agent(), envs.make(TOY), n_episodes=1)
    assert report["mean_cost"] == 0.0
    with pytest.raises(TypeError, match="predict"):
        envs.evaluate(object(), envs.make(TOY), n_episodes=1)


@pytest.mark.simulator
def test_collect_episodes_records_a_policy_into_a_valid_dataset(tmp_path):
    env = envs.make("OfflineBallRun-v0")
    data = envs.collect_episodes(env, lambda obs: env.action_space.sample(), n_episodes=2, seed=0)
    assert data.n_episodes == 2 and len(data) == 200
    assert data.metadata["task_id"] == "OfflineBallRun-v0"
    data.check_spaces(env.observation_space, env.action_space)
    # next_observations continue into observations within an episode
    np.testing.assert_allclose(data.next_observations[:99], data.observations[1:100])
    loaded = envs.load_dataset(envs.save_dataset(data, tmp_path / "ballrun.hdf5"))
    np.testing.assert_allclose(loaded.episode_costs(), data.episode_costs())
    # Recorded here: labelled so, and normalized with its own return range, not DSRL's.
    assert loaded.origin == "local" and loaded.provenance == "built locally (envs.collect_episodes)"
    returns = data.episode_returns()
    assert loaded.reference_range() == (returns.min(), returns.max())


def test_evaluate_runs_a_vector_env_in_batches_with_the_sequential_start_states(toy_dataset):
    import gymnasium as gym

    from safe_agents import CDT, BCAll

    vector = gym.vector.SyncVectorEnv([lambda: envs.make(TOY) for _ in range(3)])
    single = envs.make(TOY)
    reckless = scripted_policy(margin=-0.5)  # through the hazard: costs on the last steps too
    batched = envs.evaluate(reckless, vector, n_episodes=3, seed=7)
    one_by_one = envs.evaluate(reckless, single, n_episodes=3, seed=7)
    for key in ("return", "cost", "length", "normalized_return", "normalized_cost"):
        assert batched[key] == pytest.approx(one_by_one[key]), key
    assert batched["mean_cost"] > 0
    agent = BCAll(single, seed=0, hidden_sizes=[16, 16]).learn_offline(toy_dataset, n_steps=50)
    batched = envs.evaluate(agent, vector, n_episodes=5, seed=0)
    assert len(batched["return"]) == 5
    assert batched["return"][:3] == pytest.approx(envs.evaluate(agent, single, 3, seed=0)["return"])
    # An agent with a context across steps (CDT) gets one per sub-environment.
    cdt = CDT(single, seed=0, preset="cpu", seq_len=4, embedding_dim=16, num_heads=2)
    cdt.learn_offline(toy_dataset, n_steps=2)
    report = envs.evaluate(cdt, vector, n_episodes=4, seed=0)
    assert len(report["cost"]) == 4 and np.isfinite(report["mean_return"])
    vector.close()
