"""MkDocs hooks: every results table of the site is rendered at build time from its file.

A page asks for a table with a marker, alone on its line::

    <!-- results: sweep:fisor -->

``NAME`` or ``NAME:ARGUMENT``; :data:`RENDERERS` lists the names. The hook replaces the marker
with the table, rendered by the project's own report code where it has one
(:func:`safe_agents.bench.markdown_table` and :func:`~safe_agents.bench.data_notes` for sweep
rows, the ``markdown`` functions of ``benchmarks/speed.py`` and ``benchmarks/datasets.py``, the
report functions of ``benchmarks/fidelity.py``), under a line that names the source file, its
date and the data the rows were trained on. ``<!-- presets: AGENT -->`` lists an agent's named
presets from its config class. A marker that names nothing known stops the build: a page never
ships a placeholder or a stale copy.

The PNG figures under ``benchmarks/results`` are published at ``assets/results/...``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SWEEP = RESULTS / "bench_quick"
ASSETS = "assets/results"
# Renderers write figure links from the site's root; each page's depth is filled in after.
ASSET_LINK = "@@assets@@"
NOT_RECORDED = "not recorded in the file"

# A marker is a whole HTML comment; anything that starts like one but does not parse is an error.
MARKER = re.compile(r"<!--\s*(results|presets)\s*:\s*([^\s>]*)\s*-->")
MARKER_START = re.compile(r"<!--\s*(results|presets)\b")
# Sphinx roles (``:func:`~a.b```) are plain text to Google-style docstrings: keep the code, drop
# the role, and show only the last name where a ``~`` asks for it, as Sphinx would.
SPHINX_ROLE = re.compile(
    r":(?:func|class|meth|mod|data|attr|exc|obj|py:\w+):<code>(~?)([^<]*)</code>"
)


# ----------------------------------------------------------------------- the project's code
@functools.cache
def _bench() -> ModuleType:
    from safe_agents import bench

    return bench


@functools.cache
def _script(name: str) -> ModuleType:
    """A script of ``benchmarks/`` as a module (its own renderer of its result file)."""
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", ROOT / "benchmarks" / name)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load benchmarks/{name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> dict[str, Any]:
    path = RESULTS / name
    if not path.is_file():
        raise PluginError(f"results file {path.relative_to(ROOT)} is missing")
    return json.loads(path.read_text())


def _simulator(task: str) -> str:
    import envs

    return envs.get_task(task).simulator


# ----------------------------------------------------------------------------- captions
def _caption(source: str, date: str = NOT_RECORDED, data: str = NOT_RECORDED, *more: str) -> str:
    parts = [f"Source: {source}", f"date: {date}", f"data provenance: {data}", *more]
    return "*" + "; ".join(parts) + ".*\n\n"


def _revisions(rows: list[dict[str, Any]]) -> str:
    found = sorted({str(row["git_revision"])[:7] for row in rows if row.get("git_revision")})
    return "git revision " + ", ".join(found) if found else "git revision not recorded"


def _row_provenance(rows: list[dict[str, Any]]) -> str:
    """What the rows say about their data: ``bench.data_labels`` per task."""
    labels = _bench().data_labels(rows)
    return ", ".join(f"{task}: {label}" for task, label in sorted(labels.items()))


def _notes(rows: list[dict[str, Any]]) -> str:
    """``bench.data_notes``, with the blank line Markdown needs before its list."""
    heading, _, items = _bench().data_notes(rows).partition("\n")
    return f"{heading}\n\n{items}"


# ------------------------------------------------------------------------------- tables
def _cell_text(cell: Any) -> str:
    """A cell as ``safe-agents report`` writes it (``bench.markdown_table``)."""
    text = (
        f"{cell.reward:.2f} +- {cell.reward_spread:.2f} / {cell.cost:.2f} +- {cell.cost_spread:.2f}"
    )
    return text if cell.safe else f"**{text} (unsafe)**"


def _agent_table(
    rows: list[dict[str, Any]],
    label: str = "agent",
    extra: dict[str, dict[str, str]] | None = None,
) -> str:
    """One task's cells, one line per agent (``bench.table`` computes them).

    ``rows`` are result rows (``agent``, ``task``, ``seed``, ``mean_normalized_return``,
    ``mean_normalized_cost``); ``extra`` adds columns: ``{column: {agent: text}}``.
    """
    extra = extra or {}
    (cells,) = _bench().table(rows).values()  # one task per table
    header = [label, "seeds", "normalized return / normalized cost", *extra]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---|" + "---:|" * len(extra)]
    for agent in dict.fromkeys(row["agent"] for row in rows):  # the file's order
        cell = cells[agent]
        entries = [agent, str(cell.seeds), _cell_text(cell)]
        entries += [extra[column].get(agent, "-") for column in extra]
        lines.append("| " + " | ".join(entries) + " |")
    return "\n".join(lines)


def _per_seed_rows(task: str, per_seed: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The per-seed entries of a benchmark script's JSON as result rows."""
    return [
        {"agent": agent, "task": task, "seed": seed, **entry}
        for agent, entries in per_seed.items()
        for seed, entry in enumerate(entries)
    ]


