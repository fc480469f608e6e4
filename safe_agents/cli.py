"""The ``safe-agents`` command line: train, evaluate, collect, bench, report and the rest.

This module is the application at the top of the import chain, so unlike the algorithm modules
it imports ``envs`` (tasks, datasets, evaluation). User mistakes (unknown task or algorithm, a
missing or malformed file, a bad hyperparameter) end with a one-line error and exit code 2, not
a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENV_HELP = (
    "a custom environment instead of --task: MODULE:FUNCTION (FUNCTION() returns a "
    "gymnasium.Env whose info has 'cost'; MODULE may be a .py file in the current folder) or a "
    "Gymnasium id; train needs --dataset with it"
)

DEMO_SIMULATOR_TASKS = (
    "OfflineBallRun-v0",
    "OfflineHalfCheetahVelocityGymnasium-v1",
    "OfflinePointGoal1Gymnasium-v0",
    "OfflineMetadrive-easysparse-v0",
)


def torch_default_threads() -> int:
    import torch

    return torch.get_num_threads()


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit code 2."""


def _format_report(report: dict[str, Any]) -> str:
    parts = [f"return {report['mean_return']:9.2f}", f"cost {report['mean_cost']:7.2f}"]
    if "mean_normalized_return" in report:
        parts += [
            f"normalized return {report['mean_normalized_return']:6.3f}",
            f"normalized cost {report['mean_normalized_cost']:6.3f}",
        ]
    return "  ".join(parts)


class _RandomPolicy:
    def __init__(self, space: Any) -> None:
        self.space = space

    def __call__(self, obs: Any) -> Any:
        return self.space.sample()


def cmd_demo(args: argparse.Namespace) -> None:
    """FISOR, BC-All and BC-Safe on the shipped toy data, in about two minutes on 2 cores.

    Trains FISOR (its cpu preset's networks for --fisor-steps gradient steps), BC-All and BC-Safe
    on the toy reach-avoid dataset, prints each agent's normalized return and cost, saves FISOR
    and draws its learned feasible region, then checks that each installed simulator runs.
    """
    import envs
    from envs.plots import plot_feasibility
    from envs.tasks import TOY_TASK_ID as task
    from safe_agents import FISOR, BCAll, BCSafe

    data = envs.load_dataset(task)
    summary = data.summary()
    limit = data.metadata["cost_limit"]
    print(
        f"{task}: reach the goal, avoid the hazard. Data: {data.provenance}; "
        f"{summary['episodes']} episodes, {summary['safe_fraction']:.0%} of them within the cost "
        f"limit {limit:g}; best safe return {summary['best_safe_return']:.1f}, best overall "
        f"{summary['return_max']:.1f}."
    )
    env = envs.make(task)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fisor = FISOR(env, seed=args.seed, preset="cpu")
    runs = [
        (BCAll(env, seed=args.seed), args.bc_steps, "imitates every episode, reckless ones too"),
        (BCSafe(env, seed=args.seed), args.bc_steps, "imitates the episodes within the limit"),
        (fisor, args.fisor_steps, "feasibility-guided diffusion policy (cpu preset)"),
    ]
    rows = []
    for agent, steps, what in runs:
        print(f"\ntraining {agent.name}: {what}, {steps} gradient steps", flush=True)
        start = time.perf_counter()
        agent.learn_offline(data, n_steps=steps, progress_bar=not args.no_progress)
        seconds = time.perf_counter() - start
        report = envs.evaluate(agent, env, n_episodes=args.episodes, seed=args.seed)
        safe = sum(cost <= 1.0 for cost in report["normalized_cost"])
        rows.append((agent.name, steps, seconds, report, safe))
    agent_path = fisor.save(out / "fisor_toy.zip")
    picture = plot_feasibility(fisor.feasibility_value, out / "fisor_feasibility.png", fisor)

    print(f"\n{args.episodes} evaluation episodes each (normalized cost <= 1: within the limit):")
    print(
        f"  {'agent':8s} {'steps':>6s} {'train s':>8s} {'normalized return':>18s} "
        f"{'normalized cost':>16s} {'safe episodes':>14s}"
    )
    for name, steps, seconds, report, safe in rows:
        print(
            f"  {name:8s} {steps:6d} {seconds:8.1f} {report['mean_normalized_return']:18.3f} "
            f"{report['mean_normalized_cost']:16.3f} {f'{safe}/{args.episodes}':>14s}"
        )
    preset_steps = FISOR.config_class.presets["cpu"]["n_steps"]
    print(
        f"\nFISOR saved to {agent_path}; its feasible region (V_h <= 0) is drawn in {picture}.\n"
        f"The cpu preset trains FISOR for {preset_steps:,} steps: "
        f"safe-agents train fisor --task {task} --preset cpu"
    )

    print(f"\nSimulators (one episode of at most {args.steps} random steps each):")
    for task_id in DEMO_SIMULATOR_TASKS:
        try:
            length = min(args.steps, envs.get_task(task_id).max_episode_steps)
            env = envs.make(task_id, max_episode_steps=length)
        except ImportError as error:  # a simulator or dsrl not installed: say how to get it
            print(f"  {task_id:40s} not available: {error}")
            continue
        env.action_space.seed(args.seed)
        start = time.perf_counter()
        report = envs.evaluate(_RandomPolicy(env.action_space), env, 1, args.seed)
        env.close()
        seconds = time.perf_counter() - start
        print(
            f"  {task_id:40s} runs: return {report['mean_return']:8.2f}, cost "
            f"{report['mean_cost']:6.2f} ({seconds:.1f} s)"
        )


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


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text  # a bare string, e.g. actor=gaussian
    return overrides


