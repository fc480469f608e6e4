"""Running a sweep: the runs without a row, in worker processes or as Ray tasks.

:func:`run_sweep` locks the folder, checks its record (:mod:`safe_agents.bench.folder`), then
executes each run left to do (:func:`~safe_agents.bench.runs.execute`) one at a time in this
process, ``workers`` at a time in a pool of spawned processes that end with this one, or as Ray
tasks, and records each result as it arrives: the agent, then the row.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import multiprocessing
import os
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from envs.collect import build_missing
from safe_agents.bench.folder import (
    _budget_record,
    _folder_lock,
    _pair,
    _prepare_folder,
    _remove_leftovers,
)
from safe_agents.bench.rows import (
    _git_revision,
    _write_json_atomically,
    agent_path,
    finished,
    load_rows,
    row_key,
    run_work_dir,
)
from safe_agents.bench.runs import execute
from safe_agents.bench.settings import Run, SweepError, SweepSettings
from safe_agents.common.fileio import atomic_write

logger = logging.getLogger(__name__)

# How often a pool worker checks that the sweep's process still lives, and how long a
# ``HOST:PORT`` may take to accept a connection before the sweep gives up on it (Ray itself
# retries a dead address for minutes).
PARENT_POLL_SECONDS = 0.5
RAY_CONNECT_SECONDS = 5.0

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
    on_build: Callable[[str], None] | None = None,
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
        on_build: with ``settings.build_data``, called with a message before each benchmark
            dataset the runs left to do lack is built (default: logged).

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
        if settings.build_data and settings.data_origin != "dsrl":
            # In this process, one at a time, before any worker needs the data; a stopped
            # build continues from its work directory at the next call.
            build_missing([run.task for run in todo], announce=on_build or logger.info)
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


def _record(out: Path, run: Run, row: dict[str, Any], agent_bytes: bytes | None) -> dict[str, Any]:
    """Write the agent, then the row (the row last: its presence marks the run finished)."""
    if agent_bytes is not None:
        atomic_write(agent_path(out, run), agent_bytes)
    row = {**row, "git_revision": _git_revision()}
    _write_json_atomically(out / "rows" / f"{run.key}.json", row)
    shutil.rmtree(run_work_dir(out, run), ignore_errors=True)  # the row replaces the checkpoint
    return row


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
