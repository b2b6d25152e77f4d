"""Where the engine reads data, writes caches and results, and which device it uses.

All locations are configurable through environment variables so nothing depends
on the working directory:

* ``LFX_DATA_DIR``     datasets (default ``~/.cache/lfx_explorer/data``)
* ``LFX_CACHE_DIR``    precomputed arrays (default ``<repo>/.lfx_cache`` in a checkout)
* ``LFX_RESULTS_DIR``  experiment outputs (default ``<repo>/results`` in a checkout)
* ``LFX_CHECKPOINT_DIR`` pretrained encoders (default ``<repo>/checkpoints`` in a checkout)
* ``LFX_PROJECT``      project files (``lfx.toml``) whose models and datasets join the catalogue,
  separated by ``os.pathsep``
* ``LFX_DEVICE``       force ``cpu`` or ``cuda``

Installed from a wheel (no checkout around the package), the defaults move to
the user's folders (platformdirs), so nothing is ever written into site-packages.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = Path.home() / ".cache" / "lfx_explorer" / "data"
APP_NAME = "lfx-explorer"


def in_checkout() -> bool:
    """Whether the engine runs from a source checkout (editable install or cwd), not an installed wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "app.py").is_file()


def _user_dir(kind: str, *parts: str) -> Path:
    import platformdirs

    base = platformdirs.user_cache_dir(APP_NAME) if kind == "cache" else platformdirs.user_data_dir(APP_NAME)
    return Path(base, *parts)


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """Folder holding the dataset bundles (``LFX_DATA_DIR``)."""
    return _env_path("LFX_DATA_DIR", DEFAULT_DATA_DIR)


def cache_dir() -> Path:
    """Folder for disk caches of heavy, reusable results (``LFX_CACHE_DIR``)."""
    return _env_path("LFX_CACHE_DIR", REPO_ROOT / ".lfx_cache" if in_checkout() else _user_dir("cache"))


def results_dir() -> Path:
    """Folder for experiment outputs (``LFX_RESULTS_DIR``)."""
    return _env_path("LFX_RESULTS_DIR", REPO_ROOT / "results" if in_checkout() else _user_dir("data", "results"))


def checkpoint_dir() -> Path:
    """Folder with the shipped encoders and their manifest (``LFX_CHECKPOINT_DIR``)."""
    return _env_path("LFX_CHECKPOINT_DIR",
                     REPO_ROOT / "checkpoints" if in_checkout() else _user_dir("data", "checkpoints"))


def project_files() -> list[Path]:
    """Project files named by ``LFX_PROJECT`` (``os.pathsep``-separated), in order."""
    value = os.environ.get("LFX_PROJECT", "")
    return [Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part.strip()]


def default_device() -> torch.device:
    """CUDA when available (unless ``LFX_DEVICE`` says otherwise), else CPU."""
    forced = os.environ.get("LFX_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
