"""Where the engine reads data, writes caches and results, and which device it uses.

All locations are configurable through environment variables so nothing depends
on the working directory:

* ``LFX_DATA_DIR``     datasets (default ``~/.cache/lfx_explorer/data``)
* ``LFX_CACHE_DIR``    precomputed arrays (default ``<repo>/.lfx_cache`` in a checkout)
* ``LFX_RESULTS_DIR``  experiment outputs (default ``<repo>/results`` in a checkout)
* ``LFX_CHECKPOINT_DIR`` pretrained encoders (default ``<repo>/checkpoints`` in a checkout)
* ``LFX_STUDY_DIR``    models imported from the reproduction study (``lfx zoo import-study``); always a
  user folder by default, never the checkout (the study's repository has no licence)
* ``LFX_PROJECT``      project files (``lfx.toml``) whose models and datasets join the catalogue,
  separated by ``os.pathsep``
* ``LFX_DEVICE``       force ``cpu`` or ``cuda``

Installed from a wheel (no checkout around the package), the defaults move to
the user's folders (platformdirs), so nothing is ever written into site-packages.
"""
from __future__ import annotations

import functools
import os
import re
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
    return _resolved(value) if value else default


@functools.lru_cache(maxsize=64)
def _resolved(value: str) -> Path:
    """An environment variable's folder, resolved once per value (pages ask for it thousands of times a run)."""
    return Path(value).expanduser().resolve()


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


def study_dir() -> Path:
    """Folder of the models converted from the reproduction study's repository (``LFX_STUDY_DIR``).

    The default is the user's data folder even in a checkout: converted weights
    must never land in the repository.
    """
    return _env_path("LFX_STUDY_DIR", _user_dir("data", "study-models"))


def writable_folder(path: str | os.PathLike | Path, what: str) -> Path:
    """``path`` as a folder that exists (created if needed) and can be written; ParameterError saying why not.

    Checked before long work starts, so a typo in ``--out`` or ``--results`` costs a second, not an hour.
    """
    import tempfile

    from lfx_engine.errors import ParameterError

    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = "it is a file, not a folder" if folder.is_file() else (exc.strerror or type(exc).__name__)
        raise ParameterError(f"{what} {folder} cannot be used: {reason}; choose a writable folder") from None
    return folder.resolve()


def env_megabytes(var: str, default_mb: float) -> int:
    """Bytes from a size setting in MB (``LFX_MEMORY_MB``, ``LFX_CACHE_MAX_MB``): the default when unset or not
    a number (with a warning), at least 1 MB."""
    raw = os.environ.get(var, "")
    try:
        value = float(raw) if raw else default_mb
    except ValueError:
        import logging

        logging.getLogger("lfx_engine").warning("%s=%r is not a number; using %g MB", var, raw[:40], default_mb)
        value = default_mb
    return int(max(value, 1.0) * 2 ** 20)


def project_files() -> list[Path]:
    """Project files named by ``LFX_PROJECT`` (``os.pathsep``-separated), in order."""
    value = os.environ.get("LFX_PROJECT", "")
    return [Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part.strip()]


def parse_device(value: str, what: str = "the device") -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device; ParameterError for anything else or a missing GPU."""
    from lfx_engine.errors import ParameterError

    text = str(value).strip().lower()
    if text != "cpu" and not re.fullmatch(r"cuda(:\d{1,2})?", text):
        raise ParameterError(f"{what} must be cpu, cuda or cuda:N, got {len(str(value))} characters that are not one")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"{what} asks for {text}, but no CUDA device is available here; use cpu")
    return torch.device(text)


def default_device() -> torch.device:
    """CUDA when available (unless ``LFX_DEVICE`` says otherwise), else CPU."""
    forced = os.environ.get("LFX_DEVICE")
    if forced:
        return parse_device(forced, "LFX_DEVICE")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
