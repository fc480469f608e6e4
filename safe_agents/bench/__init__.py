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

A config set (:func:`load_config_sets`) is such a folder with a ``sweep.toml`` naming the
agents, tasks, seeds and settings of a study, so that ``safe-agents bench --configs FOLDER``
runs the study; its variants (ablations) are subfolders, each a sweep of its own.

The evaluation follows the package's protocol (``envs.evaluate``): deterministic actions, the
final iterate, ``episodes`` episodes reset with seeds ``eval_seed``, ``eval_seed + 1``, ...,
and the normalized return and cost. Each row records which data it was trained on
(``data_origin``, ``data_provenance``) and which reference returns normalized it
(``normalization``, ``reward_range``): DSRL's for DSRL's data, the data's own range for data
built locally. The report shows the data of every task beside its row.

The modules, in the order a sweep uses them: :mod:`~safe_agents.bench.settings` (runs, shared
settings, profiles), :mod:`~safe_agents.bench.budgets` (each run's budget),
:mod:`~safe_agents.bench.config_sets` (``sweep.toml``), :mod:`~safe_agents.bench.folder` (the
folder's record and lock), :mod:`~safe_agents.bench.runs` (one run: checkpoints, curves),
:mod:`~safe_agents.bench.sweep` (workers and Ray), :mod:`~safe_agents.bench.rows` (the
folder's files), :mod:`~safe_agents.bench.report`, :mod:`~safe_agents.bench.plots` and
:mod:`~safe_agents.bench.headline` (tables and figures), :mod:`~safe_agents.bench.failures`
(the cells that need a diagnosis, and theirs), :mod:`~safe_agents.bench.publish` (a folder's
report files), and :mod:`~safe_agents.bench.measure`
(timings for the scripts that measure speed). Every name below is importable from
``safe_agents.bench``.
"""

from __future__ import annotations

from safe_agents.bench.budgets import STAGE_STEPS, budget
from safe_agents.bench.config_sets import SWEEP_FILE, ConfigSet, load_config_sets
from safe_agents.bench.failures import (
    DIAGNOSES_FILE,
    LISTING_RULE,
    PAPER_AGENTS,
    Diagnosis,
    Failure,
    failures_section,
    find_failures,
    load_diagnoses,
)
from safe_agents.bench.folder import RECORD_FILE, SHARED_SETTINGS, planned_runs, read_settings
from safe_agents.bench.folder import _folder_lock as _folder_lock
from safe_agents.bench.headline import (
    HEADLINE_BEGIN,
    HEADLINE_END,
    headline_table,
    render_headlines,
    update_headline,
)
from safe_agents.bench.measure import latency_ms, steps_per_second
from safe_agents.bench.plots import curves, plot_curves, plot_tasks
from safe_agents.bench.publish import write_report
from safe_agents.bench.report import (
    NOT_RECORDED,
    Cell,
    compute_note,
    csv_table,
    data_labels,
    data_notes,
    markdown_table,
    normalization_rule,
    progress_note,
    table,
)
from safe_agents.bench.rows import (
    RowCommitError,
    agent_path,
    check_committable,
    commit_rows,
    finished,
    load_rows,
    row_key,
    run_work_dir,
    write_result,
)
from safe_agents.bench.runs import _RunStages as _RunStages
from safe_agents.bench.runs import execute, machine_description
from safe_agents.bench.settings import (
    CURVE_SEED,
    EVAL_SEED,
    PROFILE_PRESETS,
    Run,
    SweepError,
    SweepSettings,
    plan_runs,
)
from safe_agents.bench.sweep import OnRow, OnStart, run_sweep

__all__ = [
    "CURVE_SEED",
    "DIAGNOSES_FILE",
    "EVAL_SEED",
    "HEADLINE_BEGIN",
    "HEADLINE_END",
    "LISTING_RULE",
    "NOT_RECORDED",
    "PAPER_AGENTS",
    "PROFILE_PRESETS",
    "RECORD_FILE",
    "SHARED_SETTINGS",
    "STAGE_STEPS",
    "SWEEP_FILE",
    "Cell",
    "ConfigSet",
    "Diagnosis",
    "Failure",
    "OnRow",
    "OnStart",
    "RowCommitError",
    "Run",
    "SweepError",
    "SweepSettings",
    "agent_path",
    "budget",
    "check_committable",
    "commit_rows",
    "compute_note",
    "csv_table",
    "curves",
    "data_labels",
    "data_notes",
    "execute",
    "failures_section",
    "find_failures",
    "finished",
    "headline_table",
    "latency_ms",
    "load_config_sets",
    "load_diagnoses",
    "load_rows",
    "machine_description",
    "markdown_table",
    "normalization_rule",
    "plan_runs",
    "planned_runs",
    "plot_curves",
    "plot_tasks",
    "progress_note",
    "read_settings",
    "render_headlines",
    "row_key",
    "run_sweep",
    "run_work_dir",
    "steps_per_second",
    "table",
    "update_headline",
    "write_report",
    "write_result",
]
