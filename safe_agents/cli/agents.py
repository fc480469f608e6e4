"""``safe-agents train``, ``evaluate`` and ``plot-feasibility``: one agent at a time."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from safe_agents.cli.common import (
    ENV_HELP,
    UserError,
    add_data_origin,
    format_report,
    parse_overrides,
    torch_default_threads,
)


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
        compile=args.compile,
        **parse_overrides(args.set),
    )
    steps = args.steps if args.steps is not None else agent.config.n_steps
    compiled = ", compiled updates" if args.compile else ""
    print(
        f"training {agent.name} (preset {agent.preset}, {steps} steps, "
        f"{agent.torch_threads or torch_default_threads()} torch thread(s){compiled})"
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
        print(f"evaluation over {args.eval_episodes} episodes: {format_report(report)}")
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
    print(f"{agent.name} on {env_label}, {args.episodes} episodes: {format_report(report)}")
    if "normalization" in report:
        print(f"normalized return uses {report['normalization']}")
    if "normalized_cost" in report:
        safe = sum(cost <= 1.0 for cost in report["normalized_cost"])
        print(f"safe episodes (normalized cost <= 1): {safe}/{args.episodes}")


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


def add_train(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``train`` command."""
    train = commands.add_parser(
        "train", help="train an agent offline", description=cmd_train.__doc__
    )
    train.add_argument("algo", help="algorithm name (see `safe-agents info`)")
    train.add_argument("--task", help="task id, e.g. OfflineToyReachAvoid-v0")
    train.add_argument("--env", help=ENV_HELP)
    train.add_argument("--dataset", help="DSRL-format HDF5 file (default: the task's dataset)")
    add_data_origin(train)
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
    train.add_argument(
        "--compile",
        action="store_true",
        help="compile the updates with torch.compile (fisor, spi, drcorl, dspo): faster steps "
        "after a compile of seconds to a minute",
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


def add_evaluate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``evaluate`` command."""
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


def add_plot_feasibility(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``plot-feasibility`` command."""
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
