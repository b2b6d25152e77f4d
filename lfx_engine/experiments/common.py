"""Shared machinery of the experiments: result object, model hub, cache wrapper, results writer.

Every experiment is a pure function ``run_<experiment>(dataset, ...)`` that
returns an :class:`ExperimentResult` (tidy tables, arrays, figures, parameters,
the checkpoints used) or raises :class:`ExperimentSkipped` when its dataset or
checkpoints are not available here. :func:`write_result` / :func:`write_skipped`
put a result into ``<results>/<experiment>/<dataset>/``; the folder is built
next to its final place and swapped in, so a re-run replaces it and never
appends (METHOD.md §9).

Heavy intermediates (attributions, score matrices, renders) go through
:mod:`lfx_engine.cache`, keyed by the checkpoint sha256, the data files' sha256
and every parameter, so the CLI and the app share them.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine import cache
from lfx_engine.config import REPO_ROOT, cache_dir, checkpoint_dir, data_dir, default_device, results_dir
from lfx_engine.data import get_spec
from lfx_engine.data.readers import describe
from lfx_engine.errors import CheckpointError, LFXError, ParameterError

ProgressFn = Callable[[int, int], None]
LogFn = Callable[[str], None]

#: Bumped when the meaning of a cached intermediate changes (old entries are then ignored).
CACHE_VERSION = 1

EXPERIMENTS = ("consistency_features", "consistency_examples", "pretext", "disvae", "lucid", "encoder_vs_full")

#: Datasets each experiment covers (METHOD.md §7); ``all`` runs exactly these pairs.
EXPERIMENT_DATASETS: dict[str, tuple[str, ...]] = {
    "consistency_features": ("mnist", "ecg5000", "cifar10", "cifar100"),
    "consistency_examples": ("mnist", "ecg5000", "cifar10", "cifar100"),
    "pretext": ("mnist", "cifar10", "cifar100"),
    "disvae": ("mnist", "dsprites", "cifar10", "cifar100"),
    "lucid": ("mnist", "cifar10", "cifar100"),
    "encoder_vs_full": ("mnist",),
}

#: Datasets an experiment accepts when asked explicitly (a superset of the ``all`` pairs).
EXPERIMENT_ACCEPTS: dict[str, tuple[str, ...]] = {
    **EXPERIMENT_DATASETS,
    "encoder_vs_full": ("mnist", "cifar10", "cifar100"),
}


class ExperimentSkipped(LFXError):
    """The experiment cannot run here (dataset or checkpoints missing); ``reason`` says why and how to fix."""

    def __init__(self, experiment: str, dataset: str, reason: str) -> None:
        super().__init__(f"{experiment} on {dataset} skipped: {reason}")
        self.experiment = experiment
        self.dataset = dataset
        self.reason = reason


@dataclass
class ExperimentResult:
    """Everything one experiment on one dataset produced, ready to be written or shown.

    ``tables`` are tidy DataFrames (one CSV each), ``arrays`` small numeric
    arrays worth keeping (written to ``arrays.npz``), ``figures`` altair charts or
    matplotlib figures (one PNG each), ``latex`` LaTeX sources (one ``.tex``
    each). ``params`` are the parameters actually used, ``checkpoints`` one
    record per model (name, file, sha256, run, seed), ``summary`` the headline
    numbers/verdicts, ``notes`` human-readable remarks (subsampling, skipped parts).
    """

    experiment: str
    dataset: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    latex: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: remarks that change how the result may be read (models left out, no verdict possible); run.json
    #: lists them first among the notes, the app shows them as warnings
    warnings: list[str] = field(default_factory=list)
    n_runs: int | None = None
    #: whose models were explained: ``zoo`` (ours) or ``study`` (the reproduction study's, imported)
    model_source: str = "zoo"
    wall_time_s: float = 0.0
    cache_stats: dict[str, int] = field(default_factory=lambda: {"hits": 0, "misses": 0, "disabled": 0})


# --------------------------------------------------------------------------- reporting


class Reporter:
    """Routes stage messages to ``log`` and job counts to ``progress`` (both optional)."""

    def __init__(self, progress: ProgressFn | None = None, log: LogFn | None = None, total: int = 0) -> None:
        self.progress = progress
        self.log_fn = log
        self.total = total
        self.done = 0

    def log(self, message: str) -> None:
        if self.log_fn is not None:
            self.log_fn(message)

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.progress is not None and self.total:
            self.progress(min(self.done, self.total), self.total)


# --------------------------------------------------------------------------- models


class ModelHub:
    """Trained zoo models of one checkpoint folder: discovery, verified loading, TracIn states.

    Experiments take their models from a hub, so the app can pass one that
    shares its already-loaded models (override :meth:`load`). Models are loaded
    once, in eval mode, and must not be modified by callers (experiments work on
    copies where a method needs to change weights or hooks).
    """

    def __init__(self, root: str | os.PathLike | None = None, device: torch.device | str | None = None) -> None:
        self.root = Path(root) if root is not None else checkpoint_dir()
        self.device = torch.device(device) if device is not None else default_device()
        self._models: dict[str, nn.Module] = {}

    def records(self) -> dict[str, dict[str, Any]]:
        """Manifest records of the trained models whose checkpoint file exists."""
        from lfx_engine.catalogue import Catalogue

        return Catalogue(self.root).zoo_records()

    def find(self, dataset: str, experiment: str | None = None, task: str | None = None,
             source: str = "zoo") -> list[dict[str, Any]]:
        """Trained records of ``dataset`` (optionally one experiment/task), sorted by task, beta, run.

        ``source``: ``zoo`` (our own models), ``study`` (imported from the reproduction study) or ``all``.
        """
        check_model_source(source, allow_all=True)
        rows = [r for r in self.records().values()
                if r.get("dataset") == dataset
                and (source == "all" or r.get("source", "zoo") == source)
                and (experiment is None or r.get("experiment") == experiment)
                and (task is None or r.get("task") == task)]
        return sorted(rows, key=lambda r: (str(r.get("task")), float(r.get("beta") or 0), int(r.get("run") or 0),
                                           r["name"]))

    def has(self, name: str) -> bool:
        """Whether ``name`` is trained and its file present."""
        return name in self.records()

    def record(self, name: str) -> dict[str, Any]:
        """The manifest record of a trained model; CheckpointError if it is not trained."""
        records = self.records()
        if name not in records:
            raise CheckpointError(f"model {name!r} is not trained in {self.root}; "
                                  f"run `python -m lfx_engine train {name}`")
        return records[name]

    def load(self, name: str) -> nn.Module:
        """The trained model (sha256-verified, eval mode, on the hub's device), loaded once."""
        if name not in self._models:
            from lfx_engine.training.zoo import load_entry

            self._models[name] = load_entry(name, self.folder(name), device=self.device).eval()
        return self._models[name]

    def tracin_states(self, name: str) -> list[tuple[int, dict[str, torch.Tensor], str]]:
        """``(epoch, state_dict, sha256)`` of each saved TracIn checkpoint (verified), in epoch order."""
        from lfx_engine.training.io import load_state_dict
        from lfx_engine.training.zoo import tracin_checkpoint_paths

        out = []
        for epoch, path, sha in tracin_checkpoint_paths(name, self.folder(name)):
            state, _ = load_state_dict(path, expected_sha256=sha)
            out.append((int(epoch), state, sha))
        return out

    def folder(self, name: str) -> Path:
        """The folder holding a trained model's file (the zoo's, or the study folder for imported models)."""
        return Path(self.record(name).get("root") or self.root)

    def describe(self, name: str) -> dict[str, Any]:
        """What run.json records about a checkpoint: file, sha256, run, seed, training extent, origin."""
        rec = self.record(name)
        keys = ("name", "file", "sha256", "arch", "task", "beta", "run", "seed", "latent_dim", "epochs_trained",
                "best_epoch", "full_recipe", "storage_dtype", "command", "source", "study")
        out = {k: rec.get(k) for k in keys}
        out["tracin_checkpoints"] = [{"epoch": t.get("epoch"), "sha256": t.get("sha256")}
                                     for t in rec.get("tracin_checkpoints", []) or []]
        return out


def check_model_source(source: Any, allow_all: bool = False) -> str:
    """``source`` if it names a model source (``zoo``, ``study``; ``all`` where allowed), else ParameterError."""
    from lfx_engine.catalogue import BUILTIN_SOURCES

    allowed = BUILTIN_SOURCES + (("all",) if allow_all else ())
    if source not in allowed:
        raise ParameterError(f"models must be one of {', '.join(allowed)}, got {source!r}")
    return str(source)


def study_hint(dataset: str) -> str:
    """How to get the study's models, for a skip message."""
    return (f"import the reproduction study's models first: clone https://github.com/jwagenbach/FACT and run "
            f"`lfx zoo import-study PATH` (they go to LFX_STUDY_DIR); {dataset} needs its files under results/")


def require_dataset(experiment: str, dataset: str) -> None:
    """Raise :class:`ExperimentSkipped` when ``dataset`` is unsupported here or its files are absent."""
    accepted = EXPERIMENT_ACCEPTS[experiment]
    if dataset not in accepted:
        raise ParameterError(f"{experiment} runs on {', '.join(accepted)}, not {dataset!r}")
    status = describe(dataset, data_dir())
    if status.status != "present":
        spec = get_spec(dataset)
        raise ExperimentSkipped(
            experiment, dataset,
            f"dataset {dataset} is {status.status} in {data_dir()} ({status.problem}); fetch it with "
            f"`{spec.fetch_command}` or point LFX_DATA_DIR at a folder holding {', '.join(spec.files)}")


def require_models(experiment: str, dataset: str, hub: ModelHub, names: Sequence[str], what: str,
                   source: str = "zoo") -> None:
    """Raise :class:`ExperimentSkipped` when none of ``names`` is trained."""
    if not any(hub.has(n) for n in names) and source == "study":
        raise ExperimentSkipped(experiment, dataset, f"no study model for {what} ({names[0]}); {study_hint(dataset)}")
    if not any(hub.has(n) for n in names):
        shown = ", ".join(list(names)[:4]) + (", ..." if len(names) > 4 else "")
        raise ExperimentSkipped(
            experiment, dataset,
            f"no trained checkpoint for {what} ({shown}) in {hub.root}; train with "
            f"`python -m lfx_engine train {names[0] if len(names) == 1 else shorten_pattern(names)}`")


def shorten_pattern(names: Sequence[str]) -> str:
    """A quoted glob covering ``names`` (their common prefix + ``*``)."""
    prefix = os.path.commonprefix(list(names))
    return f"'{prefix}*'" if prefix else names[0]


# --------------------------------------------------------------------------- data fingerprint and cache


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(dataset: str) -> dict[str, str]:
    """sha256 of each of the dataset's files in the data directory (memoised by size and mtime)."""
    out = {}
    for path in get_spec(dataset).paths(data_dir()):
        stat = path.stat()
        out[path.name] = _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)
    return out


def cached_arrays(result: ExperimentResult | None, namespace: str, parts: Mapping[str, Any],
                  compute: Callable[[], Mapping[str, Any]], use_cache: bool = True) -> dict[str, np.ndarray]:
    """:func:`lfx_engine.cache.cached` with hit/miss bookkeeping on ``result`` and an off switch."""
    key = {"cache_version": CACHE_VERSION, **parts}
    if not use_cache:
        if result is not None:
            result.cache_stats["disabled"] += 1
        return {k: np.asarray(v) for k, v in compute().items()}
    hit = cache.is_cached(namespace, key)
    arrays = cache.cached(namespace, key, compute)
    if result is not None:
        result.cache_stats["hits" if hit else "misses"] += 1
    return arrays


def subset_digest(indices: torch.Tensor | np.ndarray) -> str:
    """Short sha256 of an index vector (part of cache keys of subset-based results)."""
    arr = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------- small helpers


def take_first(x: torch.Tensor, n: int | None) -> torch.Tensor:
    """The first ``n`` rows (all when None); ParameterError for n outside 1..len(x)."""
    if n is None:
        return x
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n:
        raise ParameterError(f"--n-test must be a positive integer, got {n!r}")
    return x[: min(n, len(x))]


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """ParameterError unless ``value`` is a positive int (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")


def finite_or_none(value: Any) -> Any:
    """NaN/inf → None so JSON stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- writing


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "captum", "numpy", "pandas", "scipy", "altair", "vl-convert-python", "matplotlib",
                 "torch-lucent", "kornia", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def git_state() -> dict[str, Any]:
    """Commit and dirtiness of the repository the engine runs from (None outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return finite_or_none(float(value))
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, torch.device)):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def _clean_json(value: Any) -> Any:
    """Replace non-finite floats by None recursively (strict JSON)."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    return value