def _protocol(result: dict[str, Any]) -> str:
    return (
        f"task {result['task']}, {result['seeds']} training seeds x {result['episodes']} "
        f"evaluation episodes"
    )


def _steps(budgets: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in budgets.items())


# ------------------------------------------------------------------------------ renderers
def sweep(argument: str) -> str:
    """The quick sweep (``bench_quick/rows``), as ``safe-agents report`` renders it.

    ``sweep`` is the whole table with its data notes; ``sweep:AGENT[,AGENT...]`` those agents'
    columns, with the gradient steps their rows ran next to the agent's ``cpu`` preset now.
    """
    bench = _bench()
    rows = bench.load_rows(SWEEP)
    if not rows:
        raise PluginError(f"{SWEEP.relative_to(ROOT)} has no rows")
    settings = json.loads((SWEEP / "sweep.json").read_text())["settings"]
    source = f"`benchmarks/results/bench_quick/rows/*.json` ({len(rows)} rows)"
    protocol = (
        f"profile {settings['profile']}, {settings['episodes']} evaluation episodes from seed "
        f"{settings['eval_seed']}; {_revisions(rows)}"
    )
    dates = sorted({row["finished"][:10] for row in rows if row.get("finished")})
    date = " to ".join(dict.fromkeys([dates[0], dates[-1]])) if dates else NOT_RECORDED
    if not argument:
        return (
            _caption(source, date, _row_provenance(rows), protocol)
            + bench.markdown_table(rows)
            + "\n\n"
            + _notes(rows)
        )
    agents = argument.split(",")
    known = {row["agent"] for row in rows}
    unknown = [agent for agent in agents if agent not in known]
    if unknown:
        raise PluginError(f"sweep has no rows of {unknown} (it has {sorted(known)})")
    chosen = [row for row in rows if row["agent"] in agents]
    from safe_agents import get_agent_class

    budgets = []
    for agent in agents:
        ran = sorted({row["n_steps"] for row in chosen if row["agent"] == agent})
        preset = get_agent_class(agent).config_class.presets.get("cpu", {}).get("n_steps")
        budgets.append(f"{agent} {'/'.join(map(str, ran))} steps (cpu preset now: {preset})")
    return (
        _caption(source, date, _row_provenance(chosen), protocol)
        + bench.markdown_table(chosen)
        + "\n\nBudgets of these rows: "
        + "; ".join(budgets)
        + ".\n\n"
        + _notes(chosen)
    )


def headline(argument: str) -> str:
    """The README's headline table (``safe-agents report --headline``), from the same rows."""
    rows = _bench().load_rows(SWEEP)
    if not rows:
        raise PluginError(f"{SWEEP.relative_to(ROOT)} has no rows")
    return _bench().headline_table(rows, str(SWEEP.relative_to(ROOT)))


def sweep_plots(argument: str) -> str:
    """The report's reward-cost plots, one per task."""
    paths = sorted((SWEEP / "plots").glob("*.png"))
    figures = [f"![{path.stem}]({ASSET_LINK}/bench_quick/plots/{path.name})" for path in paths]
    return _caption("`benchmarks/results/bench_quick/plots/`", data="as in the table above") + (
        "\n\n".join(figures)
    )


