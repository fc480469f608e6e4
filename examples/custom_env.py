"""A custom environment end to end: data, training, evaluation, saving and a safety shield.

What it shows, step by step:

1. ``CartReachEnv``: a small Gymnasium environment of our own (not one of ``envs``' tasks). A
   1-D cart must reach a target; every step above a speed limit is reported as a cost in
   ``info["cost"]``, which is all ``envs`` and ``safe_agents`` need from a safe-RL environment.
2. An offline dataset recorded from scripted controllers of different recklessness with
   ``envs.collect_episodes`` and joined with ``envs.OfflineDataset.concatenate``.
3. The dataset saved as a DSRL-format HDF5 file (``envs.save_dataset``) and read back
   (``envs.load_dataset`` takes a path as well as a task id).
4. Two agents trained on it: BC-Safe (behaviour cloning of the safe episodes) and FISOR (a
   diffusion policy with a learned feasibility critic), both with the small ``"cpu"`` preset.
5. ``envs.evaluate`` normalizing returns with the dataset's own ``reference_range()`` (a
   custom environment has no reference returns of its own) and costs with our cost limit.
6. Saving the FISOR agent and loading it back (``agent.save`` / ``safe_agents.load_agent``).
7. ``envs.NormalizedMetrics``: the same normalized figures in ``info["normalized_metrics"]``
   at the end of each episode, for code that steps the environment itself.
8. ``envs.SafetyFilter``: a reckless controller shielded by FISOR's safety critic
   (``agent.action_cost``) choosing among FISOR's own candidate actions
   (``agent.candidate_actions``).

Run it (the full budget takes several minutes on a laptop CPU; ``--tiny`` a few seconds)::

    python examples/custom_env.py --out examples_out/custom_env
    python examples/custom_env.py --tiny --out /tmp/custom_env

It writes ``cart_reach.hdf5`` (the dataset), ``bc_safe.zip`` and ``fisor.zip`` (the agents) and
``results.json`` (the table it prints) into ``--out``.
"""

# `import envs` comes before `import gymnasium`: it drops a third-party notice that gymnasium
# would print (in your own project, where envs is a third-party package, isort puts it first).
from __future__ import annotations  # noqa: I001

import argparse
import json
import time
from pathlib import Path

import envs
import gymnasium as gym
import numpy as np
import torch

from safe_agents import FISOR, BCSafe, load_agent

# ---------------------------------------------------------------------------------------------
# 1. The environment
# ---------------------------------------------------------------------------------------------
TARGET = 1.0  # where the cart must go
SPEED_LIMIT = 0.6  # each step faster than this costs 1
COST_LIMIT = 3.0  # an episode is safe when it spends at most 3 steps above the speed limit
HORIZON = 60  # steps per episode (truncated, never terminated)


class CartReachEnv(gym.Env):
    """A 1-D cart that must reach ``TARGET``; speeding costs.

    Observation ``(position, velocity)``; action: a throttle in ``[-1, 1]`` (an acceleration of
    ``2 * throttle`` per second, 0.1 s per step). Reward ``1 - |position - TARGET| / 1.5`` per
    step, so arriving early earns more; ``info["cost"]`` is 1 on steps where
    ``|velocity| > SPEED_LIMIT``. Rushing to the target therefore earns the most and costs the
    most: the trade-off that safe RL is about.
    """

    metadata = {"render_modes": []}
    DT = 0.1
    ACCELERATION = 2.0
    MAX_SPEED = 2.0

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(
            low=np.array([-1.5, -self.MAX_SPEED], dtype=np.float32),
            high=np.array([1.5, self.MAX_SPEED], dtype=np.float32),
            dtype=np.float32,
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._position = 0.0
        self._velocity = 0.0
        self._steps = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._position, self._velocity], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds self.np_random: a seeded reset is reproducible
        self._position = float(self.np_random.uniform(-0.1, 0.1))
        self._velocity = 0.0
        self._steps = 0
        return self._obs(), {}

    def step(self, action):
        throttle = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1, 1))
        self._velocity = float(
            np.clip(self._velocity + self.ACCELERATION * throttle * self.DT, -2.0, 2.0)
        )
        self._position = float(np.clip(self._position + self._velocity * self.DT, -1.5, 1.5))
        self._steps += 1
        reward = 1.0 - min(abs(self._position - TARGET), 1.5) / 1.5
        cost = float(abs(self._velocity) > SPEED_LIMIT)
        truncated = self._steps >= HORIZON
        return self._obs(), reward, False, truncated, {"cost": cost}


