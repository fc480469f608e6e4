"""FISOR and DRCORL as their authors ran them: learning curves, before/after, ablations, threads.

The evidence of the fidelity change (FISOR's weight clip, reward scale and two actor updates per
step; DRCORL's warm start toward the diffusion model; the ``cpu`` presets). Each job trains one
agent on one task with one seed and writes one JSON row, ``results/fidelity/<job>.json``; a job
whose row exists is skipped, so a stopped run resumes where it stopped. Jobs run ``--workers``
at a time (default 2), each in its own process with one torch thread.

"before" jobs run the previous code: a git worktree of :data:`REFERENCE` (the last revision
before the change) put first on ``PYTHONPATH``, with the budget it shipped (``bench.QUICK``
of that revision) at the same number of gradient steps as the "after" jobs.

    python benchmarks/fidelity.py run            # every missing job (about 1 h on 2 cores)
    python benchmarks/fidelity.py run --only fisor_curve
    python benchmarks/fidelity.py report         # tables from the rows -> results/fidelity.md
    python benchmarks/fidelity.py threads        # steps/s at 1 and 2 threads, both presets
    python benchmarks/fidelity.py warm-start     # DRCORL's warm-started policy on BallRun

Evaluation: the final iterate, 10 episodes reset with seeds 1000.. (the package's protocol);
curve points use 5 episodes with seeds 2000.., apart from the final evaluation's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "fidelity"
REFERENCE = "88c3283"  # main before the fidelity change
REFERENCE_TREE = ROOT / ".cache" / "reference"

TOY, BALL, CAR = "OfflineToyReachAvoid-v0", "OfflineBallRun-v0", "OfflineCarCircle-v0"
SEEDS = (0, 1, 2)
FISOR_STEPS = 20_000  # the cpu preset's n_steps, from the curves
CURVE_EVERY = 2_000
FINAL_EPISODES, FINAL_SEED = 10, 1000
CURVE_EPISODES, CURVE_SEED = 5, 2000

# What the reference revision shipped as its quick budget (its bench.QUICK), for "before".
REFERENCE_FISOR = {
    "actor_batch_size": 256,
    "actor_width": 64,
    "actor_expansion": 1,
    "critic_hidden_sizes": [64, 64],
    "feasibility_expectile": 0.99,
}
REFERENCE_DRCORL = {
    "pretrain_steps": 4_000,
    "actor_hidden_sizes": [64, 64],
    "critic_hidden_sizes": [64, 64],
    "behaviour_width": 64,
    "behaviour_blocks": 2,
}
# DRCORL's discount in both revisions' quick profile: 0.95 on 100-step tasks, else 0.99.
DRCORL_GAMMA = {TOY: 0.95, BALL: 0.95, CAR: 0.99}
# FISOR's ablations, seed 0: each of the three changes undone alone.
ABLATION_TASKS = (TOY,)
ABLATIONS = {
    "floor1": {"min_cost_weight": 1.0},
    "scale1000": {"episode_length": 1000},
    # One update of 512 per step, the decay counted per step over the same 60k (as before).
    "oneactor": {
        "actor_updates_per_step": 1,
        "actor_batch_size": 512,
        "actor_lr_decay_steps": 60_000,
    },
    # Not one of the three: the sampler's noise, posterior std instead of sqrt(beta_t).
    "smallnoise": {"variance_type": "fixed_small"},
}


def jobs() -> dict[str, dict[str, Any]]:
    """Every job by name, in the order they run."""
    table: dict[str, dict[str, Any]] = {}

    def add(name: str, **job: Any) -> None:
        table[name] = {"preset": "cpu", "hyperparameters": {}, "code": "new", **job}

    for task in (TOY, BALL):
        add(f"fisor_curve__{task}", agent="fisor", task=task, seed=0, curve_every=CURVE_EVERY)
        # Plain diffusion behaviour cloning: every weight 1, one sample executed.
        add(
            f"fisor_dbc_curve__{task}",
            agent="fisor",
            task=task,
            seed=0,
            curve_every=CURVE_EVERY,
            hyperparameters={"actor_weighting": "uniform", "n_candidates": 1},
        )
    # Is 20k enough where the curve still climbs at 20k? The same run twice as long (the cpu
    # preset's cosine decay stretches with the run).
    add(
        f"fisor_curve40k__{BALL}",
        agent="fisor",
        task=BALL,
        seed=0,
        curve_every=4 * CURVE_EVERY,
        n_steps=40_000,
        hyperparameters={"n_steps": 40_000},
    )
    for task in (TOY, BALL, CAR):
        for seed in SEEDS:
            if not (seed == 0 and task in (TOY, BALL)):  # seed 0 is the curve run's last point
                add(f"fisor_after__{task}__seed{seed}", agent="fisor", task=task, seed=seed)
            add(
                f"fisor_before__{task}__seed{seed}",
                agent="fisor",
                task=task,
                seed=seed,
                code="reference",
                preset=None,
                n_steps=FISOR_STEPS,
                hyperparameters=REFERENCE_FISOR,
            )
            for agent in ("bc_all", "bc_safe"):
                add(f"{agent}__{task}__seed{seed}", agent=agent, task=task, seed=seed)
    for task in ABLATION_TASKS:
        for label, change in ABLATIONS.items():
            add(
                f"fisor_ablation_{label}__{task}",
                agent="fisor",
                task=task,
                seed=0,
                hyperparameters=change,
            )
    # An option kept apart from the default: the reversed expectile the previous revision's
    # quick budget used (0.99; the paper's 0.9), which makes more states feasible.
    for task in (TOY, BALL):
        add(
            f"fisor_option_expectile99__{task}",
            agent="fisor",
            task=task,
            seed=0,
            hyperparameters={"feasibility_expectile": 0.99},
        )
    for task in (TOY, BALL):
        for seed in SEEDS:
            gamma = {"gamma": DRCORL_GAMMA[task]}
            add(
                f"drcorl_after__{task}__seed{seed}",
                agent="drcorl",
                task=task,
                seed=seed,
                hyperparameters=gamma,
            )
            add(
                f"drcorl_before__{task}__seed{seed}",
                agent="drcorl",
                task=task,
                seed=seed,
                code="reference",
                preset=None,
                n_steps=6_000,
                hyperparameters={**REFERENCE_DRCORL, **gamma},
            )
    return table


def dsrl_normalized(report: dict[str, Any], task: str) -> dict[str, Any]:
    """``report`` normalized with the task's reference returns (DSRL's; the toy task's own).

    Every recorded row of this comparison used that rule, and the "before" jobs run code that
    knows no other, so "after" rows keep it even though ``envs.evaluate`` now normalizes data
    built locally with the data's own range. Works with the old and the new ``envs``.
    """
    import numpy as np

    import envs

    spec = envs.get_task(task)
    normalizer = envs.Normalizer(spec.reward_min, spec.reward_max, spec.cost_limit)
    report = dict(report)
    report["normalized_return"] = [float(normalizer.normalized_return(r)) for r in report["return"]]
    report["normalized_cost"] = [float(normalizer.normalized_cost(c)) for c in report["cost"]]
    report["mean_normalized_return"] = float(np.mean(report["normalized_return"]))
    report["mean_normalized_cost"] = float(np.mean(report["normalized_cost"]))
    return report


def run_job(name: str) -> dict[str, Any]:
    """Train and evaluate one job in this process (one torch thread) and return its row."""
    import torch

    import envs
    from safe_agents import get_agent_class

    torch.set_num_threads(1)
    job = jobs()[name]
    env = envs.make(job["task"])
    data = envs.load_dataset(job["task"])
    agent_class = get_agent_class(job["agent"])
    kwargs = dict(job["hyperparameters"])
    if job["preset"] is not None:
        kwargs["preset"] = job["preset"]
    agent = agent_class(env, seed=job["seed"], **kwargs)
    n_steps = job.get("n_steps") or agent.config.n_steps
    callback = None
    if job.get("curve_every"):
        from safe_agents.common.callbacks import EvalCallback

        curve_env = envs.make(job["task"])

        def evaluate(current: Any) -> dict[str, Any]:
            report = envs.evaluate(current, curve_env, CURVE_EPISODES, CURVE_SEED)
            report = dsrl_normalized(report, job["task"])
            return {k: float(v) for k, v in report.items() if k.startswith("mean_")}

        callback = EvalCallback(evaluate, job["curve_every"])
    start = time.perf_counter()
    agent.learn_offline(data, n_steps=n_steps, callback=callback)
    train_seconds = time.perf_counter() - start
    report = dsrl_normalized(envs.evaluate(agent, env, FINAL_EPISODES, FINAL_SEED), job["task"])
    env.close()
    return {
        "job": name,
        **{k: v for k, v in job.items() if k != "hyperparameters"},
        "hyperparameters": agent.config.to_dict(),
        "n_steps": n_steps,
        "train_seconds": round(train_seconds, 1),
        **{k: float(v) for k, v in report.items() if k.startswith("mean_")},
        "episodes": {k: report[k] for k in ("return", "cost", "normalized_cost") if k in report},
        "curve": callback.history if callback is not None else None,
        "final_train_metrics": {
            k: float(v) for k, v in agent.logger.latest.items() if k.startswith("train/")
        },
    }


def _reference_tree() -> Path:
    if not (REFERENCE_TREE / "safe_agents").is_dir():
        REFERENCE_TREE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "worktree", "add", "--force", "--detach", str(REFERENCE_TREE), REFERENCE],
            cwd=ROOT,
            check=True,
        )
    return REFERENCE_TREE


def _launch(name: str) -> tuple[str, int, str]:
    job = jobs()[name]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if job["code"] == "reference":
        env["PYTHONPATH"] = str(_reference_tree())
    # Run from outside the checkout so the reference tree, not ./safe_agents, is imported.
    process = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "job", name],
        env=env,
        cwd=OUT,
        capture_output=True,
        text=True,
    )
    return name, process.returncode, process.stderr[-2000:]


def cmd_run(args: argparse.Namespace) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    todo = [
        name
        for name in jobs()
        if name.startswith(tuple((args.only or "").split(",")))
        and not (OUT / f"{name}.json").exists()
    ]
    print(f"{len(todo)} job(s) to run", flush=True)
    if any(jobs()[name]["code"] == "reference" for name in todo):
        _reference_tree()
    with ThreadPoolExecutor(args.workers) as pool:
        for done, (name, code, stderr) in enumerate(pool.map(_launch, todo), start=1):
            status = "ok" if code == 0 else f"FAILED ({code}): {stderr.strip().splitlines()[-1:]}"
            print(f"[{done}/{len(todo)}] {name}: {status}", flush=True)


def cmd_job(args: argparse.Namespace) -> None:
    import importlib.util

    row = run_job(args.name)
    # "before" jobs import the reference tree's safe_agents, which has no fileio module: load
    # this checkout's by its path (it imports nothing of the package).
    spec = importlib.util.spec_from_file_location(
        "_fidelity_fileio", ROOT / "safe_agents" / "common" / "fileio.py"
    )
    assert spec is not None and spec.loader is not None
    fileio = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fileio)
    fileio.atomic_write(OUT / f"{args.name}.json", json.dumps(row, indent=1))


def load_rows() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(OUT.glob("*.json"))}


def _cell(rows: list[dict[str, Any]]) -> str:
    import numpy as np

    if not rows:
        return "-"
    reward = np.array([row["mean_normalized_return"] for row in rows])
    cost = np.array([row["mean_normalized_cost"] for row in rows])
    text = f"{reward.mean():.2f} ± {reward.std():.2f} / {cost.mean():.2f} ± {cost.std():.2f}"
    return text if cost.mean() <= 1 else f"**{text}**"


def report_markdown(rows: dict[str, dict[str, Any]]) -> str:
    """The tables of the closing note, from the rows alone."""

    def pick(prefix: str, task: str) -> list[dict[str, Any]]:
        found = [
            row for name, row in rows.items() if name.startswith(prefix) and row["task"] == task
        ]
        return sorted(found, key=lambda row: row["seed"])

    lines = [
        "Normalized return ± std over seeds / normalized cost ± std (bold: unsafe, cost > 1); "
        f"final iterate, {FINAL_EPISODES} episodes per seed. Data: the datasets built locally "
        "and shipped in envs/data (not DSRL's; see benchmarks/datasets.md), normalized with each "
        "task's DSRL reference returns (the toy task's own range) in every row, before and after.",
        "",
        "| task | FISOR before | FISOR after | BC-Safe | BC-All | DRCORL before | DRCORL after |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in (TOY, BALL, CAR):
        after = pick(f"fisor_after__{task}", task) + [
            row for row in pick(f"fisor_curve__{task}", task)
        ]
        after.sort(key=lambda row: row["seed"])
        cells = [
            _cell(pick(f"fisor_before__{task}", task)),
            _cell(after),
            _cell(pick(f"bc_safe__{task}", task)),
            _cell(pick(f"bc_all__{task}", task)),
            _cell(pick(f"drcorl_before__{task}", task)),
            _cell(pick(f"drcorl_after__{task}", task)),
        ]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed (return / cost):", ""]
    for prefix in ("fisor_before", "fisor_after", "drcorl_before", "drcorl_after"):
        for task in (TOY, BALL, CAR):
            found = pick(f"{prefix}__{task}", task)
            if prefix == "fisor_after":
                found = sorted(found + pick(f"fisor_curve__{task}", task), key=lambda r: r["seed"])
            if found:
                seeds = ", ".join(
                    f"seed {row['seed']}: {row['mean_normalized_return']:.2f} / "
                    f"{row['mean_normalized_cost']:.2f}"
                    for row in found
                )
                lines.append(f"- {prefix} {task}: {seeds}")
    lines += [
        "",
        "Ablation, seed 0 (each FISOR change undone alone, at the cpu preset):",
        "",
        "| task | all changes | weight floor 1 | reward scale 1000 | one actor update of 512 "
        "| posterior-std sampler noise |",
        "|---|---|---|---|---|---|",
    ]
    for task in ABLATION_TASKS:
        cells = [_cell(pick(f"fisor_curve__{task}", task))] + [
            _cell(pick(f"fisor_ablation_{label}__{task}", task)) for label in ABLATIONS
        ]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Option, seed 0: the paper's reversed expectile 0.9 (default) against 0.99:",
        "",
        "| task | expectile 0.9 (default) | expectile 0.99 |",
        "|---|---|---|",
    ]
    for task in (TOY, BALL):
        default = [row for row in pick(f"fisor_curve__{task}", task)] or [
            row for row in pick(f"fisor_after__{task}__seed0", task)
        ]
        option = pick(f"fisor_option_expectile99__{task}", task)
        lines.append(f"| {task} | {_cell(default)} | {_cell(option)} |")
    lines += ["", "Learning curves (seed 0; 5 episodes per point, seeds 2000..):", ""]
    for task in (TOY, BALL):
        for prefix, label in (
            ("fisor_curve", "FISOR"),
            ("fisor_curve40k", "FISOR, 40k steps"),
            ("fisor_dbc_curve", "diffusion BC"),
        ):
            row = rows.get(f"{prefix}__{task}")
            if row is None or not row.get("curve"):
                continue
            points = "; ".join(
                f"{point['step'] // 1000}k: {point['mean_normalized_return']:.2f}/"
                f"{point['mean_normalized_cost']:.2f}"
                + (
                    f" (feasible {point['train']['feasible_fraction']:.2f}, "
                    f"w {point['train']['mean_weight']:.2f})"
                    if label.startswith("FISOR")
                    else ""
                )
                for point in row["curve"]
            )
            lines.append(f"- {label}, {task}: {points}")
    return "\n".join(lines) + "\n"


def threads_markdown() -> str:
    """The threads table from ``results/threads.json`` (empty when it has not run)."""
    path = HERE / "results" / "threads.json"
    if not path.is_file():
        return ""
    payload = json.loads(path.read_text())
    lines = [
        "",
        f"Training steps/s on the toy task, 1 and 2 torch threads ({payload['date']}, "
        f"{payload['machine']}, torch {payload['torch']}; first steps of each preset's run):",
        "",
        "| agent | cpu, 1 thread | cpu, 2 threads | paper, 1 thread | paper, 2 threads |",
        "|---|---|---|---|---|",
    ]
    for name, rates in payload["steps_per_second"].items():
        cells = [f"{rates[key]:.1f}" for key in ("cpu_1", "cpu_2", "paper_1", "paper_2")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def warm_start_markdown() -> str:
    """DRCORL's warm-started policies on BallRun (empty when ``warm-start`` has not run)."""
    path = HERE / "results" / "fidelity_drcorl_warm_start_ballrun.json"
    if not path.is_file():
        return ""
    result = json.loads(path.read_text())
    lines = [
        "",
        "DRCORL on BallRun, seed 0, the policy at the end of pretraining (return / cost; the "
        "UCB episode-cost estimate on the data's states, limit 10):",
        "",
    ]
    for warm_start, row in result.items():
        lines.append(
            f"- warm start {warm_start}: {row['mean_normalized_return']:.2f} / "
            f"{row['mean_normalized_cost']:.2f}; UCB estimate {row['ucb_episode_cost_on_data']:.1f}"
        )
    return "\n".join(lines) + "\n"


