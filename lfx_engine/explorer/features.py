"""Feature importance of the explorer: one-sample attributions, VAE unit maps, latents and the latent map."""
from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine import cache
from lfx_engine.example_importance import encode
from lfx_engine.explorer._core import ExplorerCore, Progress
from lfx_engine.feature_importance import (
    aggregate_channels,
    label_free_attribution,
    unit_attribution,
)


class FeatureViews(ExplorerCore):
    """Label-free attributions of a few inputs (immediate) and the test set's latents (cached)."""

    # ------------------------------------------------------------------ one sample (immediate)
    def attribute(self, name: str, x: torch.Tensor, method: str, seed: int = 0, **kwargs: Any) -> np.ndarray:
        """Label-free attribution of the model's encoder for a few inputs, input-shaped."""
        self.check_input(name, x)
        self._check_feature_method(name, method)
        encoder = cast(nn.Module, self.model(name).encoder)
        attr = label_free_attribution(encoder, x, method, baselines=self.baseline_for(name, x), seed=seed,
                                      device=self.device, **kwargs)
        return attr.numpy()

    def display_map(self, attr: np.ndarray, signed: bool = False) -> np.ndarray:
        """Attribution averaged over channels: (N,H,W) for images, (N,T) for series.

        ``signed=False`` gives its magnitude (the heat map); ``signed=True`` keeps the sign, so a view can tell
        features that raise ⟨f(x), f(x̃)⟩ from those that lower it. ``|display_map(a, True)| == display_map(a)``.
        """
        t = torch.as_tensor(attr)
        if t.dim() == 4:
            mean = aggregate_channels(t, "mean")[:, 0]
        else:
            mean = t.sum(dim=-1)
        return (mean if signed else mean.abs()).numpy()

    def unit_maps(self, name: str, x: torch.Tensor, method: str = "gradient_shap", seed: int = 0) -> np.ndarray:
        """Per-latent-unit saliency |z_j · A_j| (N, d, H, W) of a VAE."""
        self.check_input(name, x)
        return unit_attribution(cast(nn.Module, self.model(name).encoder), x, method,
                                baselines=self.baseline_for(name, x), seed=seed, device=self.device).numpy()

    def latent(self, name: str, x: torch.Tensor) -> np.ndarray:
        """Representation f(x) of a few inputs."""
        return encode(cast(nn.Module, self.model(name).encoder), x, device=self.device).numpy()

    # ------------------------------------------------------------------ dataset-wide (disk cache)
    def test_latents(self, name: str, progress: Progress = None) -> np.ndarray:
        """Latents of the whole test split (cached on disk)."""
        def compute() -> dict[str, np.ndarray]:
            x, _ = self.test_data(name)
            return {"z": encode(cast(nn.Module, self.model(name).encoder), x, device=self.device,
                                progress=progress).numpy()}
        return cache.cached("latents", self._key(name, split="test"), compute)["z"]

    def latent_map(self, name: str, n_points: int = 2000, progress: Progress = None) -> pd.DataFrame:
        """2-D PCA of test latents for the first ``n_points`` test samples: idx, pc1, pc2, label."""
        z = self.test_latents(name, progress)[:n_points].astype(np.float64)
        _, y = self.test_data(name)
        from lfx_engine.explorer.embedding import project_2d  # the one PCA of the app (also the Embedding page)

        coords = project_2d(z, "pca")
        dataset = self.choice(name).dataset
        labels = y[: len(z)].numpy()
        return pd.DataFrame({"idx": np.arange(len(z)), "pc1": coords[:, 0], "pc2": coords[:, 1],
                             "label": self.label_names(dataset, labels)})
