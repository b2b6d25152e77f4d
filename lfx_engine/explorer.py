"""One engine object for interactive exploration (the app's "cached engine").

:class:`Explorer` ties the registries together for a browsing session: which
datasets and trained models exist, the test inputs a model is explained on,
one-sample attributions (immediate), and dataset-wide results (masking curves,
example-importance matrices) computed once and kept in the disk cache keyed by
the checkpoint's sha256 and the parameters. It knows nothing about Streamlit;
the app wraps one instance in ``st.cache_resource``.

Models are loaded once, kept in eval mode and never mutated: every engine
function used here explains a model without changing it.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine import cache
from lfx_engine.catalogue import GRADIENT_FREE_FEATURE_METHODS, Catalogue, ModelEntry
from lfx_engine.config import default_device
from lfx_engine.data import balanced_subset_indices, baseline, ecg_example_subsets, resize_to_32
from lfx_engine.errors import LFXError, ParameterError
from lfx_engine.project.datasets import make_baseline
from lfx_engine.version import engine_version
from lfx_engine.example_importance import (
    HESSIANS,
    cosine_scores,
    dknn_scores,
    encode,
    influence_scores,
    simplex_scores,
    tracin_scores,
)
from lfx_engine.example_importance.streaming import DEFAULT_MEMORY_MB
from lfx_engine.feature_importance import aggregate_channels, label_free_attribution, unit_attribution
from lfx_engine.metrics import shift_curve, similarity_rates
from lfx_engine.metrics.masking import DEFAULT_PERCENTS, feature_count, mask_inputs
from lfx_engine.training.zoo import ZOO

Progress = Callable[[int, int], None] | None

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
}


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
        if self.source != "zoo":
            return f"{self.title or self.name} (your {self.task})"
        if self.task in ("betavae", "btcvae"):
            kind = "β-VAE" if self.task == "betavae" else "β-TC-VAE"
            return f"{kind} β={self.beta:g} (run {self.run})"
        kind = "classifier" if self.task == "classification" else f"{self.task} AE"
        return f"{kind}, {self.experiment} (run {self.run})"


class Explorer:
    """Datasets, trained models and cached explanations for one app process."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.catalogue = Catalogue()
        self._models: dict[str, nn.Module] = {}
        self._resized: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._subsets: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, tuple[np.ndarray, np.ndarray]]] = {}
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
            if key not in self._models:
                self._models = {k: v for k, v in self._models.items() if not k.startswith(f"{name}@")}
                self._models[key] = self.catalogue.load_model(name, device=self.device).eval()
            return self._models[key]

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

    # ------------------------------------------------------------------ one sample (immediate)
    def attribute(self, name: str, x: torch.Tensor, method: str, seed: int = 0, **kwargs: Any) -> np.ndarray:
        """Label-free attribution of the model's encoder for a few inputs, input-shaped."""
        self.check_input(name, x)
        self._check_feature_method(name, method)
        encoder = self.model(name).encoder
        attr = label_free_attribution(encoder, x, method, baselines=self.baseline_for(name, x), seed=seed,
                                      device=self.device, **kwargs)
        return attr.numpy()

    def display_map(self, attr: np.ndarray) -> np.ndarray:
        """|attribution| averaged over channels: (N,H,W) for images, (N,T) for series."""
        t = torch.as_tensor(attr)
        if t.dim() == 4:
            return aggregate_channels(t, "mean").abs()[:, 0].numpy()
        return t.abs().sum(dim=-1).numpy()

    def unit_maps(self, name: str, x: torch.Tensor, method: str = "gradient_shap", seed: int = 0) -> np.ndarray:
        """Per-latent-unit saliency |z_j · A_j| (N, d, H, W) of a VAE."""
        self.check_input(name, x)
        return unit_attribution(self.model(name).encoder, x, method, baselines=self.baseline_for(name, x),
                                seed=seed, device=self.device).numpy()

    def latent(self, name: str, x: torch.Tensor) -> np.ndarray:
        """Representation f(x) of a few inputs."""
        return encode(self.model(name).encoder, x, device=self.device).numpy()

    # ------------------------------------------------------------------ dataset-wide (disk cache)
    def _key(self, name: str, **params: Any) -> dict[str, Any]:
        """The cache key of a result of one model: its weights' hash, its data's fingerprint, the engine version."""
        entry = self.entry(name)
        return {"model": name, "sha256": entry.sha256, "data": self.catalogue.fingerprint(entry.dataset),
                "engine": engine_version(), **params}

    def test_latents(self, name: str, progress: Progress = None) -> np.ndarray:
        """Latents of the whole test split (cached on disk)."""
        def compute() -> dict[str, np.ndarray]:
            x, _ = self.test_data(name)
            return {"z": encode(self.model(name).encoder, x, device=self.device, progress=progress).numpy()}
        return cache.cached("latents", self._key(name, split="test"), compute)["z"]

    def latent_map(self, name: str, n_points: int = 2000, progress: Progress = None) -> pd.DataFrame:
        """2-D PCA of test latents for the first ``n_points`` test samples: idx, pc1, pc2, label."""
        z = self.test_latents(name, progress)[:n_points].astype(np.float64)
        _, y = self.test_data(name)
        centred = z - z.mean(axis=0, keepdims=True)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        coords = centred @ vt[:2].T if vt.shape[0] >= 2 else np.column_stack([centred[:, 0], np.zeros(len(z))])
        dataset = self.choice(name).dataset
        labels = y[: len(z)].numpy()
        return pd.DataFrame({"idx": np.arange(len(z)), "pc1": coords[:, 0], "pc2": coords[:, 1],
                             "label": [self.label_name(dataset, int(c)) for c in labels]})

    def masking_curves(self, name: str, methods: Sequence[str], n_samples: int = 200,
                       progress: Progress = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Representation shift vs % masked for each method and the random control, on the first
        ``n_samples`` test inputs. Returns (summary with 95% CI, per-example long table); cached."""
        methods = [m for m in methods if m != "random"]
        for method in methods:
            self._check_feature_method(name, method)
        x_all, _ = self.test_data(name)
        if not 1 <= n_samples <= len(x_all):
            raise ParameterError(f"n_samples must lie in 1..{len(x_all)}, got {n_samples}")
        x = x_all[:n_samples]
        steps = len(methods) + 1

        def compute() -> dict[str, np.ndarray]:
            encoder = self.model(name).encoder
            attrs = {}
            total = steps * n_samples
            for i, method in enumerate(methods):
                # per-chunk progress: attributions dominate the cost (IG on an LSTM takes seconds per chunk)
                step = (lambda done, _t, i=i: progress(i * n_samples + done, total)) if progress else None
                attrs[method] = label_free_attribution(encoder, x, method, baselines=self.baseline_for(name, x),
                                                       device=self.device, progress=step)
            summary, per_ex = shift_curve(encoder, x, attrs, baseline=self.baseline_for(name, x),
                                          include_random=True, device=self.device, return_per_example=True)
            if progress:
                progress(total, total)
            return _frame_to_arrays("s_", summary) | _frame_to_arrays("e_", per_ex)

        arrays = cache.cached("masking", self._key(name, methods=sorted(methods), n=n_samples), compute)
        return _arrays_to_frame("s_", arrays), _arrays_to_frame("e_", arrays)

    def sample_masking_curve(self, name: str, index: int, methods: Sequence[str]) -> pd.DataFrame:
        """Representation shift vs % masked for one test sample (immediate)."""
        index = self._check_index(name, index)
        x_all, _ = self.test_data(name)
        x = x_all[index: index + 1]
        for method in methods:
            self._check_feature_method(name, method)
        encoder = self.model(name).encoder
        attrs = {m: label_free_attribution(encoder, x, m, baselines=self.baseline_for(name, x), device=self.device)
                 for m in methods if m != "random"}
        return shift_curve(encoder, x, attrs, baseline=self.baseline_for(name, x), include_random=True,
                           device=self.device)

    # ------------------------------------------------------------------ example importance
    def example_subsets(self, name: str, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the class-balanced train and test subsets (METHOD §6) used for example importance."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ParameterError(f"the subset size must be a positive integer, got {n!r}")
        _, y_train = self.train_data(name)
        _, y_test = self.test_data(name)
        # pages ask several times a run: keep the answer while the loaded labels are the same objects
        hit = self._subsets.get((name, int(n)))
        if hit is not None and hit[0] is y_train and hit[1] is y_test:
            return hit[2]
        subsets = self._compute_subsets(name, int(n), y_train, y_test)
        self._subsets[(name, int(n))] = (y_train, y_test, subsets)
        return subsets

    def _compute_subsets(self, name: str, n: int, y_train: torch.Tensor,
                         y_test: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        entry = self.entry(name)
        dataset = entry.dataset
        k = len(self.class_names(dataset))
        n_train = min(int(n), len(y_train))
        n_test = min(int(n), len(y_test))
        if dataset == "ecg5000" and entry.train_split == "examples_train":
            # METHOD §6: train alternates normal/abnormal; test is a seeded permutation of examples_test
            train, test = ecg_example_subsets(n_train=n_train, n_test=n_test)
            return train.extra["indices"].numpy(), test.extra["indices"].numpy()
        if entry.source == "zoo":
            return (balanced_subset_indices(y_train, n_train, k).numpy(),
                    balanced_subset_indices(y_test, n_test, k).numpy())
        return _balanced_or_first(y_train, n_train, k), _balanced_or_first(y_test, n_test, k)

    def example_scores(self, name: str, method: str, n: int = 1000, progress: Progress = None,
                       params: dict[str, Any] | None = None) -> np.ndarray:
        """(n_test, n_train) example-importance scores on the balanced subsets; cached on disk.

        ``params`` are the method's own settings (influence: ``damp``, ``scale``,
        ``recursion_depth``, ``minibatch_size``, ``hessian``, ``max_memory_mb``;
        tracin: ``projection_dim``, ``max_memory_mb``; simplex: ``steps``, ``lr``);
        they are part of the cache key, except the memory budget, which leaves the
        scores unchanged (it counts only where it can change the Hessian ``auto`` picks).
        """
        params = self._check_example_params(name, method, params)
        train_idx, test_idx = self.example_subsets(name, n)

        def compute() -> dict[str, np.ndarray]:
            model = self.model(name)
            x_train = self.train_data(name)[0][torch.as_tensor(train_idx)]
            x_test = self.test_data(name)[0][torch.as_tensor(test_idx)]
            return {"scores": self._score(name, model, method, x_train, x_test, progress, params).numpy()}

        return cache.cached("examples", self._examples_key(name, method, n, params), compute)["scores"]

    def _examples_key(self, name: str, method: str, n: int, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        budget = params.pop("max_memory_mb", DEFAULT_MEMORY_MB)
        if method == "influence" and params.get("hessian", "exact") == "auto" and budget != DEFAULT_MEMORY_MB:
            params["max_memory_mb"] = budget
        extra = {"params": params} if params else {}
        return self._key(name, method=method, n=n, **extra)

    def examples_cached(self, name: str, method: str, n: int = 1000, params: dict[str, Any] | None = None) -> bool:
        """Whether :meth:`example_scores` for these arguments is already on disk (instant)."""
        params = self._check_example_params(name, method, params)
        return cache.is_cached("examples", self._examples_key(name, method, n, params))

    def _score(self, name: str, model: nn.Module, method: str, x_train: torch.Tensor, x_test: torch.Tensor,
               progress: Progress, params: dict[str, Any] | None = None) -> torch.Tensor:
        params = dict(params or {})
        if method in ("dknn", "cosine", "simplex"):
            h_train = encode(model.encoder, x_train, device=self.device)
            h_test = encode(model.encoder, x_test, device=self.device)
            if method == "dknn":
                return dknn_scores(h_test, h_train)
            if method == "cosine":
                return cosine_scores(h_test, h_train)
            return simplex_scores(h_test, h_train, device=self.device, progress=progress, **params)[0]
        entry = self.entry(name)
        loss_fn = entry.loss_fn
        problem = self.example_method_problem(name, method)
        if problem or getattr(model, "decoder", None) is None or loss_fn is None:
            raise ParameterError(problem or f"{method} needs the model's pretext loss; {name} has no decoder")
        if method == "tracin":
            states = entry.tracin_loader() if entry.tracin_loader is not None else []
            # TracIn loads each checkpoint into the model it is given: use a private copy so the shared,
            # cached model other sessions are explaining is never touched
            return tracin_scores(copy.deepcopy(model), states, x_train, x_test, loss_fn=loss_fn,
                                 device=self.device, progress=progress, **params)
        batch = int(params.pop("minibatch_size", 20 if entry.dataset == "ecg5000" else 300))
        return influence_scores(model, x_train, x_test, loss_fn=loss_fn, minibatch_size=min(batch, len(x_train)),
                                device=self.device, progress=progress, **params)

    def similarity_curves(self, name: str, methods: Sequence[str], n: int = 1000,
                          progress: Progress = None,
                          params: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
        """Similarity rates (most/least important) per method on the balanced subsets.

        Columns ``fraction, n, most, least, prior, method``; ``params`` maps a method to its settings.
        """
        if not methods:
            raise ParameterError("choose at least one example-importance method")
        dataset = self.choice(name).dataset
        if not self.is_labelled(dataset):
            raise ParameterError(f"similarity rates compare labels, and dataset {self.dataset_title(dataset)} has "
                                 "none; declare labels (an ImageFolder layout, y in the .npz or label_column)")
        train_idx, test_idx = self.example_subsets(name, n)
        y_train = self.train_data(name)[1][torch.as_tensor(train_idx)]
        y_test = self.test_data(name)[1][torch.as_tensor(test_idx)]
        params = params or {}
        frames = []
        for method in methods:
            scores = self.example_scores(name, method, n, progress, params=params.get(method))
            rates = similarity_rates(scores, y_test, y_train)
            frames.append(rates.assign(method=method))
        return pd.concat(frames, ignore_index=True)

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

    def masking_cached(self, name: str, methods: Sequence[str], n_samples: int = 200) -> bool:
        """Whether :meth:`masking_curves` for these arguments is already on disk (instant)."""
        methods = [m for m in methods if m != "random"]
        return cache.is_cached("masking", self._key(name, methods=sorted(methods), n=n_samples))

    def masked_views(self, name: str, x: torch.Tensor, method: str,
                     percents: Sequence[float] = DEFAULT_PERCENTS, seed: int = 0) -> tuple[np.ndarray, list[int]]:
        """One input with its own top-M features (by ``method``) set to the baseline, for each percent.

        Returns ``(views (len(percents), *input_shape), M per percent)``; ``method='random'``
        masks the random control's features (same seeded draw as :meth:`masking_curves`).
        """
        self.check_input(name, x)
        x = x[:1]
        if method == "random":
            gen = torch.Generator().manual_seed(int(seed))
            shape = (1, 1, *x.shape[2:]) if x.dim() == 4 else (1, x.shape[1])
            scores = torch.randn(shape, generator=gen)
        else:
            scores = torch.as_tensor(self.attribute(name, x, method, seed=seed))
        p_total = feature_count(x)
        x_bar = self.baseline_for(name, x)
        views, counts = [], []
        for pct in percents:
            if not 0 <= float(pct) <= 100:
                raise ParameterError(f"percent must lie in 0..100, got {pct}")
            m = int(float(pct) * p_total / 100 + 1e-9)
            views.append(mask_inputs(x, scores, m, baseline=x_bar)[0])
            counts.append(m)
        return torch.stack(views).numpy(), counts

    #: Example-importance methods whose dataset-wide matrix is expensive on a CPU (computed on request only).
    EXPENSIVE_EXAMPLE_METHODS = ("simplex", "tracin", "influence")
    #: Example-importance methods that are expensive even for one test sample.
    EXPENSIVE_SAMPLE_METHODS = ("tracin", "influence")

    def example_method_problem(self, name: str, method: str) -> str | None:
        """Why ``method`` cannot explain model ``name`` (None when it can)."""
        if method not in EXAMPLE_METHODS:
            return f"unknown example-importance method {method!r}; choose from {', '.join(EXAMPLE_METHODS)}"
        if method not in ("tracin", "influence"):
            return None
        reason = self.entry(name).unsupported.get(method)
        return f"{METHOD_TITLES[method]} {reason}" if reason else None

    def example_param_defaults(self, name: str, method: str) -> dict[str, Any]:
        """Default settings of an example-importance method for this model (METHOD §3)."""
        if method == "influence":
            batch = 20 if self.choice(name).dataset == "ecg5000" else 300
            return {"damp": 1e-3, "scale": 1000.0, "recursion_depth": 100, "minibatch_size": batch, "hessian": "auto",
                    "max_memory_mb": DEFAULT_MEMORY_MB}
        if method == "simplex":
            return {"steps": 1000, "lr": 0.1}
        if method == "tracin":
            return {"max_memory_mb": DEFAULT_MEMORY_MB}
        return {}

    def _check_example_params(self, name: str, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        if method not in EXAMPLE_METHODS:
            raise ParameterError(f"unknown example-importance method {method!r}; choose from {EXAMPLE_METHODS}")
        params = dict(params or {})
        allowed = {"influence": {"damp", "scale", "recursion_depth", "minibatch_size", "hessian", "max_memory_mb"},
                   "simplex": {"steps", "lr"}, "tracin": {"projection_dim", "max_memory_mb"}}.get(method, set())
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ParameterError(f"{METHOD_TITLES[method]} has no setting {', '.join(unknown)}"
                                 + (f"; its settings are {', '.join(sorted(allowed))}" if allowed else ""))
        for key in ("recursion_depth", "minibatch_size", "steps", "projection_dim"):
            if key in params:
                value = params[key]
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                    raise ParameterError(f"{key} must be a positive integer, got {value!r}")
                params[key] = int(value)
        for key in ("scale", "lr", "max_memory_mb"):
            if key in params:
                if not np.isfinite(float(params[key])) or float(params[key]) <= 0:
                    raise ParameterError(f"{key} must be a positive number, got {params[key]!r}")
                params[key] = float(params[key])
        if "hessian" in params and params["hessian"] not in HESSIANS:
            raise ParameterError(f"hessian must be one of {', '.join(HESSIANS)}, got {params['hessian']!r}")
        if "damp" in params:
            if not 0.0 <= float(params["damp"]) < 1.0:
                raise ParameterError(f"damp must lie in [0, 1), got {params['damp']!r}")
            params["damp"] = float(params["damp"])
        return params

    def sample_example_scores(self, name: str, method: str, index: int, n: int = 1000,
                              params: dict[str, Any] | None = None, compute: bool = True,
                              progress: Progress = None) -> np.ndarray | None:
        """Importance ``(n_train,)`` of each training-subset example for test input ``index``.

        ``index`` is a position in the model's test split (any test input, not only
        those of the test subset); the training side is the balanced subset of
        :meth:`example_subsets`. The row equals that input's row of
        :meth:`example_scores` (taken from it when already computed; for Influence
        Functions with ``hessian="auto"`` a lone sample uses the exact Hessian, a
        subset the Gauss–Newton one, which agree to about 0.2%). Expensive
        methods are cached on disk; ``compute=False`` returns None instead of
        computing a result that is not cached yet.
        """
        params = self._check_example_params(name, method, params)
        problem = self.example_method_problem(name, method)
        if problem:
            raise ParameterError(problem)
        index = self._check_index(name, index)
        train_idx, test_idx = self.example_subsets(name, n)
        position = np.flatnonzero(test_idx == index)
        if position.size and self.examples_cached(name, method, n, params):
            return self.example_scores(name, method, n, params=params)[int(position[0])]

        def scores() -> dict[str, np.ndarray]:
            x_train = self.train_data(name)[0][torch.as_tensor(train_idx)]
            x_test = self.test_data(name)[0][index: index + 1]
            row = self._score(name, self.model(name), method, x_train, x_test, progress, params)
            return {"scores": row.numpy()[0]}

        if method in ("dknn", "cosine"):
            return scores()["scores"]
        key = {**self._examples_key(name, method, n, params), "test_index": index}
        if not compute and not cache.is_cached("example_rows", key):
            return None
        return cache.cached("example_rows", key, scores)["scores"]

    def example_ranking(self, name: str, scores: np.ndarray, n: int = 1000) -> pd.DataFrame:
        """Training-subset examples sorted from most to least important for one test input.

        Columns: ``rank`` (1 = most important), ``position`` (in the training subset),
        ``train_index`` (in the training split), ``score``, ``label``, ``class``.
        """
        train_idx, _ = self.example_subsets(name, n)
        scores = np.asarray(scores, dtype=np.float64).ravel()
        if scores.shape[0] != len(train_idx):
            raise ParameterError(f"expected {len(train_idx)} scores (one per training-subset example), "
                                 f"got {scores.shape[0]}")
        order = np.argsort(-scores, kind="stable")
        y_train = self.train_data(name)[1].numpy()
        dataset = self.choice(name).dataset
        labels = y_train[train_idx[order]]
        return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "position": order,
                             "train_index": train_idx[order], "score": scores[order], "label": labels,
                             "class": [self.label_name(dataset, int(c)) for c in labels]})

    def train_inputs(self, name: str, indices: Sequence[int]) -> np.ndarray:
        """Training-split inputs at ``indices`` (for display)."""
        x, _ = self.train_data(name)
        return x[torch.from_numpy(np.array(indices, dtype=np.int64))].numpy()

    # ------------------------------------------------------------------ study pages (experiments layer)
    # The Study pages run the experiments of ``lfx_engine.experiments`` on a test subset. Their heavy
    # intermediates share the disk cache with `python -m lfx_engine reproduce`; the final tables are also
    # cached here (``study_*`` namespaces), keyed by every checkpoint's sha256 and the parameters.

    def study_hub(self) -> Any:
        """A :class:`~lfx_engine.experiments.ModelHub` that shares this explorer's loaded, eval-mode models."""
        from lfx_engine.experiments.common import ModelHub

        hub = ModelHub(device=self.device)
        hub.load = self.model  # type: ignore[method-assign]  # the documented override point
        return hub

    def _study_key(self, study: str, names: Sequence[str], **params: Any) -> dict[str, Any]:
        from lfx_engine.experiments.common import CACHE_VERSION

        entries = {n: self.entry(n) for n in sorted(names)}
        shas = {n: e.sha256 for n, e in entries.items()}
        data = {d: self.catalogue.fingerprint(d) for d in sorted({e.dataset for e in entries.values()})}
        return {"study": study, "cache_version": CACHE_VERSION, "engine": engine_version(), "models": shas,
                "data": data, **params}

    @staticmethod
    def _check_subset(n_test: int | None) -> None:
        if n_test is not None and (isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer))
                                   or n_test < 1):
            raise ParameterError(f"the number of test inputs must be a positive integer, got {n_test!r}")

    def pretext_runs(self, dataset: str) -> tuple[list[int], list[int]]:
        """(runs with all four pretext models trained, runs with only some of them)."""
        from lfx_engine.experiments.pretext import complete_runs

        return complete_runs(self.study_hub(), dataset)

    def pretext_models(self, dataset: str, run: int) -> dict[str, str]:
        """Task → trained model of one pretext run, in METHOD §7.3 order (untrained tasks left out)."""
        from lfx_engine.experiments.pretext import TASKS, entry_name

        trained = {m.name for m in self.models(dataset, experiment="pretext")}
        return {t: entry_name(dataset, t, run) for t in TASKS if entry_name(dataset, t, run) in trained}

    def _pretext_key(self, dataset: str, n_test: int | None, n_train: int) -> dict[str, Any] | None:
        from lfx_engine.experiments.pretext import TASKS, entry_name

        runs, _ = self.pretext_runs(dataset)
        names = [entry_name(dataset, t, r) for r in runs for t in TASKS]
        return self._study_key("pretext", names, dataset=dataset, n_test=n_test, n_train=n_train) if runs else None

    def pretext_cached(self, dataset: str, n_test: int | None = 500, n_train: int = 1000) -> bool:
        """Whether :meth:`pretext_study` for these arguments is on disk (instant)."""
        key = self._pretext_key(dataset, n_test, n_train)
        return key is not None and cache.is_cached("study_pretext", key)

    def pretext_study(self, dataset: str, n_test: int | None = 500, n_train: int = 1000,
                      progress: Progress = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """METHOD §7.3 on the first ``n_test`` test inputs (None: all), over every complete run; cached.

        Returns ``summary`` (kind, correlation, task_a, task_b, mean, std, n_runs), ``correlations``
        (one row per run and cell), ``notes`` (list of str) and ``n_test`` (inputs used).
        """
        from lfx_engine.experiments.pretext import run_pretext

        self._check_subset(n_test)
        key = self._pretext_key(dataset, n_test, n_train) or {"study": "pretext", "dataset": dataset, "runs": []}

        def compute() -> dict[str, np.ndarray]:
            result = run_pretext(dataset, models=self.study_hub(), n_test=n_test, n_train=n_train, n_overlays=0,
                                 device=self.device, progress=progress, log=log)
            _close_figures(result.figures)
            return (_frame_to_arrays("summary__", result.tables["summary"])
                    | _frame_to_arrays("correlations__", result.tables["correlations"])
                    | {"notes": np.array(result.notes, dtype=str), "n_test": np.array(result.params["n_test"])})

        arrays = cache.cached("study_pretext", key, compute)
        return {"summary": _arrays_to_frame("summary__", arrays),
                "correlations": _arrays_to_frame("correlations__", arrays),
                "notes": [str(n) for n in arrays["notes"]], "n_test": int(arrays["n_test"])}

    def vae_models(self, dataset: str | None = None) -> list[ModelChoice]:
        """Trained β-VAEs / β-TC-VAEs, ordered by loss, β and run."""
        models = self.models(dataset, experiment="disvae")
        return sorted(models, key=lambda m: (m.dataset, m.task, float(m.beta or 0), m.run))

    def _disvae_key(self, dataset: str, n_test: int | None) -> dict[str, Any] | None:
        names = [m.name for m in self.vae_models(dataset)]
        return self._study_key("disvae", names, dataset=dataset, n_test=n_test) if names else None

    def disvae_cached(self, dataset: str, n_test: int | None = 200) -> bool:
        """Whether :meth:`disvae_study` for these arguments is on disk (instant)."""
        key = self._disvae_key(dataset, n_test)
        return key is not None and cache.is_cached("study_disvae", key)

    def disvae_study(self, dataset: str, n_test: int | None = 200, progress: Progress = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """METHOD §7.4's five metrics of every trained VAE of ``dataset`` on the first ``n_test`` test inputs.

        Returns ``metrics`` (one row per model), ``summary`` (mean, std over runs per loss × β),
        ``comparison`` (with the reproduction study's §8 values) and ``notes``; cached.
        """
        from lfx_engine.experiments.disvae import run_disvae

        self._check_subset(n_test)
        key = self._disvae_key(dataset, n_test) or {"study": "disvae", "dataset": dataset, "models": []}

        def compute() -> dict[str, np.ndarray]:
            result = run_disvae(dataset, models=self.study_hub(), n_test=n_test, n_maps=1, maps_for_runs=(),
                                device=self.device, progress=progress, log=log)
            _close_figures(result.figures)
            return {**{k: v for t in ("metrics", "summary", "comparison")
                       for k, v in _frame_to_arrays(f"{t}__", result.tables[t]).items()},
                    "notes": np.array(result.notes, dtype=str)}

        arrays = cache.cached("study_disvae", key, compute)
        out: dict[str, Any] = {t: _arrays_to_frame(f"{t}__", arrays) for t in ("metrics", "summary", "comparison")}
        out["notes"] = [str(n) for n in arrays["notes"]]
        return out

    @staticmethod
    def disvae_reference(dataset: str) -> pd.DataFrame:
        """The reproduction study's disentanglement values (METHOD §8): metric, loss, beta, mean, std."""
        from lfx_engine.experiments.disvae import REFERENCE

        rows = [{"metric": metric, "loss": loss, "beta": float(beta), "mean": mean,
                 "std": np.nan if std is None else std}
                for metric, per_dataset in REFERENCE.items()
                for (loss, beta), (mean, std) in per_dataset.get(dataset, {}).items()]
        return pd.DataFrame(rows, columns=["metric", "loss", "beta", "mean", "std"])

    def decode(self, name: str, z: np.ndarray | torch.Tensor) -> np.ndarray:
        """Decoder output for latent codes ``z`` (N, d): images (N, C, H, W) in [0, 1] for image models."""
        model = self.model(name)
        decode = getattr(model, "decode", None) or getattr(model, "decoder", None)
        if decode is None:
            raise ParameterError(f"{name} has no decoder (a classifier); pick an autoencoder or a VAE")
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        d = self.choice(name).latent_dim
        if z.dim() != 2 or (d and z.shape[1] != d) or not torch.isfinite(z).all():
            raise ParameterError(f"latent codes must be finite and of shape (N, {d}), got {tuple(z.shape)}")
        with torch.inference_mode():
            return decode(z.to(self.device)).cpu().numpy()

    def traversal(self, name: str, index: int, unit: int, values: Sequence[float]) -> np.ndarray:
        """Latent traversal: test input ``index``'s code with unit ``unit`` set to each of ``values``, decoded.

        Returns ``(len(values), C, H, W)``; the other units keep the input's posterior mean.
        """
        x, _ = self.sample(name, index)
        z = torch.from_numpy(self.latent(name, x))
        d = z.shape[1]
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= int(unit) < d:
            raise ParameterError(f"unit must lie in 0..{d - 1}, got {unit!r}")
        vals = np.asarray(list(values), dtype=np.float64)
        if vals.ndim != 1 or not 1 <= vals.size <= 256 or not np.isfinite(vals).all():
            raise ParameterError("traversal values must be 1 to 256 finite numbers")
        codes = z.repeat(vals.size, 1)
        codes[:, int(unit)] = torch.from_numpy(vals).float()
        return self.decode(name, codes)

    def classifier_models(self, dataset: str | None = None) -> list[ModelChoice]:
        """Trained pretext classifiers (the encoder-vs-full study's models), by run."""
        return sorted(self.models(dataset, experiment="pretext", tasks=("classification",)), key=lambda m: m.run)

    def _evf_key(self, dataset: str, n_test: int | None) -> dict[str, Any] | None:
        names = [m.name for m in self.classifier_models(dataset)]
        return self._study_key("encoder_vs_full", names, dataset=dataset, n_test=n_test) if names else None

    def encoder_vs_full_cached(self, dataset: str, n_test: int | None = 500) -> bool:
        """Whether :meth:`encoder_vs_full_study` for these arguments is on disk (instant)."""
        key = self._evf_key(dataset, n_test)
        return key is not None and cache.is_cached("study_encoder_vs_full", key)

    def encoder_vs_full_study(self, dataset: str, n_test: int | None = 500, progress: Progress = None,
                              log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """METHOD §7.6 over every trained classifier on the first ``n_test`` test inputs; cached.

        Returns ``summary`` (per method: mean, ci95 = 1.96·SEM over classifiers, reference_mean,
        reference_ci95), ``per_model`` and ``notes``.
        """
        from lfx_engine.experiments.encoder_vs_full import run_encoder_vs_full

        self._check_subset(n_test)
        key = self._evf_key(dataset, n_test) or {"study": "encoder_vs_full", "dataset": dataset, "models": []}

        def compute() -> dict[str, np.ndarray]:
            result = run_encoder_vs_full(dataset, models=self.study_hub(), n_test=n_test, device=self.device,
                                         progress=progress, log=log)
            return (_frame_to_arrays("summary__", result.tables["summary"])
                    | _frame_to_arrays("per_model__", result.tables["per_model"])
                    | {"notes": np.array(result.notes, dtype=str)})

        arrays = cache.cached("study_encoder_vs_full", key, compute)
        return {"summary": _arrays_to_frame("summary__", arrays), "per_model": _arrays_to_frame("per_model__", arrays),
                "notes": [str(n) for n in arrays["notes"]]}

    def encoder_vs_full_maps(self, name: str, x: torch.Tensor, method: str,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Label-free maps of a classifier's encoder and of the full classifier (§7.6), and their per-input
        Pearson over live pixels: ``(encoder_attr, full_attr, r (N,))``."""
        from lfx_engine.experiments.encoder_vs_full import METHODS
        from lfx_engine.feature_importance import encoder_vs_full_attribution
        from lfx_engine.metrics import masked_pixel_correlation

        if method not in METHODS:
            raise ParameterError(f"unknown method {method!r}; the study compares {', '.join(METHODS)}")
        if self.choice(name).task != "classification":
            raise ParameterError(f"{name} is not a classifier; the encoder-vs-full study explains classifiers")
        self.check_input(name, x)
        enc, full = encoder_vs_full_attribution(self.model(name), x, method, baselines=None, seed=seed,
                                                device=self.device)
        return enc.numpy(), full.numpy(), masked_pixel_correlation(enc, full, x)

    # torch-lucent feature visualisation (METHOD §7.5, PRACTICE §4)
    LUCENT_LR = 5e-2

    def lucent_targets(self, name: str) -> list[dict[str, Any]]:
        """What torch-lucent can maximise in an image encoder: its latent units, then each conv layer's channels.

        Each target: ``layer`` ('latent' or the conv module's path in the encoder), ``title``, ``units``.
        """
        choice = self.choice(name)
        if self.is_series(choice.dataset):
            raise ParameterError("torch-lucent optimises images; it does not apply to a 1-D series encoder")
        reason = self.entry(name).unsupported.get("lucent")
        if reason:
            raise ParameterError(f"feature visualisation does not apply: {reason}")
        encoder = self.model(name).encoder
        what = "posterior mean μ" if choice.task in ("betavae", "btcvae", "vae") else "representation"
        targets = [{"layer": "latent", "title": f"latent units ({what}, d = {choice.latent_dim})",
                    "units": int(choice.latent_dim)}]
        for path, module in encoder.named_modules():
            if isinstance(module, nn.Conv2d):
                targets.append({"layer": path, "title": f"conv channel of encoder.{path} "
                                f"(Conv2d {module.in_channels}→{module.out_channels})",
                                "units": int(module.out_channels)})
        return targets

    def _lucent_setup(self, name: str, layer: str, unit: int, steps: int, seed: int, leaky_relu: bool,
                      lr: float) -> tuple[nn.Module, dict[str, Any]]:
        targets = {t["layer"]: t for t in self.lucent_targets(name)}
        if layer not in targets:
            raise ParameterError(f"unknown target layer {layer!r}; choose from {', '.join(targets)}")
        n_units = targets[layer]["units"]
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= int(unit) < n_units:
            raise ParameterError(f"unit must lie in 0..{n_units - 1} for {layer}, got {unit!r}")
        for label, value, top in (("steps", steps, 20_000), ("seed", seed, 2 ** 31 - 1)):
            low = 1 if label == "steps" else 0
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= top:
                raise ParameterError(f"{label} must be an integer in {low}..{top}, got {value!r}")
        if not np.isfinite(float(lr)) or float(lr) <= 0:
            raise ParameterError(f"the learning rate must be a positive number, got {lr!r}")
        choice = self.choice(name)
        x = self.test_data(name)[0]
        encoder = self.model(name).encoder
        vae_mu = layer == "latent" and choice.task in ("betavae", "btcvae") and choice.source == "zoo"
        # a VAE's μ units use run_lucid's exact key, so the app and `reproduce lucid` share their renders
        module = encoder if vae_mu else _LucentProbe(encoder, "" if layer == "latent" else layer)
        parts = {"experiment": "lucid", "model": name, "sha256": self.entry(name).sha256,
                 "layer": "encoder_mu" if vae_mu else f"probe:{layer}", "channel": int(unit),
                 "seed": int(seed) + int(unit), "steps": int(steps), "lr": float(lr), "leaky_relu": bool(leaky_relu),
                 "size": int(x.shape[-1]), "channels": int(x.shape[1]),
                 "recipe": "fft image, no decorrelation, no transforms, no preprocess"}
        return module, parts

    def lucent_cached(self, name: str, layer: str, unit: int, steps: int = 256, seed: int = 0,
                      leaky_relu: bool = False, lr: float = LUCENT_LR) -> bool:
        """Whether :meth:`lucent_render` for these arguments is on disk (instant)."""
        from lfx_engine.experiments.common import CACHE_VERSION

        _, parts = self._lucent_setup(name, layer, unit, steps, seed, leaky_relu, lr)
        return cache.is_cached("lucid", {"cache_version": CACHE_VERSION, **parts})

    def lucent_render(self, name: str, layer: str, unit: int, steps: int = 256, seed: int = 0,
                      leaky_relu: bool = False, lr: float = LUCENT_LR) -> np.ndarray:
        """torch-lucent image (H, W, C) in [0, 1] maximising the mean of ``unit`` of ``layer``; disk-cached.

        Renders with the experiments' ``render_unit`` (METHOD §7.5 recipe) on a deep copy; unit j uses
        seed ``seed + j`` like ``reproduce lucid``. Cached by (checkpoint sha256, layer, unit, steps, seed,
        options), so a re-render is instant.
        """
        from lfx_engine.experiments.common import cached_arrays
        from lfx_engine.experiments.lucid import render_unit

        module, parts = self._lucent_setup(name, layer, unit, steps, seed, leaky_relu, lr)
        return cached_arrays(None, "lucid", parts, lambda: {"image": render_unit(
            module, int(unit), channels=parts["channels"], size=parts["size"], steps=int(steps), lr=float(lr),
            seed=parts["seed"], leaky_relu=bool(leaky_relu))})["image"]

    def lucent_step_seconds(self, name: str, layer: str, leaky_relu: bool = False) -> float:
        """Measured seconds per lucent optimisation step for this target (a short timed render; memoised)."""
        import time

        from lfx_engine.experiments.lucid import _lucent, render_unit

        speeds = self.__dict__.setdefault("_lucent_speed", {})
        key = (name, self.entry(name).sha256, layer, bool(leaky_relu))
        if key not in speeds:
            module, parts = self._lucent_setup(name, layer, 0, 8, 0, leaky_relu, self.LUCENT_LR)
            _lucent()  # the first import of torch-lucent/kornia is not a per-step cost
            start = time.perf_counter()
            render_unit(module, 0, channels=parts["channels"], size=parts["size"], steps=8, seed=0,
                        leaky_relu=leaky_relu)
            speeds[key] = (time.perf_counter() - start) / 8
        return float(speeds[key])

    def lucent_activation(self, name: str, layer: str, unit: int, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """The target's activation (unit value, or channel mean for a conv layer) for inputs ``x`` (N, C, H, W)."""
        self._lucent_setup(name, layer, unit, 1, 0, False, self.LUCENT_LR)  # validates the target
        # a private copy: the probe hooks a layer, and other sessions use the shared model concurrently
        probe = _LucentProbe(copy.deepcopy(self.model(name).encoder), "" if layer == "latent" else layer)
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        self.check_input(name, x)
        with torch.inference_mode():
            out = probe.eval()(x.to(self.device))[:, int(unit)]
        return out.flatten(1).mean(dim=1).cpu().numpy() if out.dim() > 1 else out.cpu().numpy()


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


class _LucentProbe(nn.Module):
    """Exposes one layer of an encoder as the output of a module named ``mu``.

    ``render_unit`` wraps what it renders as ``encoder`` and maximises lucent's
    ``encoder_mu`` channel, so any conv layer (or the latent output, path ``""``)
    of any image encoder can be visualised with the experiments' recipe. The
    forward hook lives only during one forward pass of this (deep-copied) probe.
    """

    def __init__(self, encoder: nn.Module, path: str) -> None:
        super().__init__()
        self.net = encoder
        self.path = path
        self.mu = nn.Identity()
        encoder.get_submodule(path)  # fail early on an unknown layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: dict[str, torch.Tensor] = {}
        handle = self.net.get_submodule(self.path).register_forward_hook(
            lambda _module, _inputs, output: captured.__setitem__("out", output))
        try:
            self.net(x)
        finally:
            handle.remove()
        return self.mu(captured["out"])


def _close_figures(figures: dict[str, Any]) -> None:
    """Close the matplotlib figures of an experiment result the app does not show (frees their memory)."""
    for figure in figures.values():
        if hasattr(figure, "savefig"):
            import matplotlib.pyplot as plt

            plt.close(figure)


__all__ = ["EXAMPLE_METHODS", "FEATURE_METHODS", "METHOD_TITLES", "Explorer", "LFXError", "ModelChoice"]
