"""MkDocs hooks: every results table of the site is rendered at build time from its file.

A page asks for a table with a marker, alone on its line::

    <!-- results: sweep:fisor -->

``NAME`` or ``NAME:ARGUMENT``; :data:`RENDERERS` lists the names. The hook replaces the marker
with the table, rendered by the project's own report code where it has one:
:func:`safe_agents.bench.markdown_table` and :func:`~safe_agents.bench.data_notes` for sweep
rows (``sweep`` for the quick set's folder, ``set:NAME`` for any config set's
``benchmarks/results/NAME``, variants included), the ``markdown`` functions of
``benchmarks/speed.py`` and ``benchmarks/datasets.py``, the report functions of
``benchmarks/fidelity.py``. Each table sits under a line that names the source file, its date
and the data the rows were trained on. ``<!-- presets: AGENT -->`` lists an agent's named presets
from its config class. A marker that names nothing known stops the build: a page never ships a
placeholder or a stale copy.

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


# ------------------------------------------------------------------------------ renderers
def _sweep_caption(folder: Path, rows: list[dict[str, Any]]) -> str:
    """Source, dates, data and protocol of a sweep folder's rows (its ``sweep.json``)."""
    settings = json.loads((folder / "sweep.json").read_text())["settings"]
    source = f"`{folder.relative_to(ROOT)}/rows/*.json` ({len(rows)} rows)"
    protocol = (
        f"profile {settings['profile']}, {settings['episodes']} evaluation episodes from seed "
        f"{settings['eval_seed']}; {_revisions(rows)}"
    )
    return _caption(source, _dates(rows), _row_provenance(rows), protocol)


def _dates(rows: list[dict[str, Any]]) -> str:
    dates = sorted({row["finished"][:10] for row in rows if row.get("finished")})
    return " to ".join(dict.fromkeys([dates[0], dates[-1]])) if dates else NOT_RECORDED


def _sweep_rows(folder: Path) -> list[dict[str, Any]]:
    rows = _bench().load_rows(folder)
    if not rows:
        raise PluginError(f"{folder.relative_to(ROOT)} has no rows")
    return rows


def sweep(argument: str) -> str:
    """The quick sweep (``bench_quick/rows``), as ``safe-agents report`` renders it.

    ``sweep`` is the whole table with its data notes; ``sweep:AGENT[,AGENT...]`` those agents'
    columns, with the gradient steps their rows ran next to the agent's ``cpu`` preset now.
    """
    bench = _bench()
    rows = _sweep_rows(SWEEP)
    if not argument:
        return _sweep_caption(SWEEP, rows) + bench.markdown_table(rows) + "\n\n" + _notes(rows)
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
        _sweep_caption(SWEEP, chosen)
        + bench.markdown_table(chosen)
        + "\n\nBudgets of these rows: "
        + "; ".join(budgets)
        + ".\n\n"
        + _notes(chosen)
    )


