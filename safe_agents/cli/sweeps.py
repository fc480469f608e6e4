"""``safe-agents bench`` and ``report``: benchmark sweeps and their tables."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safe_agents.cli.common import UserError, add_data_origin, split

if TYPE_CHECKING:
    from safe_agents.bench import ConfigSet, Run, SweepSettings

# One sweep: its name, runs, settings and folder.
Plan = tuple[str, list["Run"], "SweepSettings", Path]


def cmd_bench(args: argparse.Namespace) -> None:
    """Train and evaluate agents x tasks x seeds in worker processes; print the papers' table.

    One JSON row per run lands in OUT/rows/ (the trained agent in OUT/agents/); a rerun into the
    same folder skips the finished runs. A rerun with other settings (steps, episodes, profile,
    data origin, budgets) is refused, as its rows would mix with the old ones in one table;
    --force discards the old rows those settings would not reproduce, then runs the sweep. One
    sweep at a time writes a folder. The report (OUT/report.md, report.csv, plots/) is rendered
    at the end, and again any time by `safe-agents report OUT`. --commit-rows commits OUT's rows
    to git as each lands, and nothing else, so a sweep longer than one sitting keeps its results.

    --configs SET runs a config set: a folder whose sweep.toml names the agents, tasks, seeds
    and settings (options given here win) beside its <agent>.toml budgets, into bench/SET by
    default; a set with variants runs each into OUT/<variant> (benchmarks/configs/README.md).
    """
    from safe_agents import bench

    sets = bench.load_config_sets(args.configs) if args.configs is not None else []
    if not sets and args.tasks is None:
        raise UserError(
            "give --tasks TASK_ID[,TASK_ID...], or --configs SET with a sweep.toml naming them"
        )
    plans: list[Plan] = []
    candidates: list[ConfigSet | None] = [*sets] or [None]
    for config_set in candidates:
        plans.append(_plan(args, config_set, nested=len(sets) > 1 or _nested(args, sets)))
    if args.commit_rows:  # before any run: a sweep must not find out after hours of work
        for _, _, _, out in plans:
            try:
                bench.check_committable(out)
            except bench.RowCommitError as error:
                raise UserError(f"--commit-rows: {error}") from error
    failures: list[str] = []
    for name, runs, settings, out in plans:
        if len(plans) > 1:
            print(f"\n{name} -> {out}", flush=True)
        failures += _sweep(args, runs, settings, out)
    if failures:
        raise UserError(f"{len(failures)} run(s) failed; rerun to retry them: {failures[0]}")


def _nested(args: argparse.Namespace, sets: Sequence[ConfigSet]) -> bool:
    """Whether the sets are the variants of the --configs folder (each into OUT/<variant>)."""
    return bool(sets) and Path(sets[0].folder).resolve() != Path(args.configs).resolve()


def _plan(args: argparse.Namespace, config_set: ConfigSet | None, nested: bool) -> Plan:
    """``(name, runs, settings, out)`` of one sweep: the command line's options first, then the
    config set's keys (none without a set), then the defaults."""
    from safe_agents import bench, list_agents

    # What the set names, where there is one; then the command line's options win.
    given: dict[str, Any] = {}
    agents, tasks, seeds = list_agents(), None, list(range(3))
    if config_set is not None:
        given, agents = config_set.settings, list(config_set.agents)
        tasks, seeds = list(config_set.tasks), list(config_set.seeds)

    def pick(option: Any, key: str, default: Any) -> Any:
        return option if option is not None else given.get(key, default)

    if args.algos is not None:
        agents = list_agents() if args.algos == "all" else split(args.algos)
    if args.tasks is not None:
        tasks = split(args.tasks)
    if args.seeds is not None:
        seeds = list(range(args.seeds))
    assert tasks is not None  # cmd_bench asks for --tasks where no set names them
    runs = bench.plan_runs(agents, tasks, seeds)
    profile = pick(args.profile, "profile", "quick")
    changes = {
        "profile": profile,
        "episodes": pick(args.episodes, "episodes", 10 if profile == "quick" else 20),
        "save_agents": False if args.no_save_agents else given.get("save_agents", True),
        "overrides": {"n_steps": args.steps} if args.steps is not None else {},
        "data_origin": pick(args.data_origin, "data_origin", "auto"),
        "curve_points": pick(args.curve_points, "curve_points", 0),
        "curve_episodes": pick(args.curve_episodes, "curve_episodes", 3),
        "checkpoints": pick(args.checkpoints, "checkpoints", 10),
        "build_data": True if args.build_data else given.get("build_data", False),
    }
    if config_set is None:
        configs = args.configs
        if configs is None and Path("benchmarks/configs").is_dir():
            configs = "benchmarks/configs"
        settings = bench.SweepSettings(configs=configs, **changes)
        return "", runs, settings, Path(args.out or f"bench/{profile}")
    settings = config_set.sweep_settings(**changes)
    if args.out is None:
        out = Path("bench") / config_set.name
    elif nested and config_set.variant is not None:
        out = Path(args.out) / config_set.variant
    else:
        out = Path(args.out)
    name = config_set.name + (f": {config_set.description}" if config_set.description else "")
    return name, runs, settings, out