def fisor_toy(argument: str) -> str:
    """``fisor_toy.json``: FISOR, BC and the SafetyFilter (``ppo``: the online PPO rows)."""
    result = _load("fisor_toy.json")
    if argument == "ppo":
        ppo = result["ppo"]
        rows = [
            {"agent": name, "task": result["task"], "seed": 0, **ppo[name]}
            for name in ("ppo", "ppo+filter")
        ]
        extra = {"interventions": {"ppo+filter": str(ppo["ppo+filter"]["interventions"])}}
        return _caption(
            "`benchmarks/results/fisor_toy.json`",
            NOT_RECORDED,
            "PPO trains online on the environment; the filter's critic is FISOR's",
            f"SB3 PPO, {ppo['ppo_steps']} online steps, one run, evaluated on "
            f"{result['episodes']} episodes",
        ) + _agent_table(rows, extra=extra)
    budgets = {"fisor": result["fisor_steps"], "bc_all": result["bc_steps"]}
    interventions = {
        agent: f"{sum(entry['interventions'] for entry in entries) / len(entries):.0f}"
        for agent, entries in result["per_seed"].items()
        if "interventions" in entries[0]
    }
    return _caption(
        "`benchmarks/results/fisor_toy.json`",
        NOT_RECORDED,
        NOT_RECORDED,
        _protocol(result),
        f"gradient steps: {_steps(budgets)}; FISOR at {json.dumps(result['fisor_config'])}",
    ) + _agent_table(
        _per_seed_rows(result["task"], result["per_seed"]),
        extra={"filter interventions (mean per seed)": interventions},
    )


def spi_toy(argument: str) -> str:
    """``spi_toy.json``: SPI's two extractions (``ablation``: the Table 2 ablation, seed 0)."""
    result = _load("spi_toy.json")
    if argument == "ablation":
        rows = [
            {"agent": name, "task": result["task"], "seed": 0, **entry}
            for name, entry in result["ablation_seed0"].items()
        ]
        return _caption(
            "`benchmarks/results/spi_toy.json`",
            NOT_RECORDED,
            NOT_RECORDED,
            f"task {result['task']}, training seed 0, {result['episodes']} evaluation episodes",
        ) + _agent_table(rows, label="variant")
    return _caption(
        "`benchmarks/results/spi_toy.json`",
        NOT_RECORDED,
        NOT_RECORDED,
        _protocol(result),
        f"{result['spi_steps']} gradient steps at {json.dumps(result['spi_config'])}",
    ) + _agent_table(_per_seed_rows(result["task"], result["per_seed"]))


def drcorl_toy(argument: str) -> str:
    """``drcorl_toy.json``: adaptation modes (``cost_limit``: the cost-limit ablation)."""
    result = _load("drcorl_toy.json")
    steps = (
        f"{result['pretrain_steps']} pretraining + {result['extraction_steps']} extraction "
        f"steps at {json.dumps(result['drcorl_config'])}; BC {result['bc_steps']} steps"
    )
    if argument == "cost_limit":
        per_seed = result["cost_limit_ablation_per_seed"]
        ordered = dict(sorted(per_seed.items(), key=lambda item: float(item[0].split("_")[1])))
        return _caption(
            "`benchmarks/results/drcorl_toy.json`",
            NOT_RECORDED,
            NOT_RECORDED,
            _protocol(result),
            "normalized cost divided by each row's own limit",
        ) + _agent_table(_per_seed_rows(result["task"], ordered), label="cost limit")
    return _caption(
        "`benchmarks/results/drcorl_toy.json`",
        NOT_RECORDED,
        NOT_RECORDED,
        _protocol(result),
        steps,
    ) + _agent_table(_per_seed_rows(result["task"], result["per_seed"]))


def _seeds_file(name: str, data: str) -> str:
    """A per-seed results file of agents with budgets and training times, as one table."""
    result = _load(name)
    seconds = {
        agent: f"{min(values):.0f}-{max(values):.0f}"
        for agent, values in result["train_seconds"].items()
    }
    steps = {agent: str(budget["steps"]) for agent, budget in result["budgets"].items()}
    return _caption(
        f"`benchmarks/results/{name}`",
        NOT_RECORDED,
        data,
        _protocol(result),
        f"evaluation seed {result['eval_seed']}",
    ) + _agent_table(
        _per_seed_rows(result["task"], result["per_seed"]),
        extra={"gradient steps": steps, "training seconds per seed": seconds},
    )


def baselines_toy(argument: str) -> str:
    """``baselines_toy.json``: the DSRL baselines on the toy task."""
    return _seeds_file("baselines_toy.json", NOT_RECORDED)


