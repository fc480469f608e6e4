"""Shield an online stable-baselines3 PPO agent with a safety critic trained offline.

PPO is trained online on ``OfflineToyReachAvoid-v0`` with the reward alone: it never sees the
cost, so it learns the fastest route to the goal, straight through the hazard. A FISOR agent is
trained offline on the task's shipped dataset (``envs.load_dataset``); its feasibility critic
(``agent.action_cost``: ``max Q_h``, feasible when ``<= 0``) then guards PPO through
``envs.SafetyFilter``: each step PPO's action is scored together with alternatives, and when
it is infeasible the safest alternative is executed instead. Two kinds of alternatives are
compared: FISOR's own candidate actions (``agent.candidate_actions``) and Gaussian
perturbations of PPO's action (``candidates=None``). ``envs.evaluate`` measures return and cost
of PPO with and without the shield (and of FISOR itself, for reference).

Run it (the full budget takes several minutes on a CPU; ``--tiny`` a few seconds)::

    python examples/shield_sb3_ppo.py --out examples_out/shield_sb3_ppo
    python examples/shield_sb3_ppo.py --tiny --out /tmp/shield_sb3_ppo

It writes ``ppo.zip`` (SB3's format), ``fisor.zip`` and ``results.json`` into ``--out``.
"""

# `import envs` comes before `import gymnasium` (imported by stable_baselines3): it drops a
# third-party notice that gymnasium would print.
from __future__ import annotations  # noqa: I001

import argparse
import json
import time
from pathlib import Path

import envs
import numpy as np
import torch
from stable_baselines3 import PPO

from safe_agents import FISOR

TASK = "OfflineToyReachAvoid-v0"


def summarize(name: str, report: dict, interventions: str = "-") -> dict:
    """The figures of one ``envs.evaluate`` report that the table shows."""
    return {
        "policy": name,
        "return": report["mean_return"],
        "cost": report["mean_cost"],
        "normalized_return": report["mean_normalized_return"],
        "normalized_cost": report["mean_normalized_cost"],
        "replaced": interventions,
    }


def print_table(rows: list[dict]) -> None:
    header = f"{'policy':<34} {'return':>8} {'cost':>7} {'norm. return':>13} {'norm. cost':>11}"
    print(f"\n{header} {'replaced':>9}")
    for row in rows:
        print(
            f"{row['policy']:<34} {row['return']:>8.2f} {row['cost']:>7.2f} "
            f"{row['normalized_return']:>13.3f} {row['normalized_cost']:>11.3f} "
            f"{row['replaced']:>9}"
        )
    print("(normalized cost <= 1 is within the cost limit; replaced: actions the shield changed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="examples_out/shield_sb3_ppo", help="output folder")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' budget (a smoke test)")
    parser.add_argument("--ppo-timesteps", type=int, default=100_000, help="PPO's online steps")
    parser.add_argument(
        "--critic-steps", type=int, default=20_000, help="FISOR's offline gradient steps"
    )
    parser.add_argument("--candidates", type=int, default=16, help="actions the shield scores")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ppo_kwargs: dict = {}
    if args.tiny:
        args.ppo_timesteps, args.critic_steps, args.eval_episodes = 256, 150, 2
        ppo_kwargs = {"n_steps": 128, "batch_size": 64, "n_epochs": 2}
        torch.set_num_threads(1)  # SB3 uses torch's default threads; FISOR's cpu preset uses 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    # 1. PPO online, reward only. envs.make gives a plain Gymnasium environment; the cost sits
    #    in info["cost"], which PPO ignores.
    env = envs.make(TASK)
    ppo = PPO("MlpPolicy", env, seed=args.seed, verbose=0, device="cpu", **ppo_kwargs)
    ppo.learn(total_timesteps=args.ppo_timesteps)
    ppo.save(out / "ppo.zip")

    # 2. The safety critic, offline, from the task's dataset (shipped with the package).
    data = envs.load_dataset(TASK)
    print(f"offline data: {data.provenance}; {len(data)} transitions, {data.n_episodes} episodes")
    critic = FISOR(env, seed=args.seed, preset="cpu").learn_offline(data, n_steps=args.critic_steps)
    critic.save(out / "fisor.zip")

    # 3. Evaluate. SB3 models have predict(obs, state, episode_start, deterministic), which
    #    envs.evaluate calls like any agent of safe_agents. A registered task carries its cost
    #    limit and reference returns, so the figures are normalized without arguments.
    def evaluate(policy, environment) -> dict:
        return envs.evaluate(policy, environment, n_episodes=args.eval_episodes, seed=1000)

    rows = [summarize("PPO (reward only)", evaluate(ppo, env))]

    # The shield is a wrapper around the environment: the policy is unchanged and unaware.
    shields = {
        "PPO + shield (FISOR candidates)": critic.candidate_actions,
        "PPO + shield (perturbations)": None,  # Gaussian perturbations of PPO's action
    }
    for name, candidates in shields.items():
        shielded_env = envs.SafetyFilter(
            envs.make(TASK),
            candidates=candidates,
            score=critic.action_cost,
            n=args.candidates,
            threshold=0.0,  # FISOR's Q_h <= 0: the action keeps the agent out of the hazard
            noise_scale=0.3,  # perturbations: std of 0.3 times the action range
            seed=args.seed,
        )
        report = evaluate(ppo, shielded_env)
        replaced = f"{shielded_env.interventions}/{int(np.sum(report['length']))}"
        rows.append(summarize(name, report, replaced))
        shielded_env.close()

    # For reference: FISOR's own policy (normalized with its training data's range, which for
    # the toy task's shipped data is the task's own).
    rows.append(summarize("FISOR (offline)", evaluate(critic, env)))

    print_table(rows)
    results = {"task": TASK, "rows": rows, "seconds": round(time.perf_counter() - start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out / 'results.json'} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
