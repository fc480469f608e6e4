"""A benchmark sweep (agents x tasks x seeds) on a Ray cluster, through the bench API.

``safe_agents.bench`` is what ``safe-agents bench`` runs: ``plan_runs`` lists every (agent,
task, seed), ``SweepSettings`` holds what the runs share (budget profile, evaluation episodes,
overrides), ``run_sweep`` executes the runs that have no result row yet and writes one JSON row
per run into the sweep folder, and ``write_report`` renders the table (Markdown and CSV) and a
cost-return plot per task. With ``ray_address`` each run is a Ray task of one CPU:

- ``--address HOST:PORT`` joins a running cluster (start one with ``ray start --head``; every
  node needs this package and the datasets installed). Rows and agents travel back here.
- without ``--address`` a Ray instance of its own is started on this machine, with
  ``--workers`` CPUs, and stopped at the end.

Ray is an optional dependency: ``pip install "safe-agents[ray]"``.

Rerunning into the same folder skips finished runs (an interrupted sweep resumes); a rerun with
other settings is refused unless ``--force`` (its rows would mix with the old ones).

The command line does the same: ``safe-agents bench --algos bc_safe,fisor --tasks
OfflineToyReachAvoid-v0 --seeds 3 --ray local --out OUT``.

Run it (the full budget takes some minutes per run; ``--tiny`` ~30 s, most of it Ray's start)::

    python examples/ray_sweep.py --out examples_out/ray_sweep
    python examples/ray_sweep.py --address 10.0.0.5:6379 --out examples_out/ray_sweep
    python examples/ray_sweep.py --tiny --out /tmp/ray_sweep

It writes ``rows/*.json``, ``agents/*.zip``, ``sweep.json``, ``report.md``, ``report.csv`` and
``plots/`` into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from safe_agents import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="examples_out/ray_sweep", help="the sweep folder")
    parser.add_argument(
        "--address",
        default=None,
        help="HOST:PORT of a running Ray cluster (or 'auto'); default: start a local instance",
    )
    parser.add_argument("--tiny", action="store_true", help="a few seconds per run (a smoke test)")
    parser.add_argument("--algos", default="bc_safe,fisor,cdt", help="comma-separated agents")
    parser.add_argument("--tasks", default="OfflineToyReachAvoid-v0", help="comma-separated ids")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1")
    parser.add_argument(
        "--profile", choices=("quick", "full"), default="quick", help="the agents' cpu or paper"
    )
    parser.add_argument("--steps", type=int, default=None, help="gradient steps for every run")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run")
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument(
        "--data-origin",
        choices=("auto", "local", "dsrl"),
        default="auto",
        help="which dataset a task id means (envs.load_dataset's origin)",
    )
    parser.add_argument("--force", action="store_true", help="discard rows of other settings")
    args = parser.parse_args()
    if args.tiny:
        args.algos, args.seeds, args.steps, args.episodes = "bc_all,bc_safe", 1, 30, 2
    out = Path(args.out)
    start = time.perf_counter()

    # The runs: every agent x task x seed, names checked against the registries up front.
    runs = bench.plan_runs(args.algos.split(","), args.tasks.split(","), range(args.seeds))
    # What every run shares. Each run loads its task's dataset (envs.load_dataset with
    # data_origin) on the node that runs it.
    settings = bench.SweepSettings(
        profile=args.profile,
        episodes=args.episodes,
        overrides={"n_steps": args.steps} if args.steps is not None else {},
        data_origin=args.data_origin,
    )

    def on_row(run: bench.Run, row: dict | None, error: BaseException | None) -> None:
        """Called as each run finishes (in this process, whichever node ran it)."""
        if error is not None:
            print(f"  FAILED {run.key}: {type(error).__name__}: {error}", flush=True)
        else:
            assert row is not None
            print(
                f"  {run.key}: normalized return {row['mean_normalized_return']:.3f}, "
                f"normalized cost {row['mean_normalized_cost']:.3f} "
                f"(trained {row['train_seconds']:.1f} s)",
                flush=True,
            )

    address = args.address or "local"  # "local": a Ray instance of this process's own
    print(f"{len(runs)} runs on Ray ({address}), profile {settings.profile}")
    rows = bench.run_sweep(
        runs,
        settings,
        out,
        workers=args.workers,  # the local instance's CPUs (ignored by a cluster)
        on_row=on_row,
        ray_address=address,
        force=args.force,
    )
    paths = bench.write_report(out)
    print()
    print(bench.markdown_table(rows))
    print(bench.data_notes(rows))
    print(f"\n{len(rows)} rows in {out / 'rows'}; {time.perf_counter() - start:.1f} s")
    print(f"report table: {paths['markdown']}")
    print(f"report csv: {paths['csv']}")
    print(f"plots: {paths['plots']}")


if __name__ == "__main__":
    main()
