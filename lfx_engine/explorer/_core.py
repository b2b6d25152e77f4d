"""The explorer's core: the catalogue's models and datasets for one app process, their data, samples and cache keys.

Models are loaded once, kept in eval mode and never mutated: every engine function the views
use explains a model without changing it.

Memory: what the explorer keeps for the next request (models, the dataset splits read from files, their
32×32 resizes and fitted example indices) is counted against one budget, ``LFX_MEMORY_MB``, and the least
recently used goes first when a load goes over it (:meth:`ExplorerCore.held_bytes`, :meth:`ExplorerCore.held`).
Each use is recorded with the user the caller named for its thread (:meth:`ExplorerCore.bind_user`; the app
names its sessions), so :meth:`ExplorerCore.release` can give back what only ended sessions used; memory
freed that way is returned to the operating system (:func:`trim_memory`).
"""
from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine import cache
from lfx_engine.catalogue import BUILTIN_SOURCES, GRADIENT_FREE_FEATURE_METHODS, Catalogue, ModelEntry
from lfx_engine.config import default_device, env_megabytes
from lfx_engine.data import (
    balanced_subset_indices,
    baseline,
    get_spec,
    resize_to_32,
)
from lfx_engine.data import splits as data_splits
from lfx_engine.errors import ParameterError
from lfx_engine.metrics.masking_controls import random_init_key
from lfx_engine.project.datasets import make_baseline
from lfx_engine.training.zoo import ZOO

Progress = Callable[[int, int], None] | None
#: Default memory budget of one explorer's models, dataset splits and derived arrays (``LFX_MEMORY_MB``).
DEFAULT_MEMORY_MB = 4096


def memory_budget() -> int:
    """Bytes an explorer may hold in models, dataset splits and derived arrays: ``LFX_MEMORY_MB`` (default 4096 MB)."""
    return env_megabytes("LFX_MEMORY_MB", DEFAULT_MEMORY_MB)


