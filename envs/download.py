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

import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from envs.cache import cache_dir
from envs.tasks import get_task
from safe_agents.common.dataset import DatasetError, DatasetTooLargeError
from safe_agents.common.hdf5 import MAX_BYTES_ENV_VAR, read_hdf5

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


def dsrl_address(task_id: str) -> str:
    """DSRL's own address for ``task_id``'s file (``dsrl.infos.DATASET_URLS``; no mirror).

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
    return str(infos.DATASET_URLS[spec.dsrl_name])


def dsrl_url(task_id: str) -> str:
    """Where ``task_id``'s DSRL file is downloaded from: the mirror's folder
    (:data:`MIRROR_ENV_VAR`, the file name appended to its path) when set, else DSRL's address.

    Raises:
        DownloadError: the mirror variable is not an http(s) address.
    """
    address = dsrl_address(task_id)
    mirror = os.environ.get(MIRROR_ENV_VAR)
    if not mirror:
        return address
    parts = urllib.parse.urlsplit(mirror)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(
            f"{MIRROR_ENV_VAR}={public_address(mirror)!r} is not an http(s) address of a "
            "folder holding DSRL's files"
        )
    path = parts.path.rstrip("/") + "/" + _file_name_of(address)
    return urllib.parse.urlunsplit(parts._replace(path=path))  # a query (signed URL) is kept


def public_address(url: str) -> str:
    """``url`` without user, password or query: what may be printed or stored."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def dsrl_file_name(task_id: str) -> str:
    """DSRL's file name for ``task_id``, e.g. ``SafetyCarCircle-v0-100-1450.hdf5``."""
    return _file_name_of(dsrl_address(task_id))


def _file_name_of(url: str) -> str:
    return Path(urllib.parse.urlsplit(url).path).name


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
    reuse_dsrl_cache: bool = True,
) -> Path:
    """The path of ``task_id``'s DSRL file, downloaded into :func:`download_dir` if needed.

    A copy in this package's cache, or in ``dsrl``'s (with ``reuse_dsrl_cache``), is returned as
    it is, without a connection.

    Args:
        task_id: a registered DSRL task id.
        timeout: seconds to wait for the host to connect and between bytes (name resolution is
            the system resolver's business and is not bounded by it).
        retries: how many times one call resumes a transfer that stopped part way or could not
            reconnect.
        progress_bar: show a tqdm bar over bytes.
        reuse_dsrl_cache: return a copy found in ``dsrl``'s cache (False: download into this
            package's cache instead, e.g. when that copy is damaged).

    Raises:
        DownloadError: the host cannot be reached, answers with an error, or the transfer keeps
            stopping (what arrived is kept; call again to resume).
        DatasetError: the finished file is not a DSRL dataset (it is deleted).
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    destination = download_dir() / dsrl_file_name(task_id)
    found = find_dsrl_file(task_id) if reuse_dsrl_cache else None
    if found is not None or destination.is_file():
        return found or destination
    url = dsrl_url(task_id)
    shown = public_address(url)
    destination.parent.mkdir(parents=True, exist_ok=True)
    from safe_agents.common.fileio import exclusive_lock

    lock = destination.with_name(f".{destination.name}.lock")
    with exclusive_lock(lock, wait=True, what=f"downloading {shown}"):
        if destination.is_file():  # another process finished it while this one waited
            return destination
        partial = _Partial(destination)
        for attempt in range(retries + 1):
            try:
                _transfer(url, partial, timeout, progress_bar, task_id, resuming=attempt > 0)
                break
            except _Interrupted as error:
                if attempt == retries:
                    raise DownloadError(
                        f"the download of {shown} stopped {retries + 1} time(s) ({error}); "
                        f"{partial.size():,} bytes are kept in {partial.path}: call again to "
                        "resume"
                    ) from None
                _LOG.warning("download of %s stopped (%s); resuming", shown, error)
                time.sleep(min(0.5 * 2**attempt, 5.0))
        try:
            # The whole file must read as a DSRL dataset, cost labels included, before it is used.
            if not read_hdf5(partial.path).has_costs:
                raise DatasetError("it has no 'costs', which every DSRL dataset has")
        except DatasetTooLargeError as error:  # a good file, too large for this machine: kept
            raise DatasetTooLargeError(
                f"{shown} arrived complete but is too large to read here ({error}); it is kept "
                f"in {partial.path}: raise {MAX_BYTES_ENV_VAR} and call again"
            ) from None
        except DatasetError as error:
            partial.discard()
            raise DatasetError(
                f"{shown} did not serve a DSRL dataset (the file was deleted): {error}"
            ) from error
        os.replace(partial.path, destination)
        partial.discard()
    _LOG.info("downloaded %s to %s", shown, destination)
    return destination


class _Partial:
    """The ``.part`` file of a download and its record: the address, the server's validator
    (ETag or Last-Modified, for ``If-Range``) and the full size, so that a resume appends only
    to bytes of the same file."""

    def __init__(self, destination: Path) -> None:
        self.path = destination.with_name(f".{destination.name}.part")
        self.record_path = destination.with_name(f".{destination.name}.part.json")

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def record(self) -> dict[str, Any]:
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def start(self, url: str, validator: str | None, total: int | None) -> None:
        """A new body begins: forget what was kept, remember what this body is."""
        self.path.unlink(missing_ok=True)
        from safe_agents.common.fileio import atomic_write

        record = {"url": url, "validator": validator, "total": total}
        atomic_write(self.record_path, json.dumps(record))

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.record_path.unlink(missing_ok=True)


def _transfer(
    url: str, partial: _Partial, timeout: float, progress_bar: bool, task_id: str, resuming: bool
) -> None:
    """Fetch ``url`` into ``partial``, continuing from its current size when the server can."""
    from tqdm.auto import tqdm

    record = partial.record()
    have = partial.size()
    if have and record.get("url") != url:  # bytes of another address: never append to them
        partial.discard()
        have = 0
    headers = {"User-Agent": "safe-agents"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if record.get("validator"):
            # The server sends the whole file again (200) if it changed since the kept bytes.
            headers["If-Range"] = str(record["validator"])
    shown = public_address(url)
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:
            match = re.fullmatch(r"bytes \*/(\d+)", error.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == have == record.get("total"):
                return  # everything had arrived already (e.g. stopped during validation)
            partial.discard()
            raise _Interrupted("the server refused to resume; restarting") from None
        if error.code >= 500:  # the server's trouble, often passing
            raise _Interrupted(f"HTTP {error.code} {error.reason}") from None
        raise DownloadError(
            f"{shown} answered HTTP {error.code} {error.reason}; {_offline_hint(task_id)}"
        ) from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", error)
        if resuming or have:  # it answered before: a passing failure, try again
            raise _Interrupted(f"reconnecting failed: {reason}") from None
        raise DownloadError(
            f"cannot reach {urllib.parse.urlsplit(shown).netloc} for {_file_name_of(url)} "
            f"({reason}, timeout {timeout:g} s); {_offline_hint(task_id)}"
        ) from None
    with response:
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            total = None if match is None or match.group(3) == "*" else int(match.group(3))
            if match is None or int(match.group(1)) != have or total != record.get("total"):
                partial.discard()  # not the continuation of the kept bytes
                raise _Interrupted("the server resumed another file or byte; restarting")
        else:  # 200: the whole file (first request, a server without ranges, a changed file)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            partial.start(url, validator, total)
            have = 0
        received = have
        with (
            open(partial.path, "ab") as handle,
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
            try:
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as error:
                raise _Interrupted(f"after {received:,} bytes: {error!r}") from None
            finally:
                handle.flush()
                os.fsync(handle.fileno())  # on disk before the rename that publishes it
    if total is not None and received != total:
        raise _Interrupted(f"{received:,} of {total:,} bytes arrived")


def _offline_hint(task_id: str) -> str:
    return (
        f"without the internet, build a dataset here with `safe-agents collect --task {task_id}`, "
        f"or set {MIRROR_ENV_VAR} to a mirror of DSRL's files"
    )
