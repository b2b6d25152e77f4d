"""Disk cache for heavy, reusable arrays, keyed by checkpoint and parameters.

Dataset-wide results (attributions, score matrices, latents) are computed once
and stored as ``.npz`` under :func:`lfx_engine.config.cache_dir`. The key is a
hash of everything the result depends on (weights sha256, data fingerprint,
method, its parameters, subset) and of the engine version, so a changed input
or a new release can never return a stale result.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from lfx_engine.atomic import atomic_write, remove_stale_parts
from lfx_engine.config import cache_dir, env_megabytes
from lfx_engine.errors import ParameterError

LOG = logging.getLogger("lfx_engine.cache")
#: Default size cap of the disk cache (``LFX_CACHE_MAX_MB``).
DEFAULT_MAX_MB = 5120
NAMESPACE = re.compile(r"^[A-Za-z0-9_\-]+$")


def cache_key(parts: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable description of a result, and of the engine version.

    The one cache-key scheme: callers describe the inputs (weights sha256, data
    fingerprint, parameters); the engine version is added here, so a new release
    never serves results computed by an older one.
    """
    from lfx_engine.version import engine_version

    blob = json.dumps({"engine_version": engine_version(), **parts}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cache_path(namespace: str, parts: Mapping[str, Any]) -> Path:
    """Where the result described by ``parts`` lives (it may not exist yet)."""
    return cache_dir() / namespace / f"{cache_key(parts)}.npz"


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically, then keep the cache under its size cap."""
    # numpy's stubs match **kwds against savez's allow_pickle: bool too; every value here is an array
    atomic_write(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]
    enforce_cap(keep=path)


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Read a cached result, or None when absent or unreadable.

    Any read error (truncated, emptied or bit-flipped file: BadZipFile, CRC, zlib,
    EOF, pickle-only content) makes the entry count as missing: it is logged,
    moved out of the way and recomputed by :func:`cached`.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as bundle:
            arrays = {name: bundle[name] for name in bundle.files}
    except Exception as exc:  # noqa: BLE001 - a broken file can fail in many ways; it is never fatal
        LOG.warning("cache entry %s is unreadable (%s: %s); it will be recomputed", path, type(exc).__name__, exc)
        _discard(path)
        return None
    _touch(path)
    return arrays


def cached(namespace: str, parts: Mapping[str, Any],
           compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Return the cached arrays for ``parts``, computing and storing them on first need."""
    path = cache_path(namespace, parts)
    hit = load_arrays(path)
    if hit is not None:
        return hit
    arrays = {name: np.asarray(value) for name, value in compute().items()}
    try:
        save_arrays(path, arrays)
    except OSError as exc:  # an unwritable or full cache folder costs the reuse, never the result
        LOG.warning("could not write cache entry %s (%s); the result is not kept", path, exc)
    return arrays


def is_cached(namespace: str, parts: Mapping[str, Any]) -> bool:
    """Whether a readable result for ``parts`` is on disk (a truncated or empty file does not count)."""
    path = cache_path(namespace, parts)
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


# --------------------------------------------------------------------------- housekeeping


def max_bytes() -> int:
    """The cache's size cap: ``LFX_CACHE_MAX_MB`` (default 5120 MB)."""
    return env_megabytes("LFX_CACHE_MAX_MB", DEFAULT_MAX_MB)


def entries(root: Path | None = None) -> list[tuple[Path, int, float]]:
    """``(path, bytes, last use)`` of every cache entry, least recently used first."""
    root = root or cache_dir()
    out: list[tuple[Path, int, float]] = []
    if not root.is_dir():
        return out
    for path in root.rglob("*.npz"):
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file():
            out.append((path, stat.st_size, stat.st_mtime))
    return sorted(out, key=lambda item: item[2])


def enforce_cap(keep: Path | None = None) -> list[Path]:
    """Evict least-recently-used entries until the cache holds at most 90 % of its cap; returns what went."""
    cap = max_bytes()
    found = entries()
    total = sum(size for _, size, _ in found)
    evicted: list[Path] = []
    if total <= cap:
        return evicted
    for path, size, _ in found:
        if total <= 0.9 * cap:
            break
        if keep is not None and path == keep:
            continue
        _discard(path)
        total -= size
        evicted.append(path)
    if evicted:
        LOG.info("cache over its %d MB cap: evicted %d entries", cap // 2 ** 20, len(evicted))
    return evicted


def clean_start() -> list[Path]:
    """Remove the temporary files killed writes left in the cache (called when the app or a CLI starts)."""
    return remove_stale_parts(cache_dir())


def info() -> dict[str, Any]:
    """Folder, cap, and entries and bytes per namespace."""
    root = cache_dir()
    per: dict[str, dict[str, int]] = {}
    for path, size, _ in entries(root):
        namespace = path.parent.relative_to(root).as_posix()
        row = per.setdefault(namespace, {"entries": 0, "bytes": 0})
        row["entries"] += 1
        row["bytes"] += size
    return {"folder": str(root), "cap_bytes": max_bytes(), "namespaces": per,
            "entries": sum(r["entries"] for r in per.values()), "bytes": sum(r["bytes"] for r in per.values())}


def clear(namespace: str | None = None) -> int:
    """Delete every entry (or one namespace's); returns how many were deleted."""
    root = cache_dir()
    if namespace is not None and (not NAMESPACE.match(namespace) or namespace in (".", "..")):
        raise ParameterError("a cache namespace is a folder name of letters, digits, '_' and '-'")
    target = root / namespace if namespace else root
    count = 0
    for path, _, _ in entries(target):
        _discard(path)
        count += 1
    remove_stale_parts(target, older_than_s=0)
    return count


def _touch(path: Path) -> None:
    """Mark an entry as just used (eviction removes the least recently used)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