def trim_memory() -> None:
    """Collect garbage and hand freed heap pages back to the operating system (glibc ``malloc_trim``).

    Large tensors are mapped and unmapped on their own; the many small blocks of models and arrays stay in
    the allocator's heap until trimmed, so the process's RSS would not shrink without this.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator keeps its own pages
        pass


#: Blocks from this size (bytes) are mapped on their own and unmapped when freed (glibc's M_MMAP_THRESHOLD).
MMAP_THRESHOLD_BYTES = 4 * 2 ** 20
_M_MMAP_THRESHOLD = -3


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process (which also stops its dynamic rise); True if set.

    glibc raises the threshold each time a large block is freed (up to 32 MB); the next tensors are then carved
    from the heap and fragment it, so a long-lived server (the app) keeps memory that :func:`trim_memory` cannot
    return: measured, each round of app sessions left 80 MB more behind. Left alone where the user chose a
    threshold (``MALLOC_MMAP_THRESHOLD_``) or where the C library is not glibc.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, int(nbytes)))
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return False


@dataclass(frozen=True)
class HeldItem:
    """One thing the explorer keeps in memory: kind (model, split, resized, index), key, size, last use, users."""

    kind: str
    key: Hashable
    nbytes: int
    last_used: float
    users: frozenset = frozenset()


@dataclass
class _Use:
    last_used: float = 0.0
    users: set = field(default_factory=set)


class _Tracked(dict):
    """A cache dict whose stores count as uses (the hit path re-stores: ``d[k] = d.pop(k)``, newest last)."""

    def __init__(self, kind: str, note: Callable[[str, Hashable], None]) -> None:
        super().__init__()
        self._kind = kind
        self._note = note

    def __setitem__(self, key: Hashable, value: Any) -> None:
        super().__setitem__(key, value)
        self._note(self._kind, key)

#: Feature-importance methods offered for browsing, in display order.
FEATURE_METHODS = ("saliency", "integrated_gradients", "gradient_shap", "input_x_gradient", "deeplift",
                   "smoothgrad", "occlusion")
#: Example-importance methods, in display order.
EXAMPLE_METHODS = ("dknn", "cosine", "simplex", "tracin", "influence")
METHOD_TITLES = {
    "saliency": "Saliency", "integrated_gradients": "Integrated Gradients", "gradient_shap": "GradientShap",
    "input_x_gradient": "Input × Gradient", "deeplift": "DeepLift", "smoothgrad": "SmoothGrad",
    "occlusion": "Occlusion", "random": "Random (control)", "dknn": "DKNN", "cosine": "Cosine NN",
    "simplex": "SimplEx", "tracin": "TracIn", "influence": "Influence Functions",
    "random_informative": "Random among informative features (control)",
    "model_free": "|x − x̄|, model-free (control)",
}
#: The same method on a randomly re-initialised encoder (the model-randomisation control).
METHOD_TITLES.update({random_init_key(m): f"{METHOD_TITLES[m]} on a random encoder (control)"
                      for m in ("saliency", "integrated_gradients", "gradient_shap", "input_x_gradient", "deeplift",
                                "smoothgrad", "occlusion")})


@dataclass(frozen=True)
class ModelChoice:
    """A model of the catalogue (zoo, project file or Python registration) as the UI lists it."""

    name: str
    dataset: str
    experiment: str
    task: str
    beta: float | None
    run: int
    latent_dim: int
    record: dict[str, Any]
    source: str = "zoo"
    title: str = ""

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. 'denoising AE (run 1)'."""
        if self.source not in BUILTIN_SOURCES:
            return f"{self.title or self.name} (your {self.task})"
        prefix = "study's " if self.source == "study" else ""
        if self.task in ("betavae", "btcvae"):
            kind = "β-VAE" if self.task == "betavae" else "β-TC-VAE"
            return f"{prefix}{kind} β={self.beta:g} (run {self.run})"
        kind = "classifier" if self.task == "classification" else f"{self.task} AE"
        if self.source == "study" and self.experiment == "consistency":
            return f"study's {kind}, {self.name.rsplit('_', 1)[-1]} model"
        return f"{prefix}{kind}, {self.experiment} (run {self.run})"