def dump_json(data: Any) -> str:
    """Strict, indented JSON (NaN → null)."""
    return json.dumps(_clean_json(json.loads(json.dumps(data, default=_json_default))), indent=1,
                      allow_nan=False) + "\n"


def save_figure(figure: Any, path: Path) -> None:
    """Write an altair chart (via vl-convert) or a matplotlib figure as PNG."""
    if type(figure).__module__.startswith("altair"):
        import vl_convert

        png = vl_convert.vegalite_to_png(vl_spec=figure.to_json(), scale=2)
        path.write_bytes(png)
        return
    if hasattr(figure, "savefig"):
        figure.savefig(path, dpi=110, bbox_inches="tight")
        if getattr(figure.canvas, "manager", None) is not None:  # a caller's pyplot figure: release its window
            import matplotlib.pyplot as plt

            plt.close(figure)
        return
    raise ParameterError(f"cannot save a figure of type {type(figure).__name__}")


def result_folder(experiment: str, dataset: str, results: str | os.PathLike | None = None,
                  model_source: str = "zoo") -> Path:
    """``<results>/<experiment>/<dataset>`` (``<dataset>-study`` for the study's models).

    ``results`` defaults to :func:`lfx_engine.config.results_dir`.
    """
    root = Path(results).expanduser().resolve() if results is not None else results_dir()
    return root / experiment / (dataset if model_source == "zoo" else f"{dataset}-{check_model_source(model_source)}")