def load_env(spec: str) -> Any:
    """A user's environment from ``--env``: ``module:function`` or a Gymnasium id.

    ``module:function`` imports ``module`` (the current folder is searched first, as with
    ``python -m``) and calls ``function()``, which returns the environment; anything else goes to
    ``gymnasium.make`` (including Gymnasium's own ``module:EnvId-v0`` form). Its ``step`` must
    report the cost in ``info["cost"]``.
    """
    import importlib

    import gymnasium as gym

    module_name, _, attribute = spec.partition(":")
    if attribute:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise UserError(f"--env {spec}: cannot import {module_name!r}: {error}") from error
        factory = getattr(module, attribute, None)
        if callable(factory) and not isinstance(factory, str):
            env = factory()
            if not isinstance(env, gym.Env):
                raise UserError(
                    f"--env {spec}: {attribute}() returned {type(env).__name__}, "
                    "not a gymnasium.Env"
                )
            return env
    try:
        return gym.make(spec)
    except gym.error.Error as error:
        raise UserError(
            f"--env {spec}: neither module:function nor a Gymnasium id ({error})"
        ) from error


def _environment(args: argparse.Namespace) -> tuple[Any, str]:
    """The environment ``--task`` or ``--env`` names, and a label for file names and output."""
    import envs

    if args.env is None:
        if args.task is None:
            raise UserError("give --task TASK_ID (see `safe-agents info`) or --env MODULE:FUNCTION")
        return envs.make(args.task), args.task
    if args.task is not None:
        raise UserError("give --task or --env, not both")
    return load_env(args.env), args.env.replace(":", ".").replace("/", ".")


def _start_wandb(project: str, run_name: str, agent: Any, log_dir: Path) -> Any:
    """A Weights & Biases run that receives the training rows (``WANDB_MODE=offline`` works)."""
    try:
        import wandb
    except ImportError as error:
        raise UserError('--wandb needs wandb: pip install "safe-agents[wandb]"') from error
    log_dir.mkdir(parents=True, exist_ok=True)
    config = {"algorithm": agent.name, "preset": agent.preset, **agent.config.to_dict()}
    return wandb.init(project=project, name=run_name, config=config, dir=str(log_dir))


