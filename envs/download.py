"""DSRL's datasets by task id: the file the ``dsrl`` package names, downloaded once into the cache.

Every number in the four papers and in OSRL is computed on DSRL's data. :func:`download_dsrl`
fetches a task's file from the address ``dsrl.infos.DATASET_URLS`` records for it (or from a
mirror, :data:`MIRROR_ENV_VAR`), reusing a copy already in ``dsrl``'s own cache
(``$DSRL_DATASET_DIR``, default ``~/.dsrl/datasets``). The download

- shows a progress bar over bytes;
- writes to a hidden ``.part`` file beside the destination and renames it only once the whole file
  has arrived and reads as a DSRL dataset, so the destination never holds a partial file;
- resumes an interrupted transfer with an HTTP ``Range`` request (a server that ignores ranges
  restarts it from the first byte), up to ``retries`` times in one call; a later call resumes
  what an earlier one left;
- holds a lock file while it runs, so two processes never write one file;
- gives up on a host that does not answer within ``timeout`` seconds with a one-line
  :class:`DownloadError` that names the offline alternative, ``safe-agents collect``.

Users normally call :func:`envs.load_dataset` with ``origin="dsrl"`` or ``"auto"``.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from envs.datasets import DatasetError, cache_dir, read_hdf5
from envs.tasks import get_task

_LOG = logging.getLogger(__name__)

#: A mirror of DSRL's download folder, e.g. ``http://data.my-cluster/dsrl/``: the task's file
#: name is appended to it. For clusters without outside access.
MIRROR_ENV_VAR = "SAFE_AGENTS_DSRL_URL"
#: ``dsrl``'s own cache folder variable (read, never written).
DSRL_CACHE_ENV_VAR = "DSRL_DATASET_DIR"
#: Seconds to wait for the host to connect or send the next bytes.
DEFAULT_TIMEOUT = 30.0
_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(OSError):
    """A DSRL file that could not be downloaded; the message is one line and says what to do."""


class _Interrupted(Exception):
    """The transfer stopped part way; what arrived stays in the ``.part`` file for a resume."""


def dsrl_url(task_id: str) -> str:
    """The address of ``task_id``'s DSRL file: ``dsrl.infos.DATASET_URLS``, or the mirror's.

    Raises:
        UnknownTaskError: an unknown task id.
        DatasetError: the task has no DSRL dataset (the package's own toy task).
    """
    spec = get_task(task_id)
    if spec.dsrl_name is None:
        raise DatasetError(
            f"{task_id} is this package's own task and has no DSRL dataset; its dataset ships "
            "with the package (origin='local')"
        )
    from envs import _compat

    infos = _compat.import_dsrl_infos()
    if infos is None:  # get_task needed it too; kept for the type checker
        raise ImportError("DSRL's addresses come from the dsrl package; run scripts/install.sh")
    url = str(infos.DATASET_URLS[spec.dsrl_name])
    mirror = os.environ.get(MIRROR_ENV_VAR)
    if mirror:
        return mirror.rstrip("/") + "/" + _file_name_of(url)
    return url


def dsrl_file_name(task_id: str) -> str:
    """DSRL's file name for ``task_id``, e.g. ``SafetyCarCircle-v0-100-1450.hdf5``."""
    return _file_name_of(dsrl_url(task_id))


def _file_name_of(url: str) -> str:
    return Path(urllib.parse.urlparse(url).path).name


def dsrl_cache_dir() -> Path:
    """``dsrl``'s own cache: ``$DSRL_DATASET_DIR``, else ``~/.dsrl/datasets``."""
    override = os.environ.get(DSRL_CACHE_ENV_VAR)
    return Path(override) if override else Path.home() / ".dsrl" / "datasets"


def download_dir() -> Path:
    """Where downloaded DSRL files are kept: ``<envs.cache_dir()>/dsrl``."""
    return cache_dir() / "dsrl"


def dsrl_locations(task_id: str) -> list[Path]:
    """Where a downloaded copy of ``task_id``'s DSRL file may already be, in order."""
    name = dsrl_file_name(task_id)
    return [download_dir() / name, dsrl_cache_dir() / name]


def find_dsrl_file(task_id: str) -> Path | None:
    """A copy of ``task_id``'s DSRL file already on this machine, or None."""
    return next((path for path in dsrl_locations(task_id) if path.is_file()), None)


def download_dsrl(
    task_id: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 3,
    progress_bar: bool = True,
) -> Path:
    """The path of ``task_id``'s DSRL file, downloaded into :func:`download_dir` if needed.

    A copy in this package's cache or in ``dsrl``'s is used as it is (no connection is made).

    Args:
        task_id: a registered DSRL task id.
        timeout: seconds to wait for the host to connect and between bytes.
        retries: how many times one call resumes a transfer that stopped part way.
        progress_bar: show a tqdm bar over bytes.

    Raises:
        DownloadError: the host cannot be reached, answers with an error, or the transfer keeps
            stopping (what arrived is kept; call again to resume).
        DatasetError: the finished file is not a DSRL dataset (it is deleted).
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    found = find_dsrl_file(task_id)
    if found is not None:
        return found
    url = dsrl_url(task_id)
    destination = download_dir() / _file_name_of(url)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(destination.with_name(f".{destination.name}.lock")):
        if destination.is_file():  # another process finished it while this one waited
            return destination
        partial = destination.with_name(f".{destination.name}.part")
        for attempt in range(retries + 1):
            try:
                _transfer(url, partial, timeout, progress_bar, task_id)
                break
            except _Interrupted as error:
                if attempt == retries:
                    size = partial.stat().st_size if partial.exists() else 0
                    raise DownloadError(
                        f"the download of {url} stopped {retries + 1} time(s) ({error}); "
                        f"{size:,} bytes are kept in {partial}: call again to resume"
                    ) from None
                _LOG.warning("download of %s stopped (%s); resuming", url, error)
                time.sleep(min(0.5 * 2**attempt, 5.0))
        try:
            # The whole file must read as a DSRL dataset, cost labels included, before it is used.
            if not read_hdf5(partial).has_costs:
                raise DatasetError("it has no 'costs', which every DSRL dataset has")
        except DatasetError as error:
            partial.unlink(missing_ok=True)
            raise DatasetError(
                f"{url} did not serve a DSRL dataset (the file was deleted): {error}"
            ) from error
        os.replace(partial, destination)
    _LOG.info("downloaded %s to %s", url, destination)
    return destination


def _transfer(url: str, partial: Path, timeout: float, progress_bar: bool, task_id: str) -> None:
    """Fetch ``url`` into ``partial``, continuing from its current size when the server can."""
    from tqdm.auto import tqdm

    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "safe-agents"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the kept bytes do not fit the file any more: restart
            partial.unlink()
            raise _Interrupted("the server refused to resume; restarting") from None
        raise DownloadError(
            f"{url} answered HTTP {error.code} {error.reason}; {_offline_hint(task_id)}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"cannot reach {urllib.parse.urlparse(url).netloc} for {_file_name_of(url)} "
            f"({reason}, timeout {timeout:g} s); {_offline_hint(task_id)}"
        ) from None
    with response:
        try:
            total = _expected_size(response, have)
        except _Interrupted:
            partial.unlink()
            raise
        if response.status == 200 and have:  # the server ignored the range: start again
            have = 0
        mode = "ab" if have else "wb"
        with (
            open(partial, mode) as handle,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=_file_name_of(url),
                disable=not progress_bar,
            ) as bar,
        ):
            received = have
            try:
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as error:
                raise _Interrupted(f"after {received:,} bytes: {error!r}") from None
    if total is not None and received != total:
        raise _Interrupted(f"{received:,} of {total:,} bytes arrived")


def _expected_size(response: http.client.HTTPResponse, have: int) -> int | None:
    """The full file size the response announces (None when it does not say)."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != have:
            raise _Interrupted("the server resumed from another byte; restarting")
        return None if match.group(3) == "*" else int(match.group(3))
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _offline_hint(task_id: str) -> str:
    return (
        f"without the internet, build a dataset here with `safe-agents collect --task {task_id}`, "
        f"or set {MIRROR_ENV_VAR} to a mirror of DSRL's files"
    )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``; no lock where it is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: one downloader at a time is the user's business
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
