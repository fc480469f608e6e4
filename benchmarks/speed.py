"""Training speed and ``predict`` latency of every agent at both presets, before and after.

One run measures the working tree ("current") against a git revision ("reference", ``HEAD``
by default, i.e. the last commit): the reference is checked out in a temporary ``git worktree``
(removed at the end), and each side runs in a worker process of its own, this script in
``--worker`` mode with that tree first on ``PYTHONPATH`` (the parent checks where each worker
imported ``safe_agents`` and ``envs`` from). Each worker keeps its agents built between
requests and uses one torch thread, as a sweep's workers do. In each round every (agent, preset)
is measured on both sides, the side that goes first alternating from round to round; the table
gives the median over rounds per side and their ratio:

- gradient steps per second over about ``--seconds`` of training (after a 5-step warm-up);
  agents that train in stages before their policy (DRCORL's pretraining, DSPO's discriminator
  and generator) get a row per stage, each stage timed on its own, and DSPO the seconds of its
  one-off generation of segments;
- ``predict`` latency in milliseconds, deterministic, for one observation (repeated for about
  0.5 s) and for a batch of 1000 (for about 0.5 s, at least once), each after an untimed call.

With ``--compile``, every agent that supports ``compile=True`` (FISOR, SPI, DRCORL, DSPO) gets a
second row, "compiled": the current tree's agent built with ``compile=True`` against the same
reference measurements as the plain row, with the seconds its first steps took to compile
(measured in the current worker, whose compile cache the earlier rounds may have warmed).

Every ratio is a speed-up: above 1 the current tree is faster (steps/s current / reference;
milliseconds and seconds reference / current). Timings compare only within one run on one
machine; rerun on an otherwise idle one.

    python benchmarks/speed.py                           # every agent, both presets, vs HEAD
    python benchmarks/speed.py --agents bc_all,fisor --presets cpu --rounds 5
    python benchmarks/speed.py --reference HEAD~3 --task OfflineBallRun-v0 --seconds 5
    python benchmarks/speed.py --compile --reference 69cc25d   # the committed table

Writes ``benchmarks/results/speed_<task>.json`` (``--out``; every round's numbers, the medians
and the speed-ups) and the Markdown table beside it (``.md``), and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

import envs
import safe_agents
from safe_agents import bench, get_agent_class, list_agents
from safe_agents.common.callbacks import StopAfterSteps
from safe_agents.common.fileio import atomic_write

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("reference", "current")
SECONDS = {"cpu": 2.0, "paper": 4.0}  # default training time per measurement (and stage)
WARMUP = 5  # untimed steps first: the first steps pay for allocations and lazy set-up
MIN_STEPS = 3
RATE = "time/steps_per_second"  # with log_interval=1, one logged row per step
SPEEDUP = (
    "Speed-up above 1: the current tree is faster (steps/s current / reference; milliseconds "
    "and seconds reference / current)"
)


# ------------------------------------------------------------------------------- the worker
class Cell:
    """One (agent, preset) in a worker: the agent kept between requests (agents without
    stages) and the last seconds per step of each stage, which size the next request."""

    def __init__(self) -> None:
        self.agent: Any = None
        self.step_seconds: dict[str, float] = {}


def stages_of(agent_class: Any) -> list[str]:
    """The agent's stage lengths before its policy stage (``bench.STAGE_STEPS`` lists them in
    training order: DSPO trains its discriminator, then its generator)."""
    fields = {field.name for field in dataclasses.fields(agent_class.config_class)}
    return [name for name in bench.STAGE_STEPS if name in fields]


def logged_step_seconds(agent: Any, after: int) -> list[float]:
    """Seconds of each step past step ``after``, as training timed them (without the set-up of
    ``learn_offline`` and the logging between steps)."""
    return [1.0 / row[RATE] for row in agent.logger.history if row["step"] > after]


def n_timed(seconds: float, step_seconds: float) -> int:
    """Steps that take about ``seconds``, at least ``MIN_STEPS``."""
    return max(MIN_STEPS, round(seconds / step_seconds))


def training_data(agent_class: Any, data: Any) -> tuple[Any, dict[str, Any]]:
    """The dataset and the keyword arguments ``learn_offline`` takes: DSPO learns from
    unlabeled data plus 10 safe demonstrations, as in its sweeps."""
    if not agent_class.needs_demos:
        return data, {}
    unlabeled, demos = data.strip_costs(10)
    return unlabeled, {"demos": demos}


def train(cell: Cell, make: Callable, data: tuple[Any, dict], seconds: float) -> dict[str, float]:
    """Steps/s of about ``seconds`` more training of the cell's agent (built and warmed up on
    the first request, rebuilt when its planned run is spent)."""
    dataset, kwargs = data

    def step_seconds(until: int) -> list[float]:
        start, planned = cell.agent.num_steps, cell.agent.config.n_steps
        stop = StopAfterSteps(until)
        cell.agent.learn_offline(dataset, n_steps=planned, callback=stop, log_interval=1, **kwargs)
        return logged_step_seconds(cell.agent, start)

    n = n_timed(seconds, cell.step_seconds.get("train", 1.0))
    if cell.agent is None or cell.agent.num_steps + n > cell.agent.config.n_steps:
        cell.agent = make()
        warmup = statistics.median(step_seconds(WARMUP))
        n = n_timed(seconds, cell.step_seconds.setdefault("train", warmup))
    times = step_seconds(cell.agent.num_steps + n)
    cell.step_seconds["train"] = sum(times) / len(times)
    return {"train": len(times) / sum(times)}


def train_stages(
    cell: Cell, make: Callable, data: tuple[Any, dict], stages: list[str], seconds: float
) -> tuple[Any, dict[str, float], float | None]:
    """``(agent, steps/s per stage, seconds of DSPO's generation or None)`` of a fresh agent
    whose stages are each shortened to warm-up + about ``seconds`` and timed on their own (the
    first request runs a short probe first, whose rates size the stages)."""
    names = [stage.split("_")[0] for stage in stages] + ["policy"]
    if not cell.step_seconds:  # the probe: MIN_STEPS per stage, its rates kept
        cell.step_seconds = dict.fromkeys(names, seconds / MIN_STEPS)
        train_stages(cell, make, data, stages, seconds)
    lengths = {name: WARMUP + n_timed(seconds, cell.step_seconds[name]) for name in names}
    agent = make(**{stage: lengths[name] for stage, name in zip(stages, names, strict=False)})
    dataset, kwargs = data
    agent.learn_offline(dataset, n_steps=sum(lengths.values()), log_interval=1, **kwargs)
    times = logged_step_seconds(agent, 0)
    rates, start, generation = {}, 0, None
    for name, length in lengths.items():
        timed = times[start + WARMUP : start + length]
        rates[name] = len(timed) / sum(timed)
        cell.step_seconds[name] = sum(timed) / len(timed)
        if name == "policy" and hasattr(agent.config, "n_generated_segments"):
            generation = times[start]  # DSPO generates its segments in the policy's first step
        start += length
    return agent, rates, generation


def latency_ms(agent: Any, obs: np.ndarray, repeats: int, seconds: float = 0.0) -> float:
    """Milliseconds per deterministic ``predict`` of ``obs``, after one untimed call: at least
    ``repeats`` calls and at least ``seconds`` in all."""
    agent.predict(obs, deterministic=True)
    count, start = 0, time.perf_counter()
    while count < repeats or time.perf_counter() - start < seconds:
        agent.predict(obs, deterministic=True)
        count += 1
    return 1000 * (time.perf_counter() - start) / count


def measure(request: dict[str, Any], cells: dict[tuple[str, str], Cell], tasks: dict) -> dict:
    """One request: train the (agent, preset) for about ``seconds``, then time ``predict``."""
    name, preset, task = request["agent"], request["preset"], request["task"]
    if task not in tasks:
        tasks[task] = (envs.make(task), envs.load_dataset(task))
    env, data = tasks[task]
    agent_class = get_agent_class(name)
    compile_ = {"compile": True} if request.get("compile") else {}
    cell = cells.setdefault((name, preset, bool(compile_)), Cell())

    def make(**stage_lengths: int) -> Any:
        return agent_class(env, seed=0, preset=preset, **compile_, **stage_lengths)

    stages, training = stages_of(agent_class), training_data(agent_class, data)
    generation = None
    if stages:
        agent, rates, generation = train_stages(cell, make, training, stages, request["seconds"])
    else:
        rates = train(cell, make, training, request["seconds"])
        agent = cell.agent
    observations = data.observations
    batch = np.resize(observations, (1000, observations.shape[1]))  # (1000, obs_dim), repeated
    return {
        "steps_per_s": rates,
        "compile_s": getattr(agent, "compile_seconds", None),
        "generation_s": generation,
        "predict_ms_1": latency_ms(agent, observations[0], 3, seconds=0.5),
        "predict_ms_1000": latency_ms(agent, batch, 1, seconds=0.5),
    }


def send(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def worker() -> None:
    """Answer requests from stdin, one JSON line each, on a private copy of stdout."""
    # Only the protocol goes to stdout: anything the libraries print goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends its workers on Ctrl-C
    torch.set_num_threads(1)
    send(out, {"safe_agents": safe_agents.__file__, "envs": envs.__file__})
    cells: dict[tuple[str, str, bool], Cell] = {}
    tasks: dict[str, Any] = {}
    for line in sys.stdin:
        try:
            send(out, {"result": measure(json.loads(line), cells, tasks)})
        except Exception:
            send(out, {"error": traceback.format_exc()})


# ------------------------------------------------------------------------------- the parent
class Worker:
    """A worker process on the tree at ``root``, checked to import that tree."""

    def __init__(self, side: str, root: Path) -> None:
        self.side = side
        path = [str(root), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            cwd=root,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        # The package is installed editable: make sure the worker did not import the main tree.
        hello = self.receive()
        for module in ("safe_agents", "envs"):
            imported = Path(hello[module]).resolve()
            if not imported.is_relative_to(root.resolve()):
                self.close()
                raise SystemExit(
                    f"the {side} worker imported {module} from {imported}, not from {root}"
                )
        self.modules = hello

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            status = self.process.wait()
            raise SystemExit(f"the {self.side} worker ended (status {status}); see its stderr")
        return json.loads(line)

    def ask(self, request: dict[str, Any], label: str) -> dict[str, Any]:
        """The worker's measurement, or ``{"error": traceback}``; progress on stderr."""
        assert self.process.stdin is not None
        print(f"{label}, {self.side} ...", end=" ", file=sys.stderr, flush=True)
        start = time.perf_counter()
        send(self.process.stdin, request)
        answer = self.receive()
        result = answer.get("result") or {"error": answer["error"]}
        outcome = result.get("steps_per_s") or "failed:\n" + result["error"]
        print(f"{time.perf_counter() - start:.1f} s, steps/s {outcome}", file=sys.stderr)
        return result

    def close(self) -> None:
        self.process.kill()  # it keeps nothing worth saving
        self.process.wait()


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def compare(results: dict[str, list[dict]], value: Callable, higher_is_faster: bool) -> dict:
    """Median of ``value(result)`` over each side's rounds, and the current tree's speed-up."""
    medians: dict[str, float | None] = {}
    for side in SIDES:
        values = [v for result in results[side] if "error" not in result and (v := value(result))]
        medians[side] = statistics.median(values) if values else None
    reference, current = medians["reference"], medians["current"]
    speedup = None
    if reference and current:
        speedup = current / reference if higher_is_faster else reference / current
    return {**medians, "speedup": speedup}


def summarize(results: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """A cell's rows: one per stage (``None``: an agent without stages), the latencies on the
    last one (the agent as trained), DSPO's generation on a row of its own."""
    ok = [result for side in SIDES for result in results[side] if "error" not in result]
    stages = list(dict.fromkeys(stage for result in ok for stage in result["steps_per_s"]))
    rows = []
    for stage in stages:
        rate = compare(results, lambda r, s=stage: r["steps_per_s"].get(s), True)
        rows.append({"stage": None if stage == "train" else stage, "steps_per_s": rate})
    if rows:
        for key in ("predict_ms_1", "predict_ms_1000"):
            rows[-1][key] = compare(results, lambda r, k=key: r[k], False)
    compile_seconds = [r["compile_s"] for r in results["current"] if r.get("compile_s")]
    if rows and compile_seconds:  # the first build's (later ones may hit the compile cache)
        rows[0]["compile_s"] = compile_seconds[0]
    if any(result.get("generation_s") for result in ok):
        generation = compare(results, lambda r: r.get("generation_s"), False)
        rows.append({"stage": "generation", "generation_s": generation})
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The table of every cell's rows: reference, current and speed-up per measure."""

    def cells(entry: dict | None, unit: str = "") -> list[str]:
        if entry is None:
            return ["", "", ""]
        values = [entry["reference"], entry["current"]]
        text = [
            "-" if v is None else f"{v:.1f}{unit}" if v >= 100 else f"{v:.3g}{unit}" for v in values
        ]
        return [*text, "-" if entry["speedup"] is None else f"{entry['speedup']:.2f}x"]

    lines = [
        "| agent [stage] | preset | steps/s ref | cur | speed-up | predict 1 obs (ms) ref | cur "
        "| speed-up | 1000 obs (ms) ref | cur | speed-up |",
        "|---|---|" + "---:|" * 9,
    ]
    for cell in result["cells"]:
        for row in cell["rows"] or [{"stage": "failed, see the JSON"}]:
            label = cell["agent"] + (f" [{row['stage']}]" if row["stage"] else "")
            if cell.get("compile"):
                compiled = f", {row['compile_s']:.0f} s to compile" if row.get("compile_s") else ""
                label += f" (compiled{compiled})"
            training = (
                cells(row["generation_s"], " s")
                if "generation_s" in row
                else cells(row.get("steps_per_s"))
            )
            columns = training + cells(row.get("predict_ms_1")) + cells(row.get("predict_ms_1000"))
            lines.append(f"| {label} | {cell['preset']} | " + " | ".join(columns) + " |")
    reference, current = result["reference"], result["current"]
    dirty = " + uncommitted changes" if current["dirty"] else ""
    return "\n".join(lines) + (
        f"\n\nReference: {reference['name']} = {reference['revision'][:10]}; current: "
        f"{current['revision'][:10]}{dirty}. {SPEEDUP}; medians of {result['rounds']} round(s).\n"
    )


def run(args: argparse.Namespace, names: list[str], presets: list[str]) -> dict[str, Any]:
    """Every (agent, preset)'s measurements on both sides, ``args.rounds`` times, and rows."""
    revision = git("rev-parse", "--verify", f"{args.reference}^{{commit}}")
    reference = {"name": args.reference, "revision": revision}
    current = {"revision": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    seconds = {preset: args.seconds or SECONDS.get(preset, SECONDS["paper"]) for preset in presets}
    cells: list[dict[str, Any]] = []
    for preset in presets:
        for name in names:
            cells.append({"agent": name, "preset": preset})
            if args.compile and get_agent_class(name).supports_compile:
                cells.append({"agent": name, "preset": preset, "compile": True})
    temporary = Path(tempfile.mkdtemp(prefix="speed-"))
    tree, workers = temporary / "reference", {}
    try:
        git("worktree", "add", "--detach", str(tree), revision)
        workers["reference"] = Worker("reference", tree)
        workers["current"] = Worker("current", ROOT)
        for round_ in range(args.rounds):
            for cell in cells:
                order = SIDES if round_ % 2 == 0 else SIDES[::-1]  # who goes first alternates
                # A compiled row's reference is its plain row's: only the current tree compiles.
                for side in ("current",) if cell.get("compile") else order:
                    name, preset = cell["agent"], cell["preset"]
                    request = {"agent": name, "preset": preset, "task": args.task}
                    request["seconds"] = seconds[preset]
                    request["compile"] = bool(cell.get("compile"))
                    label = f"round {round_ + 1}/{args.rounds}: {name} {preset}"
                    label += " compiled" if cell.get("compile") else ""
                    cell.setdefault(side, []).append(workers[side].ask(request, label))
    finally:
        for worker in workers.values():
            worker.close()
        command = ["git", "worktree", "remove", "--force", str(tree)]
        subprocess.run(command, cwd=ROOT, capture_output=True)
        shutil.rmtree(temporary, ignore_errors=True)
    for cell in cells:
        if cell.get("compile"):
            plain = next(
                c
                for c in cells
                if c["agent"] == cell["agent"]
                and not c.get("compile")
                and c["preset"] == cell["preset"]
            )
            cell["reference"] = plain["reference"]
    for side, record in (("reference", reference), ("current", current)):
        record.update(workers[side].modules)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "task": args.task,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "torch_threads": 1,
        "reference": reference,
        "current": current,
        "rounds": args.rounds,
        "seconds": seconds,
        "speedup": SPEEDUP,
        "cells": [{**cell, "rows": summarize(cell)} for cell in cells],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="OfflineToyReachAvoid-v0")
    parser.add_argument("--agents", default=",".join(list_agents()), help="comma-separated")
    parser.add_argument("--presets", default="cpu,paper", help="comma-separated")
    parser.add_argument("--reference", default="HEAD", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per cell and side")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="training time per measurement and stage "
        f"(default {SECONDS['cpu']:g} at the cpu preset, {SECONDS['paper']:g} at paper)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also measure the current tree's agents with compile=True, where they support it",
    )
    parser.add_argument("--out", default=None, help="default benchmarks/results/speed_<task>.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup runs
    names = [get_agent_class(name).name for name in args.agents.split(",")]
    result = run(args, names, args.presets.split(","))
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"speed_{args.task}.json")
    bench.write_result(out, result)
    table = markdown(result)
    atomic_write(out.with_suffix(".md"), table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
