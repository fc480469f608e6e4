"""``safe-agents info``, ``download`` and ``collect``: tasks, agents and their datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safe_agents.cli.common import UserError, parse_overrides


def cmd_info(args: argparse.Namespace) -> None:
    """List tasks, agents and the datasets on this machine (which load_dataset would use)."""
    import envs
    from envs import download
    from envs.datasets import dataset_locations

    print(
        "Tasks (id, simulator, episode length, cost limit, data on this machine: DSRL's "
        "downloaded file, else one built locally; load_dataset picks in this order):"
    )
    for task_id in envs.list_tasks():
        spec = envs.get_task(task_id)
        dsrl = download.find_dsrl_file(task_id) if spec.dsrl_name else None
        built = next((path for path in dataset_locations(task_id) if path.is_file()), None)
        if dsrl is not None:
            where = f"DSRL {dsrl}"
        elif built is not None:
            where = f"built locally {built}"
        elif spec.dsrl_name:
            where = f"- (DSRL {download.dsrl_file_name(task_id)} downloads on first use)"
        else:
            where = "-"
        print(
            f"  {task_id:42s} {spec.simulator:17s} {spec.max_episode_steps:5d} "
            f"{spec.cost_limit:6g}  {where}"
        )
    print(f"\nDataset cache: {envs.cache_dir()} (set SAFE_AGENTS_DATA_DIR to move it)")
    print(
        f"DSRL downloads: {download.download_dir()}; dsrl's own cache {download.dsrl_cache_dir()} "
        f"is read too. A mirror: set {download.MIRROR_ENV_VAR}."
    )
    print(
        "Normalized return: DSRL's reference returns for DSRL's data, the data's own return "
        "range for data built locally."
    )
    from safe_agents import get_agent_class, list_agents

    print("\nAgents (name, class, steps at the paper / cpu preset, what it is):")
    for name in list_agents():
        agent_class = get_agent_class(name)
        summary = (agent_class.__doc__ or "").strip().splitlines()[0]
        config_class = agent_class.config_class
        paper = config_class.from_kwargs("paper").n_steps
        cpu = config_class.from_kwargs("cpu").n_steps
        print(f"  {name:10s} {agent_class.__name__:10s} {paper:>9,d} / {cpu:>6,d}  {summary}")


def cmd_download(args: argparse.Namespace) -> None:
    """Download tasks' DSRL datasets into the cache (a copy already there is kept)."""
    import envs
    from envs import download

    tasks = args.tasks
    if tasks == ["all"]:
        tasks = [task for task in envs.list_tasks() if envs.get_task(task).dsrl_name]
    failures = []
    for task_id in tasks:
        try:
            data = envs.load_dataset(
                task_id, origin="dsrl", timeout=args.timeout, progress_bar=not args.no_progress
            )
        except (envs.DownloadError, envs.DatasetError) as error:
            if len(tasks) == 1:
                raise
            failures.append(f"{task_id}: {error}")
            print(f"{task_id}: FAILED: {error}", file=sys.stderr)  # and on to the next task
            continue
        summary = data.summary()
        print(
            f"{task_id}: {data.provenance} ({summary['episodes']} episodes, "
            f"{summary['transitions']} transitions) in {download.find_dsrl_file(task_id)}"
        )
    if failures:
        raise UserError(f"{len(failures)} of {len(tasks)} download(s) failed: {failures[0]}")


