"""DSPO in the cost-label-free setting, next to BC-All and BC-Safe (demos), and its discriminator.

For each task and seed the dataset is split by ``strip_costs(10, seed=seed)`` into an unlabeled
part and 10 safe demonstrations (the paper's 10-15); no agent sees a cost. Rows:

- **DSPO** and **DSPO without vCLUB** (``vclub_weight = 0``, the paper's "w/o return-agnostic"
  ablation): trained by ``safe-agents bench``'s machinery at the quick profile (so the DSPO rows
  are the very runs of the quick sweep, reused when ``--sweep`` already holds them);
- **BC-All**: behaviour cloning on the unlabeled part and the demos together;
- **BC-Safe (demos)**: behaviour cloning on the demos only.

Every policy is evaluated by the sweep's protocol (10 episodes from evaluation seed 1000, final
iterate, costs counted by the environment). The discriminator table is the paper's Table 2:
the SafetyTransformer's per-trajectory signal on the unlabeled part against the hidden labels
(episode cost <= the task's limit): recall, accuracy and F1 at signal >= 0.5, and the Pearson
correlation of the signal with the safe indicator.

    python benchmarks/dspo_benchmark.py                   # toy task and BallRun, seeds 0-2
    python benchmarks/dspo_benchmark.py --tasks OfflineCarCircle-v0 --seeds 1

Writes ``benchmarks/results/dspo.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_utils import write_result

import envs
from safe_agents import BCAll, bench, load_agent
from safe_agents.common.fileio import atomic_write
from safe_agents.dspo import discriminator_report

TASKS = "OfflineToyReachAvoid-v0,OfflineBallRun-v0"
METRICS = ("recall", "accuracy", "f1", "pearson")


def sweep_dspo(tasks, seeds, out: Path, vclub_weight: float | None, workers: int) -> None:
    """DSPO runs of the quick profile into ``out`` (finished ones are skipped)."""
    runs = bench.plan_runs(["dspo"], tasks, seeds)
    with tempfile.TemporaryDirectory() as configs:
        settings = bench.SweepSettings()
        if vclub_weight is not None:
            path = Path(configs) / "dspo.toml"
            atomic_write(path, f"[quick.hyperparameters]\nvclub_weight = {vclub_weight}\n")
            settings = bench.SweepSettings(configs=configs)

        def report(run, row, error):
            if error is not None:
                raise RuntimeError(f"{run.key} failed: {error}") from error
            print(
                f"  {out.name}/{run.key}: {row['mean_normalized_return']:.3f} / "
                f"{row['mean_normalized_cost']:.2f} ({row['train_seconds']:.0f} s)",
                flush=True,
            )

        bench.run_sweep(runs, settings, out, workers=workers, on_row=report)


def bc_rows(task: str, seed: int, env, data) -> dict[str, dict]:
    """BC-All (unlabeled + demos) and BC-Safe (demos only), quick-profile BC budget."""
    unlabeled, demos = data.strip_costs(bench.SweepSettings().n_safe_demos, seed=seed)
    n_steps, _ = bench.budget("bc_all", task, bench.SweepSettings())
    rows = {}
    for name, training in (
        ("bc_all", envs.OfflineDataset.concatenate([unlabeled, demos])),
        ("bc_safe_demos", demos),
    ):
        start = time.perf_counter()
        agent = BCAll(env, seed=seed).learn_offline(training, n_steps=n_steps)
        seconds = time.perf_counter() - start
        report = envs.evaluate(agent, env, 10, bench.EVAL_SEED)
        rows[name] = {
            "mean_normalized_return": report["mean_normalized_return"],
            "mean_normalized_cost": report["mean_normalized_cost"],
            "train_seconds": round(seconds, 2),
        }
    return rows


def discriminator_rows(task: str, seed: int, data, folders: dict[str, Path]) -> dict[str, dict]:
    """Table 2 metrics of each DSPO variant's SafetyTransformer on the unlabeled part."""
    unlabeled, _ = data.strip_costs(bench.SweepSettings().n_safe_demos, seed=seed)
    hidden = data.episode_costs()[unlabeled.metadata["source_episodes"]]
    is_safe = hidden <= data.metadata["cost_limit"]
    rows = {}
    for name, folder in folders.items():
        key = bench.Run("dspo", task, seed).key
        agent = load_agent(folder / "agents" / f"{key}.zip")
        rows[name] = discriminator_report(agent.safety_signals(unlabeled), is_safe)
    return rows


def mean_std(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    return f"{np.nanmean(values):.3f} +/- {np.nanstd(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sweep", default="bench/quick", help="the quick sweep's folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/dspo.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks, seeds = args.tasks.split(","), list(range(args.seeds))
    folders = {"dspo": Path(args.sweep), "dspo_no_vclub": Path(f"{args.sweep}-dspo-no-vclub")}
    sweep_dspo(tasks, seeds, folders["dspo"], None, args.workers)
    sweep_dspo(tasks, seeds, folders["dspo_no_vclub"], 0.0, args.workers)

    result: dict = {
        "protocol": "strip_costs(10, seed=seed); quick profile; 10 episodes from seed 1000; "
        "discriminator metrics at signal >= 0.5 on the unlabeled part",
        "tasks": {},
    }
    for task in tasks:
        env, data = envs.make(task), envs.load_dataset(task)
        per_seed = []
        for seed in seeds:
            rows = bc_rows(task, seed, env, data)
            for name, folder in folders.items():
                key = bench.Run("dspo", task, seed).key
                (match,) = [r for r in bench.load_rows(folder) if bench.row_key(r) == key]
                rows[name] = {
                    key: match[key]
                    for key in ("mean_normalized_return", "mean_normalized_cost", "train_seconds")
                }
                rows[name]["stage_seconds"] = match.get("stage_seconds")
            per_seed.append(
                {
                    "seed": seed,
                    "policies": rows,
                    "discriminator": discriminator_rows(task, seed, data, folders),
                }
            )
            print(f"{task} seed {seed}: done", flush=True)
        env.close()
        result["tasks"][task] = per_seed
    write_result(args.out, result)

    print("\n| task | agent | normalized return | normalized cost |\n|---|---|---|---|")
    for task, per_seed in result["tasks"].items():
        for name in ("dspo", "dspo_no_vclub", "bc_all", "bc_safe_demos"):
            rewards = [s["policies"][name]["mean_normalized_return"] for s in per_seed]
            costs = [s["policies"][name]["mean_normalized_cost"] for s in per_seed]
            print(f"| {task} | {name} | {mean_std(rewards)} | {mean_std(costs)} |")
    print("\n| task | discriminator | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for task, per_seed in result["tasks"].items():
        for name in folders:
            cells = [mean_std([s["discriminator"][name][m] for s in per_seed]) for m in METRICS]
            print(f"| {task} | {name} | " + " | ".join(cells) + " |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
