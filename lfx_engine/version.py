"""The engine's version, read from the installed package metadata (the one place it is written is pyproject.toml)."""
from __future__ import annotations

import functools
from importlib import metadata

DISTRIBUTION = "lfx-explorer"


@functools.lru_cache(maxsize=1)
def engine_version() -> str:
    """``lfx-explorer``'s version: package metadata when installed, else the checkout's pyproject.toml."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    from lfx_engine.config import REPO_ROOT

    try:
        with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"