def _replace_folder(target: Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder with ``fill(tmp)`` next to ``target``, then swap it in (old copy removed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        fill(tmp)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _environment(device: Any = None) -> dict[str, Any]:
    return {
        "library_versions": library_versions(),
        "platform": platform.platform(),
        "device": str(device) if device is not None else str(default_device()),
        "torch_threads": torch.get_num_threads(),
        "git": git_state(),
        "data_dir": str(data_dir()),
        "checkpoint_dir": str(checkpoint_dir()),
        "cache_dir": str(cache_dir()),
    }


def write_result(result: ExperimentResult, results: str | os.PathLike | None = None,
                 command: str | None = None, started_at: str | None = None) -> Path:
    """Write a result into a fresh ``<results>/<experiment>/<dataset>/`` (replacing any earlier one).

    Files: ``<table>.csv`` per table, ``<figure>.png`` per figure, ``<name>.tex``
    per LaTeX table, ``arrays.npz`` when there are arrays, and ``run.json``
    (checkpoints with sha256, parameters, seeds, wall time, versions, summary).
    """
    target = result_folder(result.experiment, result.dataset, results, result.model_source)

    def fill(folder: Path) -> None:
        written: list[str] = []
        for name, table in result.tables.items():
            table.to_csv(folder / f"{name}.csv", index=False, float_format="%.10g")
            written.append(f"{name}.csv")
        for name, text in result.latex.items():
            (folder / f"{name}.tex").write_text(text + "\n", encoding="utf-8")
            written.append(f"{name}.tex")
        for name, figure in result.figures.items():
            save_figure(figure, folder / f"{name}.png")
            written.append(f"{name}.png")
        if result.arrays:
            # numpy's stubs match **kwds against allow_pickle: bool too; every value here is an array
            np.savez_compressed(folder / "arrays.npz",
                                **{k: np.asarray(v) for k, v in result.arrays.items()})  # type: ignore[arg-type]
            written.append("arrays.npz")
        run = {
            "experiment": result.experiment,
            "dataset": result.dataset,
            "model_source": result.model_source,
            "status": "ok",
            "command": command,
            "started_at": started_at,
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": round(result.wall_time_s, 3),
            "n_runs": result.n_runs,
            "parameters": result.params,
            "seeds": result.seeds,
            "checkpoints": result.checkpoints,
            "data_sha256": _safe_fingerprint(result.dataset),
            "summary": result.summary,
            "notes": [*result.warnings, *result.notes],
            "warnings": result.warnings,
            "cache": dict(result.cache_stats),
            "files": sorted(written + ["run.json"]),
            **_environment(result.params.get("device")),
        }
        (folder / "run.json").write_text(dump_json(run), encoding="utf-8")

    return _replace_folder(target, fill)


def _safe_fingerprint(dataset: str) -> dict[str, str] | None:
    try:
        return data_fingerprint(dataset)
    except (OSError, LFXError):
        return None


def write_skipped(experiment: str, dataset: str, reason: str, results: str | os.PathLike | None = None,
                  command: str | None = None, params: Mapping[str, Any] | None = None,
                  model_source: str = "zoo") -> Path:
    """Write ``<results>/<experiment>/<dataset>/skipped.json`` (replacing any earlier folder)."""
    target = result_folder(experiment, dataset, results, model_source)

    def fill(folder: Path) -> None:
        record = {"experiment": experiment, "dataset": dataset, "status": "skipped", "reason": reason,
                  "command": command, "parameters": dict(params or {}),
                  "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "data_dir": str(data_dir()), "checkpoint_dir": str(checkpoint_dir()),
                  "model_source": model_source}
        (folder / "skipped.json").write_text(dump_json(record), encoding="utf-8")

    return _replace_folder(target, fill)


# --------------------------------------------------------------------------- figure helpers


def image_for_display(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(C,H,W)`` in [0,1] → ``(H,W)`` (gray) or ``(H,W,3)`` for imshow."""
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return np.clip(a, 0.0, 1.0)


def new_figure(rows: int, cols: int, cell: float = 1.3) -> tuple[Any, np.ndarray]:
    """A matplotlib figure with a ``rows × cols`` grid of axes, ticks off.

    Made without pyplot, so it is not registered as an open window: a run that builds one per model (disvae on
    24 models) holds them until they are saved without pyplot's "more than 20 figures" warning, and the figure
    is freed with its last reference.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cell * cols, cell * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def first_per_class(y: torch.Tensor | np.ndarray, n_classes: int, limit: int = 10) -> list[int]:
    """Index of the first occurrence of each class 0..limit-1 present in ``y``."""
    labels = np.asarray(y)
    out = []
    for cls in range(min(n_classes, limit)):
        hits = np.nonzero(labels == cls)[0]
        if hits.size:
            out.append(int(hits[0]))
    return out


def to_device(device: torch.device | str | None) -> torch.device:
    """``device`` or the engine default."""
    return torch.device(device) if device is not None else default_device()


def now_iso() -> str:
    """Current UTC time, ISO 8601 seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