def cmd_report(args: argparse.Namespace) -> None:
    text = report_markdown(load_rows()) + warm_start_markdown() + threads_markdown()
    from safe_agents.common.fileio import atomic_write

    atomic_write(HERE / "results" / "fidelity.md", text)
    print(text)


def cmd_threads(args: argparse.Namespace) -> None:
    """Steps/s of every agent at 1 and 2 threads at both presets, on the toy, idle machine.

    Each agent plans its preset's whole run and is timed over its first steps after a warm-up:
    DRCORL's pretraining and DSPO's discriminator stage, their most expensive phases.
    """
    import torch

    import envs
    from safe_agents import StopAfterSteps, get_agent_class, list_agents

    env = envs.make(TOY)
    data = envs.load_dataset(TOY)
    results: dict[str, dict[str, float]] = {}
    for name in list_agents():
        agent_class = get_agent_class(name)
        learn: dict[str, Any] = {}
        train_data = data
        if agent_class.needs_demos:
            train_data, learn["demos"] = data.strip_costs(10, seed=0)
        for preset in ("cpu", "paper"):
            timed = args.steps if preset == "cpu" else max(args.steps // 20, 5)
            for threads in (1, 2):
                agent = agent_class(env, seed=0, preset=preset, torch_threads=threads)
                planned = agent.config.n_steps
                warmup = 3
                agent.learn_offline(
                    train_data, n_steps=planned, callback=StopAfterSteps(warmup), **learn
                )
                start = time.perf_counter()
                agent.learn_offline(
                    train_data, n_steps=planned, callback=StopAfterSteps(warmup + timed), **learn
                )
                rate = timed / (time.perf_counter() - start)
                results.setdefault(name, {})[f"{preset}_{threads}"] = round(rate, 2)
                print(name, preset, threads, f"{rate:.1f} steps/s", flush=True)
    payload = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, nothing else running",
        "torch": torch.__version__,
        "steps_per_second": results,
    }
    from safe_agents.common.fileio import atomic_write

    atomic_write(HERE / "results" / "threads.json", json.dumps(payload, indent=1))


