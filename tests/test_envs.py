"""One task of each simulator: created, checked, stepped, seeded; the registry's records."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import _compat

# One task per simulator, with short episodes where the simulator is slow.
SIMULATOR_TASKS = {
    "toy": ("OfflineToyReachAvoid-v0", {}),
    "bullet": ("OfflineBallRun-v0", {}),
    "safety_gymnasium": ("OfflinePointGoal1Gymnasium-v0", {"max_episode_steps": 50}),
    "safety_gymnasium_velocity": (
        "OfflineHalfCheetahVelocityGymnasium-v1",
        {"max_episode_steps": 50},
    ),
    "metadrive": ("OfflineMetadrive-easysparse-v0", {"max_episode_steps": 50}),
}


@pytest.mark.simulator
@pytest.mark.parametrize("name", list(SIMULATOR_TASKS))
def test_simulator_adapter_passes_check_env_and_reports_float_costs(name):
    task_id, overrides = SIMULATOR_TASKS[name]
    env = envs.make(task_id, **overrides)
    try:
        check_env(env, skip_render_check=True)
        obs, info = env.reset(seed=0)
        assert obs in env.observation_space
        steps = 0
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert isinstance(info["cost"], float) and info["cost"] >= 0.0
            assert isinstance(reward, float)
            steps += 1
            done = terminated or truncated
        assert steps <= envs.get_task(task_id).max_episode_steps
        if not overrides:
            assert steps == envs.get_task(task_id).max_episode_steps or terminated
        else:
            assert steps <= overrides["max_episode_steps"]
    finally:
        env.close()


@pytest.mark.simulator
@pytest.mark.parametrize("name", list(SIMULATOR_TASKS))
def test_seeded_reset_and_actions_reproduce_the_episode(name):
    task_id, overrides = SIMULATOR_TASKS[name]
    env = envs.make(task_id, **overrides)
    try:
        actions = np.random.default_rng(0).uniform(-1, 1, (20, *env.action_space.shape))
        trajectories = []
        for _ in range(2):
            obs, _ = env.reset(seed=7)
            rows = [obs]
            for action in actions:
                obs, reward, terminated, truncated, info = env.step(action.astype(np.float32))
                rows.append(np.append(obs, [reward, info["cost"]]))
                if terminated or truncated:
                    break
            trajectories.append(np.concatenate([np.ravel(row) for row in rows]))
        # MetaDrive's physics engine keeps solver state across resets: rollouts agree to ~1e-4.
        atol = 1e-3 if name == "metadrive" else 1e-7
        np.testing.assert_allclose(trajectories[0], trajectories[1], rtol=0, atol=atol)
        other, _ = env.reset(seed=8)
        first, _ = env.reset(seed=7)
        if name != "metadrive":  # MetaDrive starts every episode at the same spawn point
            assert not np.allclose(other, first)
    finally:
        env.close()


def test_registry_has_every_dsrl_task_with_dsrl_reference_values():
    tasks = envs.list_tasks()
    assert len(envs.list_tasks("bullet")) == 8
    assert len(envs.list_tasks("safety_gymnasium")) == 16 + 5
    assert len(envs.list_tasks("metadrive")) == 9
    assert "OfflineToyReachAvoid-v0" in tasks
    infos = _compat.import_dsrl_infos()
    spec = envs.get_task("OfflineCarCircle-v0")
    assert spec.reward_max == pytest.approx(infos.MAX_EPISODE_REWARD["CarCircle"])
    assert spec.max_episode_steps == 300
    assert spec.cost_limit == 10.0
    velocity = envs.get_task("OfflineHalfCheetahVelocityGymnasium-v1")
    assert velocity.cost_max == pytest.approx(infos.MAX_EPISODE_COST["HalfCheetahVelocity"])


def test_unknown_task_id_lists_close_matches():
    with pytest.raises(envs.UnknownTaskError, match="OfflineCarCircle-v0") as raised:
        envs.make("OfflineCarCirlce-v0")
    assert "Did you mean" in str(raised.value)
    with pytest.raises(KeyError):  # still a KeyError for callers that catch that
        envs.get_task("nonsense")


def test_toy_task_costs_only_inside_the_hazard():
    env = envs.make("OfflineToyReachAvoid-v0")
    env.reset(seed=0)
    costs = []
    for _ in range(40):  # straight toward the hazard centre and through it
        _, _, _, _, info = env.step(np.array([1.0, 1.0], dtype=np.float32))
        costs.append(info["cost"])
    assert costs[0] == 0.0 and max(costs) == 1.0


@pytest.mark.simulator
def test_metadrive_runs_offline_and_refuses_to_render_without_assets():
    env = envs.make("OfflineMetadrive-easysparse-v0", max_episode_steps=40)
    try:
        env.reset(seed=0)
        _, _, _, _, info = env.step(np.zeros(2, dtype=np.float32))
        assert {"velocity_cost", "proximity_cost"} <= set(info)
        # DSRL's speeding cost counts km/h above 10 (MetaDrive 0.2.6's unit; 0.4 reports m/s).
        for _ in range(20):  # full throttle: past 10 km/h in about a second
            _, _, _, _, info = env.step(np.array([0.0, 1.0], dtype=np.float32))
        speed_kmh = env.unwrapped.agent.speed_km_h
        assert speed_kmh > 10.0
        assert info["velocity_cost"] == pytest.approx(0.01 * (speed_kmh - 10.0), rel=1e-4)
        # As in 0.2.6, the observation's action entries (after the two side distances, the
        # heading difference, the speed and the steering) hold the previous action, scaled.
        env.step(np.array([-0.5, 0.6], dtype=np.float32))
        obs, *_ = env.step(np.array([0.3, -0.2], dtype=np.float32))
        np.testing.assert_allclose(obs[5:7], [0.25, 0.8], atol=1e-6)
        if not _compat.metadrive_has_real_assets():
            with pytest.raises(RuntimeError, match="real assets"):
                env.unwrapped.render()
    finally:
        env.close()


@pytest.mark.simulator
@pytest.mark.parametrize(
    "detectors",
    [{}, {"lane_line_detector": {"num_lasers": 6, "distance": 20}}],
    ids=["dsrl", "lane-line-lidar"],
)
def test_metadrive_observation_holds_the_previous_action_in_any_layout(detectors):
    """Against MetaDrive 0.4's own ego state, exactly the two action entries differ: they hold
    the previous action (0.2.6's), where 0.4 puts the action just taken."""
    from metadrive.obs.state_obs import StateObservation

    env = envs.make(
        "OfflineMetadrive-easysparse-v0", max_episode_steps=10, vehicle_config=detectors
    )
    try:
        env.reset(seed=0)
        previous, current = np.array([-0.5, 0.6]), np.array([0.3, -0.2])
        env.step(previous.astype(np.float32))
        env.step(current.astype(np.float32))
        unwrapped = env.unwrapped
        (observation,) = unwrapped.observations.values()
        ours = np.array(observation.state_obs.vehicle_state(unwrapped.agent))
        theirs = np.array(StateObservation.vehicle_state(observation.state_obs, unwrapped.agent))
        differ = np.flatnonzero(~np.isclose(ours, theirs))
        assert len(differ) == 2 and differ[1] == differ[0] + 1
        np.testing.assert_allclose(ours[differ], (previous + 1) / 2, atol=1e-6)
        np.testing.assert_allclose(theirs[differ], (current + 1) / 2, atol=1e-6)
    finally:
        env.close()


@pytest.mark.simulator
def test_metadrive_environments_take_turns_and_a_second_open_one_is_refused_by_name():
    # MetaDrive runs one engine per process. Before the guard, a second environment's reset
    # drove the first one's engine and failed later with "Agents: 0 != Num_agents: 1".
    first = envs.make("OfflineMetadrive-easysparse-v0", max_episode_steps=5)
    second = envs.make("OfflineMetadrive-easysparse-v0", max_episode_steps=5)
    try:
        first.reset(seed=0)
        with pytest.raises(RuntimeError, match="one environment per process"):
            second.reset(seed=0)
        second.close()  # never reset: must leave the first one's engine open
        obs, *_ = first.step(np.zeros(2, dtype=np.float32))
        assert np.all(np.isfinite(obs))
        first.close()
        obs, _ = second.reset(seed=1)  # its turn now
        obs, *_ = second.step(np.zeros(2, dtype=np.float32))
        assert np.all(np.isfinite(obs))
        del second  # dropped without close(): the engine keeps it, and blocks the next one
        with pytest.raises(RuntimeError, match="close_metadrive_engine"):
            envs.make("OfflineMetadrive-easysparse-v0", max_episode_steps=5)
        envs.adapters.close_metadrive_engine()
        third = envs.make("OfflineMetadrive-easysparse-v0", max_episode_steps=5)
        obs, _ = third.reset(seed=2)
        assert np.all(np.isfinite(obs))
        third.close()
    finally:
        first.close()
        envs.adapters.close_metadrive_engine()


@pytest.mark.simulator
def test_metadrive_refuses_image_observations():
    with pytest.raises(ValueError, match="observe states"):
        envs.make("OfflineMetadrive-easysparse-v0", image_observation=True)


@pytest.mark.simulator
def test_bullet_tasks_run_while_stdout_is_a_python_buffer():
    # bullet-safety-gym redirects stdout by file descriptor around every env constructor; a
    # stdout without one (a StringIO, pytest's capsys, some notebooks) made it raise.
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        env = envs.make("OfflineBallRun-v0", max_episode_steps=3)
        env.reset(seed=0)
        _, _, _, _, info = env.step(env.action_space.sample())
        env.close()
    assert "cost" in info
