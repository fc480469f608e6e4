"""DSPO: learn a safe policy from trajectories without cost labels and a few safe demos.

The setting of DSPO (Diffusion-guided Safe Policy Optimization): the agent gets a dataset of
trajectories ``(s, a, r)`` whose costs were never recorded, plus a handful of demonstrations
known to be safe. ``OfflineDataset.strip_costs(n_safe_demos, seed=...)`` makes this setting from
any cost-labelled dataset (here the toy task's shipped one): it draws ``n_safe_demos`` safe
episodes as demonstrations and removes every cost label. ``DSPO.learn_offline(unlabeled,
demos=demos)`` then trains its three stages (a safety discriminator, a conditional trajectory
diffusion model, behaviour cloning on generated safe trajectories).

The hidden labels still score the result: the environment reports the real cost while the agent
acts, and ``envs.StripCost`` hides it from the agent at deployment (``envs.evaluate`` reads the
hidden cost from the wrapper). The discriminator's verdict on every unlabeled trajectory is
compared with the hidden labels too. Two cost-free baselines (behaviour cloning of everything,
and of the demos alone) and one that sees the labels (BC-Safe) give the scale.

Run it (the full budget takes several minutes on a CPU; ``--tiny`` a few seconds)::

    python examples/dspo_without_cost_labels.py --out examples_out/dspo
    python examples/dspo_without_cost_labels.py --tiny --out /tmp/dspo

It writes ``dspo.zip`` and ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import envs
from envs.metrics import discriminator_report
from safe_agents import DSPO, BCAll, BCSafe

TASK = "OfflineToyReachAvoid-v0"


def summarize(name: str, labels: str, report: dict) -> dict:
    """The figures of one ``envs.evaluate`` report that the table shows."""
    return {
        "agent": name,
        "cost labels": labels,
        "return": report["mean_return"],
        "cost": report["mean_cost"],
        "normalized_return": report["mean_normalized_return"],
        "normalized_cost": report["mean_normalized_cost"],
    }


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'agent':<30} {'cost labels':<12} {'return':>8} {'cost':>7} "
        f"{'norm. return':>13} {'norm. cost':>11}"
    )
    for row in rows:
        print(
            f"{row['agent']:<30} {row['cost labels']:<12} {row['return']:>8.2f} "
            f"{row['cost']:>7.2f} {row['normalized_return']:>13.3f} "
            f"{row['normalized_cost']:>11.3f}"
        )
    print("(normalized cost <= 1 is within the cost limit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="examples_out/dspo", help="output folder")
    parser.add_argument("--tiny", action="store_true", help="a few seconds' budget (a smoke test)")
    parser.add_argument("--demos", type=int, default=10, help="safe demonstrations (paper: 10-15)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="DSPO's gradient steps, all stages (default: its cpu preset's 5000)",
    )
    parser.add_argument("--bc-steps", type=int, default=2_000, help="the baselines' steps")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # The cpu preset's stages: 1000 discriminator steps, 2500 diffusion steps, then BC.
    dspo_hyperparameters: dict = {}
    if args.tiny:
        # Every stage needs some steps: n_steps must exceed discriminator_steps +
        # diffusion_train_steps, so a short run shortens the stages themselves.
        dspo_hyperparameters = {
            "discriminator_steps": 40,
            "diffusion_train_steps": 40,
            "n_generated_segments": 16,
        }
        args.steps, args.bc_steps, args.eval_episodes = 120, 200, 2
        torch.set_num_threads(1)  # the cpu presets train on one thread already
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    # 1. The cost-label-free setting from a labelled dataset.
    data = envs.load_dataset(TASK)
    unlabeled, demos = data.strip_costs(n_safe_demos=args.demos, seed=args.seed)
    limit = unlabeled.metadata["cost_limit"]
    print(
        f"{TASK}: {unlabeled.n_episodes} unlabeled episodes (costs: {unlabeled.has_costs}) and "
        f"{demos.n_episodes} safe demos (episode cost <= {limit}), from {data.provenance}"
    )

    # 2. DSPO: never reads a cost (it would drop any it were given).
    env = envs.make(TASK)
    dspo = DSPO(env, seed=args.seed, preset="cpu", **dspo_hyperparameters)
    dspo.learn_offline(unlabeled, demos=demos, n_steps=args.steps)
    dspo.save(out / "dspo.zip")
    seconds = ", ".join(f"{stage} {value:.1f} s" for stage, value in dspo.stage_seconds.items())
    print(f"DSPO trained {dspo.num_steps} steps ({seconds})")

    # 3. How well the safety discriminator separates the unlabeled trajectories: its signals
    #    against the labels strip_costs hid (metadata["source_episodes"] indexes `data`).
    hidden_costs = data.episode_costs()[unlabeled.metadata["source_episodes"]]
    discriminator = discriminator_report(dspo.safety_signals(unlabeled), hidden_costs <= limit)
    print(
        "safety discriminator on the unlabeled episodes (vs hidden labels): "
        f"accuracy {discriminator['accuracy']:.3f}, recall {discriminator['recall']:.3f}, "
        f"precision {discriminator['precision']:.3f} ({discriminator['n_safe']} of "
        f"{discriminator['n']} safe)"
    )

    # 4. Baselines: cost-free behaviour cloning of everything and of the demos alone, and
    #    BC-Safe, which reads the labels to keep only the safe episodes.
    baselines = {
        "BC-All on the unlabeled data": ("none", BCAll, unlabeled),
        "BC on the safe demos alone": ("none", BCAll, demos),
        "BC-Safe (reads the labels)": ("all", BCSafe, data),
    }
    agents = {"DSPO": ("none", dspo)}
    for name, (labels, agent_class, training_data) in baselines.items():
        agent = agent_class(env, seed=args.seed, preset="cpu")
        agents[name] = (labels, agent.learn_offline(training_data, n_steps=args.bc_steps))

    # 5. Deployment without cost signal: StripCost removes info["cost"] from what the agent
    #    (or any code above the wrapper) sees; envs.evaluate still counts the real cost.
    deployed = envs.StripCost(envs.make(TASK))
    rows = []
    for name, (labels, agent) in agents.items():
        report = envs.evaluate(agent, deployed, n_episodes=args.eval_episodes, seed=1000)
        rows.append(summarize(name, labels, report))

    print_table(rows)
    results = {
        "task": TASK,
        "n_safe_demos": demos.n_episodes,
        "discriminator": discriminator,
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_plain))
    print(f"\nwrote {out / 'results.json'} ({results['seconds']} s)")


def _plain(value):
    """JSON for numpy scalars (and NaN-safe floats)."""
    return float(value) if isinstance(value, np.floating | np.integer) else str(value)


if __name__ == "__main__":
    main()