def cmd_warm_start(args: argparse.Namespace) -> None:
    """DRCORL on BallRun, seed 0: the policy at the end of pretraining (the warm start alone),
    toward the diffusion model and by NLL, evaluated like the final iterates."""
    import torch

    import envs
    from safe_agents import DRCORL, StopAfterSteps

    torch.set_num_threads(1)
    env, data = envs.make(BALL), envs.load_dataset(BALL)
    result: dict[str, Any] = {}
    for warm_start in ("diffusion", "nll"):
        agent = DRCORL(env, seed=0, preset="cpu", gamma=DRCORL_GAMMA[BALL], warm_start=warm_start)
        pretrain = agent.config.pretrain_steps
        agent.learn_offline(data, n_steps=agent.config.n_steps, callback=StopAfterSteps(pretrain))
        report = dsrl_normalized(envs.evaluate(agent, env, FINAL_EPISODES, FINAL_SEED), BALL)
        result[warm_start] = {
            "mean_normalized_return": report["mean_normalized_return"],
            "mean_normalized_cost": report["mean_normalized_cost"],
            "ucb_episode_cost_on_data": agent.cost_estimate(data.observations[::10]),
        }
        print(warm_start, result[warm_start], flush=True)
    from safe_agents.common.fileio import atomic_write

    path = HERE / "results" / "fidelity_drcorl_warm_start_ballrun.json"
    atomic_write(path, json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the missing jobs")
    run.add_argument("--only", help="job-name prefixes, comma-separated")
    run.add_argument("--workers", type=int, default=2)
    run.set_defaults(handler=cmd_run)
    job = commands.add_parser("job", help="run one job here (used by run)")
    job.add_argument("name")
    job.set_defaults(handler=cmd_job)
    commands.add_parser("report", help="tables from the rows").set_defaults(handler=cmd_report)
    commands.add_parser(
        "warm-start", help="DRCORL's warm-started policy on BallRun, both warm starts"
    ).set_defaults(handler=cmd_warm_start)
    threads = commands.add_parser("threads", help="steps/s at 1 and 2 threads")
    threads.add_argument("--steps", type=int, default=100)
    threads.set_defaults(handler=cmd_threads)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