def cmd_train(args: argparse.Namespace) -> None:
    """Train an agent offline on a task's dataset, save it, and evaluate it."""
    import envs
    from safe_agents import make_agent
    from safe_agents.common.callbacks import RemainingTimeCallback

    if args.env is not None and args.dataset is None:
        raise UserError("--env needs --dataset FILE: a custom environment has no task dataset")
    # The data first: a missing dataset is reported before a simulator is started.
    dataset = envs.load_dataset(args.dataset or args.task, origin=args.data_origin)
    print(f"data: {dataset.provenance}; normalized return uses {dataset.normalization}")
    env, env_label = _environment(args)
    agent = make_agent(
        args.algo,
        env,
        seed=args.seed,
        preset=args.preset,
        torch_threads=args.threads,
        **_parse_overrides(args.set),
    )
    steps = args.steps if args.steps is not None else agent.config.n_steps
    print(
        f"training {agent.name} (preset {agent.preset}, {steps} steps, "
        f"{agent.torch_threads or torch_default_threads()} torch thread(s))"
    )
    out = Path(args.out)
    run_name = f"{agent.name}-{env_label}-seed{agent.seed}"
    wandb_run = _start_wandb(args.wandb, run_name, agent, out / run_name) if args.wandb else None
    learn_kwargs: dict[str, Any] = {}
    if agent.needs_demos:
        # The cost-label-free setting (DSPO): the costs are removed and kept only for evaluation.
        dataset, learn_kwargs["demos"] = dataset.strip_costs(args.demos, seed=args.seed)
        print(
            f"cost-label-free setting: {dataset.n_episodes} unlabeled episodes and "
            f"{args.demos} safe demonstrations"
        )
    start = time.perf_counter()
    agent.learn_offline(
        dataset,
        **learn_kwargs,
        n_steps=args.steps,
        callback=RemainingTimeCallback(lambda message: print(message, file=sys.stderr)),
        progress_bar=not args.no_progress,
        log_dir=out / run_name,
        log_interval=args.log_interval,
    )
    seconds = time.perf_counter() - start
    if wandb_run is not None:
        wandb_run.finish()
    path = agent.save(out / f"{run_name}.zip")
    losses = {key: round(value, 5) for key, value in agent.logger.latest.items()}
    print(f"trained {agent.name} for {agent.num_steps} steps in {seconds:.1f} s: {losses}")
    print(f"saved {path}; logs in {out / run_name}")
    if args.eval_episodes > 0:
        report = envs.evaluate(agent, env, n_episodes=args.eval_episodes, seed=args.seed)
        print(f"evaluation over {args.eval_episodes} episodes: {_format_report(report)}")
    env.close()


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Evaluate a saved agent in a task's environment with normalized metrics."""
    import envs
    from safe_agents import load_agent

    agent = load_agent(args.path)
    env, env_label = _environment(args)
    report = envs.evaluate(
        agent, env, n_episodes=args.episodes, seed=args.seed, deterministic=not args.stochastic
    )
    env.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{agent.name} on {env_label}, {args.episodes} episodes: {_format_report(report)}")
    if "normalization" in report:
        print(f"normalized return uses {report['normalization']}")
    if "normalized_cost" in report:
        safe = sum(cost <= 1.0 for cost in report["normalized_cost"])
        print(f"safe episodes (normalized cost <= 1): {safe}/{args.episodes}")


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
    """Build a task's offline dataset: train behaviour agents, roll out, filter, write HDF5."""
    import envs

    try:
        path = envs.build_dataset(
            args.task,
            args.out,
            budget_minutes=args.budget_minutes,
            seed=args.seed,
            progress_bar=not args.no_progress,
            overwrite=args.overwrite,
            keep_work_dir=args.keep_work_dir,
            **_parse_overrides(args.set),
        )
    except (FileExistsError, TimeoutError) as error:
        raise UserError(str(error)) from error
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


def cmd_plot_feasibility(args: argparse.Namespace) -> None:
    """Draw a saved agent's feasibility value over the toy task's plane, with rollouts."""
    from envs.plots import plot_feasibility
    from safe_agents import load_agent

    agent = load_agent(args.path)
    if not hasattr(agent, "feasibility_value"):
        raise UserError(f"{agent.name} has no feasibility value to draw (FISOR has one)")
    if agent.obs_dim != 2:
        raise UserError("plot-feasibility draws the 2-D OfflineToyReachAvoid-v0 plane only")
    path = plot_feasibility(agent.feasibility_value, args.out, agent, args.rollouts, args.seed)
    print(f"wrote {path}")


