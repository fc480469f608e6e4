"""CDT's deployment loop: a Decision Transformer conditioned on a target return and cost.

The Constrained Decision Transformer (CDT) acts on the last few steps of the episode together
with two numbers: the return still to earn and the cost still allowed (the returns-to-go and
costs-to-go). At deployment you choose the targets an episode starts from, and after each step
the reward and cost received are counted off. This example shows:

1. Training CDT on the toy task's shipped dataset (``preset="cpu"``).
2. The loop written out step by step: ``agent.set_target(target_return=..., target_cost=...)``;
   ``agent.predict(obs, state=state, episode_start=...)`` returns an action and the context (a
   ``CDTContext``) to pass to the next call; ``agent.record_outcome(state, reward, cost)``
   counts the step's reward and cost off the context. ``envs.evaluate`` runs exactly this loop
   for any policy with ``predict`` (and ``record_outcome``), which the example checks.
3. Changing the target cost and watching the episode cost follow it.

Run it (the full budget takes a few minutes on a CPU; ``--tiny`` a few seconds)::

    python examples/cdt_deployment.py --out examples_out/cdt
    python examples/cdt_deployment.py --tiny --out /tmp/cdt

It writes ``cdt.zip`` and ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import envs
from safe_agents import CDT

TASK = "OfflineToyReachAvoid-v0"


def run_episode(agent: CDT, env, seed: int, verbose: bool = False) -> tuple[float, float]:
    """One episode of CDT's deployment loop, written out; returns (return, cost)."""
    obs, _ = env.reset(seed=seed)
    state = None  # CDT's context: None before the first step
    episode_start = np.array([True])  # one flag per observation: True on an episode's first step
    episode_return = episode_cost = 0.0
    done = False
    step = 0
    while not done:
        # episode_start=True opens a fresh context at the agent's current targets; afterwards
        # the context travels through `state` (predict returns the updated one).
        action, state = agent.predict(
            obs, state=state, episode_start=episode_start, deterministic=True
        )
        episode_start = np.array([False])
        obs, reward, terminated, truncated, info = env.step(action)
        # Count the step off the targets: return-to-go -= reward, cost-to-go -= cost. Without
        # this call every step would be conditioned on the full targets.
        state = agent.record_outcome(state, reward, info["cost"])
        episode_return += reward
        episode_cost += info["cost"]
        done = terminated or truncated
        if verbose and (step < 3 or step % 25 == 0 or done):
            print(
                f"  step {step:3d}: reward {reward:5.2f}, cost {info['cost']:.0f} -> "
                f"return-to-go {float(state.return_to_go[0]):7.2f}, "
                f"cost-to-go {float(state.cost_to_go[0]):6.2f}"
            )
        step += 1
    return episode_return, episode_cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="examples_out/cdt", help="output folder")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' budget (a smoke test)")
    parser.add_argument(
        "--steps", type=int, default=None, help="gradient steps (default: the cpu preset's 2000)"
    )
    parser.add_argument(
        "--target-costs",
        default="0,5,15,30",
        help="comma-separated target costs to deploy with (the task's cost limit is 5)",
    )
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hyperparameters: dict = {}
    if args.tiny:
        args.steps, args.eval_episodes = 60, 2
        hyperparameters = {"batch_size": 32}
        torch.set_num_threads(1)  # the cpu preset trains and acts on one thread already
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    # 1. Train.
    data = envs.load_dataset(TASK)
    env = envs.make(TASK)
    agent = CDT(env, seed=args.seed, preset="cpu", **hyperparameters)
    agent.learn_offline(data, n_steps=args.steps)
    agent.save(out / "cdt.zip")
    # The targets after training: the task's cost limit, and the best return the data reaches
    # within it (CDTConfig's target_return/target_cost set them otherwise).
    print(
        f"trained {agent.num_steps} steps; targets {agent.target_return:.2f} / {agent.target_cost}"
    )

    # 2. The loop by hand, then the same episode through envs.evaluate.
    print("one episode by hand:")
    by_hand = run_episode(agent, env, seed=1000, verbose=True)
    report = envs.evaluate(agent, env, n_episodes=1, seed=1000)
    same = np.allclose(by_hand, (report["return"][0], report["cost"][0]))
    print(
        f"by hand: return {by_hand[0]:.2f}, cost {by_hand[1]:.1f}; envs.evaluate: return "
        f"{report['return'][0]:.2f}, cost {report['cost'][0]:.1f} (same: {same})"
    )

    # 3. Sweep the target cost. Each target cost is paired with the best return the data
    #    reaches within it (a target the data shows is achievable, as CDT's default does).
    returns, costs = data.episode_returns(), data.episode_costs()
    rows = []
    for target_cost in [float(value) for value in args.target_costs.split(",")]:
        within = costs <= target_cost
        target_return = float(returns[within].max() if within.any() else returns.min())
        agent.set_target(target_return=target_return, target_cost=target_cost)
        report = envs.evaluate(agent, env, n_episodes=args.eval_episodes, seed=1000)
        rows.append(
            {
                "target_cost": target_cost,
                "target_return": target_return,
                "return": report["mean_return"],
                "cost": report["mean_cost"],
                "normalized_return": report["mean_normalized_return"],
                "normalized_cost": report["mean_normalized_cost"],
            }
        )

    print(
        f"\n{'target cost':>11} {'target return':>13} {'return':>8} {'cost':>7} "
        f"{'norm. return':>13} {'norm. cost':>11}"
    )
    for row in rows:
        print(
            f"{row['target_cost']:>11.1f} {row['target_return']:>13.2f} {row['return']:>8.2f} "
            f"{row['cost']:>7.2f} {row['normalized_return']:>13.3f} {row['normalized_cost']:>11.3f}"
        )
    print("(normalized cost: episode cost / the task's cost limit of 5)")
    results = {
        "task": TASK,
        "by_hand_matches_evaluate": bool(same),
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out / 'results.json'} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
