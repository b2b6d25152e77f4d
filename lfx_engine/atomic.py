"""Atomic file writes, the one helper for the whole engine: readers never see a half-written file.

Datasets, checkpoints, the zoo manifest and cache entries are all written here.
Each file is written to a hidden temporary file (``.NAME.XXXX.part``) in the destination folder,
flushed and fsync'ed, then moved over the destination with ``os.replace``
(atomic on POSIX and Windows within one filesystem). If writing fails or is
interrupted, the temporary file is removed and any existing destination is
left untouched.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

Writer = Callable[[BinaryIO], object]  # its return value is ignored (e.g. fh.write's count)


def _fsync_dir(folder: Path) -> None:
    """Persist the directory entry of a rename (best effort; not possible on every OS)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


PART_SUFFIX = ".part"


def atomic_write_many(items: Sequence[tuple[Path, Writer]], mode: int | None = None) -> list[Path]:
    """Write several files so that none is replaced unless all were written completely.

    ``items`` pairs each destination with a function that writes the content to
    a binary file object. Returns the destination paths.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for destination, write in items:
            destination = Path(destination)
            destination.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=PART_SUFFIX,
                                             dir=destination.parent)
            temp = Path(temp_name)
            temps.append((temp, destination))
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            if mode is not None:
                os.chmod(temp, mode)
        for temp, destination in temps:
            os.replace(temp, destination)
    except BaseException:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        raise
    for folder in {destination.parent for _, destination in temps}:
        _fsync_dir(folder)
    return [destination for _, destination in temps]


def atomic_write(destination: Path, write: Writer, mode: int | None = None) -> Path:
    """Write one file atomically (see :func:`atomic_write_many`); ``mode`` sets its permissions."""
    return atomic_write_many([(destination, write)], mode)[0]


def remove_stale_parts(folder: Path, older_than_s: float = 3600.0) -> list[Path]:
    """Delete the temporary files that killed writes left below ``folder`` (those older than ``older_than_s``).

    A live writer's temporary file is younger than that, so it is left alone.
    """
    import time

    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for path in folder.rglob(f".*{PART_SUFFIX}"):
        try:
            if path.is_file() and now - path.stat().st_mtime >= older_than_s:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed
