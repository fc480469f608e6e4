"""Writing files so that no reader ever sees half of one: the one helper every writer uses;
and the one exclusive lock that keeps two processes from writing the same files.

A file is written to a temporary file with a unique name in the same folder, flushed to disk, and
renamed over the destination (``os.replace``, atomic on POSIX and Windows). A writer killed part
way leaves the old file (or none) and at most a hidden temporary, which it removes when it can.
Concurrent writers of one destination never share a temporary name; the last rename wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_LOG = logging.getLogger(__name__)


class LockHeld(OSError):
    """Another process holds the lock (raised by :func:`exclusive_lock` with ``wait=False``)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, it becomes
    ``path``. For libraries that write to a path themselves (h5py, zipfile, matplotlib).

    Args:
        path: the destination; its folder is created if needed.
        suffix: the temporary's suffix (matplotlib picks the format from it: give ``".png"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    data = content.encode() if isinstance(content, str) else content
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, wait: bool, what: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) while the block runs.

    The lock dies with the process that holds it, so a killed holder never leaves it taken.

    Args:
        path: the lock file.
        wait: block until the lock is free (logging once that it waits); otherwise raise
            :class:`LockHeld` at once.
        what: what the lock guards, for the log line.

    Where ``flock`` is missing (Windows) or refused (some network file systems), the block runs
    without a lock, with a warning in the second case.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as handle:
        locked = True
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise LockHeld(f"{path} is held by another process") from None
                _LOG.warning("waiting for another process %s", what or f"holding {path}")
                fcntl.flock(handle, fcntl.LOCK_EX)
        except LockHeld:
            raise
        except OSError as error:
            _LOG.warning("cannot lock %s (%s); going on without a lock", path, error)
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)
