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
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from lfx_engine.config import cache_dir


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
    """Write ``arrays`` to ``path`` atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Read a cached result, or None when absent or unreadable (it is then recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as bundle:
            return {name: bundle[name] for name in bundle.files}
    except (OSError, ValueError, KeyError):
        return None


def cached(namespace: str, parts: Mapping[str, Any],
           compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Return the cached arrays for ``parts``, computing and storing them on first need."""
    path = cache_path(namespace, parts)
    hit = load_arrays(path)
    if hit is not None:
        return hit
    arrays = {name: np.asarray(value) for name, value in compute().items()}
    save_arrays(path, arrays)
    return arrays


def is_cached(namespace: str, parts: Mapping[str, Any]) -> bool:
    """Whether the result for ``parts`` is already on disk."""
    return cache_path(namespace, parts).is_file()
