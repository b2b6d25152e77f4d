"""Where the engine reads data, writes caches and results, and which device it uses.

All locations are configurable through environment variables so nothing depends
on the working directory:

* ``LFX_DATA_DIR``     datasets (default ``~/.cache/lfx_explorer/data``)
* ``LFX_CACHE_DIR``    precomputed arrays (default ``<repo>/.lfx_cache``)
* ``LFX_RESULTS_DIR``  experiment outputs (default ``<repo>/results``)
* ``LFX_CHECKPOINT_DIR`` pretrained encoders (default ``<repo>/checkpoints``)
* ``LFX_DEVICE``       force ``cpu`` or ``cuda``
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = Path.home() / ".cache" / "lfx_explorer" / "data"


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """Folder holding the dataset bundles (``LFX_DATA_DIR``)."""
    return _env_path("LFX_DATA_DIR", DEFAULT_DATA_DIR)


def cache_dir() -> Path:
    """Folder for disk caches of heavy, reusable results (``LFX_CACHE_DIR``)."""
    return _env_path("LFX_CACHE_DIR", REPO_ROOT / ".lfx_cache")


def results_dir() -> Path:
    """Folder for experiment outputs (``LFX_RESULTS_DIR``)."""
    return _env_path("LFX_RESULTS_DIR", REPO_ROOT / "results")


def checkpoint_dir() -> Path:
    """Folder with the shipped encoders and their manifest (``LFX_CHECKPOINT_DIR``)."""
    return _env_path("LFX_CHECKPOINT_DIR", REPO_ROOT / "checkpoints")


def default_device() -> torch.device:
    """CUDA when available (unless ``LFX_DEVICE`` says otherwise), else CPU."""
    forced = os.environ.get("LFX_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
