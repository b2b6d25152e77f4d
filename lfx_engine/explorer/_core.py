"""The explorer's core: the catalogue's models and datasets for one app process, their data, samples and cache keys.

Models are loaded once, kept in eval mode and never mutated: every engine function the views
use explains a model without changing it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine import cache
from lfx_engine.catalogue import BUILTIN_SOURCES, GRADIENT_FREE_FEATURE_METHODS, Catalogue, ModelEntry
from lfx_engine.config import default_device
from lfx_engine.data import (
    balanced_subset_indices,
    baseline,
    resize_to_32,
)
from lfx_engine.errors import ParameterError
from lfx_engine.metrics.masking_controls import random_init_key
from lfx_engine.project.datasets import make_baseline
from lfx_engine.training.zoo import ZOO

Progress = Callable[[int, int], None] | None
#: Default memory budget of one explorer's models and derived arrays (``LFX_MEMORY_MB``).
DEFAULT_MEMORY_MB = 4096


def memory_budget() -> int:
    """Bytes an explorer may hold in models and derived arrays: ``LFX_MEMORY_MB`` (default 4096 MB)."""
    import os

    raw = os.environ.get("LFX_MEMORY_MB", "")
    try:
        value = float(raw) if raw else DEFAULT_MEMORY_MB
    except ValueError:
        value = DEFAULT_MEMORY_MB
    return int(max(value, 1.0) * 2 ** 20)

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
        self._models: dict[str, nn.Module] = {}
        self._resized: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._subsets: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, tuple[np.ndarray, np.ndarray]]] = {}
        #: fitted example-importance indices over full training splits (arrays read from the disk cache), by key
        self._indices: dict[str, dict[str, np.ndarray]] = {}
        #: projection size of a gradient index by (model, weights sha256, method): see ``_projection_for_budget``
        self._projections: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            if key in self._models:
                self._models[key] = self._models.pop(key)  # most recently used last
                return self._models[key]
            self._models = {k: v for k, v in self._models.items() if not k.startswith(f"{name}@")}
            self._models[key] = self.catalogue.load_model(name, device=self.device).eval()
            self._evict(keep=key)
            return self._models[key]

    def held_bytes(self) -> int:
        """Bytes of the models and derived arrays this explorer holds (what :func:`memory_budget` bounds)."""
        models = sum(t.numel() * t.element_size() for m in self._models.values()
                     for t in [*m.parameters(), *m.buffers()])
        resized = sum(r.numel() * r.element_size() for _, r in self._resized.values())
        indices = sum(a.nbytes for arrays in self._indices.values() for a in arrays.values())
        return int(models + resized + indices)

    def _evict(self, keep: str) -> None:
        """Drop the least recently used models, fitted indices and resized splits until the budget holds."""
        budget = memory_budget()
        while self.held_bytes() > budget:
            if len(self._models) > 1:  # models reload in milliseconds: they go first
                self._models.pop(next(k for k in self._models if k != keep))
            elif len(self._indices) > (1 if keep in self._indices else 0):  # indices reload from the disk cache
                self._indices.pop(next(k for k in self._indices if k != keep))
            elif self._resized:
                self._resized.pop(next(iter(self._resized)))
            else:
                break

    # ------------------------------------------------------------------ data
    def _split(self, name: str, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.entry(name)
        dataset = entry.dataset
        split_name = entry.train_split if which == "train" else entry.test_split
        x, y = self.catalogue.split(dataset, split_name)
        if entry.resize32:
            # resizing 60k images takes seconds: keep the result while the loaded split is the same object
            key = (dataset, split_name)
            source, resized = self._resized.get(key, (None, None))
            if source is not x:
                resized = resize_to_32(x)
                self._resized[key] = (x, resized)
            x = resized
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
        """Test input ``index`` of the model's test split as a batch of one, and its label."""
        index = self._check_index(name, index)
        x, y = self.test_data(name)
        return x[index: index + 1], int(y[index])

    def label_name(self, dataset: str, label: int) -> str:
        """The class name of an integer label."""
        names = self.class_names(dataset)
        if label < 0 and not names:
            return "unlabelled"
        return names[label] if 0 <= label < len(names) else str(label)

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
