"""Benchmark sweeps: (agent, task, seed) runs in worker processes, one JSON row per run.

A sweep is the product of agents x tasks x seeds. Each run trains one agent on the task's
dataset (``envs.load_dataset(task)``), saves it, evaluates its final iterate on the task's
environment and writes one result row, ``<out>/rows/<agent>__<task>__seed<seed>.json``
(atomically: a killed run leaves no row). Rerunning a sweep into the same folder skips the runs
that already have a row, so an interrupted sweep resumes where it stopped.

A folder holds the rows of one set of settings. ``<out>/sweep.json`` records the settings and
the budget of every (agent, task); a rerun with other settings is refused (its new rows would
mix with the old ones in one table) unless forced, which discards the rows the new settings
would not reproduce. Adding agents, tasks or seeds under the same settings resumes. One sweep
at a time writes a folder (``<out>/.lock``), and the workers of a killed sweep end with it.

Budgets come in profiles. ``quick`` runs every agent's ``"cpu"`` preset (reduced networks,
thousands of steps); ``full`` its ``"paper"`` preset (the authors' step counts and networks).
The presets live with each agent's config (``XConfig.presets``, see :data:`PROFILE_PRESETS`); a
TOML file per agent, ``<configs>/<agent>.toml``, overrides them per profile and per task::

    [quick]
    n_steps = 5000

    [quick.hyperparameters]
    batch_size = 128

    [tasks."OfflineBallRun-v0".quick.hyperparameters]
    gamma = 0.99

The evaluation follows the package's protocol (``envs.evaluate``): deterministic actions, the
final iterate, ``episodes`` episodes reset with seeds ``eval_seed``, ``eval_seed + 1``, ...,
and the normalized return and cost. Each row records which data it was trained on
(``data_origin``, ``data_provenance``) and which reference returns normalized it
(``normalization``, ``reward_range``): DSRL's for DSRL's data, the data's own range for data
built locally. The report shows the data of every task beside its row.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import json
import logging
import multiprocessing
import os
import platform
import re
import shutil
import socket
import subprocess
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safe_agents.common import registry
from safe_agents.common.callbacks import BaseCallback
from safe_agents.common.config import CPU, PAPER
from safe_agents.common.fileio import LockHeld, atomic_path, atomic_write, exclusive_lock

logger = logging.getLogger(__name__)

EVAL_SEED = 1000
#: Seed of the first episode of each learning-curve point: apart from the final evaluation's.
CURVE_SEED = 5000

# How often a pool worker checks that the sweep's process still lives, and how long a
# ``HOST:PORT`` may take to accept a connection before the sweep gives up on it (Ray itself
# retries a dead address for minutes).
PARENT_POLL_SECONDS = 0.5
RAY_CONNECT_SECONDS = 5.0


class SweepError(ValueError):
    """A sweep that cannot start as asked (a folder in use or swept with other settings, an
    unreachable Ray cluster): the command line prints it as one line."""


# A profile names the agents' preset it runs (``XConfig.presets``, the one place sizes live):
# quick runs the cpu presets (reduced networks, thousands of steps), full the papers' defaults.
PROFILE_PRESETS: dict[str, str] = {"quick": CPU, "full": PAPER}


@dataclass(frozen=True)
class Run:
    """One cell of a sweep for one seed."""

    agent: str
    task: str
    seed: int

    @property
    def key(self) -> str:
        """The row's file stem: ``<agent>__<task>__seed<seed>``."""
        return f"{self.agent}__{self.task}__seed{self.seed}"


