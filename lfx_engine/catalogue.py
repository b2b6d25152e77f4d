"""The one catalogue of models and datasets: the shipped zoo, the user's project files and Python registrations.

Everything that lists, loads or explains a model asks this module: the app's
:class:`~lfx_engine.explorer.Explorer`, the experiments' ``ModelHub``, ``lfx
check`` and ``lfx serve``. A :class:`ModelEntry` says where a model comes from
(``zoo``, ``study`` — imported from the reproduction study with ``lfx zoo
import-study`` —, ``user`` or ``python``), which dataset it explains, the hash of its
weights (part of every cache key), the views it supports, and why it cannot be
used when it cannot. A bad entry is listed with its problem and never hides
the others or the zoo.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from lfx_engine.config import checkpoint_dir, data_dir, project_files, study_dir
from lfx_engine.errors import CheckpointError, DatasetUnavailableError, LFXError, ParameterError

SplitData = tuple[torch.Tensor, torch.Tensor]
#: Every view a model can support, in the app's order.
VIEWS = ("saliency", "masking", "examples", "tracin", "influence", "disentanglement", "lucent")
#: Sources whose models use the engine's own architectures: our zoo, and the study's imported models.
BUILTIN_SOURCES = ("zoo", "study")
#: Names of the study's imported models start with this (``study_mnist_betavae_b1_run1``).
STUDY_PREFIX = "study_"


def source_prefix(source: str) -> str:
    """The name prefix of a built-in source's models: ``study_`` for the study's, nothing for our zoo."""
    return STUDY_PREFIX if source == "study" else ""
#: Feature methods that need no gradient (they still work on a model that cannot be differentiated).
GRADIENT_FREE_FEATURE_METHODS = ("occlusion",)


@dataclass
class DatasetEntry:
    """A dataset as the catalogue lists it. ``class_names`` is empty for unlabelled data."""

    name: str
    title: str
    source: str
    input_shape: tuple[int, ...] | None
    class_names: tuple[str, ...]
    status: str
    problem: str = ""
    paths: list[str] = field(default_factory=list)
    fetch_command: str | None = None
    baseline: Any = "zeros"
    notes: list[str] = field(default_factory=list)
    loader: Callable[[str], SplitData] | None = None
    fingerprinter: Callable[[], str] | None = None

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)

    @property
    def is_series(self) -> bool:
        return self.input_shape is not None and len(self.input_shape) == 2

    @property
    def available(self) -> bool:
        return self.status == "present"


@dataclass
class ModelEntry:
    """A model as the catalogue lists it; ``problem`` says why it cannot be explained (empty when it can)."""

    name: str
    dataset: str
    source: str
    experiment: str
    task: str
    latent_dim: int
    sha256: str
    record: dict[str, Any]
    beta: float | None = None
    run: int = 1
    title: str = ""
    problem: str = ""
    #: view -> None when supported, else the reason it is not
    unsupported: dict[str, str] = field(default_factory=dict)
    train_split: str = "train"
    test_split: str = "test"
    resize32: bool = False
    loader: Callable[[torch.device], nn.Module] | None = None
    tracin_loader: Callable[[], list[dict[str, torch.Tensor]]] | None = None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problem

    def supports(self, view: str) -> bool:
        return view not in self.unsupported


# --------------------------------------------------------------------------- Python registrations

_PY_DATASETS: dict[str, DatasetEntry] = {}
_PY_MODELS: dict[str, dict[str, Any]] = {}
_REG_LOCK = threading.Lock()


def register_dataset(name: str, x_train: torch.Tensor | np.ndarray, x_test: torch.Tensor | np.ndarray | None = None,
                     y_train: Any = None, y_test: Any = None, *, class_names: tuple[str, ...] | list[str] = (),
                     baseline: Any = "zeros", title: str | None = None, test_fraction: float = 0.2) -> DatasetEntry:
    """Register in-memory data as a catalogue dataset (a notebook's counterpart of ``[datasets.NAME]``).

    Images are ``(N, C, H, W)`` float, series ``(N, T, 1)``; labels are optional
    (unlabelled data gets ``-1``). Without ``x_test`` a seeded ``test_fraction``
    is held out.
    """
    from lfx_engine.project.datasets import LoadedDataset, _fingerprint, split_indices
    from lfx_engine.project.schema import BASELINES, NAME_PATTERN

    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ParameterError(f"dataset name {name!r}: start with a letter, use letters, digits, '_' or '-'")
    if isinstance(baseline, str) and baseline not in BASELINES:
        raise ParameterError(f"baseline must be one of {', '.join(BASELINES)} or a number, got {baseline!r}")
    x_tr = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    if x_tr.dim() == 2:
        x_tr = x_tr[:, :, None]
    if x_tr.dim() not in (3, 4) or len(x_tr) < 2:
        raise ParameterError(f"x_train must hold at least 2 images (N,C,H,W) or series (N,T,1), got {tuple(x_tr.shape)}")
    if not torch.isfinite(x_tr).all():
        raise ParameterError("x_train holds NaN or infinite values")

    def labels(y: Any, n: int) -> torch.Tensor:
        return torch.full((n,), -1, dtype=torch.long) if y is None else torch.as_tensor(np.asarray(y)).long().reshape(-1)

    if x_test is None:
        split = split_indices(len(x_tr), test_fraction, 0)
        if split is None or not 0 < test_fraction < 1:
            raise ParameterError(f"{len(x_tr)} inputs cannot be split with test_fraction {test_fraction}; pass x_test")
        y_all = labels(y_train, len(x_tr))
        train_idx, test_idx = (torch.from_numpy(i) for i in split)
        x_te, y_te, x_tr, y_tr = x_tr[test_idx], y_all[test_idx], x_tr[train_idx], y_all[train_idx]
    else:
        x_te = torch.as_tensor(np.asarray(x_test, dtype=np.float32))
        if x_te.dim() == 2:
            x_te = x_te[:, :, None]
        y_tr, y_te = labels(y_train, len(x_tr)), labels(y_test, len(x_te))
    if tuple(x_te.shape[1:]) != tuple(x_tr.shape[1:]):
        raise ParameterError(f"x_test has shape {tuple(x_te.shape[1:])} per input, x_train {tuple(x_tr.shape[1:])}")
    names = tuple(class_names)
    if (y_tr >= 0).any() and not names:
        names = tuple(str(c) for c in range(int(max(y_tr.max(), y_te.max())) + 1))
    data = LoadedDataset(x_tr.contiguous(), y_tr, x_te.contiguous(), y_te, names,
                         _fingerprint(x_tr.numpy(), y_tr.numpy(), x_te.numpy(), y_te.numpy()))
    entry = _user_dataset_entry(name, title or name, "python", lambda: data, baseline)
    with _REG_LOCK:
        _PY_DATASETS[name] = entry
    return entry


def register_model(name: str, model: nn.Module, dataset: str, *, encoder: str = "encoder", decoder: str | None = None,
                   loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "mse", kind: str | None = None,
                   mu: str = "output", title: str | None = None,
                   tracin_states: list[dict[str, torch.Tensor]] | None = None) -> ModelEntry:
    """Register an in-memory model (a notebook's counterpart of ``[models.NAME]``); returns its checked entry."""
    from lfx_engine.project.schema import NAME_PATTERN

    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ParameterError(f"model name {name!r}: start with a letter, use letters, digits, '_' or '-'")
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    with _REG_LOCK:
        _PY_MODELS[name] = {"model": model, "dataset": dataset, "encoder": encoder, "decoder": decoder, "loss": loss,
                            "kind": kind, "mu": mu, "title": title, "tracin_states": tracin_states}
    entry = Catalogue().model_entry(name)
    if entry.problem:
        raise ParameterError(f"model {name} was registered but cannot be explained: {entry.problem}")
    return entry


def unregister(name: str) -> None:
    """Forget a model or dataset registered from Python."""
    with _REG_LOCK:
        _PY_MODELS.pop(name, None)
        _PY_DATASETS.pop(name, None)


def _user_dataset_entry(name: str, title: str, source: str, data: Callable[[], Any], baseline: Any,
                        paths: list[str] | None = None) -> DatasetEntry:
    """A user dataset's entry: its shape, classes, notes and fingerprint from ``data()`` now, its splits from
    ``data()`` on each load (a registration's arrays, or a project file's, which the split cache may let go)."""
    first = data()

    def loader(split: str) -> SplitData:
        loaded = data()
        if split == "train":
            return loaded.x_train, loaded.y_train
        if split == "test":
            return loaded.x_test, loaded.y_test
        raise ParameterError(f"dataset {name} has the splits train and test, not {split!r}")

    fingerprint = first.fingerprint
    return DatasetEntry(name=name, title=title, source=source, input_shape=first.input_shape,
                        class_names=first.class_names, status="present", paths=paths or [], baseline=baseline,
                        notes=list(first.notes), loader=loader, fingerprinter=lambda: fingerprint)


def _project_dataset_entry(cfg: Any, title: str, paths: list[str], signature: tuple) -> DatasetEntry:
    """A project file's dataset, held by the split cache (``lfx_engine.data.splits.cached_user_data``), where the
    memory budget counts it and may let it go; read from its files again when asked after that."""
    from lfx_engine.data.splits import cached_user_data
    from lfx_engine.project.datasets import load_dataset

    return _user_dataset_entry(
        cfg.name, title, "user", lambda: cached_user_data(cfg.name, signature, lambda: load_dataset(cfg),
                                                           _loaded_nbytes),
        cfg.get("baseline", "zeros"), paths)


def _loaded_nbytes(data: Any) -> int:
    """Bytes of a user dataset's four tensors."""
    return int(sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train, data.x_test, data.y_test)))