def _sweep(
    args: argparse.Namespace, runs: list[Run], settings: SweepSettings, out: Path
) -> list[str]:
    """Run one sweep, print its progress and its table; return the failed runs' messages."""
    from safe_agents import bench

    failures: list[str] = []
    reported = [0]
    planned = [0]

    def commit(message: str, progress: str) -> None:
        try:
            bench.commit_rows(out, message)
        except bench.RowCommitError as error:  # the rows are on disk: the sweep goes on
            print(f"  {progress} not committed (the next commit retries): {error}", flush=True)

    def on_start(todo: Sequence[Run]) -> None:
        # Printed once the folder is locked and its settings checked: the count is then true.
        planned[0] = len(todo)
        if args.commit_rows:  # the folder as prepared: its settings, rows --force discarded
            commit(f"{out.name}: sweep of {len(runs)} runs, {len(todo)} to do", "[start]")
        print(
            f"{len(runs)} runs ({len(runs) - len(todo)} already finished in {out}), "
            f"{args.workers} worker(s){' on Ray ' + args.ray if args.ray else ''}, "
            f"profile {settings.profile}, {settings.episodes} episodes",
            flush=True,
        )

    def on_row(run: Run, row: dict[str, Any] | None, error: BaseException | None) -> None:
        reported[0] += 1
        progress = f"[{reported[0]}/{planned[0]}]"
        if error is not None:
            failures.append(f"{run.key}: {type(error).__name__}: {error}")
            print(f"  {progress} FAILED {run.key}: {type(error).__name__}: {error}", flush=True)
            return
        assert row is not None
        summary = (
            f"normalized return {row.get('mean_normalized_return', float('nan')):.3f}"
            f", cost {row.get('mean_normalized_cost', float('nan')):.3f}"
        )
        print(
            f"  {progress} {run.key}: {summary} (trained {row['train_seconds']:.0f} s)", flush=True
        )
        if args.commit_rows:
            commit(f"{out.name} row {run.key}: {summary}", progress)

    rows = bench.run_sweep(
        runs,
        settings,
        out,
        workers=args.workers,
        on_row=on_row,
        ray_address=args.ray,
        force=args.force,
        on_start=on_start,
        on_build=lambda message: print(message, flush=True),
    )
    if rows:
        paths = bench.write_report(out)
        print()
        print(bench.markdown_table(rows))
        print(bench.data_notes(rows))
        print(f"\nwrote {paths['markdown']}, {paths['csv']} and {paths['plots']}/")
    return failures


def cmd_report(args: argparse.Namespace) -> None:
    """Render a sweep folder's table (Markdown and CSV) and one reward-cost plot per task.

    With --headline README.md, regenerate the README's results table from the sweep folder
    its headline block names instead.
    """
    from safe_agents import bench

    if args.headline is not None:
        if args.folder is not None:
            raise UserError("--headline regenerates from the folders its blocks name: no FOLDER")
        if not Path(args.headline).is_file():
            raise UserError(f"no file {args.headline}")
        sources = bench.update_headline(args.headline)
        print(f"regenerated the headline of {args.headline} from {', '.join(sources)}")
        return
    if args.folder is None:
        raise UserError("give a sweep FOLDER (or --headline FILE)")
    if not Path(args.folder).is_dir():
        raise UserError(f"no sweep folder {args.folder}")
    paths = bench.write_report(args.folder)
    rows = bench.load_rows(args.folder)
    print(bench.markdown_table(rows))
    print(bench.data_notes(rows))
    print(f"\nwrote {paths['markdown']}, {paths['csv']} and {paths['plots']}/")