@dataclass
class SweepSettings:
    """What every run of a sweep shares."""

    profile: str = "quick"
    episodes: int = 10
    eval_seed: int = EVAL_SEED
    configs: str | None = None  # folder of <agent>.toml overrides
    save_agents: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)  # {"n_steps": ...} for every run
    n_safe_demos: int = 10  # for agents that learn without cost labels (DSPO; the paper's 10-15)
    data_origin: str = "auto"  # which data a task id means (envs.load_dataset's origin)
    # A learning curve: the current iterate evaluated curve_points times per run (every
    # n_steps // curve_points steps) on curve_episodes episodes from CURVE_SEED, apart from the
    # final evaluation's seeds; 0: no curve. It changes neither training nor the final row.
    curve_points: int = 0
    curve_episodes: int = 3
    # Checkpoints per run (every n_steps // checkpoints steps) in <out>/work/<run>/: a killed
    # sweep resumes each unfinished run from its last one and ends as if never stopped.
    checkpoints: int = 10

    def __post_init__(self) -> None:
        if self.profile not in ("quick", "full"):
            raise ValueError(f"profile must be 'quick' or 'full', got {self.profile!r}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.n_safe_demos < 1:
            raise ValueError(f"n_safe_demos must be >= 1, got {self.n_safe_demos}")
        if self.data_origin not in ("auto", "local", "dsrl"):
            raise ValueError(f"data_origin must be auto, local or dsrl, got {self.data_origin!r}")
        for name in ("curve_points", "checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.curve_episodes < 1:
            raise ValueError(f"curve_episodes must be >= 1, got {self.curve_episodes}")


def plan_runs(agents: Sequence[str], tasks: Sequence[str], seeds: Iterable[int]) -> list[Run]:
    """Every (agent, task, seed), agents and tasks checked against their registries.

    Agent names are normalized to the registered ones (``bc-safe`` -> ``bc_safe``).

    Raises:
        ValueError: an unknown agent name, listing the registered ones.
        envs.UnknownTaskError: an unknown task id.
    """
    import envs

    names = [registry.get_agent_class(name).name for name in agents]
    for task in tasks:
        envs.get_task(task)
    return [Run(a, t, int(s)) for a, t, s in itertools.product(names, tasks, seeds)]


#: Hyperparameters that are the lengths of an agent's training stages before its policy stage.
STAGE_STEPS = ("pretrain_steps", "discriminator_steps", "diffusion_train_steps")


def budget(agent: str, task: str, settings: SweepSettings) -> tuple[int, dict[str, Any]]:
    """``(n_steps, hyperparameters)`` of ``agent`` on ``task`` under the sweep's profile.

    The agent's preset for the profile first (:data:`PROFILE_PRESETS`; the full profile is the
    agent's defaults, ``n_steps`` included), then ``[<profile>]`` of ``<configs>/<agent>.toml``,
    then its ``[tasks."<task>".<profile>]``; later ones override earlier keys.
    """
    preset = dict(
        registry.get_agent_class(agent).config_class.presets.get(
            PROFILE_PRESETS[settings.profile], {}
        )
    )
    layers = [{"n_steps": preset.pop("n_steps", None), "hyperparameters": preset}]
    if settings.configs is not None:
        path = Path(settings.configs) / f"{agent}.toml"
        if path.is_file():
            with path.open("rb") as handle:
                try:
                    document = tomllib.load(handle)
                except tomllib.TOMLDecodeError as error:
                    raise ValueError(f"{path}: {error}") from error
            layers.append(document.get(settings.profile, {}))
            layers.append(document.get("tasks", {}).get(task, {}).get(settings.profile, {}))
    n_steps = None
    hyperparameters: dict[str, Any] = {}
    for layer in layers:
        unknown = set(layer) - {"n_steps", "hyperparameters"}
        if unknown:
            raise ValueError(f"{agent} budget: unknown keys {sorted(unknown)}")
        n_steps = layer.get("n_steps") or n_steps
        hyperparameters.update(layer.get("hyperparameters", {}))
    if agent == "drcorl" and "gamma" not in hyperparameters and settings.profile == "quick":
        # DRCORL's episode-cost estimate needs 1 / (1 - gamma) well under the episode length
        # (see its docstring): 0.95 on short episodes, the paper's 0.99 on long ones.
        import envs

        long_episodes = envs.get_task(task).max_episode_steps > 100
        hyperparameters["gamma"] = 0.99 if long_episodes else 0.95
    defaults = registry.get_agent_class(agent).config_class()
    if n_steps is None:
        n_steps = defaults.n_steps
    if "n_steps" in settings.overrides:
        planned, n_steps = int(n_steps), int(settings.overrides["n_steps"])
        # A staged agent (DRCORL's pretraining; DSPO's discriminator and generator) keeps each
        # stage's share of a shortened run, so the run still reaches its policy stage.
        stages = {
            name: int(hyperparameters.get(name, getattr(defaults, name)))
            for name in STAGE_STEPS
            if hasattr(defaults, name)
        }
        if stages and n_steps <= len(stages):
            names = ", ".join(stages)
            raise ValueError(
                f"{agent} trains in {len(stages) + 1} stages ({names}, then the policy): "
                f"n_steps={n_steps} is too short, give at least {len(stages) + 1}"
            )
        for name, steps in stages.items():
            hyperparameters[name] = max(1, n_steps * steps // planned) if steps else 0
    return int(n_steps), hyperparameters


def _git_revision() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(payload, indent=1))


_PER_EPISODE = ("return", "cost", "length", "normalized_return", "normalized_cost")


class _RunStages:
    """One run's learning curve and checkpoints, and where a killed run resumes.

    ``<work_dir>/checkpoint.zip`` is the agent at its last checkpoint; ``<work_dir>/run.json``
    holds the budget and shared settings it was trained under, the curve so far and the
    training seconds spent. A checkpoint of another budget or other settings is discarded.
    """

    def __init__(
        self, run: Run, settings: SweepSettings, n_steps: int, work_dir: str | Path | None
    ) -> None:
        import envs
        from safe_agents.common.callbacks import EvalCallback

        self.run, self.settings, self.n_steps = run, settings, n_steps
        self.work_dir = Path(work_dir) if work_dir is not None and settings.checkpoints else None
        self.resume_from: Path | None = None
        self.resumed_step = 0
        self.seconds_before = 0.0
        self.curve: EvalCallback | None = None
        self._curve_env: Any = None
        self._started = time.perf_counter()
        self._identity = {
            "budget": _budget_record(run, settings),
            "settings": {name: _as_json(getattr(settings, name)) for name in SHARED_SETTINGS},
            "curve_episodes": settings.curve_episodes,
        }
        if settings.curve_points:
            self._curve_env = envs.make(run.task)
            self.curve = EvalCallback(self._curve_point, max(1, n_steps // settings.curve_points))
        if self.work_dir is not None:
            self._find_checkpoint()

    def _curve_point(self, agent: Any) -> dict[str, float]:
        import envs

        report = envs.evaluate(agent, self._curve_env, self.settings.curve_episodes, CURVE_SEED)
        keys = ("return", "cost", "normalized_return", "normalized_cost")
        return {key: report[f"mean_{key}"] for key in keys if f"mean_{key}" in report}

    def _find_checkpoint(self) -> None:
        from safe_agents.common import serialization

        assert self.work_dir is not None
        checkpoint, record_path = self.work_dir / "checkpoint.zip", self.work_dir / "run.json"
        if not checkpoint.is_file():
            return
        try:
            record = json.loads(record_path.read_text())
            step = int(serialization.read_agent_file(checkpoint).training["num_steps"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("%s: unreadable checkpoint (%s); it starts over", self.run.key, error)
            return
        if {key: record.get(key) for key in self._identity} != self._identity:
            logger.warning("%s: checkpoint of another budget; the run starts over", self.run.key)
            return
        if not 0 < step < self.n_steps:
            return
        self.resume_from, self.resumed_step = checkpoint, step
        self.seconds_before = float(record.get("train_seconds", 0.0))
        if self.curve is not None:
            # Points past the checkpoint were left by the killed run after it: made again.
            self.curve.history = [p for p in record.get("curve", []) if p["step"] <= step]
        logger.info("%s: resuming from its checkpoint at step %d", self.run.key, step)

    def callbacks(self) -> list[Any]:
        """The curve first, then the checkpoint: a checkpoint holds the point of its step."""
        callbacks: list[Any] = [self.curve] if self.curve is not None else []
        if self.work_dir is not None:
            every = max(1, self.n_steps // self.settings.checkpoints)
            callbacks.append(_SaveWork(self, every))
        return callbacks

    def save(self, agent: Any) -> None:
        """The record first, then the agent: a record newer than its checkpoint is harmless
        (points past the checkpoint's step are dropped), a checkpoint without one is not."""
        assert self.work_dir is not None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        record = {
            **self._identity,
            "step": agent.num_steps,
            "curve": self.curve.history if self.curve is not None else [],
            "train_seconds": self.seconds_before + time.perf_counter() - self._started,
        }
        _write_json_atomically(self.work_dir / "run.json", record)
        agent.save(self.work_dir / "checkpoint.zip")

    def close(self) -> None:
        if self._curve_env is not None:
            self._curve_env.close()


class _SaveWork(BaseCallback):
    """Saves the run's checkpoint every ``every`` steps, the last step excepted (the row is)."""

    def __init__(self, stages: _RunStages, every: int) -> None:
        super().__init__()
        self.stages, self.every = stages, every

    def _on_step(self) -> bool:
        if self.num_steps % self.every == 0 and self.num_steps < self.stages.n_steps:
            self.stages.save(self.agent)
        return True


def execute(
    run: Run, settings: SweepSettings, work_dir: str | Path | None = None
) -> tuple[dict[str, Any], bytes | None]:
    """Train and evaluate one run: its result row, and the saved agent's bytes.

    Nothing is written where the caller can see it, except the run's checkpoints in
    ``work_dir`` (with ``settings.checkpoints``), so the same function serves a local process
    and a Ray worker on another machine; the driver records the result. A ``work_dir`` holding
    a checkpoint of the same budget resumes the run from it (a Ray worker sees it when the
    sweep folder is on a file system the cluster shares; otherwise the run starts over).
    """
    import tempfile

    import torch

    import envs
    from safe_agents import __version__

    # Workers share the machine's cores: one torch thread each.
    torch.set_num_threads(1)
    n_steps, hyperparameters = budget(run.agent, run.task, settings)
    env = envs.make(run.task)
    stages: _RunStages | None = None
    try:
        data = envs.load_dataset(run.task, origin=settings.data_origin, progress_bar=False)
        agent_class = registry.get_agent_class(run.agent)
        learn_kwargs: dict[str, Any] = {}
        if agent_class.needs_demos:
            # The cost-label-free setting: the agent gets the unlabeled rest and safe demos,
            # drawn with the run's seed; evaluation still counts costs.
            data, learn_kwargs["demos"] = data.strip_costs(settings.n_safe_demos, seed=run.seed)
        start = time.perf_counter()
        preset = PROFILE_PRESETS[settings.profile]
        agent = agent_class(env, seed=run.seed, preset=preset, **hyperparameters)
        stages = _RunStages(run, settings, n_steps, work_dir)
        agent.learn_offline(
            data,
            n_steps=n_steps,
            callback=stages.callbacks(),
            resume_from=stages.resume_from,
            **learn_kwargs,
        )
        train_seconds = time.perf_counter() - start + stages.seconds_before
        agent_bytes = None
        if settings.save_agents:
            with tempfile.TemporaryDirectory() as folder:
                agent_bytes = agent.save(Path(folder) / "agent.zip").read_bytes()
        start = time.perf_counter()
        report = envs.evaluate(agent, env, settings.episodes, settings.eval_seed)
        eval_seconds = time.perf_counter() - start
    finally:
        env.close()
        if stages is not None:
            stages.close()
    spec = envs.get_task(run.task)
    row: dict[str, Any] = {
        **asdict(run),
        "profile": settings.profile,
        "preset": preset,
        "n_steps": n_steps,
        "hyperparameters": agent.config.to_dict(),
        "episodes": {key: report[key] for key in _PER_EPISODE if key in report},
        **{key: report[key] for key in report if key.startswith("mean_")},
        **{key: report[key] for key in ("normalization", "reward_range") if key in report},
        "cost_limit": spec.cost_limit,
        "simulator": spec.simulator,
        "data_origin": data.origin,
        "data_provenance": data.provenance,
        "setting": (
            f"cost-label-free, {settings.n_safe_demos} safe demos" if learn_kwargs else "costs"
        ),
        "eval_seed": settings.eval_seed,
        **({"curve": stages.curve.history} if stages.curve is not None else {}),
        **({"resumed_from_step": stages.resumed_step} if stages.resumed_step else {}),
        "train_seconds": round(train_seconds, 2),
        # Agents with stages of very different cost (DSPO) time each of them.
        **(
            {"stage_seconds": {k: round(v, 2) for k, v in agent.stage_seconds.items()}}
            if hasattr(agent, "stage_seconds")
            else {}
        ),
        "eval_seconds": round(eval_seconds, 2),
        "package_version": __version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_description(),
    }
    return row, agent_bytes


def machine_description() -> str:
    """The machine a run trained on, for the report: system, CPUs, torch, GPU if one is used."""
    import torch

    system = f"{platform.system()} {platform.machine()}"
    text = f"{system}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def _record(out: Path, run: Run, row: dict[str, Any], agent_bytes: bytes | None) -> dict[str, Any]:
    """Write the agent, then the row (the row last: its presence marks the run finished)."""
    if agent_bytes is not None:
        atomic_write(out / "agents" / f"{run.key}.zip", agent_bytes)
    row = {**row, "git_revision": _git_revision()}
    _write_json_atomically(out / "rows" / f"{run.key}.json", row)
    shutil.rmtree(run_work_dir(out, run), ignore_errors=True)  # the row replaces the checkpoint
    return row


def run_work_dir(out: str | Path, run: Run) -> Path:
    """Where a run of the sweep folder ``out`` keeps its checkpoint until its row is written."""
    return Path(out) / "work" / run.key


def finished(out_dir: str | Path) -> set[str]:
    """The keys of the runs that already have a row in ``out_dir``."""
    return {path.stem for path in (Path(out_dir) / "rows").glob("*.json")}


OnRow = Callable[[Run, dict[str, Any] | None, BaseException | None], None]
OnStart = Callable[[Sequence[Run]], None]


def run_sweep(
    runs: Sequence[Run],
    settings: SweepSettings,
    out_dir: str | Path,
    workers: int = 2,
    on_row: OnRow | None = None,
    ray_address: str | None = None,
    force: bool = False,
    on_start: OnStart | None = None,
) -> list[dict[str, Any]]:
    """Execute the runs that have no row yet, ``workers`` at a time, and return all rows.

    Args:
        runs: the sweep (:func:`plan_runs`).
        settings: what the runs share.
        out_dir: the sweep folder; runs with a row there are skipped (resume). Its
            ``sweep.json`` records the settings and budgets its rows were made with.
        workers: parallel runs. ``1`` runs in this process (easiest to debug); more use a pool
            of spawned processes, which end when this process ends. With Ray, the CPUs of the
            local instance it starts.
        on_row: called as ``on_row(run, row, None)`` when a run finishes, or
            ``on_row(run, None, error)`` when it fails. A failed run has no row, so the next
            call retries it; the other runs go on.
        ray_address: run each (agent, task, seed) as a Ray task instead: ``"local"`` starts a
            Ray instance of its own on this machine (whatever other instance runs),
            ``"HOST:PORT"`` (or ``"auto"``) joins a running cluster, whose nodes need this
            package and the datasets installed. Rows and agents travel back to this process,
            which writes them.
        force: when the folder was swept with other settings, discard the rows these settings
            would not reproduce (all of them when a shared setting changed, those of the
            (agent, task) pairs whose budget changed otherwise) and run the sweep, instead of
            refusing.
        on_start: called with the runs left to do once the folder is locked and checked, before
            the first run starts.

    Raises:
        SweepError: another sweep is writing the folder; the folder was swept with other
            settings (without ``force``); the Ray address does not answer.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if ray_address is not None:
        _check_ray_address(ray_address)  # before the folder changes: --force discards rows
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out):
        _remove_leftovers(out)
        budgets = {_pair(run.agent, run.task): _budget_record(run, settings) for run in runs}
        record = _prepare_folder(out, runs, settings, budgets, force)
        _write_json_atomically(out / "sweep.json", record)
        done = finished(out)
        todo = [run for run in runs if run.key not in done]
        if on_start is not None:
            on_start(todo)
        _execute_all(todo, settings, out, workers, on_row, ray_address)
    wanted = {run.key for run in runs}
    return [row for row in load_rows(out) if row_key(row) in wanted]


def _execute_all(
    todo: Sequence[Run],
    settings: SweepSettings,
    out: Path,
    workers: int,
    on_row: OnRow | None,
    ray_address: str | None,
) -> None:
    report = on_row or (lambda run, row, error: None)

    def finish(run: Run, result: Callable[[], tuple[dict[str, Any], bytes | None]]) -> None:
        try:
            row, agent_bytes = result()
        except Exception as error:  # noqa: BLE001 - one failed run must not stop the sweep
            report(run, None, error)
        else:
            report(run, _record(out, run, row, agent_bytes), None)

    if ray_address is not None:
        _run_on_ray(todo, settings, workers, ray_address, finish, out)
    elif workers == 1:
        for run in todo:
            finish(run, functools.partial(execute, run, settings, run_work_dir(out, run)))
    elif todo:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            try:
                futures = {
                    pool.submit(execute, run, settings, run_work_dir(out, run)): run for run in todo
                }
                for future in concurrent.futures.as_completed(futures):
                    finish(futures[future], future.result)
            except BaseException:
                _stop_pool(pool)
                raise


def _die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker as soon as the sweep's process is gone.

    A killed sweep (SIGKILL, SIGTERM, a closed terminal) cannot stop its pool, and a worker
    computing a run would go on for many minutes with no one left to record its result. Its
    parent's id changes when the parent dies (the worker is re-parented), so a daemon thread
    polls it and exits the worker then.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _stop_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """End an interrupted sweep's workers now (Ctrl-C, an error in ``on_row``): leaving the
    pool would wait for every queued run to finish first."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """Hold ``<out>/.lock`` for the sweep: a second sweep into the folder would run every run
    again and race the first one's writes. The lock dies with the process that holds it, so a
    killed sweep never leaves the folder locked."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(out / ".lock", wait=False))
        except LockHeld:
            raise SweepError(
                f"another sweep is writing {out}; wait for it to end or choose another folder"
            ) from None
        yield


def _remove_leftovers(out: Path) -> None:
    """Remove the temporaries of writers killed part way (none writes now: the folder is
    locked), and those of the fixed names earlier versions used."""
    for folder in (out / "rows", out / "agents"):
        for pattern in (".*.tmp", ".*.partial"):
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)


# The settings every row of a folder shares. ``configs`` is compared through the budgets it
# gives (where the files live changes no run), and ``save_agents`` changes no row.
SHARED_SETTINGS = ("profile", "episodes", "eval_seed", "overrides", "n_safe_demos", "data_origin")


def _pair(agent: str, task: str) -> str:
    return f"{agent}/{task}"


def _pair_of_key(key: str) -> str:
    """The ``agent/task`` of a row key ``<agent>__<task>__seed<seed>``."""
    agent, _, rest = key.partition("__")
    return _pair(agent, rest.rsplit("__seed", 1)[0])


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), to compare with a record."""
    return json.loads(json.dumps(value, default=str))


def _budget_record(run: Run, settings: SweepSettings) -> dict[str, Any]:
    n_steps, hyperparameters = budget(run.agent, run.task, settings)
    return _as_json({"n_steps": n_steps, "hyperparameters": hyperparameters})


@dataclass
class _FolderRecord:
    """What ``sweep.json`` says a folder's rows were made with."""

    settings: SweepSettings
    budgets: dict[str, dict[str, Any]]  # {"agent/task": {"n_steps": ..., "hyperparameters": ...}}
    runs: list[Run]

    @classmethod
    def read(cls, path: Path) -> _FolderRecord:
        """Parse a record; a setting added since it was written ran with its default then.

        Raises:
            ValueError: not a record (also for JSON, key and type errors).
        """
        try:
            document = json.loads(path.read_text())
            settings = asdict(SweepSettings())
            settings.update({k: v for k, v in document["settings"].items() if k in settings})
            return cls(
                SweepSettings(**settings),
                {str(pair): dict(budget) for pair, budget in document.get("budgets", {}).items()},
                [Run(**run) for run in document.get("runs", [])],
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path.name} is unreadable ({error})") from error


def _prepare_folder(
    out: Path,
    runs: Sequence[Run],
    settings: SweepSettings,
    budgets: dict[str, dict[str, Any]],
    force: bool,
) -> dict[str, Any]:
    """Check the folder's rows against the new settings; return the record to write.

    Rows the new settings would not reproduce are refused (``SweepError``) or, with ``force``,
    discarded before the new record is written: a sweep killed in between leaves the old
    record over fewer rows, never the new record over old rows.
    """
    done = finished(out)
    record, stale, reasons = _stale_rows(out, settings, budgets, done)
    if stale and not force:
        raise SweepError(
            f"{out} was swept with other settings ({'; '.join(reasons)}): its {len(stale)} "
            "row(s) would mix with new ones. Rerun with its settings, sweep into another "
            "folder, or force it (--force) to discard those rows"
        )
    if stale:
        logger.warning(
            "discarding %d row(s) of %s made with other settings (%s)",
            len(stale),
            out,
            "; ".join(reasons),
        )
        for key in sorted(stale):
            (out / "agents" / f"{key}.zip").unlink(missing_ok=True)
            (out / "rows" / f"{key}.json").unlink(missing_ok=True)
            shutil.rmtree(out / "work" / key, ignore_errors=True)
        # A report of discarded rows would mislead; the next one is rendered from the rows.
        for path in (out / "report.md", out / "report.csv", *(out / "plots").glob("*.png")):
            path.unlink(missing_ok=True)
    # The record keeps describing the rows that stay (those of runs not planned now).
    kept = record if record is not None and len(stale) < len(done) else None
    planned = {run.key for run in runs}
    old_runs = [run for run in kept.runs if run.key not in planned] if kept else []
    return {
        "settings": asdict(settings),
        "budgets": {**(kept.budgets if kept else {}), **budgets},
        "runs": [asdict(run) for run in [*old_runs, *runs]],
    }


def _stale_rows(
    out: Path, settings: SweepSettings, budgets: dict[str, dict[str, Any]], done: set[str]
) -> tuple[_FolderRecord | None, set[str], list[str]]:
    """``(record, stale, reasons)``: the folder's record (``None`` when it has none), the keys
    of its rows the new settings would not reproduce, and why, one phrase per difference."""
    path = out / "sweep.json"
    if not path.is_file():
        reason = "it has rows but no sweep.json recording their settings"
        return None, set(done), [reason] if done else []
    try:
        record = _FolderRecord.read(path)
    except ValueError as error:
        return None, set(done), [f"its {error}"] if done else []
    there, now = _as_json(asdict(record.settings)), _as_json(asdict(settings))
    reasons = [
        f"{name} {there[name]!r} there, {now[name]!r} now"
        for name in SHARED_SETTINGS
        if there[name] != now[name]
    ]
    if reasons:
        return record, set(done), reasons
    stale: set[str] = set()
    for pair, wanted in budgets.items():
        keys = {key for key in done if _pair_of_key(key) == pair}
        if not keys:
            continue
        agent, task = pair.split("/", 1)
        # Records of older versions hold no budgets: those their settings give.
        had = record.budgets.get(pair) or _budget_record(Run(agent, task, 0), record.settings)
        if had != wanted:
            stale |= keys
            reasons.append(f"the budget of {agent} on {task}: {_budget_change(had, wanted)}")
    return record, stale, reasons


def _budget_change(had: dict[str, Any], wanted: dict[str, Any]) -> str:
    """``n_steps 1500 -> 100, batch_size 256 -> 128``: what changed between two budgets."""
    before, after = (
        {"n_steps": budget.get("n_steps"), **budget.get("hyperparameters", {})}
        for budget in (had, wanted)
    )
    return ", ".join(
        f"{key} {before.get(key, 'default')} -> {after.get(key, 'default')}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    )


def _check_ray_address(address: str) -> None:
    """Fail in seconds when a cluster address does not answer: Ray would retry for minutes.

    ``local`` starts an instance and has nothing to check; ``auto`` is checked when Ray can
    name the address it means (``RAY_ADDRESS`` or the last cluster started on this machine).
    """
    if address == "local":
        return
    target = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto") or ""
        except ImportError:  # a private helper that moved: ray.init reports what it finds
            return
        except Exception as error:  # noqa: BLE001 - ConnectionError and kin: no cluster known
            raise SweepError(f"--ray auto found no running Ray cluster ({error})") from None
        if not target:
            raise SweepError(
                "--ray auto found no running Ray cluster (no RAY_ADDRESS and none started on "
                "this machine); give HOST:PORT, or --ray local"
            )
    parsed = urllib.parse.urlsplit(target if "://" in target else f"//{target}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise SweepError(f"--ray expects local, auto or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, port), timeout=RAY_CONNECT_SECONDS):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SweepError(
            f"no Ray cluster answers at {target} ({reason}); start one (ray start --head) "
            "or give the address of a running one"
        ) from None


def _run_on_ray(
    runs: Sequence[Run],
    settings: SweepSettings,
    workers: int,
    address: str,
    finish: Callable[[Run, Callable[[], tuple[dict[str, Any], bytes | None]]], None],
    out: Path,
) -> None:
    """Each run as a Ray task of one CPU; results are handled as they complete."""
    try:
        import ray
    except ImportError as error:  # pragma: no cover - ray is a dependency
        raise RuntimeError("--ray needs the ray package: pip install ray") from error
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            # address="local" always starts an instance; without it, ray.init joins whatever
            # RAY_ADDRESS or a stale /tmp/ray/ray_current_cluster names, and refuses num_cpus.
            ray.init(
                address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False
            )
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise SweepError(f"cannot join the Ray cluster at {address}: {error}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(execute)
        # The work folder as an absolute path: a cluster that shares the file system resumes.
        pending = {
            remote.remote(run, settings, str(run_work_dir(out, run).resolve())): run for run in runs
        }
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(ready[0])
            finish(run, functools.partial(_ray_result, ray, ready[0]))
    finally:
        if started_here:
            ray.shutdown()


def _ray_result(ray: Any, reference: Any) -> tuple[dict[str, Any], bytes | None]:
    """What :func:`execute` returned on a Ray worker (raises its error here)."""
    row, agent_bytes = ray.get(reference)
    return row, agent_bytes


def row_key(row: dict[str, Any]) -> str:
    """The key (file stem) of a result row."""
    return Run(row["agent"], row["task"], int(row["seed"])).key


def load_rows(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every row of a sweep folder, in a stable order (agent, task, seed).

    Raises:
        ValueError: a row file that is not valid JSON or lacks the row fields, naming it.
    """
    rows = []
    for path in sorted((Path(out_dir) / "rows").glob("*.json")):
        try:
            row = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a result row ({error})") from error
        missing = {"agent", "task", "seed", "mean_return", "mean_cost"} - set(row)
        if missing:
            raise ValueError(f"{path}: not a result row (missing {sorted(missing)})")
        rows.append(row)
    return sorted(rows, key=lambda row: (row["agent"], row["task"], row["seed"]))


# ---------------------------------------------------------------------- report


@dataclass
class Cell:
    """One (agent, task) cell: the mean over seeds of each seed's mean over episodes."""

    reward: float
    reward_spread: float
    cost: float
    cost_spread: float
    seeds: int

    @property
    def safe(self) -> bool:
        """Safe when the normalized cost is at most 1 (the cost limit)."""
        return self.cost <= 1.0


def table(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Cell]]:
    """``{task: {agent: Cell}}`` from the rows' normalized return and cost.

    Raises:
        ValueError: a row without normalized metrics (a task with no reference values).
    """
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if "mean_normalized_return" not in row:
            raise ValueError(f"row {row['agent']}/{row['task']}/{row['seed']} is not normalized")
        grouped.setdefault((row["task"], row["agent"]), []).append(row)
    cells: dict[str, dict[str, Cell]] = {}
    for (task, agent), group in sorted(grouped.items()):
        rewards = np.array([row["mean_normalized_return"] for row in group])
        costs = np.array([row["mean_normalized_cost"] for row in group])
        cells.setdefault(task, {})[agent] = Cell(
            float(rewards.mean()),
            float(rewards.std()),
            float(costs.mean()),
            float(costs.std()),
            len(group),
        )
    return cells


def _averages(
    cells: dict[str, dict[str, Cell]], simulators: dict[str, str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """``{group: {agent: (reward, cost)}}`` averaged over the tasks of each simulator, and all."""
    groups: dict[str, list[str]] = {}
    for task in cells:
        groups.setdefault(f"average {simulators.get(task, '?')}", []).append(task)
    groups["average"] = list(cells)
    agents = sorted({agent for row in cells.values() for agent in row})
    averages: dict[str, dict[str, tuple[float, float]]] = {}
    for name, tasks in groups.items():
        averages[name] = {}
        for agent in agents:
            present = [cells[task][agent] for task in tasks if agent in cells[task]]
            if len(present) == len(tasks):  # only complete rows are averaged
                averages[name][agent] = (
                    float(np.mean([cell.reward for cell in present])),
                    float(np.mean([cell.cost for cell in present])),
                )
    return averages


_ORIGIN_LABELS = {"dsrl": "DSRL", "local": "built locally", "unknown": "unknown"}
NOT_RECORDED = "not recorded"


def data_labels(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``{task: which data its rows were trained on}``: ``DSRL``, ``built locally``, ...

    Rows written before provenance was recorded read ``not recorded`` (they were normalized
    with DSRL's reference returns, whatever their data). A task whose rows disagree lists every
    label and is marked ``(mixed)``.
    """
    labels: dict[str, set[str]] = {}
    for row in rows:
        label = _ORIGIN_LABELS.get(row.get("data_origin", ""), NOT_RECORDED)
        labels.setdefault(row["task"], set()).add(label)
    return {
        task: " + ".join(sorted(found)) + (" (mixed)" if len(found) > 1 else "")
        for task, found in labels.items()
    }


def data_notes(rows: Sequence[dict[str, Any]]) -> str:
    """The data and normalization of each task, one line per distinct pair (under the table)."""
    lines = ["Data and normalization per task:"]
    seen: dict[str, set[tuple[str, str]]] = {}
    for row in rows:
        pair = (
            row.get("data_provenance", "data not recorded (a row from before it was recorded)"),
            row.get("normalization", "the task's reference returns (the rule of that time)"),
        )
        seen.setdefault(row["task"], set()).add(pair)
    for task, pairs in sorted(seen.items()):
        for provenance, normalization in sorted(pairs):
            lines.append(f"- {task}: {provenance}; normalized return uses {normalization}")
    return "\n".join(lines)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The papers' table: one row per task, one reward/cost column pair per agent.

    Cells read ``reward +- spread / cost +- spread`` (normalized; spread = std over seeds);
    unsafe cells (normalized cost above 1) are marked ``(unsafe)``. The ``data`` column says
    which data the task's rows were trained on (:func:`data_labels`): DSRL's or data built
    locally, whose normalized returns are not comparable with the papers'. Averages per
    simulator and over all tasks close the table (an agent missing on a task is left out of
    the average).
    """
    cells = table(rows)
    simulators = {row["task"]: row.get("simulator", "?") for row in rows}
    data = data_labels(rows)
    agents = sorted({agent for row in cells.values() for agent in row})
    lines = [
        "| task | data | " + " | ".join(agents) + " |",
        "|---|---|" + "---|" * len(agents),
    ]
    for task, row in cells.items():
        entries = [data[task]]
        for agent in agents:
            cell = row.get(agent)
            if cell is None:
                entries.append("-")
                continue
            text = (
                f"{cell.reward:.2f} +- {cell.reward_spread:.2f} / "
                f"{cell.cost:.2f} +- {cell.cost_spread:.2f}"
            )
            entries.append(text if cell.safe else f"**{text} (unsafe)**")
        lines.append(f"| {task} | " + " | ".join(entries) + " |")
    for name, values in _averages(cells, simulators).items():
        entries = [
            f"{values[agent][0]:.2f} / {values[agent][1]:.2f}" if agent in values else "-"
            for agent in agents
        ]
        lines.append(f"| {name} | | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def csv_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per (task, agent) cell: normalized reward and cost with spreads, seeds, safe,
    and the data the task's rows were trained on (:func:`data_labels`)."""
    data = data_labels(rows)
    lines = ["task,agent,reward,reward_spread,cost,cost_spread,seeds,safe,data"]
    for task, row in table(rows).items():
        for agent, cell in row.items():
            lines.append(
                f"{task},{agent},{cell.reward:.4f},{cell.reward_spread:.4f},{cell.cost:.4f},"
                f"{cell.cost_spread:.4f},{cell.seeds},{str(cell.safe).lower()},{data[task]}"
            )
    return "\n".join(lines) + "\n"


# One marker and one colour per agent, the same in every plot of a report.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def plot_tasks(rows: Sequence[dict[str, Any]], folder: str | Path) -> list[Path]:
    """A normalized cost vs return plot per task, ``<folder>/<task>.png`` and ``.svg``.

    One point per agent at its mean over seeds, with the standard deviation over seeds as
    error bars (the cost's clipped at zero, where costs end) and the seed count in the legend;
    each agent keeps its marker and colour across the tasks of the report; the legend sits
    outside the data; the cost limit is the dashed line at 1; the title names the data the
    task's rows were trained on. Returns the PNG paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cells = table(rows)
    data = data_labels(rows)
    style = _agent_styles(rows)
    paths = []
    for task, row in cells.items():
        figure, axes = plt.subplots(figsize=(7.0, 4.2))
        for agent, cell in row.items():
            marker, colour = style[agent]
            axes.errorbar(
                cell.cost,
                cell.reward,
                xerr=[[min(cell.cost_spread, max(cell.cost, 0.0))], [cell.cost_spread]],
                yerr=cell.reward_spread,
                fmt=marker,
                color=colour,
                markersize=7,
                capsize=3,
                label=f"{agent} ({cell.seeds} seed{'s' if cell.seeds != 1 else ''})",
            )
        axes.axvline(1.0, color="black", linestyle="--", linewidth=1, label="cost limit")
        axes.set_xlabel("normalized cost (mean ± std over seeds)")
        axes.set_ylabel("normalized return (mean ± std over seeds)")
        # A little room left of zero, so the many safe agents at cost 0 show whole markers.
        right = max(axes.get_xlim()[1], 1.2)
        axes.set_xlim(-0.04 * right, right)
        axes.set_title(f"{task} (data: {data.get(task, NOT_RECORDED)})", fontsize=10)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        paths.append(_save_figure(figure, folder / task))
    return paths


def _save_figure(figure: Any, stem: Path) -> Path:
    """Write ``figure`` as ``<stem>.png`` and ``<stem>.svg`` (atomically), close it, return the
    PNG's path."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    try:
        for suffix in (".png", ".svg"):
            with atomic_path(stem.with_name(stem.name + suffix), suffix=suffix) as temporary:
                figure.savefig(temporary, dpi=130, bbox_inches="tight")
    finally:
        plt.close(figure)
    return stem.with_name(stem.name + ".png")


def _agent_styles(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """``{agent: (marker, colour)}``, the same in every plot of a report."""
    import matplotlib.pyplot as plt

    agents = sorted({row["agent"] for row in rows})
    colours = plt.get_cmap("tab20" if len(agents) > 10 else "tab10")
    return {
        agent: (_MARKERS[index % len(_MARKERS)], colours(index % colours.N))
        for index, agent in enumerate(agents)
    }


def curves(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{task: {agent: {"step", "return", "return_std", "cost", "cost_std", "seeds"}}}``.

    The mean and std over seeds of the rows' learning curves (normalized return and cost at
    each evaluated step; raw ones where a task has no reference values). Only the steps every
    seed reached are kept, and rows without a curve are left out.
    """
    grouped: dict[tuple[str, str], list[list[dict[str, Any]]]] = {}
    for row in rows:
        if row.get("curve"):
            grouped.setdefault((row["task"], row["agent"]), []).append(row["curve"])
    result: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for (task, agent), seeds in sorted(grouped.items()):
        steps = sorted(set.intersection(*({p["step"] for p in curve} for curve in seeds)))
        if not steps:
            continue
        key = "normalized_return" if "normalized_return" in seeds[0][0] else "return"
        cost_key = "normalized_cost" if "normalized_cost" in seeds[0][0] else "cost"
        by_step = [{p["step"]: p for p in curve} for curve in seeds]
        values = np.array([[c[s][key] for s in steps] for c in by_step])  # (seeds, steps)
        costs = np.array([[c[s][cost_key] for s in steps] for c in by_step])
        result.setdefault(task, {})[agent] = {
            "step": np.array(steps),
            "return": values.mean(axis=0),
            "return_std": values.std(axis=0),
            "cost": costs.mean(axis=0),
            "cost_std": costs.std(axis=0),
            "seeds": np.array(len(seeds)),
        }
    return result


def plot_curves(rows: Sequence[dict[str, Any]], folder: str | Path) -> list[Path]:
    """Learning curves per task, ``<folder>/curves_<task>.png`` and ``.svg``.

    Two panels, normalized return and normalized cost against gradient steps: one line per
    agent at the mean over seeds, a band of one std over seeds, the cost limit dashed at 1.
    The curve points use their own evaluation seeds and fewer episodes than the final
    evaluation, so the last point and the table may differ. Returns the PNG paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    style = _agent_styles(rows)
    data = data_labels(rows)
    paths = []
    for task, by_agent in curves(rows).items():
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.0), sharex=True)
        for agent, curve in by_agent.items():
            marker, colour = style[agent]
            seeds = int(curve["seeds"])
            label = f"{agent} ({seeds} seed{'s' if seeds != 1 else ''})"
            for axes, key in ((top, "return"), (bottom, "cost")):
                mean, spread = curve[key], curve[f"{key}_std"]
                axes.plot(
                    curve["step"],
                    mean,
                    marker=marker,
                    markersize=4,
                    color=colour,
                    label=label if axes is top else None,
                )
                low = np.maximum(mean - spread, 0.0) if key == "cost" else mean - spread
                axes.fill_between(curve["step"], low, mean + spread, color=colour, alpha=0.15)
        bottom.axhline(1.0, color="black", linestyle="--", linewidth=1, label="cost limit")
        top.set_ylabel("normalized return")
        bottom.set_ylabel("normalized cost")
        bottom.set_xlabel("gradient steps (mean ± std over seeds)")
        top.set_title(
            f"{task}: learning curves (data: {data.get(task, NOT_RECORDED)})", fontsize=10
        )
        handles, labels = top.get_legend_handles_labels()
        extra_handles, extra_labels = bottom.get_legend_handles_labels()
        top.legend(
            handles + extra_handles,
            labels + extra_labels,
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0,
        )
        paths.append(_save_figure(figure, folder / f"curves_{task}"))
    return paths


def write_report(out_dir: str | Path) -> dict[str, Path]:
    """Render ``report.md``, ``report.csv``, ``plots/<task>.png``/``.svg`` and, for rows with
    learning curves, ``plots/curves_<task>.png``/``.svg`` from a sweep folder."""
    out = Path(out_dir)
    rows = load_rows(out)
    if not rows:
        raise ValueError(f"{out} has no result rows (expected {out / 'rows'}/*.json)")
    markdown = markdown_table(rows) + "\n\n" + data_notes(rows)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv"}
    for key, text in (("markdown", markdown + "\n"), ("csv", csv_table(rows))):
        atomic_write(paths[key], text)
    plot_tasks(rows, out / "plots")
    plot_curves(rows, out / "plots")
    paths["plots"] = out / "plots"
    return paths


# ---------------------------------------------------------------------- the README's headline
HEADLINE_BEGIN = "<!-- headline: {source} -->"
HEADLINE_END = "<!-- /headline -->"
_HEADLINE_MARK = re.compile(r"<!-- headline: (?P<source>[^ ]+) -->\n.*?<!-- /headline -->", re.S)


def _short_task(task: str) -> str:
    """``OfflineBallRun-v0`` -> ``BallRun`` (column titles)."""
    name = task.removeprefix("Offline")
    return re.sub(r"(Gymnasium)?-v\d+$", "", name)


def _recorded(rows: Sequence[dict[str, Any]], key: str, width: int | None = None) -> str:
    values = sorted({str(row[key])[:width] for row in rows if row.get(key)})
    missing = sum(1 for row in rows if not row.get(key))
    if not values:
        return "not recorded"
    text = ", ".join(values)
    return text + (f" (not recorded in {missing} of {len(rows)} rows)" if missing else "")


def headline_table(rows: Sequence[dict[str, Any]], source: str) -> str:
    """The README's results table, generated from a sweep's rows (never copied by hand).

    One line per agent: normalized return / normalized cost per task (mean over seeds of the
    mean over episodes; bold when unsafe), the number of tasks where the agent is safe, and
    the average per simulator with more than one task and over all tasks. Under the table: how
    many seeds and episodes, the profile, when, on which machine and at which code revision the
    rows were made, and which data each task's agents were trained on.
    """
    cells = table(rows)
    tasks = list(cells)
    simulators = {row["task"]: row.get("simulator", "?") for row in rows}
    agents = sorted({agent for row in cells.values() for agent in row})
    averages = {
        name: values
        for name, values in _averages(cells, simulators).items()
        if name == "average" or sum(1 for t in tasks if f"average {simulators[t]}" == name) > 1
    }
    if len(tasks) < 2:
        averages.pop("average", None)
    header = ["agent", *(_short_task(task) for task in tasks), "safe on", *averages]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for agent in agents:
        entries = [agent]
        for task in tasks:
            cell = cells[task].get(agent)
            if cell is None:
                entries.append("-")
                continue
            text = f"{cell.reward:.2f} / {cell.cost:.2f}"
            entries.append(text if cell.safe else f"**{text}**")
        present = [cells[task][agent] for task in tasks if agent in cells[task]]
        entries.append(f"{sum(cell.safe for cell in present)} of {len(present)}")
        for values in averages.values():
            entries.append(
                f"{values[agent][0]:.2f} / {values[agent][1]:.2f}" if agent in values else "-"
            )
        lines.append("| " + " | ".join(entries) + " |")
    seeds = sorted({cell.seeds for row in cells.values() for cell in row.values()})
    episodes = sorted({len(row["episodes"]["return"]) for row in rows if "episodes" in row})
    data = data_labels(rows)
    notes = [
        f"Normalized return / normalized cost (safe when the cost is at most 1; **bold**: unsafe), "
        f"the final iterate, mean over {'/'.join(map(str, seeds))} training seeds of "
        f"{'/'.join(map(str, episodes)) or '?'} evaluation episodes each. Generated from "
        f"`{source}` by `safe-agents report --headline README.md`.",
        f"- Budgets: profile {_recorded(rows, 'profile')}; gradient steps "
        + ", ".join(
            f"{agent} {'/'.join(sorted({str(r['n_steps']) for r in rows if r['agent'] == agent}))}"
            for agent in agents
        )
        + ".",
        f"- Run on: {_recorded(rows, 'finished', 10)}; machine: {_recorded(rows, 'machine')}; "
        f"code revision: {_recorded(rows, 'git_revision', 7)}.",
    ]
    for task in tasks:
        provenance = _recorded([r for r in rows if r["task"] == task], "data_provenance")
        # Evaluation labels the range "<what> of the training data: <provenance>": said above.
        labels = [
            {"normalization": r["normalization"].split(" of the training data:")[0]}
            for r in rows
            if r["task"] == task and r.get("normalization")
        ]
        normalization = _recorded(labels, "normalization") if labels else NOT_RECORDED
        notes.append(
            f"- {_short_task(task)} data ({data[task]}): {provenance}; normalized return uses "
            f"{normalization}."
        )
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def render_headlines(text: str, base: str | Path) -> tuple[str, list[str]]:
    """``text`` with each headline block regenerated from its folder (relative to ``base``).

    A block starts with ``<!-- headline: FOLDER -->`` and ends with ``<!-- /headline -->``;
    what lies between is replaced by :func:`headline_table` of FOLDER's rows.

    Returns:
        The new text and the folders its blocks were generated from.

    Raises:
        ValueError: a folder without rows.
    """
    sources: list[str] = []

    def render(match: re.Match[str]) -> str:
        source = match["source"]
        rows = load_rows(Path(base) / source)
        if not rows:
            raise ValueError(f"the headline's folder {source} has no result rows")
        sources.append(source)
        begin = HEADLINE_BEGIN.format(source=source)
        return f"{begin}\n{headline_table(rows, source)}\n{HEADLINE_END}"

    return _HEADLINE_MARK.sub(render, text), sources


def update_headline(document: str | Path) -> list[str]:
    """Regenerate every headline block of ``document`` (e.g. README.md) in place, atomically.

    See :func:`render_headlines`; folders are relative to the document's folder.

    Returns:
        The folders the blocks were generated from.

    Raises:
        ValueError: the document has no headline block, or a folder has no rows.
    """
    path = Path(document)
    text = path.read_text()
    updated, sources = render_headlines(text, path.parent)
    if not sources:
        raise ValueError(
            f"{path} has no headline block: add a line {HEADLINE_BEGIN.format(source='FOLDER')} "
            f"and a line {HEADLINE_END} where the table goes"
        )
    if updated != text:
        atomic_write(path, updated)
    return sources