# --------------------------------------------------------------------------- the catalogue


class Catalogue:
    """Datasets and models of this process: zoo manifest, project files (``LFX_PROJECT``) and registrations.

    Cheap to build: the zoo manifest and project files are re-read only when
    they change, user datasets are loaded once, and every user model is loaded
    and probed once (by file signature) to fill in its dimension and views.
    """

    _shared_lock = threading.Lock()
    _datasets_memo: dict[tuple, DatasetEntry] = {}
    _models_memo: dict[tuple, ModelEntry] = {}
    _projects_memo: dict[tuple, Any] = {}

    def __init__(self, checkpoint_root: str | Path | None = None, projects: Sequence[str | Path] | None = None,
                 study_root: str | Path | None = None) -> None:
        self._root = Path(checkpoint_root) if checkpoint_root is not None else None
        self._study_root = Path(study_root) if study_root is not None else None
        self._projects = [Path(p).expanduser().resolve() for p in projects] if projects is not None else None

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else checkpoint_dir()

    @property
    def study_root(self) -> Path:
        """Folder of the models imported from the reproduction study (``LFX_STUDY_DIR``)."""
        return self._study_root if self._study_root is not None else study_dir()

    @property
    def projects(self) -> list[Path]:
        return self._projects if self._projects is not None else project_files()

    # ------------------------------------------------------------------ datasets
    def datasets(self) -> list[DatasetEntry]:
        """Built-in datasets (with their status here), then user and Python ones."""
        out = [self._builtin_dataset(name) for name in _builtin_names()]
        for project in self._parsed_projects():
            for cfg in project.datasets.values():
                out.append(self._project_dataset(project, cfg))
        out.extend(_PY_DATASETS.values())
        return out

    def dataset_entry(self, name: str) -> DatasetEntry:
        """One dataset by name; ParameterError listing the names if unknown."""
        if name in _builtin_names():
            return self._builtin_dataset(name)
        if name in _PY_DATASETS:
            return _PY_DATASETS[name]
        for project in self._parsed_projects():
            if name in project.datasets:
                return self._project_dataset(project, project.datasets[name])
        known = [d.name for d in self.datasets()]
        raise ParameterError(f"unknown dataset ({len(str(name))} characters); known datasets: {', '.join(known)}")

    def split(self, dataset: str, split: str) -> SplitData:
        """``(x, y)`` of a dataset split; DatasetUnavailableError with the fix when it cannot be loaded."""
        entry = self.dataset_entry(dataset)
        if not entry.available or entry.loader is None:
            raise DatasetUnavailableError(f"dataset {entry.title} is {entry.status}: {entry.problem}")
        return entry.loader(split)

    def fingerprint(self, dataset: str) -> str:
        """A digest of the dataset's content (files for built-ins, arrays for user data), for cache keys."""
        entry = self.dataset_entry(dataset)
        return entry.fingerprinter() if entry.fingerprinter is not None else ""

    def _builtin_dataset(self, name: str) -> DatasetEntry:
        from lfx_engine.data import get_spec, load_split
        from lfx_engine.data.readers import describe

        spec = get_spec(name)
        folder = data_dir()
        # pages ask for the dataset list many times a run: describe (which reads the files' headers, and counts a
        # TSV's lines) only when a file appears, changes or goes
        key = ("builtin", name, str(folder), _signature(spec.paths(folder)))
        with self._shared_lock:
            hit = self._datasets_memo.get(key)
        if hit is not None:
            return hit
        status = describe(name, folder)

        def loader(split: str) -> SplitData:
            data = load_split(name, split)
            return data.x, data.y

        def fingerprinter() -> str:
            from lfx_engine.experiments.common import data_fingerprint

            try:
                return ",".join(f"{k}:{v}" for k, v in sorted(data_fingerprint(name).items()))
            except OSError:
                return "unavailable"

        entry = DatasetEntry(name=name, title=spec.title, source="builtin", input_shape=spec.input_shape,
                             class_names=spec.class_names, status=status.status, problem=status.problem or "",
                             paths=[str(p) for p in status.paths], fetch_command=spec.fetch_command,
                             baseline=spec.baseline_kind, loader=loader, fingerprinter=fingerprinter)
        with self._shared_lock:
            self._datasets_memo[key] = entry
        return entry

    def _project_dataset(self, project: Any, cfg: Any) -> DatasetEntry:
        key = ("dataset", str(project.path), cfg.name, _signature([cfg.get("path"), cfg.get("test_path")]),
               repr(sorted((k, str(v)) for k, v in cfg.values.items())))
        with self._shared_lock:
            hit = self._datasets_memo.get(key)
        if hit is not None:
            return hit
        title = str(cfg.get("title") or cfg.name)
        paths = [str(p) for p in (cfg.get("path"), cfg.get("test_path")) if p is not None]
        if cfg.problems:
            entry = DatasetEntry(cfg.name, title, "user", None, (), "error",
                                 "; ".join(str(p) for p in cfg.problems), paths)
        else:
            try:
                entry = _project_dataset_entry(cfg, title, paths, key[1:])
            except LFXError as exc:
                entry = DatasetEntry(cfg.name, title, "user", None, (), "error", str(exc), paths)
        with self._shared_lock:
            self._datasets_memo[key] = entry
        return entry

    # ------------------------------------------------------------------ models
    def zoo_records(self) -> dict[str, dict[str, Any]]:
        """Manifest records of the trained models whose checkpoint file exists (the one manifest reader).

        The zoo's folder first, then the study folder; every record carries
        ``source`` (``zoo`` or ``study``) and ``root`` (the folder its file is in).
        """
        return self._zoo()[0]

    def zoo_problems(self) -> list[tuple[str, str]]:
        """Manifest records skipped by the schema (or the whole file), with why."""
        return self._zoo()[1]

    def _zoo(self) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
        from lfx_engine.training.zoo import manifest_path

        root, study = self.root, self.study_root
        # every model lookup lands here (several per request): merge the two folders once per manifest change
        key = ("zoo+study", str(root), str(study), _signature([manifest_path(root), manifest_path(study)]))
        with self._shared_lock:
            hit = self._projects_memo.get(key)
        if hit is not None:
            return hit
        records, problems = self._folder_records(root, "zoo")
        if study.resolve() != root.resolve():
            extra, extra_problems = self._folder_records(study, "study")
            clashes = [name for name in extra if name in records]
            records = {**records, **{k: v for k, v in extra.items() if k not in records}}
            problems = problems + extra_problems + [(name, "a study model has a zoo model's name; it is skipped")
                                                    for name in clashes]
        with self._shared_lock:
            for stale in [k for k in self._projects_memo if k[:3] == key[:3]]:  # earlier versions of the manifests
                del self._projects_memo[stale]
            self._projects_memo[key] = (records, problems)
        return records, problems

    def _folder_records(self, root: Path, source: str) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
        from lfx_engine.training.manifest import valid_records
        from lfx_engine.training.zoo import manifest_path

        if not root.is_dir():
            return {}, []
        # re-read only when the manifest changes: pages ask for entries many times a run
        key = ("zoo", str(root), source, _signature([manifest_path(root)]))
        with self._shared_lock:
            hit = self._projects_memo.get(key)
        if hit is None:
            records, problems = valid_records(root)
            present = {name: {**rec, "source": source, "root": str(root)} for name, rec in records.items()
                       if (root / rec["file"]).is_file()}
            hit = (present, problems)
            with self._shared_lock:
                self._projects_memo[key] = hit
        return hit

    def models(self) -> list[ModelEntry]:
        """Every model: trained zoo entries, then project models, then Python registrations (bad ones included)."""
        out = [self._zoo_entry(name, rec) for name, rec in self.zoo_records().items()]
        for project in self._parsed_projects():
            for cfg in project.models.values():
                out.append(self._project_model(project, cfg))
        for name in list(_PY_MODELS):
            out.append(self._python_model(name))
        return out

    def model_entry(self, name: str) -> ModelEntry:
        """One model by name; ParameterError (without echoing the name) if unknown."""
        if name in _PY_MODELS:
            return self._python_model(name)
        for project in self._parsed_projects():
            if name in project.models:
                return self._project_model(project, project.models[name])
        records = self.zoo_records()
        if name in records:
            return self._zoo_entry(name, records[name])
        raise ParameterError(f"unknown model ({len(str(name))} characters); `lfx zoo list` and `lfx check` list them")

    def load_model(self, name: str, device: torch.device | str = "cpu") -> nn.Module:
        """The model in eval mode on ``device`` (loaded afresh; callers cache it)."""
        entry = self.model_entry(name)
        if entry.problem or entry.loader is None:
            raise CheckpointError(f"model {entry.name} cannot be loaded: {entry.problem}")
        return entry.loader(torch.device(device)).eval()

    def _zoo_entry(self, name: str, rec: dict[str, Any]) -> ModelEntry:
        from lfx_engine.example_importance.gradients import l1_per_example, mse_per_example
        from lfx_engine.training.io import load_state_dict
        from lfx_engine.training.zoo import ZOO, load_entry, tracin_checkpoint_paths

        recipe = ZOO.get(name)
        splits = _default_splits(rec)
        root = Path(rec.get("root") or self.root)
        source = str(rec.get("source") or "zoo")
        task = str(rec.get("task", ""))
        unsupported: dict[str, str] = {}
        is_ae = task in ("reconstruction", "denoising", "inpainting")
        if not is_ae:
            kind = "a classifier" if task == "classification" else "a VAE"
            for view in ("tracin", "influence"):
                unsupported[view] = (f"differentiates an autoencoder's reconstruction loss; {name} is {kind}. Pick an "
                                     "autoencoder (e.g. the dataset's consistency model).")
        elif not rec.get("tracin_checkpoints") and source == "study":
            unsupported["tracin"] = ("needs saved training checkpoints, and the reproduction study published none "
                                     "for its models: pick one of our consistency models for TracIn")
        elif not rec.get("tracin_checkpoints"):
            unsupported["tracin"] = (f"needs saved training checkpoints; {name} was trained without them: pick a "
                                     f"consistency model or retrain with `lfx train {name}`")
        if task not in ("betavae", "btcvae"):
            unsupported["disentanglement"] = "per-unit maps are for VAEs"
        if rec.get("dataset") == "ecg5000":
            unsupported["lucent"] = "torch-lucent optimises images; it does not apply to a 1-D series encoder"

        def tracin_loader() -> list[dict[str, torch.Tensor]]:
            return [load_state_dict(path, expected_sha256=sha)[0] for _, path, sha in tracin_checkpoint_paths(name, root)]

        return ModelEntry(
            name=name, dataset=str(rec.get("dataset")), source=source, experiment=str(rec.get("experiment", "")),
            task=task, latent_dim=int(rec.get("latent_dim", 0) or 0), sha256=str(rec.get("sha256")), record=rec,
            beta=rec.get("beta"), run=int(rec.get("run", 1) or 1), unsupported=unsupported,
            train_split=recipe.split if recipe else splits[0],
            test_split=(recipe.test_split or "test") if recipe else splits[1],
            resize32=bool(recipe.resize32) if recipe else rec.get("arch") == "vae_mnist32",
            loader=lambda device: load_entry(name, root, device=device),
            tracin_loader=tracin_loader,
            loss_fn=l1_per_example if rec.get("dataset") == "ecg5000" else mse_per_example)

    def _project_model(self, project: Any, cfg: Any) -> ModelEntry:
        from lfx_engine.project.loading import build_project_model

        files = [cfg.get("weights"), cfg.get("archive"), cfg.get("decoder_archive"), *(cfg.get("tracin_checkpoints")
                                                                                       or [])]
        dataset_cfg = project.datasets.get(cfg.get("dataset"))
        key = ("model", str(project.path), cfg.name, _signature(files),
               repr(sorted((k, str(v)) for k, v in cfg.values.items())),
               _signature([dataset_cfg.get("path"), dataset_cfg.get("test_path")]) if dataset_cfg else None,
               _module_signature(cfg.get("factory"), [project.folder, *project.python_path]))
        with self._shared_lock:
            hit = self._models_memo.get(key)
        if hit is not None:
            return hit
        entry = build_project_model(self, project, cfg)
        with self._shared_lock:
            self._models_memo[key] = entry
        return entry

    def _python_model(self, name: str) -> ModelEntry:
        from lfx_engine.project.loading import build_python_model

        spec = _PY_MODELS[name]
        if "entry" not in spec:  # probed once per registration (register_model again to re-check)
            spec["entry"] = build_python_model(self, name, spec)
        return spec["entry"]

    def _parsed_projects(self) -> list[Any]:
        from lfx_engine.project.schema import parse_project

        out = []
        for path in self.projects:
            key = ("project", str(path), _signature([path]))
            with self._shared_lock:
                hit = self._projects_memo.get(key)
            if hit is None:
                hit = parse_project(path, tuple(_builtin_names()))
                with self._shared_lock:
                    self._projects_memo[key] = hit
            out.append(hit)
        return out

    def project_problems(self) -> list[tuple[Path, str]]:
        """File-level problems of the project files (unreadable, bad TOML, unknown tables)."""
        return [(p.path, str(problem)) for p in self._parsed_projects() for problem in p.problems]