# ---------------------------------------------------------------------------------------------
# 2. Scripted controllers of different recklessness
# ---------------------------------------------------------------------------------------------
def controller(cruise_speed: float, noise: float = 0.0, seed: int = 0):
    """Drive toward the target at up to ``cruise_speed``, braking on approach.

    ``cruise_speed`` below ``SPEED_LIMIT`` is cautious (never costs), well above it reckless.
    ``noise`` adds Gaussian throttle noise, so the recorded episodes differ.
    """
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray) -> np.ndarray:
        position, velocity = float(obs[0]), float(obs[1])
        wanted = float(np.clip(3.0 * (TARGET - position), -cruise_speed, cruise_speed))
        throttle = 2.0 * (wanted - velocity) + noise * rng.standard_normal()
        return np.array([np.clip(throttle, -1.0, 1.0)], dtype=np.float32)

    return policy


# Cruise speeds of the behaviour controllers, from cautious to reckless.
BEHAVIOURS = {"cautious": 0.5, "moderate": 0.7, "fast": 1.0, "reckless": 1.5}


def collect_dataset(episodes_per_controller: int, seed: int) -> envs.OfflineDataset:
    """Record every behaviour controller with ``envs.collect_episodes`` and join the parts."""
    env = CartReachEnv()
    parts = []
    for index, cruise_speed in enumerate(BEHAVIOURS.values()):
        part = envs.collect_episodes(
            env,
            controller(cruise_speed, noise=0.3, seed=seed + index),
            n_episodes=episodes_per_controller,
            # Episode i is reset with seed + i: distinct seeds per controller.
            seed=seed + 1000 * index,
            # A custom environment has no task record, so the metadata must carry the cost
            # limit (agents that need one read it from here) and the horizon (FISOR's reward
            # scale uses it; it defaults to the longest episode otherwise).
            metadata={
                "cost_limit": COST_LIMIT,
                "max_episode_steps": HORIZON,
                "env_name": "CartReach",
            },
        )
        parts.append(part)
    # concatenate keeps the first part's metadata unless given other metadata.
    return envs.OfflineDataset.concatenate(parts)


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------
def summarize(name: str, report: dict) -> dict:
    """The figures of one ``envs.evaluate`` report that the table shows."""
    return {
        "policy": name,
        "return": report["mean_return"],
        "cost": report["mean_cost"],
        "normalized_return": report["mean_normalized_return"],
        "normalized_cost": report["mean_normalized_cost"],
    }