def _per_agent_tables(rows: list[dict[str, Any]]) -> str:
    """One table per task, one line per agent (in the rows' order), with the cells of
    ``bench.table``: a study of a few agents or variants reads down, not across."""
    steps: dict[str, set[int]] = {}
    for row in rows:
        if "n_steps" in row:
            steps.setdefault(row["agent"], set()).add(int(row["n_steps"]))
    tables = []
    for task, cells in _bench().table(rows).items():
        lines = [
            f"**{task}**",
            "",
            "| agent | seeds | normalized return / normalized cost | gradient steps |",
            "|---|---:|---|---:|",
        ]
        for agent in dict.fromkeys(row["agent"] for row in rows if row["task"] == task):
            cell = cells[agent]
            text = (
                f"{cell.reward:.2f} +- {cell.reward_spread:.2f} / "
                f"{cell.cost:.2f} +- {cell.cost_spread:.2f}"
            )
            text = text if cell.safe else f"**{text} (unsafe)**"
            ran = "/".join(f"{n:,}" for n in sorted(steps.get(agent, ()))) or "-"
            lines.append(f"| {agent} | {cell.seeds} | {text} | {ran} |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def config_set(argument: str) -> str:
    """A config set's sweep folder, ``benchmarks/results/<set>``, as one table.

    A set with variants (subfolders with their own ``sweep.json``) shows each variant's agents
    as ``agent [variant]`` (the ``default`` variant's plainly), so the ablation reads in one
    table per task.
    """
    folder = RESULTS / argument
    if not argument or not folder.is_dir():
        raise PluginError(f"set: no results folder benchmarks/results/{argument}")
    found = sorted(path for path in folder.iterdir() if (path / "sweep.json").is_file())
    # The default variant first, then the others by name.
    variants = sorted(found, key=lambda path: (path.name != "default", path.name))
    if (folder / "sweep.json").is_file():
        variants = [folder]
    if not variants:
        raise PluginError(f"set: benchmarks/results/{argument} holds no sweep")
    rows: list[dict[str, Any]] = []
    for variant in variants:
        label = "" if variant == folder or variant.name == "default" else f" [{variant.name}]"
        rows += [{**row, "agent": row["agent"] + label} for row in _sweep_rows(variant)]
    if variants == [folder]:
        caption = _sweep_caption(folder, rows)
    else:
        names = ",".join(variant.name for variant in variants)
        caption = _sweep_caption(variants[0], rows).replace(
            f"`{variants[0].relative_to(ROOT)}/rows/*.json`",
            f"`{folder.relative_to(ROOT)}/{{{names}}}/rows/*.json`",
        )
    return caption + _per_agent_tables(rows) + "\n\n" + _notes(rows)


def safety_filter(argument: str) -> str:
    """``safety_filter.json`` (``benchmarks/safety_filter.py``): policies behind FISOR's filter;
    ``ppo``: the online PPO agent alone and behind the filter."""
    result = _load("safety_filter.json")
    ppo = argument == "ppo"
    rows = [row for row in result["rows"] if row["agent"].startswith("ppo") == ppo]
    interventions: dict[str, list[int]] = {}
    for row in rows:
        if "interventions" in row:
            interventions.setdefault(row["agent"], []).append(row["interventions"])
    counts = "; ".join(
        f"{agent}: {', '.join(map(str, values))} (per seed)"
        for agent, values in interventions.items()
    )
    more = [f"{result['filter_candidates']} candidates per step from FISOR's policy"]
    if ppo:
        more.append(f"SB3 PPO, {result['ppo_steps']:,} online steps without the cost")
    return (
        _caption(
            "`benchmarks/results/safety_filter.json` (`benchmarks/safety_filter.py --sweep "
            f"{result['sweep']}`)",
            NOT_RECORDED,
            _row_provenance(rows),
            *more,
        )
        + _per_agent_tables(rows)
        + f"\n\nFilter interventions (actions replaced, over all episodes): {counts}."
    )


def dspo_discriminator(argument: str) -> str:
    """``dspo_discriminator.json`` (``benchmarks/dspo_discriminator.py``): BC on the safe demos
    alone beside the ``dspo`` set's rows; ``table2``: the discriminator against the hidden
    labels (the paper's Table 2)."""
    import numpy as np

    result = _load("dspo_discriminator.json")
    caption = _caption(
        "`benchmarks/results/dspo_discriminator.json` (`benchmarks/dspo_discriminator.py "
        f"--sweep {result['sweep']}`)",
        _dates(result["rows"]),
        _row_provenance(result["rows"]),
        result["protocol"],
    )
    if argument != "table2":
        return caption + _per_agent_tables(result["rows"])
    metrics = ("recall", "precision", "accuracy", "f1", "pearson")
    lines = [
        "| task | discriminator | seeds | " + " | ".join(metrics) + " |",
        "|---|---|---:|" + "---|" * len(metrics),
    ]
    for task, per_seed in result["discriminator"].items():
        for name in result["variants"]:
            scored = [seed[name] for seed in per_seed if name in seed]
            values = [np.array([entry[metric] for entry in scored]) for metric in metrics]
            cells = [f"{np.nanmean(v):.2f} +- {np.nanstd(v):.2f}" for v in values]
            lines.append(f"| {task} | {name} | {len(scored)} | " + " | ".join(cells) + " |")
    return caption + "\n".join(lines)


def headline(argument: str) -> str:
    """The README's headline table (``safe-agents report --headline``), from the same rows."""
    rows = _bench().load_rows(SWEEP)
    if not rows:
        raise PluginError(f"{SWEEP.relative_to(ROOT)} has no rows")
    return _bench().headline_table(rows, str(SWEEP.relative_to(ROOT)))


def suite(argument: str) -> str:
    """The suite (``benchmarks/results/suite``): its headline table, with how much of its plan
    has finished and what it cost, then its failing cells and their diagnoses."""
    bench = _bench()
    folder = RESULTS / "suite"
    rows = _sweep_rows(folder)
    source = str(folder.relative_to(ROOT))
    diagnoses = bench.load_diagnoses(folder / bench.DIAGNOSES_FILE)
    table = bench.headline_table(rows, source, bench.planned_runs(folder), diagnoses)
    # The headline names the README's command; this table is rendered when the site is built.
    table = table.replace("by `safe-agents report --headline README.md`", "when the site is built")
    failures = bench.failures_section(rows, diagnoses)
    # The report's sections sit one level lower on this page, under "The suite".
    failures = re.sub(r"^(#+) ", r"#\1 ", failures, flags=re.M)
    return table + ("\n\n" + failures if failures else "")


def sweep_plots(argument: str) -> str:
    """The report's reward-cost plots, one per task."""
    paths = sorted((SWEEP / "plots").glob("*.png"))
    figures = [f"![{path.stem}]({ASSET_LINK}/bench_quick/plots/{path.name})" for path in paths]
    return _caption("`benchmarks/results/bench_quick/plots/`", data="as in the table above") + (
        "\n\n".join(figures)
    )


def speed(argument: str) -> str:
    """``speed_OfflineToyReachAvoid-v0.json`` by ``benchmarks/speed.py``'s own table: a
    reference revision against a working tree (``speed:recheck``: the run that measured the
    first one's slower cells again, ``speed_recheck_OfflineToyReachAvoid-v0.json``;
    ``speed:spi_paper``, ``speed:cdt_cpu``: one agent and preset alone)."""
    name = f"speed{'_' + argument if argument else ''}_OfflineToyReachAvoid-v0.json"
    result = _load(name)
    machine = result["machine"]
    return _caption(
        f"`benchmarks/results/{name}`",
        result["date"],
        "the task's shipped dataset",
        f"task {result['task']}, {result['torch_threads']} torch thread(s), machine: "
        f"{machine['processor']} ({machine['cpu_capability']}), torch {machine['torch']}",
    ) + _script("speed.py").markdown(result)


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
    """A PNG under ``benchmarks/results``: ``figure:fisor_toy/feasibility.png``."""
    path = RESULTS / argument
    if not argument.endswith(".png") or not path.is_file():
        raise PluginError(f"no figure benchmarks/results/{argument}")
    return f"![{path.stem}]({ASSET_LINK}/{argument})\n\n*Source: `benchmarks/results/{argument}`.*"


RENDERERS: dict[str, Callable[[str], str]] = {
    "headline": headline,
    "sweep": sweep,
    "sweep_plots": sweep_plots,
    "suite": suite,
    "set": config_set,
    "safety_filter": safety_filter,
    "dspo_discriminator": dspo_discriminator,
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
    "suite": {""},
    "set": None,
    "safety_filter": {"", "ppo"},
    "dspo_discriminator": {"", "table2"},
    "speed": {"", "recheck", "spi_paper", "cdt_cpu"},
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