def _default_splits(rec: dict[str, Any]) -> tuple[str, str]:
    """(train, test) splits of a model without a zoo recipe (the study's): ECG depends on the experiment."""
    if rec.get("dataset") != "ecg5000":
        return "train", "test"
    if "consistency_features" in (rec.get("used_by") or []):
        return "features_train", "features_test"
    return "examples_train", "examples_test"


def _builtin_names() -> list[str]:
    from lfx_engine.data import list_datasets

    return list_datasets()


def _signature(paths: list[Any]) -> tuple:
    """(path, size, mtime) of each file (or folder listing), so an edited file is re-read."""
    out: list[tuple[str, int | None, int | None, int | None]] = []
    for item in paths:
        if item is None:
            continue
        path = Path(item)
        try:
            stat = path.stat()
            extra = len(list(path.rglob("*"))) if path.is_dir() else 0
            out.append((str(path), stat.st_size, stat.st_mtime_ns, extra))
        except OSError:
            out.append((str(path), None, None, None))
    return tuple(out)


def _module_signature(factory: Any, folders: list[Path]) -> tuple:
    """The factory module's source file signature, when it lies in the project's folders."""
    if not isinstance(factory, str) or ":" not in factory:
        return ()
    parts = factory.split(":", 1)[0].split(".")
    for folder in folders:
        for candidate in (folder.joinpath(*parts).with_suffix(".py"), folder.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return _signature([candidate])
    return ()
