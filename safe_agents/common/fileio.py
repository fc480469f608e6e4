"""Writing files so that no reader ever sees half of one: the one helper every writer uses.

A file is written to a temporary file with a unique name in the same folder, flushed to disk, and
renamed over the destination (``os.replace``, atomic on POSIX and Windows). A writer killed part
way leaves the old file (or none) and at most a hidden temporary, which it removes when it can.
Concurrent writers of one destination never share a temporary name; the last rename wins.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
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


def atomic_write(path: str | os.PathLike, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    data = content.encode() if isinstance(content, str) else content
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)
