"""Embedding view of the explorer: 2-D projections (PCA, t-SNE, UMAP) of the test latents, per-point attribution
statistics, a selected group's summary and a point's nearest training examples.

Projections and attribution statistics are dataset-wide: computed once with fixed seeds and kept in the disk cache
under the engine's one key scheme (weights sha256, data fingerprint, parameters, engine version).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine import cache
from lfx_engine.errors import ParameterError
from lfx_engine.explorer._core import Progress
from lfx_engine.explorer.examples import ExampleViews
from lfx_engine.explorer.features import FeatureViews
from lfx_engine.feature_importance import label_free_attribution

#: Projection methods, in display order.
PROJECTIONS = ("pca", "tsne", "umap")
PROJECTION_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
#: Per-point attribution statistics (of the channel-averaged |attribution| map).
ATTRIBUTION_STATS = ("total", "entropy")
STAT_TITLES = {"total": "total |attribution|", "entropy": "spatial entropy of |attribution|"}
#: Attribution batch size of the statistics (one progress step each).
STAT_BATCH = 64
#: DKNN's eps (its score is 1 / (distance² + eps)); used to turn scores back into distances.
DKNN_EPS = 1e-8


def umap_available() -> str | None:
    """None when umap-learn (and numba) import, else why not (the view then offers PCA and t-SNE only)."""
    try:
        import umap  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - numba/llvmlite can fail in many ways at import
        return f"UMAP is unavailable here ({type(exc).__name__}: {exc}); install umap-learn"
    return None


def project_2d(z: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D coordinates ``(n, 2)`` of latents ``z`` ``(n, d)`` by PCA, t-SNE or UMAP, deterministic for a seed."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) < 3:
        raise ParameterError(f"a projection needs at least 3 latent vectors, got shape {z.shape}")
    if method == "pca":
        centred = z - z.mean(axis=0, keepdims=True)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        coords = centred @ vt[:2].T
        signs = np.sign(coords[np.argmax(np.abs(coords), axis=0), range(coords.shape[1])])
        coords = coords * np.where(signs == 0, 1, signs)  # fix SVD's sign ambiguity
        if coords.shape[1] < 2:
            coords = np.column_stack([coords[:, 0], np.zeros(len(z))])
        return coords
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(z) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    if method == "umap":
        problem = umap_available()
        if problem:
            raise ParameterError(problem)
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(z) - 1), random_state=seed, n_jobs=1)
        return np.asarray(reducer.fit_transform(z), dtype=np.float64)
    raise ParameterError(f"unknown projection {method!r}; choose from {', '.join(PROJECTIONS)}")


def attribution_stats(maps: np.ndarray) -> dict[str, np.ndarray]:
    """Per-input ``total`` |attribution| and its spatial ``entropy`` (nats) from |maps| ``(n, ...)``."""
    flat = np.abs(np.asarray(maps, dtype=np.float64)).reshape(len(maps), -1)
    total = flat.sum(axis=1)
    p = flat / np.where(total > 0, total, 1.0)[:, None]
    entropy = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=1)
    return {"total": total, "entropy": entropy}


@dataclass(frozen=True)
class GroupSummary:
    """A selected group of test inputs explained together."""

    indices: np.ndarray  # test-split indices of the group, sorted
    classes: pd.DataFrame  # class, count
    mean_input: np.ndarray  # input-shaped mean of all members
    mean_saliency: np.ndarray  # mean |attribution| map (H, W) or (T,) of the attributed members
    attributed: np.ndarray  # test indices whose attributions were averaged (at most ``max_attributed``)

    @property
    def size(self) -> int:
        """Number of members."""
        return int(len(self.indices))


class EmbeddingViews(ExampleViews, FeatureViews):
    """2-D maps of the test latents, with attribution statistics, group summaries and nearest training examples."""

    def _points(self, name: str, n_points: int | None) -> int:
        size = self.test_size(name)
        n = size if n_points is None else n_points
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 3 <= int(n) <= size:
            raise ParameterError(f"the number of points must lie in 3..{size}, got {n_points!r}")
        return int(n)

    def _embedding_key(self, name: str, method: str, n: int, seed: int) -> dict[str, Any]:
        return self._key(name, projection=method, n=n, seed=int(seed))

    def embedding(self, name: str, method: str = "pca", n_points: int | None = None, seed: int = 0,
                  progress: Progress = None) -> pd.DataFrame:
        """2-D projection of the first ``n_points`` test latents (all by default): idx, x, y, label, class.

        Cached on disk per model, projection, point count and seed.
        """
        if method not in PROJECTIONS:
            raise ParameterError(f"unknown projection {method!r}; choose from {', '.join(PROJECTIONS)}")
        n = self._points(name, n_points)

        def compute() -> dict[str, np.ndarray]:
            z = self.test_latents(name, progress)[:n]
            return {"xy": project_2d(z, method, seed)}

        xy = cache.cached("embedding", self._embedding_key(name, method, n, seed), compute)["xy"]
        labels = self.test_data(name)[1][:n].numpy()
        dataset = self.choice(name).dataset
        return pd.DataFrame({"idx": np.arange(n), "x": xy[:, 0], "y": xy[:, 1], "label": labels,
                             "class": self.label_names(dataset, labels)})

    def embedding_cached(self, name: str, method: str = "pca", n_points: int | None = None, seed: int = 0) -> bool:
        """Whether :meth:`embedding` for these arguments is on disk (instant)."""
        return cache.is_cached("embedding", self._embedding_key(name, method, self._points(name, n_points), seed))

    def _stats_key(self, name: str, method: str, n: int) -> dict[str, Any]:
        return self._key(name, attribution=method, n=n, seed=0)

    def point_attribution_stats(self, name: str, method: str, n_points: int,
                                progress: Progress = None) -> pd.DataFrame:
        """``total`` |attribution| and its spatial ``entropy`` under ``method`` for the first ``n_points`` test
        inputs (idx, total, entropy); batched, cached on disk."""
        self._check_feature_method(name, method)
        n = self._points(name, n_points)

        def compute() -> dict[str, np.ndarray]:
            x = self.test_data(name)[0][:n]
            encoder = cast(nn.Module, self.model(name).encoder)
            parts: list[dict[str, np.ndarray]] = []
            for start in range(0, n, STAT_BATCH):
                xb = x[start: start + STAT_BATCH]
                attr = label_free_attribution(encoder, xb, method, baselines=self.baseline_for(name, xb), seed=0,
                                              device=self.device)
                parts.append(attribution_stats(self.display_map(attr.numpy())))
                if progress:
                    progress(min(start + STAT_BATCH, n), n)
            return {k: np.concatenate([p[k] for p in parts]) for k in ATTRIBUTION_STATS}

        arrays = cache.cached("embedding_stats", self._stats_key(name, method, n), compute)
        return pd.DataFrame({"idx": np.arange(n), **{k: arrays[k] for k in ATTRIBUTION_STATS}})

    def stats_cached(self, name: str, method: str, n_points: int) -> bool:
        """Whether :meth:`point_attribution_stats` for these arguments is on disk (instant)."""
        return cache.is_cached("embedding_stats", self._stats_key(name, method, self._points(name, n_points)))

    def group_summary(self, name: str, indices: Sequence[int], method: str = "saliency",
                      max_attributed: int = 64) -> GroupSummary:
        """Size, class mix, mean input and mean |attribution| map (of at most ``max_attributed`` members, the
        lowest indices) of a group of test inputs."""
        size = self.test_size(name)
        idx = np.unique(np.asarray(list(indices), dtype=np.int64))
        if idx.size == 0:
            raise ParameterError("the group is empty: select at least one point")
        if idx[0] < 0 or idx[-1] >= size:
            raise ParameterError(f"test indices must lie in 0..{size - 1}")
        if max_attributed < 1:
            raise ParameterError(f"max_attributed must be at least 1, got {max_attributed}")
        self._check_feature_method(name, method)
        x_all, y_all = self.test_data(name)
        members = torch.as_tensor(idx)
        dataset = self.choice(name).dataset
        counts = pd.Series(self.label_names(dataset, y_all[members].numpy())).value_counts()
        classes = pd.DataFrame({"class": counts.index.astype(str), "count": counts.to_numpy()})
        attributed = idx[:max_attributed]
        maps = self.display_map(self.attribute(name, x_all[torch.as_tensor(attributed)], method))
        return GroupSummary(indices=idx, classes=classes, mean_input=x_all[members].mean(dim=0).numpy(),
                            mean_saliency=maps.mean(axis=0), attributed=attributed)

    def nearest_train(self, name: str, index: int, k: int = 8, n: int = 1000) -> pd.DataFrame:
        """The ``k`` training-subset examples nearest test input ``index`` in latent space (DKNN's Euclidean
        distance, the Top examples page's subset of size ``n``): rank, train_index, label, class, distance."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ParameterError(f"k must be a positive integer, got {k!r}")
        scores = self.sample_example_scores(name, "dknn", index, n)
        assert scores is not None  # computed (compute=True)
        ranking = self.example_ranking(name, scores, n).head(int(k)).copy()
        ranking["distance"] = np.sqrt(np.clip(1.0 / ranking["score"].to_numpy() - DKNN_EPS, 0.0, None))
        return ranking[["rank", "train_index", "label", "class", "distance"]].reset_index(drop=True)
