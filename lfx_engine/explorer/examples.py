"""Example importance of the explorer (METHOD §7.2): subsets, score rows and matrices, rankings, similarity rates."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine import cache
from lfx_engine.catalogue import BUILTIN_SOURCES
from lfx_engine.data import (
    balanced_subset_indices,
    ecg_example_subsets,
)
from lfx_engine.errors import ParameterError
from lfx_engine.example_importance import (
    HESSIANS,
    example_roles,
    mse_per_example,
    ranking_ends,
    role_codes,
    role_counts,
)
from lfx_engine.example_importance import index as example_index
from lfx_engine.example_importance.dispatch import score_matrix
from lfx_engine.example_importance.streaming import DEFAULT_MEMORY_MB
from lfx_engine.explorer._core import (
    EXAMPLE_METHODS,
    METHOD_TITLES,
    ExplorerCore,
    Progress,
    _balanced_or_first,
)
from lfx_engine.metrics import similarity_rates


class ExampleViews(ExplorerCore):
    """Training examples ranked for a test input, by latent distances or loss gradients."""

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
        if entry.source in BUILTIN_SOURCES:
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
        entry = self.entry(name)
        if method in ("tracin", "influence"):
            problem = self.example_method_problem(name, method)
            if problem or getattr(model, "decoder", None) is None or entry.loss_fn is None:
                raise ParameterError(problem or f"{method} needs the model's pretext loss; {name} has no decoder")
        if method == "influence":
            params.setdefault("minibatch_size", 20 if entry.dataset == "ecg5000" else 300)
        return score_matrix(method, model, x_train, x_test, loss_fn=entry.loss_fn or mse_per_example,
                            checkpoints=self.method_checkpoints(name, method), params=params, device=self.device,
                            progress=progress)["scores"]

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

    # ------------------------------------------------------------------ the full training split (fit once)
    #: Settings of the page's subset methods that also apply to a fitted index.
    INDEX_SETTINGS = {"simplex": ("steps", "lr"),
                      "influence": ("damp", "scale", "recursion_depth", "minibatch_size", "hessian")}
    #: SimplEx's corpus on the full training split: the nearest training latents of each test input.
    FULL_SIMPLEX_CORPUS = 1000

    def index_params(self, name: str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A fitted index's settings: :func:`.index.default_params`, then the shared settings of ``params``.

        Gradient features are projected (``projection_dim``), so that they fit in memory over a full split.
        """
        out = example_index.default_params(method)
        if method == "simplex":
            # a convex fit over tens of thousands of latents spreads its weight thinly: the corpus is each test
            # input's FULL_SIMPLEX_CORPUS nearest training latents (SimplEx's own corpus size), weights 0 elsewhere
            out["k_nearest"] = self.FULL_SIMPLEX_CORPUS
        for key in self.INDEX_SETTINGS.get(method, ()):
            if params and key in params:
                out[key] = params[key]
        if params and "projection_dim" in params:
            out["projection_dim"] = params["projection_dim"]
        elif method in example_index.GRADIENT_METHODS:
            out["projection_dim"] = self._projection_for_budget(name, method)
        return out

    #: Disk and memory one fitted gradient index may take on a full split, in MB.
    INDEX_BUDGET_MB = 512
    #: Projection sizes tried, largest first (:meth:`_projection_for_budget`).
    PROJECTIONS = (1024, 512, 256, 128, 64)

    def _projection_for_budget(self, name: str, method: str) -> int:
        """The largest projection whose stored features (every checkpoint, the full split) fit INDEX_BUDGET_MB.

        Memoised per weights: every render and ranking asks, and each try builds a feature map with a forward probe.
        """
        key = (name, self.entry(name).sha256, method)
        if key not in self._projections:
            self._projections[key] = self._fit_projection(name, method)
        return self._projections[key]

    def _fit_projection(self, name: str, method: str) -> int:
        model = self.model(name)
        x_train = self.train_data(name)[0]
        n_states = max(1, len(self.entry(name).record.get("tracin_checkpoints", []))) if method == "tracin" else 1
        for dim in self.PROJECTIONS:
            fmap = example_index.GradientFeatureMap.build(model, x_train[:2].to(self.device), dim)
            if n_states * len(x_train) * example_index.feature_bytes(fmap.width(model), True) \
                    <= self.INDEX_BUDGET_MB * 2**20:
                return dim
        return self.PROJECTIONS[-1]

    def _index_key(self, name: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        entry = self.entry(name)
        extra: dict[str, Any] = {}
        if method == "tracin":
            extra["tracin"] = entry.record.get("tracin_checkpoints", [])
        return self._key(name, method=method, split=entry.train_split, index_params=params, **extra)

    def index_cached(self, name: str, method: str, params: dict[str, Any] | None = None) -> bool:
        """Whether :meth:`example_index` for these settings is on disk or in memory (scoring is then immediate)."""
        params = self.index_params(name, method, params)
        parts = self._index_key(name, method, params)
        return cache.cache_key(parts) in self._indices or cache.is_cached("example_index", parts)

    def example_index(self, name: str, method: str, params: dict[str, Any] | None = None,
                      progress: Progress = None, compute: bool = True) -> example_index.ExampleIndex | None:
        """``method`` fitted on the model's **full** training split (disk-cached; held in memory under the budget).

        ``compute=False`` returns None instead of fitting an index that is not cached yet.
        """
        problem = self.example_method_problem(name, method)
        if problem:
            raise ParameterError(problem)
        params = self.index_params(name, method, params)
        parts = self._index_key(name, method, params)
        key = cache.cache_key(parts)
        with self._lock:
            arrays = self._indices.pop(key, None)
            if arrays is not None:
                self._indices[key] = arrays  # most recently used last
        if arrays is None:
            if not compute and not cache.is_cached("example_index", parts):
                return None
            entry = self.entry(name)
            model = self.model(name)

            def fit() -> dict[str, np.ndarray]:
                x_train = self.train_data(name)[0]
                fitted = example_index.fit(method, model, x_train, loss_fn=entry.loss_fn or mse_per_example,
                                           checkpoints=self.method_checkpoints(name, method), params=params,
                                           device=self.device, progress=progress)
                return fitted.arrays

            arrays = cache.cached("example_index", parts, fit)
            with self._lock:
                self._indices[key] = arrays
                self._evict(keep=key)
        entry = self.entry(name)
        return example_index.from_arrays(
            method, self.model(name), arrays, params=params, loss_fn=entry.loss_fn or mse_per_example,
            checkpoints=self.method_checkpoints(name, method),
            hessian_data=self.train_data(name)[0] if method == "influence" else None, device=self.device)

    def influence_solve(self, name: str, params: dict[str, Any] | None = None,
                        progress: Progress = None) -> np.ndarray | None:
        """The Gauss–Newton solve of the model's full-split IF index for these settings, alone (disk-cached).

        Dataset-wide precompute scores the split block by block; every block shares this one solve, so the
        Hessian is the whole split's. ``None`` where the index keeps the exact Hessian.
        """
        params = self.index_params(name, "influence", params)
        parts = {**self._index_key(name, "influence", params), "part": "solve"}
        entry = self.entry(name)

        def compute() -> dict[str, np.ndarray]:
            solve = example_index.influence_solve(self.model(name), self.train_data(name)[0],
                                                  loss_fn=entry.loss_fn or mse_per_example, params=params,
                                                  device=self.device, progress=progress)
            return {} if solve is None else {"solve": solve}

        return cache.cached("example_index", parts, compute).get("solve")

    def method_checkpoints(self, name: str, method: str) -> list[Any]:
        """The weights a method differentiates at besides the final ones: TracIn's saved checkpoints (else none)."""
        entry = self.entry(name)
        if method != "tracin" or entry.tracin_loader is None:
            return []
        return list(entry.tracin_loader())

    def index_ranking(self, name: str, method: str, index: int, k: int = 8,
                      params: dict[str, Any] | None = None) -> pd.DataFrame | None:
        """The ``k`` most and ``k`` least important examples of the **full** training split for test input ``index``.

        None when the index is not fitted yet (see :meth:`example_index`). Columns as
        :meth:`example_ranking` (``position`` is the training-split index here), plus ``part`` (top / bottom).
        ``frame.attrs["role_counts"]`` counts the roles over **all** training examples (one dense row is cheap),
        and ``frame.attrs["n_ranked"]`` is their number; ``frame.attrs["approximation"]`` says what the scores
        approximate (projected gradients, the Gauss–Newton solve), empty when nothing is.
        """
        fitted = self.example_index(name, method, params, compute=False)
        if fitted is None:
            return None
        index = self._check_index(name, index)
        x = self.test_data(name)[0][index:index + 1]
        row = np.asarray(fitted.score(x)[0], dtype=np.float64)
        n_train = len(row)
        top_idx, bottom_idx = ranking_ends(row, k)
        top = len(top_idx)
        idx = np.concatenate([top_idx, bottom_idx])
        codes, role_names = role_codes(method, row)
        y_train = self.train_data(name)[1].numpy()
        dataset = self.choice(name).dataset
        labels = y_train[idx]
        ranks = np.concatenate([np.arange(1, top + 1), np.arange(n_train - len(idx) + top + 1, n_train + 1)])
        frame = pd.DataFrame({"rank": ranks, "position": idx, "train_index": idx, "score": row[idx], "label": labels,
                              "class": self.label_names(dataset, labels),
                              "part": ["top"] * top + ["bottom"] * (len(idx) - top),
                              "role": [role_names[c] for c in codes[idx]]})
        frame.attrs["role_counts"] = role_counts(codes, role_names)
        frame.attrs["n_ranked"] = n_train
        frame.attrs["approximation"] = index_approximation(fitted)
        return frame

    def example_ranking(self, name: str, scores: np.ndarray, n: int = 1000, method: str | None = None) -> pd.DataFrame:
        """Training-subset examples sorted from most to least important for one test input.

        Columns: ``rank`` (1 = most important), ``position`` (in the training subset),
        ``train_index`` (in the training split), ``score``, ``label``, ``class``, and with ``method``
        a ``role`` (proponent / opponent, used / unused, near / far: :func:`example_roles`).
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
        frame = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "position": order,
                              "train_index": train_idx[order], "score": scores[order], "label": labels,
                              "class": self.label_names(dataset, labels)})
        if method is not None:
            frame["role"] = example_roles(method, scores[order])
        return frame


def index_approximation(fitted: example_index.ExampleIndex) -> str:
    """What a fitted index's scores approximate, in words for a caption (empty when they are exact)."""
    parts = []
    if fitted.params.get("projection_dim"):
        parts.append(f"gradients projected: {fitted.params['projection_dim']} dimensions per layer group")
    if "solve_0" in fitted.arrays:
        parts.append("Gauss–Newton Hessian, its recursion solved once in feature space")
    return "; ".join(parts)