def cmd_collect(args: argparse.Namespace) -> None:
    """Build a task's offline dataset: train behaviour agents, roll out, filter, write HDF5.

    --recipe builds a benchmark dataset with the settings it was built with
    (envs.collect.RECIPES; no time budget), into the user cache unless --out says otherwise;
    --recipe --task missing builds every benchmark dataset this machine lacks.
    """
    import envs
    from envs.collect import recipes

    if args.recipe:
        if args.set or args.seed != recipes.RECIPE_SEED:
            raise UserError("--recipe fixes the build settings and seed: drop --set and --seed")
        if args.task == "missing":
            if args.out is not None:
                raise UserError("--task missing writes into the user cache: drop --out")
            built = recipes.build_missing(list(recipes.RECIPES), progress_bar=not args.no_progress)
            for path in built:
                _describe_build(path)
            if not built:
                print("every benchmark dataset is on this machine; nothing to build")
            return
        try:
            recipes.recipe(args.task)
        except ValueError as error:  # the message lists the tasks with a recipe
            raise UserError(str(error)) from None
    try:
        if args.recipe:
            path = recipes.build_from_recipe(
                args.task,
                args.out,
                progress_bar=not args.no_progress,
                overwrite=args.overwrite,
                keep_work_dir=args.keep_work_dir,
            )
        else:
            path = envs.build_dataset(
                args.task,
                args.out,
                budget_minutes=args.budget_minutes,
                seed=args.seed,
                progress_bar=not args.no_progress,
                overwrite=args.overwrite,
                keep_work_dir=args.keep_work_dir,
                **parse_overrides(args.set),
            )
    except (FileExistsError, TimeoutError) as error:
        raise UserError(str(error)) from error
    _describe_build(path)


def _describe_build(path: Path) -> None:
    """Print a built dataset's figures, and how to continue a build its budget cut."""
    import envs

    data = envs.load_dataset(path)
    summary = data.summary()
    print(
        f"wrote {path}: {summary['episodes']} episodes, {summary['transitions']} transitions, "
        f"return {summary['return_min']:.1f}..{summary['return_max']:.1f}, "
        f"cost {summary['cost_min']:.1f}..{summary['cost_max']:.1f}, "
        f"{summary['safe_fraction']:.0%} within the cost limit {data.metadata['cost_limit']:g}"
    )
    if not data.metadata.get("complete", True):
        print(
            f"the time budget cut the build ({data.metadata['missing_stages']} stages left); "
            "rerun the same command to continue it"
        )


def add_download(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``download`` command."""
    fetch = commands.add_parser(
        "download",
        help="download tasks' DSRL datasets into the cache",
        description=cmd_download.__doc__,
    )
    fetch.add_argument("tasks", nargs="+", help="task ids, or all")
    fetch.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the host (default 30)"
    )  # envs.download.DEFAULT_TIMEOUT: not imported here, so that --help stays fast
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(handler=cmd_download)


def add_collect(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``collect`` command."""
    collect = commands.add_parser(
        "collect",
        help="build a task's offline dataset with behaviour agents",
        description=cmd_collect.__doc__,
    )
    collect.add_argument(
        "--task",
        required=True,
        help="task id, e.g. OfflineBallRun-v0 (with --recipe: or missing, every benchmark "
        "dataset this machine lacks)",
    )
    collect.add_argument(
        "--recipe",
        action="store_true",
        help="build the task's benchmark dataset with the settings it was built with "
        "(envs.collect.RECIPES; no time budget)",
    )
    collect.add_argument(
        "--budget-minutes",
        type=float,
        default=60.0,
        help="wall-clock budget; training is planned to fit it (default 60)",
    )
    collect.add_argument(
        "--out", help="HDF5 file to write (default: the user cache, where load_dataset looks)"
    )
    collect.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    collect.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="build setting, repeatable (envs.BuildConfig fields: --set train_steps=100000 "
        '--set behaviours=\'["unconstrained","limit:1"]\')',
    )
    collect.add_argument("--overwrite", action="store_true", help="replace an existing file")
    collect.add_argument(
        "--keep-work-dir", action="store_true", help="keep checkpoints and rollouts afterwards"
    )
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")
    collect.set_defaults(handler=cmd_collect)


def add_info(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``info`` command."""
    info = commands.add_parser(
        "info", help="list tasks, agents and datasets", description=cmd_info.__doc__
    )
    info.set_defaults(handler=cmd_info)