def compare(argument: str) -> str:
    """``compare_OfflineBallRun-v0.json``: every agent with costs on BallRun's dataset."""
    return _seeds_file(
        "compare_OfflineBallRun-v0.json",
        _load("compare_OfflineBallRun-v0.json").get("dataset", NOT_RECORDED),
    )


def dspo(argument: str) -> str:
    """``dspo.json``: DSPO and BC without cost labels (``discriminator``: the paper's Table 2)."""
    import numpy as np

    result = _load("dspo.json")
    tasks = result["tasks"]
    caption = _caption(
        "`benchmarks/results/dspo.json`", NOT_RECORDED, NOT_RECORDED, result["protocol"]
    )
    if argument == "discriminator":
        metrics = ("recall", "precision", "accuracy", "f1", "pearson")
        lines = [
            "| task | discriminator | seeds | " + " | ".join(metrics) + " |",
            "|---|---|---:|" + "---|" * len(metrics),
        ]
        for task, per_seed in tasks.items():
            for name in per_seed[0]["discriminator"]:
                values = [
                    np.array([seed["discriminator"][name][metric] for seed in per_seed])
                    for metric in metrics
                ]
                cells = [f"{value.mean():.2f} +- {value.std():.2f}" for value in values]
                lines.append(f"| {task} | {name} | {len(per_seed)} | " + " | ".join(cells) + " |")
        return caption + "\n".join(lines)
    rows = [
        {
            "agent": name,
            "task": task,
            "seed": seed["seed"],
            "simulator": _simulator(task),
            **policy,
        }
        for task, per_seed in tasks.items()
        for seed in per_seed
        for name, policy in seed["policies"].items()
    ]
    return caption + _bench().markdown_table(rows)


def speed(argument: str) -> str:
    """``speed_OfflineToyReachAvoid-v0.json`` by ``benchmarks/speed.py``'s own table."""
    result = _load("speed_OfflineToyReachAvoid-v0.json")
    return _caption(
        "`benchmarks/results/speed_OfflineToyReachAvoid-v0.json`",
        NOT_RECORDED,
        "the task's shipped dataset",
        f"task {result['task']}, profile {result['profile']}, {result['torch_threads']} torch "
        f"thread(s), machine: {result['machine']}",
    ) + _script("speed.py").markdown(result["results"])


def threads(argument: str) -> str:
    """``threads.json`` by ``benchmarks/fidelity.py``'s own table."""
    result = _load("threads.json")
    text = _script("fidelity.py").threads_markdown().strip()
    return (
        _caption(
            "`benchmarks/results/threads.json`", result["date"], "the toy task's shipped dataset"
        )
        + text
    )


def fidelity(argument: str) -> str:
    """``fidelity/*.json`` (and the warm-start file) by ``benchmarks/fidelity.py``'s report."""
    module = _script("fidelity.py")
    count = len(list((RESULTS / "fidelity").glob("*.json")))
    text = module.report_markdown(module.load_rows()) + module.warm_start_markdown()
    return (
        _caption(
            f"`benchmarks/results/fidelity/*.json` ({count} rows) and "
            "`benchmarks/results/fidelity_drcorl_warm_start_ballrun.json`",
            NOT_RECORDED,
            "stated in the first line below",
        )
        + text.strip()
    )


def datasets(argument: str) -> str:
    """``datasets.json`` by ``benchmarks/datasets.py``'s own table."""
    result = _load("datasets.json")
    return _caption(
        "`benchmarks/results/datasets.json`",
        NOT_RECORDED,
        "the `data` column (rows that predate the field say not recorded); every file here was "
        "built locally",
    ) + _script("datasets.py").markdown(result)