class ExplorerCore:
    """Datasets, models and their data for one app process (the base of every view)."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        cache.clean_start()  # temporary files of writes killed in an earlier run
        self.catalogue = Catalogue()
        #: when each held item was last used and by whom (:meth:`bind_user`), by (kind, key)
        self._uses: dict[tuple[str, Hashable], _Use] = {}
        self._uses_lock = threading.Lock()  # taken alone, or inside ``_lock`` (never the other way round)
        self._user = threading.local()
        self._models: dict[str, nn.Module] = _Tracked("model", self._note)
        self._model_bytes: dict[str, int] = {}
        #: 32×32 resizes of built-in splits, by (dataset, split), with a weak reference to the split they came from
        self._resized: dict[tuple[str, str], tuple[Callable[[], Any], torch.Tensor]] = _Tracked("resized", self._note)
        self._subsets: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, tuple[np.ndarray, np.ndarray]]] = {}
        #: fitted example-importance indices over full training splits (arrays read from the disk cache), by key
        self._indices: dict[str, dict[str, np.ndarray]] = _Tracked("index", self._note)
        #: projection size of a gradient index by (model, weights sha256, method): see ``_projection_for_budget``
        self._projections: dict[tuple[str, str, str], int] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ discovery
    def dataset_status(self) -> list[dict[str, Any]]:
        """Each dataset (built-in and the user's): present/missing/malformed/error, where it was looked for, the fix."""
        rows = []
        for entry in self.catalogue.datasets():
            rows.append({"dataset": entry.name, "title": entry.title, "status": entry.status, "source": entry.source,
                         "problem": entry.problem, "paths": entry.paths, "input_shape": entry.input_shape,
                         "classes": len(entry.class_names), "fetch_command": entry.fetch_command})
        return rows

    def dataset_available(self, dataset: str) -> bool:
        """Whether the dataset can be loaded here."""
        return self.catalogue.dataset_entry(dataset).available

    def dataset_title(self, dataset: str) -> str:
        """The dataset's display name."""
        return self.catalogue.dataset_entry(dataset).title

    def is_labelled(self, dataset: str) -> bool:
        """Whether the dataset has class labels (unlabelled user data has none)."""
        return self.catalogue.dataset_entry(dataset).labelled

    def models(self, dataset: str | None = None, experiment: str | None = None,
               tasks: Sequence[str] | None = None) -> list[ModelChoice]:
        """Usable models of the catalogue (zoo, then the user's), optionally filtered."""
        out = []
        for entry in self.catalogue.models():
            if entry.problem:
                continue
            if dataset and entry.dataset != dataset:
                continue
            if experiment and entry.experiment != experiment:
                continue
            if tasks and entry.task not in tasks:
                continue
            out.append(_as_choice(entry))
        return out

    def model_problems(self) -> list[dict[str, str]]:
        """Models, datasets and project files that cannot be used, each with its problem (for Home and `lfx check`)."""
        rows = [{"kind": "project file", "name": str(path), "problem": problem}
                for path, problem in self.catalogue.project_problems()]
        rows += [{"kind": "zoo manifest", "name": name, "problem": problem}
                 for name, problem in self.catalogue.zoo_problems()]
        rows += [{"kind": "dataset", "name": d.name, "problem": d.problem} for d in self.catalogue.datasets()
                 if d.source != "builtin" and d.problem]
        rows += [{"kind": "model", "name": m.name, "problem": m.problem} for m in self.catalogue.models() if m.problem]
        return rows

    def untrained(self, dataset: str | None = None) -> list[str]:
        """Zoo recipes that have no trained checkpoint yet."""
        trained = self.catalogue.zoo_records()
        return [name for name, recipe in ZOO.items()
                if name not in trained and (not dataset or recipe.dataset == dataset)]

    def entry(self, name: str) -> ModelEntry:
        """The catalogue entry of a usable model; ParameterError saying why otherwise."""
        entry = self.catalogue.model_entry(name)
        if entry.problem:
            raise ParameterError(f"model {entry.name} cannot be explained: {entry.problem}")
        return entry

    def choice(self, name: str) -> ModelChoice:
        """The :class:`ModelChoice` of a usable model."""
        return _as_choice(self.entry(name))

    def model(self, name: str) -> nn.Module:
        """The model (loaded once, verified, eval mode, on the explorer's device)."""
        # keyed by the weights' sha256 too, so a model retrained while the app runs is reloaded
        entry = self.entry(name)
        key = f"{name}@{entry.sha256}"
        self._working_on(name)
        with self._lock:
            if key in self._models:
                self._models[key] = self._models.pop(key)  # most recently used last
                return self._models[key]
            for old in [k for k in self._models if k.startswith(f"{name}@")]:  # weights retrained meanwhile
                del self._models[old]
            model = self.catalogue.load_model(name, device=self.device).eval()
            self._model_bytes[key] = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
            self._models[key] = model
            self._evict(keep=key)
            return model

    # ------------------------------------------------------------------ memory
    def bind_user(self, user: Hashable | None) -> None:
        """Name who uses the explorer from this thread (the app: its session); later uses are recorded for it."""
        self._user.name = user

    def _note(self, kind: str, key: Hashable) -> None:
        user = getattr(self._user, "name", None)
        with self._uses_lock:
            use = self._uses.setdefault((kind, key), _Use())
            use.last_used = time.monotonic()
            if user is not None:
                use.users.add(user)
        using = getattr(self._user, "using", None)
        if using is not None:
            using.add((kind, key))

    def _working_on(self, name: str) -> None:
        """This thread now serves model ``name``: what it uses from here on is protected from eviction until it
        turns to another model (a request never evicts its own model and data, even over a tiny budget)."""
        if getattr(self._user, "model", None) != name:
            self._user.model = name
            self._user.using = set()

    def held(self) -> list[HeldItem]:
        """What the explorer keeps in memory now, least recently used first (what :func:`memory_budget` bounds).

        Models, fitted indices, resized splits, and every dataset split the process keeps loaded
        (``lfx_engine.data``'s split cache, whoever read it): built-in datasets and those of project files (both
        splits of one as one item). Tensors a Python registration was given belong to its caller and are not
        counted.
        """
        with self._lock:
            items: list[HeldItem] = []

            def add(kind: str, key: Hashable, nbytes: int, seen: float = 0.0) -> None:
                with self._uses_lock:
                    use = self._uses.get((kind, key)) or _Use()
                    users = frozenset(use.users)
                items.append(HeldItem(kind, key, int(nbytes), max(use.last_used, seen), users))

            for key in list(self._models):
                add("model", key, self._model_bytes.get(key, 0))
            for split_key, (_, resized) in list(self._resized.items()):
                add("resized", split_key, resized.numel() * resized.element_size())
            for key, arrays in list(self._indices.items()):
                add("index", key, sum(a.nbytes for a in arrays.values()))
            for cached in data_splits.cached_splits():
                add("split", (cached.dataset, cached.split), cached.nbytes, cached.last_used)
            held = {(i.kind, i.key) for i in items}
            with self._uses_lock:
                for gone in [k for k in self._uses if k not in held]:
                    del self._uses[gone]
            return sorted(items, key=lambda i: i.last_used)

    def held_bytes(self) -> int:
        """Bytes of the models, dataset splits and derived arrays held in memory (:meth:`held`)."""
        return sum(item.nbytes for item in self.held())

    def _drop(self, item: HeldItem) -> int:
        """Let go of one held item; the bytes freed (0 when it was gone already)."""
        # the key's type follows the kind (see held): a model's or an index's name, else (dataset, split)
        if item.kind == "model":
            assert isinstance(item.key, str)
            freed = item.nbytes if self._models.pop(item.key, None) is not None else 0
            self._model_bytes.pop(item.key, None)
        elif item.kind == "resized":
            assert isinstance(item.key, tuple)
            freed = item.nbytes if self._resized.pop(item.key, None) is not None else 0
        elif item.kind == "index":
            assert isinstance(item.key, str)
            freed = item.nbytes if self._indices.pop(item.key, None) is not None else 0
        else:
            assert isinstance(item.key, tuple)
            dataset, split = item.key
            freed = data_splits.forget_split(dataset, split)
            for key, (source, resized) in list(self._resized.items()):  # resizes of it would be redone anyway
                if key[0] == dataset and source() is None and self._resized.pop(key, None) is not None:
                    freed += resized.numel() * resized.element_size()
        with self._uses_lock:
            self._uses.pop((item.kind, item.key), None)
        return freed

    def _evict(self, keep: Hashable | None = None) -> None:
        """Drop the least recently used models, dataset splits, resized splits and fitted indices until the budget
        holds. ``keep`` (just loaded) and what this thread uses for its current model stay (:meth:`_working_on`):
        a budget smaller than one request's model and data holds that request's."""
        budget = memory_budget()
        with self._lock:
            items = self.held()
            total = sum(item.nbytes for item in items)
            if total <= budget:
                return
            using = getattr(self._user, "using", None) or set()
            dropped = False
            for item in items:
                if total <= budget:
                    break
                if item.key == keep or (item.kind, item.key) in using:
                    continue
                freed = self._drop(item)
                total -= freed
                dropped = dropped or freed > 0
        if dropped:
            trim_memory()

    def release(self, unused_for: float = 0.0, active_users: Iterable[Hashable] | None = None) -> int:
        """Give back what was not used for ``unused_for`` seconds and no user of ``active_users`` has used.

        ``active_users=None``: whoever used it. Returns the bytes given back; freed pages go back to the
        operating system. What is in use by a running request stays alive until that request is done.
        """
        now = time.monotonic()
        active = set(active_users) if active_users is not None else set()
        with self._lock:
            items = self.held()
            freed = 0
            for item in items:
                if now - item.last_used < unused_for or item.users & active:
                    continue
                freed += self._drop(item)
            if freed:
                self._subsets.clear()  # they keep the labels of the splits given back alive
        if freed:
            trim_memory()
        return freed

    # ------------------------------------------------------------------ data
    def _split(self, name: str, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.entry(name)
        dataset = entry.dataset
        split_name = entry.train_split if which == "train" else entry.test_split
        self._working_on(name)
        x, y = self.catalogue.split(dataset, split_name)
        source = self.catalogue.dataset_entry(dataset).source
        counted = source in ("builtin", "user")  # held by the split cache; a Python registration's are the caller's
        if source == "builtin":
            self._note("split", (dataset, get_spec(dataset).resolve_split(split_name)))
        elif source == "user":
            self._note("split", (dataset, data_splits.USER_SPLITS))
        if entry.resize32:
            # resizing 60k images takes seconds: keep the result while the loaded split is the same object
            key = (dataset, split_name)
            ref, resized = self._resized.get(key, (lambda: None, None))
            if ref() is not x:  # the weak reference: a resize does not keep an evicted split alive
                resized = resize_to_32(x)
            assert resized is not None  # stored with its split, or just computed
            with self._lock:
                self._resized.pop(key, None)
                self._resized[key] = (weakref.ref(x), resized)  # stored again: a use, newest last
            x = resized
        if counted:
            self._evict(keep=None)
        return x, y

    def test_data(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the split the model is evaluated and explained on."""
        return self._split(name, "test")

    def train_data(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the model's training split."""
        return self._split(name, "train")

    def class_names(self, dataset: str) -> tuple[str, ...]:
        """Human-readable class names of a dataset (empty for unlabelled data)."""
        return self.catalogue.dataset_entry(dataset).class_names

    def is_series(self, dataset: str) -> bool:
        """True for 1-D series (ECG), False for images."""
        return self.catalogue.dataset_entry(dataset).is_series

    def baseline_for(self, name: str, x: torch.Tensor | None = None) -> torch.Tensor:
        """The attribution baseline x̄ of the model's dataset: METHOD.md's for built-ins, the declared one for
        user data (``blur`` gives one baseline per input of ``x``)."""
        entry = self.entry(name)
        dataset = self.catalogue.dataset_entry(entry.dataset)
        if dataset.source == "builtin":
            x_bar = baseline(entry.dataset)
            return resize_to_32(x_bar) if entry.resize32 else x_bar
        inputs = x if x is not None else self.test_data(name)[0][:1]
        train_mean = self.train_data(name)[0].mean(dim=0) if dataset.baseline == "mean" else None
        return make_baseline(dataset.baseline, inputs, train_mean)

    def feature_methods(self, name: str) -> list[str]:
        """The feature-attribution methods that can explain this model (all but Occlusion need gradients)."""
        if self.entry(name).supports("gradients"):
            return list(FEATURE_METHODS)
        return [m for m in FEATURE_METHODS if m in GRADIENT_FREE_FEATURE_METHODS]

    def _check_feature_method(self, name: str, method: str) -> None:
        if method in ("random", *GRADIENT_FREE_FEATURE_METHODS):
            return
        reason = self.entry(name).unsupported.get("gradients")
        if reason:
            raise ParameterError(f"{METHOD_TITLES.get(method, method)} needs gradients: {reason}")

    def check_input(self, name: str, x: torch.Tensor) -> None:
        """Refuse an input whose shape does not fit the model, with the expected shape."""
        expected = tuple(self.test_data(name)[0].shape[1:])
        if tuple(x.shape[1:]) != expected:
            raise ParameterError(f"this model takes inputs of shape {expected}, got {tuple(x.shape[1:])}")

    def _key(self, name: str, **params: Any) -> dict[str, Any]:
        """The cache key of a result of one model: its weights' hash and its data's fingerprint (the cache adds the
        engine version)."""
        entry = self.entry(name)
        return {"model": name, "sha256": entry.sha256, "data": self.catalogue.fingerprint(entry.dataset), **params}

    # ------------------------------------------------------------------ browsing helpers (app)
    def datasets_with_models(self) -> list[str]:
        """Datasets that have at least one usable model, built-in ones first."""
        trained = {m.dataset for m in self.models()}
        return [d.name for d in self.catalogue.datasets() if d.name in trained]

    def test_size(self, name: str) -> int:
        """Number of inputs in the model's test split."""
        return int(self.test_data(name)[0].shape[0])

    def _check_index(self, name: str, index: int) -> int:
        size = self.test_size(name)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < size:
            raise ParameterError(f"test sample index must lie in 0..{size - 1}, got {index!r}")
        return int(index)

    def sample(self, name: str, index: int) -> tuple[torch.Tensor, int]:
        """Test input ``index`` of the model's test split as a batch of one, and its label.

        A copy, not a view: whoever keeps it (a page fragment's arguments, say) does not keep the whole split.
        """
        index = self._check_index(name, index)
        x, y = self.test_data(name)
        return x[index: index + 1].clone(), int(y[index])

    def label_name(self, dataset: str, label: int) -> str:
        """The class name of an integer label."""
        return self.label_names(dataset, [label])[0]

    def label_names(self, dataset: str, labels: Iterable[int]) -> list[str]:
        """The class names of integer labels (the dataset's names looked up once: tables of thousands of rows)."""
        names = self.class_names(dataset)
        out = []
        for label in labels:
            label = int(label)
            out.append("unlabelled" if label < 0 and not names
                       else names[label] if 0 <= label < len(names) else str(label))
        return out

    def class_indices(self, name: str, label: int | None = None) -> np.ndarray:
        """Test-split indices of the model's test inputs, all of them or those of one class."""
        _, y = self.test_data(name)
        if label is None:
            return np.arange(len(y))
        n_classes = len(self.class_names(self.choice(name).dataset))
        if not 0 <= int(label) < n_classes:
            raise ParameterError(f"class must lie in 0..{n_classes - 1}, got {label!r}")
        return np.flatnonzero(y.numpy() == int(label))

    def train_inputs(self, name: str, indices: Sequence[int]) -> np.ndarray:
        """Training-split inputs at ``indices`` (for display)."""
        x, _ = self.train_data(name)
        return x[torch.from_numpy(np.array(indices, dtype=np.int64))].numpy()


def _as_choice(entry: ModelEntry) -> ModelChoice:
    return ModelChoice(name=entry.name, dataset=entry.dataset, experiment=entry.experiment, task=entry.task,
                       beta=entry.beta, run=entry.run, latent_dim=entry.latent_dim, record=entry.record,
                       source=entry.source, title=entry.title)


def _balanced_or_first(labels: torch.Tensor, n: int, n_classes: int) -> np.ndarray:
    """The class-balanced subset when the labels allow one, else the first ``n`` inputs (unlabelled data)."""
    if n_classes > 0:
        try:
            return balanced_subset_indices(labels, n, n_classes).numpy()
        except ParameterError:
            pass
    return np.arange(n)


def _frame_to_arrays(prefix: str, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Store a DataFrame's columns as arrays (strings as unicode) for the npz cache."""
    # text columns (object or pandas' string dtype) as fixed-width unicode: npz loads them without pickle
    return {f"{prefix}{col}": frame[col].to_numpy(dtype=None if pd.api.types.is_numeric_dtype(frame[col]) else str)
            for col in frame.columns}


def _arrays_to_frame(prefix: str, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)})


def _close_figures(figures: dict[str, Any]) -> None:
    """Close the matplotlib figures of an experiment result the app does not show (frees their memory)."""
    for figure in figures.values():
        if hasattr(figure, "savefig"):
            import matplotlib.pyplot as plt

            plt.close(figure)
