"""DSPO beyond its sweep: BC on the safe demonstrations alone, and the discriminator's Table 2.

The policies of DSPO's page come from the ``dspo`` config set, whose variants are swept into
``<sweep>/default`` (DSPO, and BC-All, which ignores costs) and ``<sweep>/no_vclub`` (DSPO
without its return-agnostic vCLUB term, the paper's ablation); every DSPO run gets
``strip_costs(n_safe_demos, seed)`` of its task's data. This script reads those folders and, for
each task and seed of their DSPO runs, adds what a sweep cannot:

- **bc_safe_demos**: behaviour cloning on that run's safe demonstrations alone, at BC-All's
  budget under the sweep's profile (``bench.budget``), evaluated by the sweep's protocol and
  normalized with the DSPO row's reference range;
- the **discriminator** table (the paper's Table 2): each variant's SafetyTransformer signal on
  the run's unlabeled part against the hidden labels (episode cost <= the task's limit):
  recall, precision, accuracy and F1 at signal >= 0.5, and the Pearson correlation of the
  signal with the safe indicator.

    safe-agents bench --configs benchmarks/configs/dspo --out benchmarks/results/dspo
    python benchmarks/dspo_discriminator.py --sweep benchmarks/results/dspo

Writes ``benchmarks/results/dspo_discriminator.json`` and prints Markdown tables. ``--sweep``
may also name one sweep folder with DSPO rows (its variant is called ``default``), and
``--discriminator-only`` skips the BC runs, so the discriminator of any sweep's DSPO agents
can be scored in seconds. The suite's, in ``benchmarks/results/suite/dspo_discriminator.json``
(every task, with the BC runs: about 7.5 minutes on 2 CPU cores)::

    python benchmarks/dspo_discriminator.py --sweep benchmarks/results/suite \
        --out benchmarks/results/suite/dspo_discriminator.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from envs.metrics import discriminator_report
from safe_agents import BCAll, bench, load_agent

METRICS = ("recall", "precision", "accuracy", "f1", "pearson", "auc")


def variants(sweep: Path) -> dict[str, Path]:
    """``{variant: folder}`` of the sweep's variant folders that hold DSPO rows (a sweep
    folder of its own is the variant ``default``)."""
    if (sweep / bench.RECORD_FILE).is_file():
        return {"default": sweep}
    found = {
        folder.name: folder
        for folder in sorted(sweep.iterdir())
        if (folder / bench.RECORD_FILE).is_file()
        and any(row["agent"] == "dspo" for row in bench.load_rows(folder))
    }
    if "default" not in found:
        raise SystemExit(
            f"{sweep}/default holds no DSPO rows: safe-agents bench --configs "
            f"benchmarks/configs/dspo --out {sweep}"
        )
    return found


def demos_row(
    dspo_row: dict[str, Any], settings: bench.SweepSettings, env: Any, demos: Any
) -> dict[str, Any]:
    """BC on the demos of a DSPO run, evaluated and normalized as that run's row."""
    task, seed = dspo_row["task"], dspo_row["seed"]
    n_steps, hyperparameters = bench.budget("bc_all", task, settings)
    preset = bench.PROFILE_PRESETS[settings.profile]
    start = time.perf_counter()
    agent = BCAll(env, seed=seed, preset=preset, **hyperparameters)
    agent.learn_offline(demos, n_steps=n_steps)
    seconds = time.perf_counter() - start
    reward_range = dspo_row.get("reward_range")
    report = envs.evaluate(
        agent,
        env,
        settings.episodes,
        settings.eval_seed,
        reward_range=tuple(reward_range) if reward_range else None,
    )
    # The data and normalization are the DSPO run's: the demos are drawn from its data.
    keys = ("simulator", "data_origin", "data_provenance", "normalization", "reward_range")
    return {
        "agent": "bc_safe_demos",
        "task": task,
        "seed": seed,
        "n_steps": n_steps,
        "setting": f"BC on {settings.n_safe_demos} safe demos alone",
        **{key: report[key] for key in report if key.startswith("mean_")},
        **{key: dspo_row[key] for key in keys if key in dspo_row},
        "eval_seed": settings.eval_seed,
        "train_seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sweep",
        type=Path,
        default=Path("benchmarks/results/dspo"),
        help="the dspo config set's sweep folder (its variants in subfolders), or one sweep "
        "folder with DSPO rows",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/dspo_discriminator.json")
    )
    parser.add_argument(
        "--discriminator-only",
        action="store_true",
        help="score the discriminators alone, without training BC on the demos",
    )
    parser.add_argument("--tasks", default=None, help="comma-separated task ids (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a sweep's worker
    folders = variants(args.sweep)
    settings = bench.read_settings(folders["default"])
    tasks = args.tasks.split(",") if args.tasks else None
    dspo_rows = [
        row
        for row in bench.load_rows(folders["default"])
        if row["agent"] == "dspo" and (tasks is None or row["task"] in tasks)
    ]
    rows: list[dict[str, Any]] = []
    discriminator: dict[str, list[dict[str, Any]]] = {}
    for task in dict.fromkeys(row["task"] for row in dspo_rows):
        env = envs.make(task)
        data = envs.load_dataset(task, origin=settings.data_origin, progress_bar=False)
        for dspo_row in (row for row in dspo_rows if row["task"] == task):
            seed = dspo_row["seed"]
            # The split the sweep's run trained on (bench.execute makes the same).
            unlabeled, demos = data.strip_costs(settings.n_safe_demos, seed=seed)
            if not args.discriminator_only:
                rows.append(demos_row(dspo_row, settings, env, demos))
            hidden = data.episode_costs()[unlabeled.metadata["source_episodes"]]
            is_safe = hidden <= data.metadata["cost_limit"]
            scores: dict[str, Any] = {"seed": seed}
            for name, folder in folders.items():
                path = bench.agent_path(folder, bench.Run("dspo", task, seed))
                if path.is_file():
                    agent = load_agent(path)
                    signals = agent.safety_signals(unlabeled)
                    scores[name] = {
                        **discriminator_report(signals, is_safe),
                        # Against the demos' own: a discriminator that memorized them calls
                        # every unlabeled trajectory unsafe, the safe ones included.
                        "median_signal_demos": float(np.median(agent.safety_signals(demos))),
                    }
            discriminator.setdefault(task, []).append(scores)
            print(f"{task} seed {seed} done", flush=True)
        env.close()
    result = {
        "protocol": f"strip_costs({settings.n_safe_demos}, seed=seed) of each DSPO run; profile "
        f"{settings.profile}; {settings.episodes} episodes from seed {settings.eval_seed}; "
        "discriminator metrics at signal >= 0.5 on the unlabeled part",
        "sweep": str(args.sweep),
        "variants": list(folders),
        "rows": rows,
        "discriminator": discriminator,
    }
    out = bench.write_result(args.out, result)

    policies = [
        {**row, "agent": row["agent"] if name == "default" else f"{row['agent']}_{name}"}
        for name, folder in folders.items()
        for row in bench.load_rows(folder)
        if tasks is None or row["task"] in tasks
    ]
    print(bench.markdown_table(policies + rows))
    print("\n| task | discriminator | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for task, per_seed in discriminator.items():
        for name in folders:
            values = [[seed[name][m] for seed in per_seed if name in seed] for m in METRICS]
            cells = [f"{np.nanmean(v):.3f} +- {np.nanstd(v):.3f}" for v in values]
            print(f"| {task} | {name} | " + " | ".join(cells) + " |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