def print_table(rows: list[dict]) -> None:
    print(f"\n{'policy':<34} {'return':>8} {'cost':>7} {'norm. return':>13} {'norm. cost':>11}")
    for row in rows:
        print(
            f"{row['policy']:<34} {row['return']:>8.2f} {row['cost']:>7.2f} "
            f"{row['normalized_return']:>13.3f} {row['normalized_cost']:>11.3f}"
        )
    print("(normalized cost <= 1 is within the cost limit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="examples_out/custom_env", help="output folder")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' budget (a smoke test)")
    parser.add_argument("--episodes-per-controller", type=int, default=50)
    parser.add_argument("--bc-steps", type=int, default=2_000, help="BC-Safe gradient steps")
    parser.add_argument(
        "--fisor-steps", type=int, default=20_000, help="FISOR gradient steps (its cpu preset's)"
    )
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.tiny:
        args.episodes_per_controller, args.bc_steps, args.fisor_steps = 5, 200, 150
        args.eval_episodes = 2
        torch.set_num_threads(1)  # the cpu presets act on one thread already; this covers the rest
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    # 2. Data ------------------------------------------------------------------------------
    data = collect_dataset(args.episodes_per_controller, args.seed)
    print(f"collected {len(data)} transitions in {data.n_episodes} episodes: {data.summary()}")

    # 3. DSRL-format HDF5 round trip --------------------------------------------------------
    path = envs.save_dataset(data, out / "cart_reach.hdf5")
    data = envs.load_dataset(path)  # a path works wherever a task id does
    print(f"saved and reloaded {path}: {data.provenance}")
    # A custom environment has no reference returns: normalize with the data's own range.
    reward_range = data.reference_range()
    print(f"reference returns for normalization: {reward_range} ({data.normalization})")

    # 4. Training ---------------------------------------------------------------------------
    env = CartReachEnv()
    # preset="cpu": small networks, trained on one torch thread (torch_threads=1 by default).
    bc_safe = BCSafe(env, seed=args.seed, preset="cpu").learn_offline(data, n_steps=args.bc_steps)
    fisor = FISOR(env, seed=args.seed, preset="cpu").learn_offline(data, n_steps=args.fisor_steps)

    # 5. Evaluation -------------------------------------------------------------------------
    # evaluate() takes a trained agent's reference returns and cost limit from its training
    # data by itself (agent.training_data), but a scripted controller has neither: pass both
    # explicitly, so every row of the table is on the same scale.
    def evaluate(policy, environment) -> dict:
        return envs.evaluate(
            policy,
            environment,
            n_episodes=args.eval_episodes,
            seed=10_000,  # evaluation episodes differ from the recorded ones
            reward_range=reward_range,
            cost_limit=COST_LIMIT,
        )

    reckless = controller(BEHAVIOURS["reckless"])
    rows = [
        summarize("scripted cautious", evaluate(controller(BEHAVIOURS["cautious"]), env)),
        summarize("scripted reckless", evaluate(reckless, env)),
        summarize("BC-Safe", evaluate(bc_safe, env)),
    ]
    fisor_report = evaluate(fisor, env)
    rows.append(summarize("FISOR", fisor_report))

    # 6. Save and load ----------------------------------------------------------------------
    bc_safe.save(out / "bc_safe.zip")
    fisor_path = fisor.save(out / "fisor.zip")
    loaded = load_agent(fisor_path)  # any algorithm: the file says which
    obs, _ = env.reset(seed=0)
    same = np.allclose(
        loaded.predict(obs, deterministic=True)[0], fisor.predict(obs, deterministic=True)[0]
    )
    print(f"reloaded {type(loaded).__name__} from {fisor_path}: same actions: {same}")

    # 7. NormalizedMetrics: the same figures from the environment itself --------------------
    # A custom environment needs both reference values (a registered task has them).
    metered = envs.NormalizedMetrics(
        CartReachEnv(), reward_range=reward_range, cost_limit=COST_LIMIT
    )
    obs, _ = metered.reset(seed=10_000)  # the seed of evaluate()'s first episode
    done = False
    while not done:
        action, _ = loaded.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = metered.step(action)
        done = terminated or truncated
    episode = info[envs.NormalizedMetrics.INFO_KEY]
    print(
        "NormalizedMetrics, reloaded FISOR, first evaluation episode: "
        f"normalized return {episode['normalized_return']:.3f}, "
        f"normalized cost {episode['normalized_cost']:.3f} "
        f"(evaluate: {fisor_report['normalized_return'][0]:.3f}, "
        f"{fisor_report['normalized_cost'][0]:.3f})"
    )

    # 8. Shield the reckless controller with FISOR's safety critic --------------------------
    # Each step the controller's throttle and n - 1 candidates sampled from FISOR's policy are
    # scored by FISOR's feasibility critic (max Q_h: <= 0 means "can stay within the speed
    # limit from here"); the proposed throttle is kept when its score is <= threshold, else
    # the safest candidate is executed. candidates=None would perturb the proposal instead.
    shielded_env = envs.SafetyFilter(
        CartReachEnv(),
        candidates=fisor.candidate_actions,
        score=fisor.action_cost,
        n=16,
        threshold=0.0,
        seed=args.seed,
    )
    shielded = evaluate(reckless, shielded_env)
    rows.append(summarize("scripted reckless + SafetyFilter", shielded))
    steps = int(np.sum(shielded["length"]))
    print(f"the shield replaced {shielded_env.interventions} of {steps} reckless actions")

    print_table(rows)
    results = {
        "rows": rows,
        "shield_interventions": shielded_env.interventions,
        "shield_steps": steps,
        "reward_range": list(reward_range),
        "cost_limit": COST_LIMIT,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out / 'results.json'} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