def cmd_bench(args: argparse.Namespace) -> None:
    """Train and evaluate agents x tasks x seeds in worker processes; print the papers' table.

    One JSON row per run lands in OUT/rows/ (the trained agent in OUT/agents/); a rerun into the
    same folder skips the finished runs. A rerun with other settings (steps, episodes, profile,
    data origin, budgets) is refused, as its rows would mix with the old ones in one table;
    --force discards the old rows those settings would not reproduce, then runs the sweep. One
    sweep at a time writes a folder. The report (OUT/report.md, report.csv, plots/) is rendered
    at the end, and again any time by `safe-agents report OUT`.
    """
    from safe_agents import bench, list_agents

    agents = list_agents() if args.algos == "all" else _split(args.algos)
    runs = bench.plan_runs(agents, _split(args.tasks), range(args.seeds))
    configs = args.configs
    if configs is None and Path("benchmarks/configs").is_dir():
        configs = "benchmarks/configs"
    overrides = {"n_steps": args.steps} if args.steps is not None else {}
    settings = bench.SweepSettings(
        profile=args.profile,
        episodes=args.episodes or (10 if args.profile == "quick" else 20),
        configs=configs,
        save_agents=not args.no_save_agents,
        overrides=overrides,
        data_origin=args.data_origin,
        curve_points=args.curve_points,
        curve_episodes=args.curve_episodes,
        checkpoints=args.checkpoints,
    )
    out = Path(args.out or f"bench/{args.profile}")
    failures: list[str] = []
    reported = [0]
    planned = [0]

    def on_start(todo: Sequence[Any]) -> None:
        # Printed once the folder is locked and its settings checked: the count is then true.
        planned[0] = len(todo)
        print(
            f"{len(runs)} runs ({len(runs) - len(todo)} already finished in {out}), "
            f"{args.workers} worker(s){' on Ray ' + args.ray if args.ray else ''}, "
            f"profile {settings.profile}, {settings.episodes} episodes",
            flush=True,
        )

    def on_row(run: Any, row: dict[str, Any] | None, error: BaseException | None) -> None:
        reported[0] += 1
        progress = f"[{reported[0]}/{planned[0]}]"
        if error is not None:
            failures.append(f"{run.key}: {type(error).__name__}: {error}")
            print(f"  {progress} FAILED {run.key}: {type(error).__name__}: {error}", flush=True)
            return
        assert row is not None
        print(
            f"  {progress} {run.key}: normalized return "
            f"{row.get('mean_normalized_return', float('nan')):.3f}"
            f", cost {row.get('mean_normalized_cost', float('nan')):.3f}"
            f" (trained {row['train_seconds']:.0f} s)",
            flush=True,
        )

    rows = bench.run_sweep(
        runs,
        settings,
        out,
        workers=args.workers,
        on_row=on_row,
        ray_address=args.ray,
        force=args.force,
        on_start=on_start,
    )
    if rows:
        paths = bench.write_report(out)
        print()
        print(bench.markdown_table(rows))
        print(bench.data_notes(rows))
        print(f"\nwrote {paths['markdown']}, {paths['csv']} and {paths['plots']}/")
    if failures:
        raise UserError(f"{len(failures)} run(s) failed; rerun to retry them: {failures[0]}")


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


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_data_origin(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--data-origin",
        choices=("auto", "local", "dsrl"),
        default="auto",
        help="which data a task id means: local (built locally: the cache, then shipped; no "
        "network), dsrl (DSRL's, downloaded once if needed), auto (a copy on this machine, "
        "DSRL's first, else DSRL's download; the default)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``safe-agents`` command."""
    parser = argparse.ArgumentParser(
        prog="safe-agents",
        description="Safe offline reinforcement learning with diffusion models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    from safe_agents import __version__

    parser.add_argument("--version", action="version", version=f"safe-agents {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="FISOR, BC-All and BC-Safe on the toy task (about two minutes), then the simulators",
        description=cmd_demo.__doc__,
    )
    demo.add_argument(
        "--fisor-steps", type=int, default=5000, help="FISOR gradient steps (default 5000)"
    )
    demo.add_argument(
        "--bc-steps", type=int, default=2000, help="BC-All/BC-Safe gradient steps (default 2000)"
    )
    demo.add_argument("--episodes", type=int, default=10, help="evaluation episodes (default 10)")
    demo.add_argument(
        "--steps", type=int, default=50, help="random steps per simulator check (default 50)"
    )
    demo.add_argument("--out", default="safe-agents-demo", help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=cmd_demo)

    train = commands.add_parser(
        "train", help="train an agent offline", description=cmd_train.__doc__
    )
    train.add_argument("algo", help="algorithm name (see `safe-agents info`)")
    train.add_argument("--task", help="task id, e.g. OfflineToyReachAvoid-v0")
    train.add_argument("--env", help=ENV_HELP)
    train.add_argument("--dataset", help="DSRL-format HDF5 file (default: the task's dataset)")
    _add_data_origin(train)
    train.add_argument(
        "--steps", type=int, help="gradient steps (default: the preset's; the paper's by default)"
    )
    train.add_argument(
        "--preset",
        default="paper",
        help="named sizes and budget: paper (the authors' networks and steps; days on a CPU "
        "for the diffusion agents) or cpu (reduced, minutes on 2 cores)",
    )
    train.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: 1 with --preset cpu, else torch's own setting)",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--out", default="runs", help="output folder (default ./runs)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter override, repeatable (JSON values: --set hidden_sizes=[64,64])",
    )
    train.add_argument(
        "--eval-episodes", type=int, default=10, help="episodes to evaluate (0: none)"
    )
    train.add_argument("--log-interval", type=int, default=1000, help="steps between log rows")
    train.add_argument(
        "--demos",
        type=int,
        default=10,
        help="safe demonstrations for agents that learn without cost labels (DSPO; default 10)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="also log to this Weights & Biases project (needs the [wandb] extra)",
    )
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a saved agent", description=cmd_evaluate.__doc__
    )
    evaluate.add_argument("path", help="a saved agent (.zip)")
    evaluate.add_argument("--task", help="task id to evaluate on")
    evaluate.add_argument("--env", help=ENV_HELP)
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes (default 10)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    evaluate.add_argument("--stochastic", action="store_true", help="sample actions")
    evaluate.add_argument("--json", action="store_true", help="print the full report as JSON")
    evaluate.set_defaults(handler=cmd_evaluate)

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

    collect = commands.add_parser(
        "collect",
        help="build a task's offline dataset with behaviour agents",
        description=cmd_collect.__doc__,
    )
    collect.add_argument("--task", required=True, help="task id, e.g. OfflineBallRun-v0")
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

    plot = commands.add_parser(
        "plot-feasibility",
        help="draw an agent's feasible region on the toy task",
        description=cmd_plot_feasibility.__doc__,
    )
    plot.add_argument("path", help="a saved agent with a feasibility value (FISOR)")
    plot.add_argument("--out", default="feasibility.png", help="PNG to write")
    plot.add_argument("--rollouts", type=int, default=4, help="episodes drawn")
    plot.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    plot.set_defaults(handler=cmd_plot_feasibility)

    bench = commands.add_parser(
        "bench", help="benchmark sweep: agents x tasks x seeds", description=cmd_bench.__doc__
    )
    bench.add_argument("--algos", default="all", help="comma-separated agents, or all")
    bench.add_argument("--tasks", required=True, help="comma-separated task ids")
    bench.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 (default 3)")
    bench.add_argument(
        "--profile",
        choices=("quick", "full"),
        default="quick",
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
        default=0,
        help="learning curve: evaluate each run's current iterate this many times during "
        "training (every steps/N steps), on --curve-episodes episodes from their own seeds; "
        "drawn by the report (default 0: none)",
    )
    bench.add_argument(
        "--curve-episodes", type=int, default=3, help="episodes per curve point (default 3)"
    )
    bench.add_argument(
        "--checkpoints",
        type=int,
        default=10,
        help="checkpoints per run in OUT/work/: a killed sweep, run again, resumes each "
        "unfinished run from its last one (default 10; 0: none)",
    )
    bench.add_argument(
        "--configs", help="folder of <agent>.toml overrides (default benchmarks/configs)"
    )
    bench.add_argument("--out", help="sweep folder (default bench/<profile>)")
    _add_data_origin(bench)
    bench.add_argument("--no-save-agents", action="store_true", help="do not keep the agents")
    bench.add_argument(
        "--force",
        action="store_true",
        help="sweep into a folder swept with other settings: discard its rows that these "
        "settings would not reproduce (all of them when steps, episodes, profile or data "
        "origin changed) before running",
    )
    bench.set_defaults(handler=cmd_bench)

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

    info = commands.add_parser(
        "info", help="list tasks, agents and datasets", description=cmd_info.__doc__
    )
    info.set_defaults(handler=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``safe-agents`` console script."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from envs import DatasetError, DownloadError, UnknownTaskError
    from envs._compat import MissingDependencyError

    try:
        args.handler(args)
    except (
        UserError,
        UnknownTaskError,
        DatasetError,
        DownloadError,
        MissingDependencyError,
        FileNotFoundError,
        ValueError,
    ) as error:
        if args.verbose:
            raise
        print(f"safe-agents {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