def budgets(argument: str) -> str:
    """Each agent's steps at both presets (from its config) and the time they take at the
    training rates of ``threads.json``: the paper preset on 2 threads, the cpu preset on 1."""
    from safe_agents import get_agent_class, list_agents
    from safe_agents.common.callbacks import format_duration

    result = _load("threads.json")
    rates = result["steps_per_second"]
    lines = [
        "| agent | class | `paper` steps | time at 2 threads | `cpu` steps | time at 1 thread |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for agent in list_agents():
        agent_class = get_agent_class(agent)
        paper = agent_class.config_class.from_kwargs("paper").n_steps
        cpu = agent_class.config_class.from_kwargs("cpu").n_steps
        cells = [agent, f"`{agent_class.__name__}`", f"{paper:,}"]
        cells.append(format_duration(paper / rates[agent]["paper_2"]) if agent in rates else "-")
        cells.append(f"{cpu:,}")
        cells.append(format_duration(cpu / rates[agent]["cpu_1"]) if agent in rates else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return _caption(
        "the agents' config classes (steps) and `benchmarks/results/threads.json` (rates)",
        result["date"],
        "the toy task's shipped dataset",
        f"machine: {result['machine']}, torch {result['torch']}; times are the steps "
        "divided by the rate of each preset's first steps, an estimate",
    ) + "\n".join(lines)


def figure(argument: str) -> str:
    """A PNG under ``benchmarks/results``: ``figure:fisor_toy_feasibility.png``."""
    path = RESULTS / argument
    if not argument.endswith(".png") or not path.is_file():
        raise PluginError(f"no figure benchmarks/results/{argument}")
    return f"![{path.stem}]({ASSET_LINK}/{argument})\n\n*Source: `benchmarks/results/{argument}`.*"


RENDERERS: dict[str, Callable[[str], str]] = {
    "headline": headline,
    "sweep": sweep,
    "sweep_plots": sweep_plots,
    "fisor_toy": fisor_toy,
    "spi_toy": spi_toy,
    "drcorl_toy": drcorl_toy,
    "baselines_toy": baselines_toy,
    "compare": compare,
    "dspo": dspo,
    "speed": speed,
    "threads": threads,
    "fidelity": fidelity,
    "datasets": datasets,
    "budgets": budgets,
    "figure": figure,
}
# Arguments each renderer accepts (None: any, checked by the renderer itself).
ARGUMENTS: dict[str, set[str] | None] = {
    "headline": {""},
    "sweep": None,
    "sweep_plots": {""},
    "fisor_toy": {"", "ppo"},
    "spi_toy": {"", "ablation"},
    "drcorl_toy": {"", "cost_limit"},
    "baselines_toy": {""},
    "compare": {""},
    "dspo": {"", "discriminator"},
    "speed": {""},
    "threads": {""},
    "fidelity": {""},
    "datasets": {""},
    "budgets": {""},
    "figure": None,
}


def presets(agent: str) -> str:
    """An agent's named presets: the fields each sets over the defaults."""
    from safe_agents import get_agent_class, list_agents

    if agent not in list_agents():
        raise PluginError(f"presets: unknown agent {agent!r} (known: {list_agents()})")
    config_class = get_agent_class(agent).config_class
    lines = ["| preset | fields set over the defaults |", "|---|---|"]
    for name, fields in config_class.presets.items():
        text = ", ".join(f"`{key}={value!r}`" for key, value in fields.items())
        lines.append(f"| `{name}` | {text or 'none: the defaults'} |")
    return "\n".join(lines)


def render(kind: str, spec: str, where: str) -> str:
    if kind == "presets":
        return presets(spec)
    name, _, argument = spec.partition(":")
    if name not in RENDERERS:
        raise PluginError(f"{where}: unknown results marker {spec!r} (known: {sorted(RENDERERS)})")
    allowed = ARGUMENTS[name]
    if allowed is not None and argument not in allowed:
        raise PluginError(f"{where}: results marker {name!r} takes no argument {argument!r}")
    return RENDERERS[name](argument)


# ----------------------------------------------------------------------------------- hooks
def on_files(files: Files, config: Any) -> Files:
    """Publish the PNG figures of ``benchmarks/results`` under ``assets/results/``."""
    for path in sorted(RESULTS.rglob("*.png")):
        relative = path.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, f"{ASSETS}/{relative}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Replace every results marker of a page; an unknown or malformed one fails the build."""
    where = page.file.src_uri
    rendered = MARKER.sub(lambda match: render(match[1], match[2], where), markdown)
    rendered = rendered.replace(ASSET_LINK, "../" * where.count("/") + ASSETS)
    leftover = MARKER_START.search(rendered)
    if leftover:
        line = rendered[leftover.start() :].splitlines()[0]
        raise PluginError(f"{where}: malformed marker {line!r} (expected <!-- results: NAME -->)")
    return rendered


def _unrole(match: re.Match[str]) -> str:
    name = match[2].rsplit(".", 1)[-1] if match[1] else match[2]
    return f"<code>{name}</code>"


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    """Render the Sphinx roles left in docstrings as plain code."""
    return SPHINX_ROLE.sub(_unrole, html)