def add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``bench`` command."""
    bench = commands.add_parser(
        "bench", help="benchmark sweep: agents x tasks x seeds", description=cmd_bench.__doc__
    )
    bench.add_argument(
        "--algos", help="comma-separated agents, or all (default: the config set's, else all)"
    )
    bench.add_argument(
        "--tasks", help="comma-separated task ids (required without a config set naming them)"
    )
    bench.add_argument(
        "--seeds", type=int, help="training seeds 0..N-1 (default: the config set's, else 3)"
    )
    bench.add_argument(
        "--profile",
        choices=("quick", "full"),
        help="quick: the CPU budgets of the toy benchmarks; full: the papers' (default quick)",
    )
    bench.add_argument("--workers", type=int, default=2, help="parallel runs (default 2)")
    bench.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on Ray: local (a Ray instance of its own on this machine) or HOST:PORT of a "
        "running cluster (checked first: a dead address fails in seconds)",
    )
    bench.add_argument(
        "--episodes", type=int, help="evaluation episodes per run (default 10 quick, 20 full)"
    )
    bench.add_argument("--steps", type=int, help="gradient steps for every run (a smoke test)")
    bench.add_argument(
        "--curve-points",
        type=int,
        help="learning curve: evaluate each run's current iterate this many times during "
        "training (every steps/N steps), on --curve-episodes episodes from their own seeds; "
        "drawn by the report (default 0: none)",
    )
    bench.add_argument("--curve-episodes", type=int, help="episodes per curve point (default 3)")
    bench.add_argument(
        "--checkpoints",
        type=int,
        help="checkpoints per run in OUT/work/: a killed sweep, run again, resumes each "
        "unfinished run from its last one (default 10; 0: none)",
    )
    bench.add_argument(
        "--configs",
        metavar="FOLDER",
        help="a config set (a folder with sweep.toml: its agents, tasks, seeds and settings, "
        "and <agent>.toml budgets; see benchmarks/configs/README.md), or a folder of "
        "<agent>.toml budget overrides (default benchmarks/configs)",
    )
    bench.add_argument(
        "--out", help="sweep folder (default bench/<profile>, or bench/<set> for a config set)"
    )
    add_data_origin(bench, default=None)
    bench.add_argument("--no-save-agents", action="store_true", help="do not keep the agents")
    bench.add_argument(
        "--build-data",
        action="store_true",
        help="first build the benchmark datasets the tasks lack, with their recipes (safe-agents "
        "collect --recipe; 20-40 minutes each on 2 cores)",
    )
    bench.add_argument(
        "--commit-rows",
        action="store_true",
        help="commit OUT's rows (and OUT/sweep.json) to git as each lands, and nothing else, so "
        "a sweep longer than one sitting keeps its finished runs; OUT must be a folder git keeps",
    )
    bench.add_argument(
        "--force",
        action="store_true",
        help="sweep into a folder swept with other settings: discard its rows that these "
        "settings would not reproduce (all of them when steps, episodes, profile or data "
        "origin changed) before running",
    )
    bench.set_defaults(handler=cmd_bench)


def add_report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``report`` command."""
    report = commands.add_parser(
        "report", help="render a sweep folder's table and plots", description=cmd_report.__doc__
    )
    report.add_argument("folder", nargs="?", help="a folder written by safe-agents bench")
    report.add_argument(
        "--headline",
        metavar="FILE",
        help="instead: regenerate FILE's results tables (README.md) between its "
        "'<!-- headline: FOLDER -->' and '<!-- /headline -->' lines from FOLDER's rows",
    )
    report.set_defaults(handler=cmd_report)
